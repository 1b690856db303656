"""GPU bookings in Slurm: node capacity per GRES type, and one advanced reservation per booking, through
`scontrol` (Slurm 22.05: no `--json`, so one-line `-o` output is parsed).

Facts this adapter is built on (checked against slurmctld 22.05.8, see docs/gpu-reservation.md):

- Reservations cannot hold GRES in 22.05 (`TRES=gres/gpu:a100=2` → "not supported with reservations"),
  so a booking reserves whole nodes: `NodeCnt=<n>` chosen by Slurm from the family's partition
  (`PartitionName=`) and/or feature (`Features=`). `Nodes=a,b NodeCnt=1` would take both nodes.
- `Accounts=<project account>` admits that account's jobs; another account's job asking for the
  reservation is refused ("Access denied to requested reservation") and, without it, does not get the
  reserved nodes during the window (pending, "ReqNodeNotAvail, May be reserved for other job").
- Only root or SlurmUser may create reservations. Times are parsed and printed in the client's time
  zone: every call runs with TZ=UTC, so what we send and read back is UTC.
- A started reservation refuses a new StartTime ("Reservation already started"); EndTime, NodeCnt,
  Accounts and flags can change. Slurm removes a reservation by itself when it ends.
- A missing reservation: `show` says "Reservation <n> not found" (rc 1); `delete` says "Requested
  reservation is invalid" (rc 1). Both mean gone.
- A 22.05 reservation has no comment or tag field to carry an ownership marker (backends/ownership.py).
  A reservation of the booking's name is the booking's when its status records it (`made`), or, before
  that is written (a run killed between create and status), when it is exactly what create makes:
  the project's account alone, the admitted start and end. Anything else of that name (made by a Slurm
  admin, say) is FOREIGN: never changed, never deleted (condition reason NotOwned).
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence

from enclave_operator import reasons
from enclave_operator.api.research_project import DeletionPolicy
from enclave_operator.backends import ownership
from enclave_operator.backends.adapter import NOT_FOUND, DeleteOutcome, Observation
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable
from enclave_operator.backends.slurm_accounts import Sacctmgr, SlurmSettings, error_message

TIME_FORMAT = "%Y-%m-%dT%H:%M:%S"
RESERVATION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
UNUSABLE_STATES = ("DOWN", "DRAIN", "FAIL", "FUTURE", "NOT_RESPONDING", "INVALID", "POWERED_DOWN", "REBOOT")
"""Node state words (base or flag) that take a node's GPUs out of the bookable capacity."""
_FIELD = re.compile(r"\s+(?=[A-Za-z][A-Za-z0-9_/:]*=)")
_GRES_ITEM = re.compile(r"^(?P<name>[^:(]+)(?::(?P<type>[^:(]+))?:(?P<count>[0-9]+)")
_UNAVAILABLE = ("unable to contact slurm controller", "connection refused", "slurm_load", "timed out",
                "socket timed out", "zero bytes")  # fmt: skip


def scontrol(settings: SlurmSettings) -> Sacctmgr:
    """The bounded Slurm client runner (the same one sacctmgr uses) for scontrol, in UTC."""
    return Sacctmgr(settings, program=[settings.scontrol_path], extra_env={"TZ": "UTC"})


# --- parsing scontrol -o (pure) ---------------------------------------------------------------------


def parse_record(line: str) -> dict[str, str]:
    """One `scontrol show ... -o` line as key → value (values may hold spaces, e.g. a node's Reason)."""
    record: dict[str, str] = {}
    for field in _FIELD.split(line.strip()):
        key, sep, value = field.partition("=")
        if sep:
            record[key] = value
    return record


def parse_gres(text: str) -> dict[str | None, int]:
    """`gpu:a100:4(S:0-1),gpu:2` → {"a100": 4, None: 2}; non-GPU GRES are left out."""
    out: dict[str | None, int] = {}
    for item in filter(None, (part.strip() for part in re.split(r",(?![^(]*\))", text or ""))):
        match = _GRES_ITEM.match(item)
        if not match or match["name"] != "gpu":
            continue
        key = match["type"]
        out[key] = out.get(key, 0) + int(match["count"])
    return out


