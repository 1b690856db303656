"""Pure parts of the Slurm adapter: validation, sacctmgr output parsing, normalising and diffing."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import sys
import time
from pathlib import Path
from typing import Any

import pydantic
import pytest

from enclave_operator.api.research_project import SlurmCompute, SlurmLimits
from enclave_operator.backends import ownership
from enclave_operator.backends import slurm_accounts as sa
from enclave_operator.backends.errors import BackendError, BackendRejected, BackendUnavailable

OWNER = ownership.Owner("proj-a", "uid-1")
MARK = "enclave.io/project:proj-a:uid-1"


def compute(**values: Any) -> SlurmCompute:
    return SlurmCompute.model_validate(values)


def test_desired_account_normalises_every_value() -> None:
    want = sa.desired_account(
        "proj-a",
        'Étude: Cardiac MRI | "phase 2"',
        compute(parent="research", fairshare=10, limits={"cpu": 16, "mem": "2Ti", "gpu": 2}, qos=["normal", "gpu"]),
        ["bob", "alice", "bob"],
        True,
        owner=OWNER,
        allowed_parents=["root", "research"],
    )
    assert want == sa.DesiredSlurmAccount(
        name="proj-a",
        description="etude: cardiac mri phase 2",
        parent="research",
        fairshare=10,
        grp_tres={"cpu": "16", "mem": "2097152M", "gres/gpu": "2"},
        qos=["gpu", "normal"],
        users=["alice", "bob"],
        cordoned=True,
        owner=OWNER,
        organization=MARK,
    )


def test_user_prefix_is_applied() -> None:
    want = sa.desired_account("p", None, compute(), ["alice"], False, owner=OWNER, user_prefix="ext_")
    assert want.users == ["ext_alice"] and want.description == "p"


@pytest.mark.parametrize(
    ("name", "slurm", "users", "field", "why"),
    [
        ("Proj", {}, [], "Slurm account name", "uppercase would be lowercased by Slurm and never match"),
        ("p,q", {}, [], "Slurm account name", "a comma makes sacctmgr see two accounts"),
        ("p", {}, ["bad user"], "spec.members[].user", "a space splits the sacctmgr argument"),
        ("p", {}, ["a=b"], "spec.members[].user", "'=' is sacctmgr's option syntax"),
        ("p", {"parent": "p"}, [], "spec.compute.slurm.parent", "an account cannot be its own parent"),
        ("p", {"parent": "other-project"}, [], "spec.compute.slurm.parent", "finding 8.6: not an allowed parent"),
        ("p", {"limits": {"mem": "lots"}}, [], "spec.compute.slurm.limits.mem", "not a quantity"),
        ("p", {"limits": {"mem": "-1Gi"}}, [], "spec.compute.slurm.limits.mem", "negative memory"),
        ("x" * 65, {}, [], "Slurm account name", "longer than 64 characters"),
    ],
)
def test_desired_account_rejects(name: str, slurm: dict[str, Any], users: list[str], field: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(field)):
        sa.desired_account(name, None, raw(**slurm), users, False, owner=OWNER)


def raw(**values: Any) -> SlurmCompute:
    """Bypass the API model's own validation: the adapter must not rely on it (older CRDs, direct use)."""
    base = compute().model_dump()
    limits = SlurmLimits.model_construct(**{**base.pop("limits"), **values.pop("limits", {})})
    return SlurmCompute.model_construct(**{**base, **values, "limits": limits})


@pytest.mark.parametrize(
    ("limits", "field", "why"),
    [
        ({"cpu": -1}, "spec.compute.slurm.limits.cpu", "negative cores"),
        ({"gpu": -2}, "spec.compute.slurm.limits.gpu", "negative GPUs"),
        ({"cpu": True}, "spec.compute.slurm.limits.cpu", "a boolean is not a count"),
    ],
)
def test_desired_account_rejects_bad_counts(limits: dict[str, Any], field: str, why: str) -> None:
    with pytest.raises(ValueError, match=field):
        sa.desired_account("p", None, raw(limits=limits), [], False, owner=OWNER)


