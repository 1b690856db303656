"""The project's Slurm account, kept through `sacctmgr` (Slurm 22.05: no `--json`, so `-n -P` text).

Why sacctmgr and not slurmrestd: slurmrestd 22.05 silently ignores association limits on writes and
answers HTTP 500 for missing objects (see docs/slurm.md). sacctmgr is what site admins use, it talks
to slurmdbd directly, and its quirks are known and handled here:

- duplicate add / missing modify / missing delete exit 1 with "Nothing new added." / "Nothing
  modified" / "Nothing deleted": treated as success where the intent is met;
- invalid values (TRES, names) can still create an account with rc 0: every value is validated by
  `desired_account` before it reaches sacctmgr;
- names and descriptions are stored lowercased; GrpTRES reads back in Slurm's own order and with
  memory re-expressed (2097152M reads back as 2T): both sides are normalised before comparing;
- limits, fairshare, QOS, parent and description are compared on the account row only (User empty);
  user rows are only looked at for membership.

Ownership (backends/ownership.py): the account's Organization is `<owner label>:<name>:<uid>`, set by the
same `add account` that creates it. An account without that marker (root, a site's own, another project's)
is never modified or deleted (NotOwned); one retained by an earlier project of the same name is taken
over only with spec.adopt: [SlurmAccount].

Cordon (validUntil passed) sets `GrpSubmitJobs=0` (no new submissions, sbatch fails with
AssocGrpSubmitJobsLimit) and `GrpJobs=0` (already pending jobs do not start, reason AssocGrpJobsLimit);
running jobs finish. Un-cordon sets both back to unlimited (-1).

Every sacctmgr call is one subprocess (never a shell), bounded by `timeoutSeconds` and killed when it
runs over: a hung slurmdbd makes sacctmgr wait forever.

New accounts are added several at a time (`batchCreations`): each sacctmgr write costs slurmdbd 7-8 round trips
of 40-90 ms whatever it carries, so one account and its users took ~1.4 s, one at a time. `sacctmgr load` of a
flat file adds accounts with different settings and their users in one transaction (64 in 8-14 s). Only accounts
absent just before the load and under an existing parent go into it, and no line sets a DefaultAccount: with
either, slurmdbd 22.05 commits a load partly or rolls back some of its changes while answering rc 0. Each
project then reads its account back; one the load did not add is added on its own, with its own error.

Reads of accounts are shared the same way (`Sacctmgr.show_account`): the reads asked for while one is in flight
go into the next `show account withassoc where name=a,b,…` together. A reconcile reads its account two or three
times (admission, observe, the read back after a load), each read costs slurmdbd several round trips whatever it
lists, and four at a time behind loads were what kept 1,000 new projects waiting (docs/performance.md).

An edit's sacctmgr work goes between two loads, not across one: it reads its account, writes, and reads it back,
and slurmdbd answers its reads only after the load in flight. Its write goes before the next load (by priority),
but a load started while it was still reading kept it waiting a second time. So the next load waits until no
edit's reconcile has used sacctmgr for `EDIT_QUIET_S` (at most `LOAD_DEFER_MAX_S`, so a stream of edits cannot
hold creations back); an edit then waits for at most the load in flight (`Sacctmgr._edits_done`).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import decimal
import logging
import os
import re
import tempfile
import time
import unicodedata
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pydantic
from pydantic.alias_generators import to_camel

from enclave_operator import metrics, quantity, reasons
from enclave_operator.api.research_project import DeletionPolicy, SlurmCompute
from enclave_operator.backends import ownership, throttle
from enclave_operator.backends.adapter import DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable
from enclave_operator.priority import Priority, Slots, current, give_back_slot, reconciling_edit

logger = logging.getLogger(__name__)

NAME_PATTERN = re.compile(r"^[a-z_][a-z0-9_.-]{0,63}$")
"""Slurm account, user, QOS and cluster names we accept: lowercase (Slurm lowercases anyway), and no
character sacctmgr's command line or `-P` output gives a meaning to (`,`, `=`, `|`, spaces, quotes)."""
MAX_DESCRIPTION = 200
"""Slurm stores descriptions in a tinytext column; keep well below its 255 bytes."""
MANAGED_TRES = ("cpu", "mem", "gres/gpu")
"""The GrpTRES the operator owns; others (billing, node, …) are left to site admins."""
UNLIMITED = "-1"
"""What sacctmgr takes to clear a limit."""

ASSOCIATED = "Associated"
"""The member has a user association with the project's account."""
MISSING = "Missing"
"""The member has no user association with the account (yet)."""

_FORMAT = "Account,Cluster,User,Partition,ParentName,Fairshare,GrpTRES,GrpSubmitJobs,GrpJobs,QOS,Org,Descr"
_FIELDS = len(_FORMAT.split(","))
_UNAVAILABLE_MARKERS = (
    "unable to connect",
    "connection refused",
    "persistent connection",
    "persistinit",
    "problem talking to the database",
    "timed out",
    "zero bytes were transmitted",
    "slurmdbd: ",
)
_NOTHING = ("nothing new added", "nothing modified", "nothing deleted", "no associations created")
_ASSOC_FORMAT = "Account,Cluster,User,Partition,ParentName,Fairshare,GrpTRES,GrpSubmitJobs,GrpJobs,QOS"
"""`show assoc` has no organization or description column: the fallback read fills them in (see there)."""