@dataclasses.dataclass(frozen=True)
class SlurmNode:
    name: str
    gpus: Mapping[str | None, int]
    """GPUs by GRES type (None: untyped)."""
    state: str
    usable: bool
    reason: str


def parse_nodes(stdout: str) -> list[SlurmNode]:
    """`scontrol show node -o` → nodes with their typed GPUs and whether they count as capacity."""
    nodes = []
    for line in stdout.splitlines():
        if not line.strip().startswith("NodeName="):
            continue
        record = parse_record(line)
        state = record.get("State", "")
        words = set(re.split(r"[+*]", state.upper()))
        usable = not any(word.startswith(bad) for word in words for bad in UNUSABLE_STATES) and "*" not in state
        nodes.append(SlurmNode(record["NodeName"], parse_gres(record.get("Gres", "")), state, usable,
                               record.get("Reason", "")))  # fmt: skip
    return nodes


@dataclasses.dataclass(frozen=True)
class SlurmFamilyCapacity:
    """Bookable GPUs of one GRES type: usable nodes only; whole nodes are the unit a reservation takes."""

    gres_type: str
    gpus: int
    nodes: tuple[str, ...]
    gpus_per_node: int
    """The smallest GPU count of a usable node of this type (the unit a booking's count must be a multiple of)."""
    unusable: tuple[str, ...]
    """Nodes of this type left out (drained, down, …), with their state."""


def family_capacity(nodes: Sequence[SlurmNode], gres_type: str, partition_nodes: set[str] | None = None,
                    feature_nodes: set[str] | None = None) -> SlurmFamilyCapacity:  # fmt: skip
    """The family's capacity from parsed nodes (optionally only nodes in its partition / with its feature)."""
    usable, unusable, per_node = [], [], []
    for node in nodes:
        count = node.gpus.get(gres_type, 0)
        if count <= 0:
            continue
        if partition_nodes is not None and node.name not in partition_nodes:
            continue
        if feature_nodes is not None and node.name not in feature_nodes:
            continue
        if node.usable:
            usable.append(node.name)
            per_node.append(count)
        else:
            unusable.append(f"{node.name} ({node.state})")
    return SlurmFamilyCapacity(gres_type, sum(per_node), tuple(usable), min(per_node) if per_node else 0,
                               tuple(unusable))  # fmt: skip