@pytest.mark.parametrize(
    ("quantity", "mb", "why"),
    [
        ("2Ti", 2097152, "binary suffix: exact MiB"),
        ("1Gi", 1024, "one GiB"),
        ("1G", 954, "decimal GB rounds up to whole MiB"),
        ("1", 1, "one byte still needs a whole MiB"),
        ("0", 0, "zero is a real limit (no memory)"),
        (1048576, 1, "integer bytes"),
    ],
)
def test_mem_to_mb(quantity: str | int, mb: int, why: str) -> None:
    assert sa.mem_to_mb(quantity) == mb, why


@pytest.mark.parametrize(
    ("text", "mb", "why"),
    [
        ("2T", 2097152, "sacctmgr collapses exact multiples of 1024"),
        ("1G", 1024, "GiB"),
        ("1500M", 1500, "not a multiple: stays in M"),
        ("1", 1, "bare number is MB"),
        ("0", 0, "zero"),
        ("512K", 1, "K rounds up to a whole MB"),
    ],
)
def test_slurm_mem_to_mb(text: str, mb: int, why: str) -> None:
    assert sa.slurm_mem_to_mb(text) == mb, why


@pytest.mark.parametrize(
    ("text", "parsed", "why"),
    [
        ("cpu=16,gres/gpu=2,mem=2T", {"cpu": "16", "gres/gpu": "2", "mem": "2097152M"}, "Slurm's read-back form"),
        ("mem=1G,cpu=4", {"cpu": "4", "mem": "1024M"}, "order does not matter"),
        ("", {}, "no limits"),
        ("billing=100,node=2", {"billing": "100", "node": "2"}, "unmanaged TRES are kept, not interpreted"),
    ],
)
def test_parse_tres(text: str, parsed: dict[str, str], why: str) -> None:
    assert sa.parse_tres(text) == parsed, why


def test_parse_rows_keeps_a_pipe_in_the_description() -> None:
    out = "p|enclave|||root|5|cpu=1|||normal|o|a | b\np|enclave|alice|||1||||normal|o|a | b\n\n"
    rows = sa.parse_rows(out)
    assert [r.user for r in rows] == ["", "alice"]
    assert rows[0].description == "a | b" and rows[0].is_account_row


def test_parse_rows_rejects_other_shapes() -> None:
    with pytest.raises(ValueError, match="fields"):
        sa.parse_rows("p|enclave|alice\n")


@pytest.mark.parametrize(
    ("cluster", "rows", "exists", "record", "users", "why"),
    [
        (None, "p|c1|||root|1||||||d\np|c1|bob|||1||||||d", True, True, {"bob"}, "account and one user"),
        ("c1", "p|||||||||||d", False, True, set(), "record only: no association on the cluster"),
        ("c1", "", False, False, set(), "nothing at all"),
        ("c1", "p|c2|||root|1||||||d\np|c1|||root|1||||||d", True, True, set(), "other clusters are ignored"),
    ],
)
def test_account_state(cluster: str | None, rows: str, exists: bool, record: bool, users: set[str], why: str) -> None:
    state = sa.account_state(sa.parse_rows(rows), "p", cluster)
    assert (state.exists, state.record, set(state.users)) == (exists, record, users), why
    assert all(r.cluster in ("", cluster) for r in state.account_rows) or cluster is None


WANT = sa.DesiredSlurmAccount(
    name="p",
    description="proj",
    parent="root",
    fairshare=5,
    grp_tres={"cpu": "16", "mem": "2097152M"},
    qos=["normal"],
    users=["alice"],
    cordoned=False,
    owner=OWNER,
    organization=MARK,
)


def row(**values: str) -> sa.AssocRow:
    base = dict(account="p", cluster="c", user="", partition="", parent="root", fairshare="5", grp_tres="cpu=16,mem=2T")
    base |= dict(grp_submit_jobs="", grp_jobs="", qos="normal", organization=MARK, description="proj")
    return sa.AssocRow(**{**base, **values})