class SlurmSettings(pydantic.BaseModel):
    """How the operator reaches Slurm accounting (settings key `slurm`)."""

    model_config = pydantic.ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)

    sacctmgr_path: str = pydantic.Field("sacctmgr", description="The sacctmgr binary (a path, or a name on PATH).")
    scontrol_path: str = pydantic.Field(
        "scontrol", description="The scontrol binary, for GPU reservations and node capacity (a path or a name)."
    )
    slurm_conf: Path | None = pydantic.Field(
        None, description="slurm.conf to use (passed as SLURM_CONF); None: sacctmgr's own default."
    )
    cluster: str | None = pydantic.Field(
        None,
        description="Cluster whose associations are managed; set it when slurmdbd serves several clusters "
        "(None: sacctmgr's defaults, i.e. every cluster for adds).",
    )
    timeout_seconds: float = pydantic.Field(
        15.0,
        gt=0,
        le=300,
        description="Bound of one sacctmgr call, seconds: a hung slurmdbd must not stall reconciles.",
    )
    max_concurrent_calls: int = pydantic.Field(
        4, ge=1, le=64, description="Most sacctmgr processes at once per operator: slurmdbd serialises writes anyway."
    )
    batch_creations: int = pydantic.Field(
        64,
        ge=1,
        le=1000,
        description="Most new accounts (with their users) added by one `sacctmgr load` while others wait for the "
        "write in flight: one write costs slurmdbd about as much for 64 accounts as for one. 1: one `sacctmgr add` "
        "per account. Needs `cluster` (a load names its cluster); without it accounts are added one by one.",
    )
    user_prefix: str = pydantic.Field(
        "", max_length=32, description="Prefix of Slurm user names before the member's username (usually empty)."
    )
    allowed_parents: list[str] = pydantic.Field(
        default_factory=lambda: ["root"],
        min_length=1,
        description="Accounts projects may be placed under (spec.compute.slurm.parent). Anything else is refused at "
        "admission: a project must not nest itself under another project's account and share its limits.",
    )

    def cluster_args(self) -> list[str]:
        """The sacctmgr arguments that confine a command to the managed cluster: `["cluster=<name>"]`, or none when
        no cluster is set (sacctmgr's defaults). Every sacctmgr command of the operator that names a cluster takes
        it from here, so its reads and its writes cannot disagree on the cluster."""
        return [f"cluster={self.cluster}"] if self.cluster else []

    @pydantic.field_validator("cluster")
    @classmethod
    def _cluster_name(cls, value: str | None) -> str | None:
        if value is not None and not NAME_PATTERN.match(value):
            raise ValueError("must be a lowercase Slurm cluster name")
        return value

    @pydantic.field_validator("allowed_parents")
    @classmethod
    def _parents(cls, value: list[str]) -> list[str]:
        for name in value:
            _check_name(name, "allowedParents")
        return value

    @pydantic.field_validator("user_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z_][a-z0-9_.-]*", value):
            raise ValueError("must be lowercase letters, digits, '_', '.', '-'")
        return value


# --- desired state (pure) ------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DesiredSlurmAccount:
    """The account as the spec wants it, every value already validated and in Slurm's spelling."""

    name: str
    description: str
    parent: str
    fairshare: int
    grp_tres: Mapping[str, str]
    """Set limits only, keys from MANAGED_TRES, values normalised (`mem` in MB, e.g. 2097152M)."""
    qos: Sequence[str]
    """Sorted; empty = inherit from the parent (Slurm cannot clear an account's QOS list)."""
    users: Sequence[str]
    """Slurm user names (user prefix applied), sorted."""
    cordoned: bool
    owner: ownership.Owner
    organization: str
    """The ownership marker, stored as the account's Organization."""


def organization_marker(owner: ownership.Owner) -> str:
    """`enclave.io/project:<name>:<uid>`: no character sacctmgr splits on, already lowercase."""
    return f"{owner.label}:{owner.name}:{owner.uid}".lower()


def organization_claim(owner: ownership.Owner, organization: str | None, name: str, *,
                       exists: bool) -> ownership.ClaimResult:  # fmt: skip
    """ABSENT, OWNED, RETAINED (marker of an earlier object of this name) or FOREIGN (any other organization)."""
    if not exists:
        return ownership.ClaimResult(ownership.Claim.ABSENT, name)
    label, _, rest = (organization or "").strip().partition(":")
    marked, _, uid = rest.partition(":")
    claim = owner.classify(marked if label == owner.label and marked else None, uid, with_uid=True)
    what = f"Slurm account {name}"
    if claim is ownership.Claim.RETAINED:
        return ownership.ClaimResult(claim, name, ownership.retained_message(what, owner, "SlurmAccount"))
    if claim is ownership.Claim.FOREIGN:
        marker = marked if label == owner.label and marked else None
        return ownership.ClaimResult(claim, name, ownership.foreign_message(what, owner, marker))
    return ownership.ClaimResult(claim, name)


def _check_name(value: str, field: str) -> str:
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"{field}: {value!r} is not a valid Slurm name (lowercase letter or '_' first, then lowercase "
            "letters, digits, '_', '.', '-'; at most 64 characters)"
        )
    return value