def _node_features(stdout: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in stdout.splitlines():
        record = parse_record(line)
        if "NodeName" in record:
            features = record.get("ActiveFeatures") or record.get("AvailableFeatures") or ""
            out[record["NodeName"]] = {f for f in features.split(",") if f and f != "(null)"}
    return out


def _node_partitions(stdout: str) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for line in stdout.splitlines():
        record = parse_record(line)
        if "NodeName" in record:
            out[record["NodeName"]] = {p for p in record.get("Partitions", "").split(",") if p}
    return out


async def read_capacity(runner: Sacctmgr, families: Mapping[str, tuple[str, str | None, str | None]]
                        ) -> dict[str, SlurmFamilyCapacity]:  # fmt: skip
    """Per family name (→ GRES type, partition, feature): the usable GPUs slurmctld reports now. One call."""
    result = await runner.run("show", "node", "-o", write=False, check=False)
    if result.returncode != 0:
        raise classify("show node", result.stdout + result.stderr)
    nodes = parse_nodes(result.stdout)
    features, partitions = _node_features(result.stdout), _node_partitions(result.stdout)
    out = {}
    for family, (gres_type, partition, feature) in families.items():
        in_partition = {n for n, parts in partitions.items() if partition in parts} if partition else None
        with_feature = {n for n, feats in features.items() if feature in feats} if feature else None
        out[family] = family_capacity(nodes, gres_type, in_partition, with_feature)
    return out


def classify(what: str, text: str) -> BackendError:
    """A failed scontrol call as the engine's error kinds; the message is scontrol's own first line."""
    lowered = text.lower()
    # scontrol prints notes before its error ("Note, unless nodes are directly requested…"): prefer the error.
    errors = [line for line in text.splitlines() if "error" in line.lower()]
    short = error_message(errors[-1].split(": ", 1)[-1] if errors else text)
    if any(marker in lowered for marker in _UNAVAILABLE):
        return BackendUnavailable(f"slurmctld unreachable ({what}): {short}")
    if "invalid user id" in lowered or "access denied" in lowered or "permission denied" in lowered:
        return BackendRejected(f"{what}: {short} (reservations need root or SlurmUser)")
    return BackendError(f"{what}: {short}")


# --- the reservation --------------------------------------------------------------------------------


def slurm_time(value: datetime.datetime) -> str:
    return value.astimezone(datetime.UTC).strftime(TIME_FORMAT)


@dataclasses.dataclass(frozen=True)
class DesiredReservation:
    """One booking's reservation, every value already in Slurm's spelling."""

    name: str
    start: datetime.datetime
    end: datetime.datetime
    account: str
    node_count: int
    partition: str | None
    feature: str | None
    flags: tuple[str, ...]

    def __post_init__(self) -> None:
        if not RESERVATION_NAME.match(self.name):
            raise ValueError(f"{self.name!r} is not a valid Slurm reservation name")
        if self.node_count < 1:
            raise ValueError("a reservation needs at least one node")


def reservation_changes(desired: DesiredReservation, observed: Mapping[str, str]) -> tuple[list[str], list[str]]:
    """The `scontrol update` arguments that make the reservation as desired, and a short diff."""
    args: list[str] = []
    diff: list[str] = []
    active = observed.get("State", "").upper() == "ACTIVE"
    if not active and observed.get("StartTime") != slurm_time(desired.start):
        args.append(f"StartTime={slurm_time(desired.start)}")
        diff.append(f"start {observed.get('StartTime')}, want {slurm_time(desired.start)}")
    if observed.get("EndTime") != slurm_time(desired.end):
        args.append(f"EndTime={slurm_time(desired.end)}")
        diff.append(f"end {observed.get('EndTime')}, want {slurm_time(desired.end)}")
    if set(observed.get("Accounts", "").split(",")) != {desired.account}:
        args.append(f"Accounts={desired.account}")
        diff.append(f"accounts {observed.get('Accounts')}, want {desired.account}")
    if observed.get("NodeCnt") != str(desired.node_count):
        args.append(f"NodeCnt={desired.node_count}")
        diff.append(f"{observed.get('NodeCnt')} nodes, want {desired.node_count}")
    have_flags = {f for f in observed.get("Flags", "").split(",") if f}
    missing = [f for f in desired.flags if f not in have_flags]
    if missing:
        args.append(f"Flags={','.join(missing)}")
        diff.append(f"flags missing: {','.join(missing)}")
    if desired.feature and observed.get("Features") != desired.feature:
        args.append(f"Features={desired.feature}")
        diff.append(f"features {observed.get('Features')}, want {desired.feature}")
    return args, diff


def reservation_claim(desired: DesiredReservation, observed: Mapping[str, str] | None, *,
                      made: bool) -> ownership.ClaimResult:  # fmt: skip
    """Whose the reservation of `desired.name` is (see the module docstring: no marker field in 22.05)."""
    if observed is None:
        return ownership.ClaimResult(ownership.Claim.ABSENT, desired.name)
    as_created = (
        set(observed.get("Accounts", "").split(",")) == {desired.account}
        and observed.get("StartTime") == slurm_time(desired.start)
        and observed.get("EndTime") == slurm_time(desired.end)
    )
    if made or as_created:
        return ownership.ClaimResult(ownership.Claim.OWNED, desired.name)
    return ownership.ClaimResult(
        ownership.Claim.FOREIGN,
        desired.name,
        f"Slurm reservation {desired.name} exists and was not made for this booking (accounts "
        f"{observed.get('Accounts') or '(none)'}, {observed.get('StartTime')} to {observed.get('EndTime')}); "
        "it is left as it is: rename the booking or ask the Slurm admins to remove it",
    )


class SlurmReservationAdapter:
    """A booking's advanced reservation (SchedulerReady)."""

    part = reasons.SCHEDULER_READY
    noun = "SlurmReservation"
    member_key = ""

    def __init__(self, runner: Sacctmgr, desired: DesiredReservation, *, made: bool = False) -> None:
        """`made`: the booking's status records this reservation as made for it (ownership, see claim)."""
        self._runner, self._d, self._made = runner, desired, made
        self.observed: dict[str, str] | None = None
        """The reservation as the last observe saw it (Nodes for status), None when missing or not ours."""

    async def claim(self) -> ownership.ClaimResult:
        return reservation_claim(self._d, await self.read(), made=self._made)

    async def read(self) -> dict[str, str] | None:
        result = await self._runner.run("show", "reservation", self._d.name, "-o", write=False, check=False)
        text = result.stdout + result.stderr
        if result.returncode != 0:
            if "not found" in text.lower():
                return None
            raise classify(f"show reservation {self._d.name}", text)
        for line in result.stdout.splitlines():
            record = parse_record(line)
            if record.get("ReservationName") == self._d.name:
                return record
        return None

    async def observe(self) -> Observation:
        self.observed = None
        found = await self.read()
        if found is None:
            return dataclasses.replace(NOT_FOUND, resource=self._d.name)
        claim = reservation_claim(self._d, found, made=self._made)
        if claim.claim is not ownership.Claim.OWNED:
            raise ownership.NotOwned(claim.message)
        self.observed = found
        self._made = True  # ours from here on, also once the update below changes its window
        diff = reservation_changes(self._d, self.observed)[1]
        return Observation(True, not diff, "; ".join(diff), self._d.name)

    async def create(self) -> None:
        d = self._d
        args = [
            "create", "reservation", f"ReservationName={d.name}", f"StartTime={slurm_time(d.start)}",
            f"EndTime={slurm_time(d.end)}", f"Accounts={d.account}", f"NodeCnt={d.node_count}",
        ]  # fmt: skip
        if d.partition:
            args.append(f"PartitionName={d.partition}")
        if d.feature:
            args.append(f"Features={d.feature}")
        if d.flags:
            args.append(f"Flags={','.join(d.flags)}")
        result = await self._runner.run(*args, write=True, check=False)
        if result.returncode != 0:
            text = result.stdout + result.stderr
            if "already exists" in text.lower() or "duplicate" in text.lower():
                return  # made meanwhile: the next observe decides whose it is
            raise classify(f"create reservation {d.name}", text)
        self._made = True

    async def update(self, observation: Observation) -> None:
        observed = self.observed
        if observed is None:
            return  # observe found nothing of ours
        args = reservation_changes(self._d, observed)[0]
        if not args:
            return
        result = await self._runner.run("update", f"ReservationName={self._d.name}", *args, write=True, check=False)
        if result.returncode != 0:
            raise classify(f"update reservation {self._d.name}", result.stdout + result.stderr)

    async def delete(self, policy: DeletionPolicy) -> DeleteOutcome:
        """Both policies remove it: a reservation holds no data. Only after an observe that found it ours."""
        if self.observed is None:
            return DeleteOutcome.DELETED
        result = await self._runner.run("delete", f"ReservationName={self._d.name}", write=True, check=False)
        text = (result.stdout + result.stderr).lower()
        if result.returncode != 0 and "invalid" not in text and "not found" not in text:
            raise classify(f"delete reservation {self._d.name}", result.stdout + result.stderr)
        return DeleteOutcome.DELETED