@pytest.mark.parametrize(
    ("actual", "want", "changes", "why"),
    [
        (row(), WANT, {}, "identical after normalising mem 2T = 2097152M"),
        (row(grp_tres="mem=2T,cpu=16,billing=9"), WANT, {}, "TRES order and unmanaged TRES do not matter"),
        (row(fairshare="99"), WANT, {"fairshare": "5"}, "hand-made fairshare change"),
        (
            row(grp_tres="cpu=16,gres/gpu=4,mem=2T"),
            WANT,
            {"grptres": "gres/gpu=-1"},
            "a limit not in the spec is cleared",
        ),
        (row(grp_tres="cpu=8"), WANT, {"grptres": "cpu=16,mem=2097152M"}, "only differing limits are set"),
        (row(qos="normal,high"), WANT, {"qos": "normal"}, "extra QOS removed"),
        (row(qos="high"), dataclasses.replace(WANT, qos=[]), {}, "empty qos = inherit, unmanaged"),
        (row(parent="other"), WANT, {"parent": "root"}, "moved account moved back"),
        (row(description="x"), WANT, {"description": "proj"}, "description"),
        (
            row(),
            dataclasses.replace(WANT, cordoned=True),
            {"grpsubmitjobs": "0", "grpjobs": "0"},
            "cordon",
        ),
        (row(grp_submit_jobs="0", grp_jobs="0"), WANT, {"grpsubmitjobs": "-1", "grpjobs": "-1"}, "un-cordon"),
        (row(grp_submit_jobs="0"), WANT, {"grpsubmitjobs": "-1", "grpjobs": "-1"}, "half a cordon is repaired"),
    ],
)
def test_account_changes(actual: sa.AssocRow, want: sa.DesiredSlurmAccount, changes: dict[str, str], why: str) -> None:
    got, diff = sa.account_changes(want, actual)
    assert got == changes, why
    assert bool(diff) == bool(changes), why


def test_member_states() -> None:
    assert sa.member_states({"alice": "ext_alice", "bob": "ext_bob"}, ["ext_alice", "ext_carol"]) == {
        "alice": sa.ASSOCIATED,
        "bob": sa.MISSING,
    }


@pytest.mark.parametrize(
    ("text", "kind", "words", "why"),
    [
        ("sacctmgr: error: slurm_persist_conn_open_without_init: failed to open persistent connection to "
         "host:127.0.0.1:6819: Connection refused", BackendUnavailable, "unreachable", "slurmdbd down"),
        ("sacctmgr: error: Problem talking to the database: Connection refused", BackendUnavailable,
         "unreachable", "database down"),
        (" Error with request: Job(s) active, cancel job(s) before remove", BackendError, "running or pending jobs",
         "delete with jobs: retry later"),
        ("sacctmgr: error: You gave a bad qos 'nosuch'. Valid QOS's are normal\n Unknown option: qos=nosuch",
         BackendRejected, "bad qos 'nosuch'", "missing QOS: no fast retry"),
        (" Parent account 'x' doesn't exist on cluster c\n        Contact your admin to add this account.",
         BackendRejected, "Parent account 'x'", "missing parent"),
        ("something odd", BackendError, "exit 1", "anything else"),
    ],
)  # fmt: skip
def test_classify_failure(text: str, kind: type[BackendError], words: str, why: str) -> None:
    error = sa.classify_failure("sacctmgr add account", 1, text)
    assert type(error) is kind, why
    assert words in str(error), why
    assert len(str(error)) < 300


@pytest.mark.parametrize(
    ("stdout", "rc", "nothing", "why"),
    [
        (" Nothing new added.\n", 1, True, "duplicate add"),
        (" Nothing modified\n", 1, True, "missing modify"),
        (" Nothing deleted\n", 1, True, "missing delete"),
        (" Nothing deleted\n", 0, False, "rc 0 is plain success"),
        (" Error with request\n", 1, False, "a real failure"),
    ],
)
def test_nothing_done(stdout: str, rc: int, nothing: bool, why: str) -> None:
    assert sa.SacctmgrResult(rc, stdout, "").nothing_done is nothing, why