def _check_count(value: int | None, field: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{field}: {value!r} must be a non-negative integer")
    return str(value)


def mem_to_mb(value: int | str, field: str = "mem") -> int:
    """A Kubernetes quantity as whole MiB (Slurm's "M"), rounded up: a limit is never below what was asked."""
    try:
        amount = quantity.parse(value)
    except ValueError as error:
        raise ValueError(f"{field}: {error}") from None
    return int((amount / (2**20)).to_integral_value(rounding=decimal.ROUND_CEILING))


def clean_description(text: str | None, fallback: str) -> str:
    """A description sacctmgr stores as given: ASCII, lowercase, no quotes, `|` or `=`; bounded.

    Free text (a display name) is made safe rather than rejected: accents are stripped, other
    characters become spaces. Empty falls back to the account name, as Slurm itself does.
    """
    ascii_text = unicodedata.normalize("NFKD", text or "").encode("ascii", "ignore").decode()
    kept = re.sub(r"[^a-z0-9 ._:/()+,-]", " ", ascii_text.lower())
    collapsed = " ".join(kept.split())[:MAX_DESCRIPTION].strip()
    return collapsed or fallback


def desired_account(
    name: str,
    description: str | None,
    slurm: SlurmCompute,
    users: Iterable[str],
    cordoned: bool,
    *,
    owner: ownership.Owner,
    user_prefix: str = "",
    allowed_parents: Sequence[str] = ("root",),
) -> DesiredSlurmAccount:
    """Build and validate the desired account; ValueError names the spec field that is wrong."""
    _check_name(name, "Slurm account name")
    _check_name(slurm.parent, "spec.compute.slurm.parent")
    if slurm.parent not in allowed_parents:
        raise ValueError(f"spec.compute.slurm.parent: {slurm.parent} is not an account projects may be placed under "
                         f"(allowed: {', '.join(allowed_parents)})")  # fmt: skip
    if slurm.parent == name:
        raise ValueError("spec.compute.slurm.parent: an account cannot be its own parent")
    if isinstance(slurm.fairshare, bool) or not isinstance(slurm.fairshare, int) or slurm.fairshare < 1:
        raise ValueError(f"spec.compute.slurm.fairshare: {slurm.fairshare!r} must be a positive integer")
    limits = slurm.limits
    tres: dict[str, str] = {}
    cpu = _check_count(limits.cpu, "spec.compute.slurm.limits.cpu")
    if cpu is not None:
        tres["cpu"] = cpu
    if limits.mem is not None:
        tres["mem"] = f"{mem_to_mb(limits.mem, 'spec.compute.slurm.limits.mem')}M"
    gpu = _check_count(limits.gpu, "spec.compute.slurm.limits.gpu")
    if gpu is not None:
        tres["gres/gpu"] = gpu
    qos = sorted({_check_name(q, f"spec.compute.slurm.qos[{i}]") for i, q in enumerate(slurm.qos)})
    slurm_users = sorted({_check_name(f"{user_prefix}{u}", "spec.members[].user") for u in users})
    return DesiredSlurmAccount(
        name=name,
        description=clean_description(description, name),
        parent=slurm.parent,
        fairshare=slurm.fairshare,
        grp_tres=tres,
        qos=qos,
        users=slurm_users,
        cordoned=cordoned,
        owner=owner,
        organization=organization_marker(owner),
    )


# --- parsing what sacctmgr shows (pure) ----------------------------------------------------------

_SLURM_MEM = re.compile(r"^(?P<num>[0-9]+(?:\.[0-9]+)?)(?P<unit>[KMGTPE]?)$")
_MB_PER_UNIT = {"K": decimal.Decimal(1) / 1024, "": 1, "M": 1, "G": 1024, "T": 1024**2, "P": 1024**3, "E": 1024**4}


def slurm_mem_to_mb(text: str) -> int:
    """Slurm's memory TRES value (MB based: `1500M`, `1G`, `2T`, bare `1` = 1M) as whole MB."""
    match = _SLURM_MEM.match(text.strip())
    if not match:
        raise ValueError(f"unexpected Slurm memory value {text!r}")
    mb = decimal.Decimal(match["num"]) * decimal.Decimal(_MB_PER_UNIT[match["unit"]])
    return int(mb.to_integral_value(rounding=decimal.ROUND_CEILING))


def parse_tres(text: str) -> dict[str, str]:
    """`cpu=16,gres/gpu=2,mem=2T` → {"cpu": "16", "gres/gpu": "2", "mem": "2097152M"}; other TRES kept as shown."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"unexpected GrpTRES item {item!r}")
        result[key] = f"{slurm_mem_to_mb(value)}M" if key == "mem" else value
    return result


def format_tres(tres: Mapping[str, str]) -> str:
    """A GrpTRES argument in a stable order (the order does not matter to Slurm)."""
    return ",".join(f"{key}={tres[key]}" for key in sorted(tres))


def account_settings(d: DesiredSlurmAccount) -> list[tuple[str, str]]:
    """Every setting a new account gets, as (sacctmgr option, value): `add account` takes them as option=value, a
    load's flat file as Option=value on the account's line."""
    settings = [("Description", d.description), ("Organization", d.organization), ("Fairshare", str(d.fairshare))]
    if d.grp_tres:
        settings.append(("GrpTRES", format_tres(d.grp_tres)))
    if d.qos:
        settings.append(("QOS", ",".join(d.qos)))
    if d.cordoned:
        settings += [("GrpSubmitJobs", "0"), ("GrpJobs", "0")]
    return settings


_QUOTED = frozenset({"Description", "Organization", "QOS"})
"""Flat-file values in quotes: free text, the marker's colons, the QOS list's commas."""


def load_file(cluster: str, accounts: Sequence[DesiredSlurmAccount]) -> str:
    """The `sacctmgr load` flat file that adds `accounts` (all absent, parents existing) with their users.

    No line sets a DefaultAccount: a new user gets the first account it is added to, an existing one keeps its
    own (setting one for an existing user made slurmdbd 22.05 roll back earlier changes of the same load). The
    Cluster line has no options: options there change the cluster's root association.
    """
    lines = [f"Cluster - {_quoted(cluster)}"]
    for parent in sorted({a.parent for a in accounts}):
        lines.append(f"Parent - {_quoted(parent)}")
        for a in accounts:
            if a.parent != parent:
                continue
            options = [f"{key}={_quoted(value) if key in _QUOTED else value}" for key, value in account_settings(a)]
            lines.append(":".join([f"Account - {_quoted(a.name)}", *options]))
    for a in accounts:
        if a.users:
            lines.append(f"Parent - {_quoted(a.name)}")
            lines += [f"User - {_quoted(user)}" for user in a.users]
    return "\n".join(lines) + "\n"


def _quoted(value: str) -> str:
    """A flat-file value in single quotes (the `:` of an organization marker stays inside). Every value was
    validated before (names, cleaned descriptions): a quote here is a bug, not input to escape."""
    if "'" in value or "\n" in value:
        raise ValueError(f"cannot quote {value!r} in a sacctmgr flat file")
    return f"'{value}'"


@dataclasses.dataclass(frozen=True)
class AssocRow:
    """One line of `sacctmgr -n -P show account withassoc format=<_FORMAT>`."""

    account: str
    cluster: str
    user: str
    partition: str
    parent: str
    fairshare: str
    grp_tres: str
    grp_submit_jobs: str
    grp_jobs: str
    qos: str
    organization: str
    description: str

    @property
    def is_account_row(self) -> bool:
        """The account's own association: no user, on some cluster (no cluster = account record only)."""
        return not self.user and bool(self.cluster)


def parse_rows(stdout: str) -> list[AssocRow]:
    """Parse `-n -P` output; the description is last so a stray `|` in it cannot shift the columns."""
    rows = []
    for line in stdout.splitlines():
        if not line.strip():
            continue
        parts = line.split("|", _FIELDS - 1)
        if len(parts) != _FIELDS:
            raise ValueError(f"unexpected sacctmgr output line with {len(parts)} fields")
        rows.append(AssocRow(*parts))
    return rows


@dataclasses.dataclass(frozen=True)
class AccountRows:
    """What a shared read found for one account (Sacctmgr.show_account)."""

    rows: tuple[AssocRow, ...]
    """Its lines of `show account withassoc`."""
    associations: tuple[str, ...]
    """When there are none: its lines of `show assoc` (format _ASSOC_FORMAT), unparsed."""


READ_BATCH = 100
"""Most accounts one shared read names (a command line of a few KiB)."""
EDIT_QUIET_S = 0.5
"""How long after an edit's last sacctmgr call the next load may start: the steps of one edit (read, write, read
back) follow each other within milliseconds, more under load (module docstring)."""
LOAD_DEFER_MAX_S = 5.0
"""The longest a load waits for edits to be done: creations go on while edits keep coming."""


@dataclasses.dataclass(frozen=True)
class AccountState:
    """What Slurm has for one account (on the managed cluster, if one is set)."""

    record: bool
    """The account record exists (possibly without an association on our cluster)."""
    account_rows: tuple[AssocRow, ...]
    users: frozenset[str]
    organization: str | None = None
    """The account's Organization (the ownership marker), when the record exists."""

    @property
    def exists(self) -> bool:
        return bool(self.account_rows)


def account_state(rows: Sequence[AssocRow], name: str, cluster: str | None) -> AccountState:
    mine = [r for r in rows if r.account == name and (cluster is None or r.cluster in (cluster, ""))]
    return AccountState(
        record=bool(mine),
        account_rows=tuple(r for r in mine if r.is_account_row),
        users=frozenset(r.user for r in mine if r.user),
        organization=next((r.organization.strip() for r in mine), None),
    )


def _cordon_value(text: str) -> str:
    return text.strip() or UNLIMITED


def account_changes(desired: DesiredSlurmAccount, row: AssocRow) -> tuple[dict[str, str], list[str]]:
    """The `set` arguments that make the account row as desired, and a short diff for messages."""
    changes: dict[str, str] = {}
    diff: list[str] = []
    if row.organization.strip() != desired.organization:
        changes["organization"] = desired.organization
        diff.append("ownership marker differs")
    if row.description.strip() != desired.description:
        changes["description"] = desired.description
        diff.append("description differs")
    if row.parent != desired.parent:
        changes["parent"] = desired.parent
        diff.append(f"parent {row.parent or 'none'}, want {desired.parent}")
    if row.fairshare.strip() != str(desired.fairshare):
        changes["fairshare"] = str(desired.fairshare)
        diff.append(f"fairshare {row.fairshare or 'none'}, want {desired.fairshare}")
    actual_tres = parse_tres(row.grp_tres)
    tres_changes = {
        key: desired.grp_tres.get(key, UNLIMITED)
        for key in MANAGED_TRES
        if actual_tres.get(key) != desired.grp_tres.get(key)
    }
    if tres_changes:
        changes["grptres"] = format_tres(tres_changes)
        have = format_tres({k: actual_tres[k] for k in MANAGED_TRES if k in actual_tres}) or "none"
        want = format_tres(dict(desired.grp_tres)) or "none"
        diff.append(f"GrpTRES {have}, want {want}")
    if desired.qos and sorted(filter(None, row.qos.split(","))) != list(desired.qos):
        changes["qos"] = ",".join(desired.qos)
        diff.append(f"qos {row.qos or 'none'}, want {','.join(desired.qos)}")
    want_jobs = "0" if desired.cordoned else UNLIMITED
    if _cordon_value(row.grp_submit_jobs) != want_jobs or _cordon_value(row.grp_jobs) != want_jobs:
        changes["grpsubmitjobs"] = want_jobs
        changes["grpjobs"] = want_jobs
        diff.append("not cordoned, want cordoned" if desired.cordoned else "cordoned, want not cordoned")
    return changes, diff


def member_states(desired_users: Mapping[str, str], associated: Iterable[str]) -> dict[str, str]:
    """Per member username (spec spelling): Associated or Missing. `desired_users` maps member → Slurm user."""
    have = set(associated)
    return {member: ASSOCIATED if slurm_user in have else MISSING for member, slurm_user in desired_users.items()}


def error_message(text: str, limit: int = 200) -> str:
    """A short, safe message from sacctmgr's output: the first line that says something."""
    for line in text.splitlines():
        line = line.strip().removeprefix("sacctmgr: error: ").strip()
        if line and not line.lower().startswith(("use keyword", "contact your admin")):
            return line[:limit]
    return "no output"


def classify_failure(what: str, returncode: int, text: str) -> BackendError:
    """Map a failed sacctmgr call to the engine's error kinds."""
    lowered = text.lower()
    short = error_message(text)
    if any(marker in lowered for marker in _UNAVAILABLE_MARKERS):
        return BackendUnavailable(f"slurmdbd unreachable ({what}): {short}")
    if "job(s) active" in lowered or "job(s) running" in lowered:
        return BackendError(f"{what}: Slurm refuses while the account has running or pending jobs")
    if "parent account" in lowered and "doesn't exist" in lowered:
        return BackendRejected(f"spec.compute.slurm.parent: {short}; ask the platform team which parents exist")
    if "bad qos" in lowered:
        return BackendRejected(f"spec.compute.slurm.qos: {short}")
    if "doesn't exist" in lowered or "unknown option" in lowered:
        return BackendRejected(f"{what}: {short}")
    return BackendError(f"{what} failed (exit {returncode}): {short}")


# --- the runner -----------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SacctmgrCall:
    """One finished call, for measurements and tests."""

    verb: str
    seconds: float
    write: bool


@dataclasses.dataclass(frozen=True)
class SacctmgrResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def nothing_done(self) -> bool:
        """sacctmgr's rc 1 for a duplicate add / missing modify / missing delete.

        Not when something it needs does not exist: `add account x parent=missing` also ends with "No
        associations created", and that is a refusal to report (issue 8.6), not an add that was not needed.
        """
        text = (self.stdout + self.stderr).lower()
        return self.returncode == 1 and any(marker in text for marker in _NOTHING) and "doesn't exist" not in text


class Sacctmgr:
    """Runs sacctmgr as a subprocess (argv, no shell), bounded in time and in concurrency.

    Make one per operator process and pass it to every adapter, so the concurrency bound holds across
    projects; `calls` keeps the most recent calls (for tests and measurements).
    """

    def __init__(
        self,
        settings: SlurmSettings,
        *,
        keep_calls: int = 256,
        program: Sequence[str] | None = None,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        """`program` replaces `sacctmgr -i -n -P` for another Slurm client (scontrol: see slurm_reservations)."""
        self.settings = settings
        self.calls: collections.deque[SacctmgrCall] = collections.deque(maxlen=keep_calls)
        # Both by the priority of the reconcile making the call (priority.py): an edit's sacctmgr calls go
        # before those of the creations waiting with it, not after every one of them.
        self._slots = Slots(settings.max_concurrent_calls)
        self._write_lock = Slots(1)
        self.membership_lock = Slots(1)
        """Held by an adapter across moving its members' default accounts and removing their associations: two
        projects doing it at once pick each other as the new default while both go (issue 8.2). By priority too:
        an edit removing a member goes before deletions and resyncs waiting for it."""
        self._batch: dict[str, tuple[DesiredSlurmAccount, asyncio.Future[bool]]] = {}
        """New accounts waiting for the next `sacctmgr load` (add_batched), by name."""
        self._loader: asyncio.Task[None] | None = None
        self._reads: dict[str, list[tuple[Priority, asyncio.Future[AccountRows]]]] = {}
        """Accounts waiting for the next shared read (show_account), by name."""
        self._reader: asyncio.Task[None] | None = None
        self._edits = 0
        """Edits' reconciles in a sacctmgr call or waiting for one (`_edit_under_way`)."""
        self._edit_seen = -LOAD_DEFER_MAX_S
        """When (time.monotonic) the last of them ended."""
        self._program = list(program) if program else [settings.sacctmgr_path, "-i", "-n", "-P"]
        env = dict(os.environ)
        if settings.slurm_conf is not None:
            env["SLURM_CONF"] = str(settings.slurm_conf)
        env.update(extra_env or {})
        self._env = env

    @property
    def writes(self) -> int:
        return sum(1 for call in self.calls if call.write)

    async def run(self, *args: str, write: bool, tolerate_nothing: bool = False, check: bool = True) -> SacctmgrResult:
        """Run `sacctmgr -i -n -P <args>` (within the Slurm rate, `throttle`); BackendError unless rc 0 (or, if
        tolerated, "Nothing …").

        With check=False any exit code is returned for the caller to interpret (only a timeout or a
        program that cannot start raise)."""
        with self._edit_under_way():
            await throttle.bound("slurm").wait()
            if write:
                # Concurrent adds on slurmdbd 22.05 were seen to leave an account record without its listing
                # (200 projects at once); slurmdbd serializes writes anyway, so one at a time costs little.
                async with self._write_lock.take(), self._slots.take():
                    return await self._run(args, write=write, tolerate_nothing=tolerate_nothing, check=check)
            async with self._slots.take():
                return await self._run(args, write=write, tolerate_nothing=tolerate_nothing, check=check)

    @contextlib.contextmanager
    def _edit_under_way(self) -> Iterator[None]:
        """Count the body as an edit's sacctmgr work when an edit's reconcile runs it (the next load waits for it)."""
        edit = reconciling_edit()
        self._edits += edit
        try:
            yield
        finally:
            if edit:
                self._edits -= 1
                self._edit_seen = time.monotonic()

    async def _edits_done(self) -> None:
        """Wait until no edit has used sacctmgr for EDIT_QUIET_S, at most LOAD_DEFER_MAX_S (module docstring)."""
        deadline = time.monotonic() + LOAD_DEFER_MAX_S
        while (now := time.monotonic()) < deadline:
            quiet_at = now + EDIT_QUIET_S if self._edits else self._edit_seen + EDIT_QUIET_S
            if quiet_at <= now:
                return
            await asyncio.sleep(min(quiet_at, deadline) - now)

    async def show_account(self, name: str) -> AccountRows:
        """Account `name` on the managed cluster as `show account withassoc` lists it (and as `show assoc` does, when
        that lists nothing: see SlurmAccountAdapter.read); read together with the other accounts asked for while a
        read is in flight (module docstring). The read goes at the most urgent waiting priority."""
        future: asyncio.Future[AccountRows] = asyncio.get_running_loop().create_future()
        self._reads.setdefault(name, []).append((current.get(), future))
        if self._reader is None or self._reader.done():
            self._reader = asyncio.create_task(self._read_waiting(), name="sacctmgr-read")
        with self._edit_under_way():
            return await future

    async def _read_waiting(self) -> None:
        """Read the waiting accounts, READ_BATCH names per sacctmgr call, until none wait."""
        while self._reads:
            names = list(self._reads)[:READ_BATCH]
            waiting = {name: [w for w in self._reads.pop(name) if not w[1].done()] for name in names}
            waiting = {name: ws for name, ws in waiting.items() if ws}
            if not waiting:
                continue
            current.set(min(priority for ws in waiting.values() for priority, _ in ws))
            try:
                found = await self._read_accounts(list(waiting))
            except asyncio.CancelledError:
                for ws in waiting.values():
                    for _, future in ws:
                        future.cancel()
                raise
            except Exception as error:  # BackendError; anything else is a bug, which each reader reports
                _settle_failed([f for ws in waiting.values() for _, f in ws], error, "sacctmgr read")
                continue
            for name, ws in waiting.items():
                for _, future in ws:
                    if not future.done():
                        future.set_result(found[name])

    async def _read_accounts(self, names: Sequence[str]) -> dict[str, AccountRows]:
        """One `show account withassoc` of `names`; one `show assoc` of those it did not list."""
        cluster = self.settings.cluster_args()
        shown = await self.run("show", "account", "withassoc", "where", f"name={','.join(names)}", *cluster,
                               f"format={_FORMAT}", write=False)  # fmt: skip
        try:
            rows = parse_rows(shown.stdout)
        except ValueError as error:
            raise BackendError(f"cannot read sacctmgr output: {error}") from None
        found = {name: AccountRows(tuple(r for r in rows if r.account == name), ()) for name in names}
        unlisted = [name for name, account in found.items() if not account.rows]
        if unlisted:
            assoc = await self.run("show", "assoc", "where", f"account={','.join(unlisted)}", *cluster,
                                   f"format={_ASSOC_FORMAT}", write=False)  # fmt: skip
            lines = [line for line in assoc.stdout.splitlines() if line.strip()]
            for name in unlisted:
                found[name] = AccountRows((), tuple(line for line in lines if line.split("|", 1)[0] == name))
        return found

    async def add_batched(self, account: DesiredSlurmAccount) -> bool:
        """Add a new account with its users in one `sacctmgr load` with the others waiting (module docstring).

        True when a load added it. False when none did: it exists meanwhile, its parent does not, the load was
        refused (one bad value refuses all), or batching is off; the caller then adds it on its own. A load that
        cannot reach slurmdbd raises its BackendError to every account in it."""
        cluster = self.settings.cluster
        if cluster is None or self.settings.batch_creations <= 1 or account.name in self._batch:
            return False
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._batch[account.name] = (account, future)
        if self._loader is None or self._loader.done():
            self._loader = asyncio.create_task(self._load_waiting(cluster), name="sacctmgr-load")
        give_back_slot()  # the next creations join this load instead of waiting for our slot (priority.py)
        try:
            return await future
        finally:
            if self._batch.get(account.name, (None, None))[1] is future:
                del self._batch[account.name]  # cancelled before its load started: not in a later one

    async def _load_waiting(self, cluster: str) -> None:
        """Load the waiting accounts, `batchCreations` at a time, until none wait; one write turn per load."""
        while self._batch:
            await self._edits_done()
            async with self._write_lock.take(Priority.CREATE):
                names = list(self._batch)[: self.settings.batch_creations]
                taken = [entry for entry in (self._batch.pop(name) for name in names) if not entry[1].done()]
                if not taken:
                    continue
                try:
                    added = await self._load(cluster, [account for account, _ in taken])
                except asyncio.CancelledError:
                    for _, future in taken:
                        future.cancel()
                    raise
                except Exception as error:  # BackendError; anything else is a bug, which each project reports
                    _settle_failed([future for _, future in taken], error, "sacctmgr load")
                    continue
                for account, future in taken:
                    if not future.done():
                        future.set_result(account.name in added)

    async def _load(self, cluster: str, accounts: Sequence[DesiredSlurmAccount]) -> set[str]:
        """One `sacctmgr load` of those `accounts` that are absent and whose parent exists; the names it added."""
        wanted = sorted({a.name for a in accounts} | {a.parent for a in accounts})
        shown = await self.run("show", "account", "where", f"name={','.join(wanted)}", "format=Account", write=False)
        existing = {line.strip() for line in shown.stdout.splitlines() if line.strip()}
        fresh = [a for a in accounts if a.name not in existing and a.parent in existing]
        if not fresh:
            return set()
        try:
            text = load_file(cluster, fresh)
        except ValueError as error:
            logger.error("not loading %d new Slurm accounts: %s", len(fresh), error)
            return set()
        with tempfile.TemporaryDirectory(prefix="enclave-sacctmgr-") as directory:
            path = Path(directory) / "accounts.cfg"
            path.write_text(text)
            async with self._slots.take(Priority.CREATE):
                # Bounded by the usual timeout plus a second per account: a load's time grows with its size.
                result = await self._run(["load", f"file={path}", *self.settings.cluster_args()], write=True,
                                         tolerate_nothing=False, check=False,
                                         timeout=self.settings.timeout_seconds + len(fresh))  # fmt: skip
        if result.returncode != 0:
            why = error_message(result.stderr + "\n" + result.stdout)
            logger.warning("sacctmgr load of %d new accounts refused (rc %s: %s); adding them one by one",
                           len(fresh), result.returncode, why)  # fmt: skip
            return set()
        return {a.name for a in fresh}

    async def _run(
        self,
        args: Sequence[str],
        *,
        write: bool,
        tolerate_nothing: bool,
        check: bool,
        timeout: float | None = None,
    ) -> SacctmgrResult:
        what = f"{Path(self._program[0]).name} {' '.join(args[:2])}"
        argv = [*self._program, *args]
        metrics.BACKEND_REQUESTS.labels(backend="slurm", kind="write" if write else "read").inc()
        start = time.perf_counter()
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                env=self._env,
            )
        except OSError as error:
            raise BackendError(f"cannot run {self._program[0]}: {error.strerror}") from None
        try:
            timeout = self.settings.timeout_seconds if timeout is None else timeout
            out, err = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            await _stop(proc)
            raise BackendUnavailable(f"slurmdbd did not answer {what} within {timeout:g}s") from None
        except asyncio.CancelledError:
            await _stop(proc)
            raise
        finally:
            self.calls.append(SacctmgrCall(" ".join(args[:2]), time.perf_counter() - start, write))
        result = SacctmgrResult(proc.returncode or 0, out.decode(errors="replace"), err.decode(errors="replace"))
        logger.debug("%s: rc=%s", what, result.returncode)
        if result.returncode == 0 or (tolerate_nothing and result.nothing_done) or not check:
            return result
        raise classify_failure(what, result.returncode, result.stderr + "\n" + result.stdout)


def _settle_failed(futures: Sequence[asyncio.Future[Any]], error: Exception, what: str) -> None:
    """Fail every caller waiting for a shared call with its error: a BackendError as it is, anything else (a bug)
    as a BackendError naming the log, where it is logged once. Never a cancellation, which would look like a
    shutdown to them."""
    if not isinstance(error, BackendError):
        logger.exception("%s failed unexpectedly", what, exc_info=error)
        error = BackendError(f"internal error ({type(error).__name__}); see the operator log")
    for future in futures:
        if not future.done():
            future.set_exception(error)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Kill `proc` unless it has exited meanwhile, and reap it. The process may end between the timeout or the
    cancellation and the kill: kill() then raises ProcessLookupError, which would replace the caller's timeout or
    cancellation (an admission check bounded by ownership.ADMISSION_CHECK_S then failed the webhook instead of being
    skipped)."""
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    await proc.wait()


# --- the adapter -----------------------------------------------------------------------------------


class SlurmAccountAdapter:
    """The project's Slurm account: limits, fairshare, QOS, parent, description, cordon and users."""

    part = reasons.SCHEDULER_READY
    noun = "SlurmAccount"
    member_key = "scheduler"

    def __init__(self, desired: DesiredSlurmAccount, runner: Sacctmgr) -> None:
        """Settings (cluster, user prefix) are the runner's: the shared reads it makes name its cluster, and the
        adapter filters their rows and writes on that same cluster (one runner per operator process, Sacctmgr)."""
        self._d = desired
        self.sacctmgr = runner
        self._s = runner.settings
        self._state: AccountState | None = None
        prefix = self._s.user_prefix
        self._member_of = {u.removeprefix(prefix) if prefix else u: u for u in desired.users}
        """Member username (spec spelling) → Slurm user name."""

    async def read(self) -> AccountState:
        """The account as Slurm has it now (a read shared with the other accounts read meanwhile).

        Seen under concurrent adds on 22.05: associations exist while `show account withassoc` lists nothing (the
        account record lost its description); the associations `show assoc` lists are taken then, with the
        description and organization as desired (`show assoc` has neither, and `modify` cannot repair the record:
        "Nothing modified"). That state follows our own concurrent adds only, so the ownership marker is ours."""
        shown = await self.sacctmgr.show_account(self._d.name)
        rows = list(shown.rows)
        if not rows and shown.associations:
            desc, org = self._d.description, self._d.organization
            try:
                rows = parse_rows("\n".join(f"{line}|{org}|{desc}" for line in shown.associations))
            except ValueError as error:
                raise BackendError(f"cannot read sacctmgr output: {error}") from None
        self._state = account_state(rows, self._d.name, self._s.cluster)
        return self._state

    def _claim(self, state: AccountState) -> ownership.ClaimResult:
        return organization_claim(self._d.owner, state.organization, self._d.name, exists=state.record)

    async def claim(self) -> ownership.ClaimResult:
        """Whether the account is absent, the owner's (organization marker), retained, or someone else's."""
        return self._claim(await self.read())

    async def observe(self) -> Observation:
        return self._observation(await self.read())

    def _observation(self, state: AccountState) -> Observation:
        adopting = ownership.raise_unless_usable(self._claim(state), self._d.owner, self.noun)
        if not state.record:
            return Observation(False, False, "account missing", self._d.name)
        if not state.exists:
            # The record without an association on the cluster (a deletion or creation cut short): it still
            # exists, so a deletion removes it and a reconcile adds the association (issue 8.4).
            return Observation(True, False, "account has no association on the cluster", self._d.name,
                               adopting=adopting)  # fmt: skip
        diff: list[str] = []
        for row in state.account_rows:
            diff += account_changes(self._d, row)[1]
        missing = sorted(set(self._d.users) - state.users)
        extra = sorted(state.users - set(self._d.users))
        if missing:
            diff.append(f"users missing: {', '.join(missing[:10])}{' …' if len(missing) > 10 else ''}")
        if extra:
            diff.append(f"users not members: {', '.join(extra[:10])}{' …' if len(extra) > 10 else ''}")
        members = member_states(self._member_of, state.users)
        return Observation(True, not diff, "; ".join(diff), self._d.name, members=members, adopting=adopting)

    async def create(self) -> Observation | None:
        """Add the account with every setting (in a load with other new ones when it can), then converge (it may
        have existed, e.g. as a record only)."""
        d = self._d
        if await self.sacctmgr.add_batched(d):
            # Added with its users by a load, whose answer does not prove what it saved: read it back; as desired,
            # that read is the observation after the create (the engine need not read again).
            state = await self.read()
            observation = self._observation(state)
            if observation.up_to_date:
                return observation
            await self._converge(state)
            return None
        settings = [f"{key.lower()}={value}" for key, value in account_settings(d)]
        args = ["add", "account", d.name, *self._s.cluster_args(), f"parent={d.parent}", *settings]
        result = await self.sacctmgr.run(*args, write=True, tolerate_nothing=True)
        if result.returncode == 0 and "adding account" in result.stdout.lower():
            # A new account with every setting given: only the users are left (saves a read, ~0.3 s).
            await self._converge(AccountState(True, (), frozenset(), organization=d.organization))
            return None
        await self._converge(await self.read())
        return None

    async def update(self, observation: Observation) -> None:
        state = self._state or await self.read()
        if not state.exists:
            await self.create()  # a record without its association: add it with every setting
            return
        await self._converge(state)

    async def _converge(self, state: AccountState) -> None:
        ownership.raise_unless_usable(self._claim(state), self._d.owner, self.noun)  # e.g. `add` met an existing one
        changes: dict[str, str] = {}
        for row in state.account_rows:
            changes.update(account_changes(self._d, row)[0])
        if changes:
            sets = [f"{key}={value}" for key, value in changes.items()]
            await self.sacctmgr.run(
                "modify",
                "account",
                "where",
                f"name={self._d.name}",
                *self._s.cluster_args(),
                "set",
                *sets,
                write=True,
                tolerate_nothing=True,
            )
        missing = sorted(set(self._d.users) - state.users)
        if missing:
            await self.sacctmgr.run(
                "add",
                "user",
                ",".join(missing),
                f"account={self._d.name}",
                *self._s.cluster_args(),
                write=True,
                tolerate_nothing=True,
            )
        await self._remove_users(sorted(state.users - set(self._d.users)))
        self._state = None

    async def _move_default_accounts(self, users: Sequence[str]) -> None:
        """Users whose default account is this one and who have other associations get another default first.

        Slurm 22.05 otherwise leaves them with an empty DefaultAccount (they must pass -A to submit anything),
        and later versions refuse the removal outright ("You can not remove the default account of a user",
        issue 8.2). The other account chosen is the first by name, so every attempt chooses the same one.
        """
        shown = await self.sacctmgr.run(
            "show", "user", "where", f"name={','.join(users)}", "format=User,DefaultAccount", write=False
        )
        defaulted = sorted({u for u, _, acct in (ln.partition("|") for ln in shown.stdout.splitlines())
                            if u and acct.strip() == self._d.name})  # fmt: skip
        if not defaulted:
            return
        assoc = await self.sacctmgr.run(
            "show", "assoc", "where", f"user={','.join(defaulted)}", *self._s.cluster_args(), "format=User,Account",
            write=False,
        )  # fmt: skip
        pairs = [line.split("|", 1) for line in assoc.stdout.splitlines() if line.count("|") == 1]
        for user in defaulted:
            others = sorted({acct for u, acct in pairs if u == user and acct and acct != self._d.name})
            if others:
                await self.sacctmgr.run(
                    "modify", "user", "where", f"name={user}", *self._s.cluster_args(),
                    "set", f"defaultaccount={others[0]}", write=True, tolerate_nothing=True,
                )  # fmt: skip

    async def _remove_users(self, users: Sequence[str]) -> None:
        """Remove the users' associations with this account, one user per sacctmgr call: slurmdbd 22.05 refuses a
        multi-user delete ("You can not remove the default account of a user") when the account is one user's
        default and last account while another listed user keeps other accounts (issue 8.2, 50 projects deleted
        at once)."""
        if not users:
            return
        async with self.sacctmgr.membership_lock.take():
            await self._move_default_accounts(users)
            for user in users:  # one by one: see the docstring
                await self.sacctmgr.run(
                    "delete", "user", "where", f"name={user}", f"account={self._d.name}", *self._s.cluster_args(),
                    write=True, tolerate_nothing=True,
                )  # fmt: skip

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        """Retain: no user associations, account kept with no submissions. Delete: users and account gone."""
        state = await self.read()
        ownership.raise_unless_usable(self._claim(state), self._d.owner, self.noun)
        await self._remove_users(sorted(state.users))
        if policy == "Retain":
            if state.exists:
                await self.sacctmgr.run(
                    "modify",
                    "account",
                    "where",
                    f"name={self._d.name}",
                    *self._s.cluster_args(),
                    "set",
                    "grpsubmitjobs=0",
                    "grpjobs=0",
                    write=True,
                    tolerate_nothing=True,
                )
            return DeleteOutcome.RETAINED
        if state.record:
            await self.sacctmgr.run(
                "delete", "account", "where", f"name={self._d.name}", *self._s.cluster_args(),
                write=True, tolerate_nothing=True,
            )  # fmt: skip
        if self._s.cluster:
            await self._delete_orphan_record()
        return DeleteOutcome.DELETED

    async def _delete_orphan_record(self) -> None:
        """With a cluster set, deleting removes only that cluster's association: drop the bare record too."""
        result = await self.sacctmgr.run(
            "show", "account", "withassoc", "where", f"name={self._d.name}", f"format={_FORMAT}", write=False
        )
        rows = [r for r in parse_rows(result.stdout) if r.account == self._d.name]
        if rows and not any(r.cluster for r in rows):
            await self.sacctmgr.run(
                "delete", "account", "where", f"name={self._d.name}", write=True, tolerate_nothing=True
            )