def test_settings_are_camel_case_strict_and_frozen() -> None:
    s = sa.SlurmSettings.model_validate({"sacctmgrPath": "/usr/bin/sacctmgr", "slurmConf": "/x/slurm.conf",
                                         "cluster": "enclave", "timeoutSeconds": 3, "userPrefix": "ext_"})  # fmt: skip
    assert str(s.slurm_conf) == "/x/slurm.conf" and s.timeout_seconds == 3
    with pytest.raises(pydantic.ValidationError):
        sa.SlurmSettings.model_validate({"sacctmgr": "x"})
    with pytest.raises(pydantic.ValidationError):
        sa.SlurmSettings.model_validate({"cluster": "Big Cluster"})
    with pytest.raises(pydantic.ValidationError):
        s.cluster = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("settings", "args", "why"),
    [
        ({}, [], "no cluster set: sacctmgr's defaults (every cluster for adds)"),
        ({"cluster": "enclave"}, ["cluster=enclave"], "the managed cluster, as every command of the operator names it"),
    ],
)
def test_cluster_args(settings: dict[str, str], args: list[str], why: str) -> None:
    assert sa.SlurmSettings.model_validate(settings).cluster_args() == args, why


ARGV_LOG = """#!/bin/sh
echo "$*" >> {log}
case "$*" in
  *"show account withassoc"*) echo "p|c|||root|5|||||{org}|d"; echo "p|c|alice||root|5|||||{org}|d" ;;
esac
"""


async def test_the_adapter_reads_and_writes_on_its_runners_cluster(tmp_path: Path) -> None:
    """The adapter has no settings of its own: its shared reads (the runner's) and its filters and writes name one
    cluster, so it cannot read another cluster's rows than it writes."""
    log, fake = tmp_path / "argv", tmp_path / "sacctmgr"
    fake.write_text(ARGV_LOG.format(log=log, org=sa.organization_marker(WANT.owner)))
    fake.chmod(0o755)
    runner = sa.Sacctmgr(sa.SlurmSettings(sacctmgrPath=str(fake), cluster="c"), program=[str(fake)])
    adapter = sa.SlurmAccountAdapter(dataclasses.replace(WANT, name="p", users=("bob",)), runner)
    assert (await adapter.observe()).diff.endswith("users missing: bob; users not members: alice")
    await adapter.delete("Retain")
    calls = log.read_text().splitlines()
    assert [" ".join(c.split()[:2]) for c in calls] == ["show account", "show account", "show user", "delete user",
                                                        "modify account"], calls  # fmt: skip
    assert all("cluster=c" in c.split() for c in calls if not c.startswith("show user")), calls


def fake_sacctmgr(tmp_path: Path, body: str) -> sa.Sacctmgr:
    script = tmp_path / "sacctmgr"
    script.write_text(f"#!/bin/sh\n{body}\n")
    script.chmod(0o755)
    settings = sa.SlurmSettings(sacctmgrPath=str(script), slurmConf=Path("/x/slurm.conf"), timeoutSeconds=0.5)
    return sa.Sacctmgr(settings)


async def test_runner_passes_argv_and_slurm_conf(tmp_path: Path) -> None:
    runner = fake_sacctmgr(tmp_path, 'echo "$SLURM_CONF|$*"')
    result = await runner.run("show", "account", "where", "name=a b", write=False)
    assert result.stdout.strip() == "/x/slurm.conf|-i -n -P show account where name=a b", "argv, never a shell"
    assert [(c.verb, c.write) for c in runner.calls] == [("show account", False)]


async def test_runner_kills_a_hung_sacctmgr(tmp_path: Path) -> None:
    runner = fake_sacctmgr(tmp_path, "exec sleep 30")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable, match="did not answer"):
        await runner.run("show", "account", write=False)
    assert time.monotonic() - start < 2


@pytest.mark.parametrize(
    ("body", "tolerate", "raises", "why"),
    [
        ('echo " Nothing new added."; exit 1', True, None, "duplicate add is success when the intent is met"),
        ('echo " Nothing new added."; exit 1', False, BackendError, "unless the caller says otherwise"),
        ('echo "sacctmgr: error: Sending PersistInit msg: Connection refused" >&2; exit 1', True,
         BackendUnavailable, "slurmdbd down"),
    ],
)  # fmt: skip
async def test_runner_exit_codes(
    tmp_path: Path, body: str, tolerate: bool, raises: type[BackendError] | None, why: str
) -> None:
    runner = fake_sacctmgr(tmp_path, body)
    if raises is None:
        assert (await runner.run("add", "account", "p", write=True, tolerate_nothing=tolerate)).nothing_done, why
    else:
        with pytest.raises(raises):
            await runner.run("add", "account", "p", write=True, tolerate_nothing=tolerate)


async def test_runner_missing_binary(tmp_path: Path) -> None:
    runner = sa.Sacctmgr(sa.SlurmSettings(sacctmgrPath=str(tmp_path / "nope")))
    with pytest.raises(BackendError, match="cannot run"):
        await runner.run("show", "account", write=False)


async def test_stopping_a_process_that_has_already_exited_is_not_an_error() -> None:
    """The race the N=200 bench hit: sacctmgr ended between the admission check's timeout and the kill, kill()
    raised ProcessLookupError, and that replaced the timeout: the webhook failed instead of skipping the check."""
    import asyncio

    from enclave_operator.backends.slurm_accounts import _stop

    proc = await asyncio.create_subprocess_exec("true")
    await proc.wait()
    with pytest.raises(ProcessLookupError):
        proc.kill()  # what the old code called
    await _stop(proc)
    assert proc.returncode == 0


async def test_stopping_a_running_process_kills_and_reaps_it() -> None:
    import asyncio

    from enclave_operator.backends.slurm_accounts import _stop

    proc = await asyncio.create_subprocess_exec("sleep", "30")
    await _stop(proc)
    assert proc.returncode == -9


async def test_an_edits_write_goes_before_the_writes_of_waiting_creations(tmp_path: Path) -> None:
    """sacctmgr writes run one at a time; with 16 creations in flight an edit's write waited behind all of theirs
    (the N=200 bench with Slurm: edits took a median 20 s). Now by the priority of the reconcile making it."""
    import asyncio

    from enclave_operator.priority import Priority, Slots

    log = tmp_path / "calls"
    fake = tmp_path / "sacctmgr"
    fake.write_text(f'#!/bin/sh\necho "$3" >> {log}\nsleep 0.2\n')
    fake.chmod(0o755)
    runner = sa.Sacctmgr(sa.SlurmSettings(sacctmgrPath=str(fake)), program=[str(fake), "add"])
    reconciles = Slots(16)

    async def write(name: str, priority: Priority) -> None:
        async with reconciles.take(priority):
            await runner.run("account", name, write=True)

    tasks = [asyncio.create_task(write(f"create{i}", Priority.CREATE)) for i in range(4)]
    await asyncio.sleep(0.05)  # create0 runs, the others wait
    tasks.append(asyncio.create_task(write("edit", Priority.EDIT)))
    await asyncio.gather(*tasks)
    assert log.read_text().split() == ["create0", "edit", "create1", "create2", "create3"]


async def test_an_edit_removing_a_member_goes_before_waiting_removals(tmp_path: Path) -> None:
    """Removing members holds the runner's membership turn (issue 8.2); an edit's removal waited behind every
    deletion and resync already queued for it (a FIFO lock). Now by the reconcile's priority, like the writes."""
    import asyncio

    from enclave_operator.priority import Priority, Slots

    log = tmp_path / "calls"
    fake = tmp_path / "sacctmgr"
    fake.write_text(f'#!/bin/sh\n[ "$1" = delete ] && echo "$5" >> {log}\nsleep 0.1\n')
    fake.chmod(0o755)
    runner = sa.Sacctmgr(sa.SlurmSettings(sacctmgrPath=str(fake)), program=[str(fake)])
    reconciles = Slots(16)

    async def remove(account: str, priority: Priority) -> None:
        adapter = sa.SlurmAccountAdapter(dataclasses.replace(WANT, name=account), runner)
        async with reconciles.take(priority):
            await adapter._remove_users(["alice"])

    tasks = [asyncio.create_task(remove(f"gone{i}", Priority.RESYNC)) for i in range(3)]
    await asyncio.sleep(0.05)  # gone0 holds the membership turn, the others wait
    tasks.append(asyncio.create_task(remove("edited", Priority.EDIT)))
    await asyncio.gather(*tasks)
    assert log.read_text().split() == [f"account={a}" for a in ("gone0", "edited", "gone1", "gone2")]


def test_load_file_adds_accounts_under_their_parents_then_their_users() -> None:
    """The flat file of a batched creation: one Parent block per parent, the users after all accounts, the
    organization marker's colons inside quotes, no DefaultAccount (module docstring: slurmdbd 22.05 rolled back
    earlier changes of a load that set one for an existing user), no options on the Cluster line."""
    other = dataclasses.replace(WANT, name="q", parent="dept", qos=[], grp_tres={}, users=["bob", "carol"],
                                cordoned=True, organization="enclave.io/project:q:uid-q")  # fmt: skip
    assert sa.load_file("c", [WANT, other]).splitlines() == [
        "Cluster - 'c'",
        "Parent - 'dept'",
        "Account - 'q':Description='proj':Organization='enclave.io/project:q:uid-q':Fairshare=5:"
        "GrpSubmitJobs=0:GrpJobs=0",
        "Parent - 'root'",
        f"Account - 'p':Description='proj':Organization='{MARK}':Fairshare=5:GrpTRES=cpu=16,mem=2097152M:QOS='normal'",
        "Parent - 'p'",
        "User - 'alice'",
        "Parent - 'q'",
        "User - 'bob'",
        "User - 'carol'",
    ]


def test_load_file_refuses_a_value_it_cannot_quote() -> None:
    with pytest.raises(ValueError, match="flat file"):
        sa.load_file("c", [dataclasses.replace(WANT, description="it's")])


async def test_without_a_cluster_or_with_batches_of_one_accounts_are_added_one_by_one() -> None:
    """A load must name its cluster (another name silently creates a cluster in slurmdbd)."""
    for settings in ({}, {"cluster": "c", "batchCreations": 1}):
        runner = sa.Sacctmgr(sa.SlurmSettings.model_validate(settings), program=["false"])
        assert await runner.add_batched(WANT) is False
        assert not runner.calls, "no sacctmgr call"


async def test_a_load_that_fails_unexpectedly_is_each_waiting_projects_error(tmp_path: Path) -> None:
    """Not a cancellation of every reconcile waiting for the load (which would look like a shutdown to them)."""
    fake = tmp_path / "sacctmgr"
    fake.write_text("#!/bin/sh\nexit 0\n")  # shows no account: both go into the load
    fake.chmod(0o755)
    runner = sa.Sacctmgr(sa.SlurmSettings(sacctmgrPath=str(fake), cluster="c"), program=[str(fake)])

    async def broken(cluster: str, accounts: object) -> set[str]:
        raise KeyError("bug")

    runner._load = broken  # type: ignore[method-assign]
    import asyncio

    results = await asyncio.gather(runner.add_batched(WANT), runner.add_batched(dataclasses.replace(WANT, name="q")),
                                   return_exceptions=True)  # fmt: skip
    assert all(isinstance(r, sa.BackendError) and "internal error (KeyError)" in str(r) for r in results), results


SHOWS = """#!{python}
import sys, time
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(" ".join(args[4:6]) + " " + next(a for a in args if a.startswith(("name=", "account="))) + "\\n")
if {fail}:
    print("sacctmgr: error: Problem talking to the database", file=sys.stderr)
    sys.exit(1)
time.sleep(0.3)
names = next(a for a in args if a.startswith(("name=", "account="))).split("=", 1)[1].split(",")
for name in names:
    account_row = [name, "c", "", "", "root", "1", "", "", "", "", "org-" + name, "descr"]
    if args[4] == "account" and name.startswith("acct"):
        print("|".join(account_row))
        print("|".join([name, "c", "alice", *account_row[3:]]))
    if args[4] == "assoc" and name.startswith("bare"):
        print("|".join(account_row[:10]))
"""


def fake_reader(tmp_path: Path, *, fail: bool = False) -> tuple[sa.Sacctmgr, Path]:
    log, fake = tmp_path / "calls", tmp_path / "sacctmgr"
    fake.write_text(SHOWS.format(python=sys.executable, log=str(log), fail=fail))
    fake.chmod(0o755)
    return sa.Sacctmgr(
        sa.SlurmSettings(sacctmgrPath=str(fake), cluster="c"), program=[str(fake), "-i", "-n", "-P"]
    ), log


async def test_reads_of_accounts_asked_for_meanwhile_share_one_sacctmgr_call(tmp_path: Path) -> None:
    """A rollout's reconciles each read their account two or three times; one call per read kept them waiting."""
    runner, log = fake_reader(tmp_path)
    first = asyncio.create_task(runner.show_account("acct0"))
    await asyncio.sleep(0.1)  # its call is in flight: the next reads wait for it and go together
    names = [f"acct{i}" for i in range(1, 30)] + ["bare1", "missing1"]
    found = await asyncio.gather(*(runner.show_account(name) for name in names))
    assert [r.account for r in (await first).rows] == ["acct0", "acct0"]
    assert log.read_text().splitlines() == [
        "account withassoc name=acct0",
        f"account withassoc name={','.join(names)}",
        "assoc where account=bare1,missing1",
    ], "one call for the first read, one for all that waited, one `show assoc` for those it did not list"
    by_name = dict(zip(names, found, strict=True))
    assert all([r.account for r in by_name[f"acct{i}"].rows] == [f"acct{i}"] * 2 for i in range(1, 30))
    assert by_name["bare1"].rows == () and by_name["bare1"].associations == ("bare1|c|||root|1||||",)
    assert by_name["missing1"] == sa.AccountRows((), ())


async def test_an_account_listed_only_by_show_assoc_reads_as_desired_for_what_show_assoc_lacks(tmp_path: Path) -> None:
    runner, _ = fake_reader(tmp_path)
    adapter = sa.SlurmAccountAdapter(dataclasses.replace(WANT, name="bare2"), runner)
    state = await adapter.read()
    assert state.exists and state.organization == WANT.organization, "the marker we wrote (module docstring)"
    assert [(r.account, r.fairshare, r.description) for r in state.account_rows] == [("bare2", "1", WANT.description)]


async def test_a_failed_shared_read_is_every_waiting_readers_error_and_the_next_read_starts_afresh(
    tmp_path: Path,
) -> None:
    runner, log = fake_reader(tmp_path, fail=True)
    results = await asyncio.gather(*(runner.show_account(f"acct{i}") for i in range(3)), return_exceptions=True)
    assert all(isinstance(r, BackendUnavailable) for r in results), results
    assert len(log.read_text().splitlines()) == 1, "one call failed for all three"
    (tmp_path / "again").mkdir()
    reader, _ = fake_reader(tmp_path / "again")
    assert [r.account for r in (await reader.show_account("acct9")).rows] == ["acct9", "acct9"]


async def test_a_reader_that_stops_waiting_leaves_the_others_their_answer(tmp_path: Path) -> None:
    """An admission check gives up after ownership.ADMISSION_CHECK_S: the read goes on for the reconciles."""
    runner, _ = fake_reader(tmp_path)
    impatient = asyncio.create_task(runner.show_account("acct1"))
    patient = asyncio.create_task(runner.show_account("acct1"))
    await asyncio.sleep(0.05)
    impatient.cancel()
    assert [r.account for r in (await patient).rows] == ["acct1", "acct1"]



LOADS = """#!{python}
import sys, time
args = sys.argv[1:]
with open({log!r}, "a") as log:
    log.write(("load" if args[0] == "load" else " ".join(args[:2])) + "\\n")
if args[0] == "load":
    time.sleep(0.6)
elif "format=Account" in args:
    print("root")  # the load's own pre-read: only the parent exists
elif args[0] == "show":
    time.sleep(1.0)  # the edit's read: slurmdbd answers it after the load in flight
    print("|".join(["e", "c", "", "", "root", "1", "", "", "", "", "org-e", "descr"]))
"""


def fake_loader(tmp_path: Path) -> tuple[sa.Sacctmgr, Path]:
    log, fake = tmp_path / "calls", tmp_path / "sacctmgr"
    fake.write_text(LOADS.format(python=sys.executable, log=str(log)))
    fake.chmod(0o755)
    return sa.Sacctmgr(sa.SlurmSettings(sacctmgrPath=str(fake), cluster="c"), program=[str(fake)]), log


async def edit_during_loads(runner: sa.Sacctmgr, edit_priority: Any) -> None:
    """A load in flight, two creations waiting for the next one, and an edit started meanwhile at `edit_priority`
    (None: outside any slot, as a webhook's check) that reads its account, writes, and reads it back."""
    from enclave_operator.priority import Priority, Slots

    slots = Slots(8)

    async def create(name: str) -> None:
        async with slots.take(Priority.CREATE):
            await runner.add_batched(dataclasses.replace(WANT, name=name))

    async def edit() -> None:
        async with contextlib.AsyncExitStack() as stack:
            if edit_priority is not None:
                await stack.enter_async_context(slots.take(edit_priority))
            await runner.show_account("e")
            await runner.run("add", "user", "carol", "account=e", write=True)
            await runner.show_account("e")

    first = asyncio.create_task(create("a0"))
    await asyncio.sleep(0.1)  # a0's load runs
    await asyncio.gather(first, create("a1"), create("a2"), edit())


FIRST_LOAD = ["show account", "load", "show account"]
"""The load's pre-read, the load, the edit's read (ends after the load)."""


async def test_an_edit_waits_for_at_most_the_load_in_flight(tmp_path: Path) -> None:
    """The edit's read ended after the load in flight; the next load had started meanwhile and the edit's write
    waited for that one too: edits during a rollout with Slurm took up to 11 s. Now the next load waits for it."""
    from enclave_operator.priority import Priority

    runner, log = fake_loader(tmp_path)
    await edit_during_loads(runner, Priority.EDIT)
    assert log.read_text().splitlines() == [*FIRST_LOAD, "add user", "show account", "show account", "load"]


@pytest.mark.parametrize("priority", [None, "CREATE"], ids=["webhook check", "creation"])
async def test_only_an_edits_reconcile_holds_the_next_load_back(tmp_path: Path, priority: str | None) -> None:
    """A webhook's check (EDIT, but outside any slot: every creation's admission reads its account) and a
    creation's reconcile go after the next load as before."""
    from enclave_operator.priority import Priority

    runner, log = fake_loader(tmp_path)
    await edit_during_loads(runner, priority and Priority[priority])
    assert log.read_text().splitlines() == [*FIRST_LOAD, "show account", "load", "add user", "show account"]


async def test_a_load_waits_for_edits_at_most_load_defer_max_s(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Edits that keep coming do not hold creations back."""
    from enclave_operator.priority import Priority

    monkeypatch.setattr(sa, "LOAD_DEFER_MAX_S", 0.1)
    runner, log = fake_loader(tmp_path)
    await edit_during_loads(runner, Priority.EDIT)
    assert log.read_text().splitlines() == [*FIRST_LOAD, "show account", "load", "add user", "show account"]
