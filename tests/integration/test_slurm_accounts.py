"""SlurmAccountAdapter against a real Slurm 22.05 (munged, MariaDB, slurmdbd, slurmctld on loopback).

What is checked is what `sacctmgr show assoc` says afterwards, not what the adapter believes. The
outage tests run last: they stop and restart slurmdbd.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
from collections.abc import Iterator, Sequence
from typing import Any

import pytest

from enclave_operator import reasons
from enclave_operator.api.research_project import SlurmCompute
from enclave_operator.backends import ownership
from enclave_operator.backends.slurm_accounts import (
    ASSOCIATED,
    DesiredSlurmAccount,
    Sacctmgr,
    SlurmAccountAdapter,
    desired_account,
)
from enclave_operator.engine.managed import finalize_part, reconcile_part
from enclave_operator.engine.recorder import ListRecorder
from localenv.runtime import RunDir
from support.slurm import SlurmEnv

LIMITS = {"cpu": 16, "mem": "2Ti", "gpu": 2}


@pytest.fixture(scope="module")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmEnv]:
    run = RunDir(tmp_path_factory.mktemp("slurm-run"))
    try:
        yield SlurmEnv.start(run)
    finally:
        run.stop_all()


@pytest.fixture
def account() -> str:
    return f"t{secrets.token_hex(4)}"


def desired(
    name: str, users: Sequence[str] = ("alice", "bob"), cordoned: bool = False, owner: ownership.Owner | None = None,
    **slurm: Any,
) -> DesiredSlurmAccount:  # fmt: skip
    spec = SlurmCompute.model_validate({"fairshare": 5, "limits": LIMITS, "qos": ["normal"], **slurm})
    owner = owner or ownership.Owner(name, f"uid-{name}")
    return desired_account(name, f"Project {name}", spec, users, cordoned, owner=owner,
                           allowed_parents=["root", spec.parent])  # fmt: skip


def adapter(env: SlurmEnv, want: DesiredSlurmAccount, **settings: Any) -> SlurmAccountAdapter:
    return SlurmAccountAdapter(want, Sacctmgr(env.settings(**settings)))


async def converge(env: SlurmEnv, want: DesiredSlurmAccount) -> tuple[Any, SlurmAccountAdapter, ListRecorder]:
    a, recorder = adapter(env, want), ListRecorder()
    outcome = await reconcile_part(a, recorder)
    assert outcome.condition.status == "True", outcome.condition
    return outcome, a, recorder


async def test_create_matches_spec_and_second_reconcile_writes_nothing(slurm: SlurmEnv, account: str) -> None:
    outcome, a, recorder = await converge(slurm, desired(account))
    assert outcome.wrote
    assert ("Normal", "CreatedSlurmAccount", f"created slurmaccount {account}") in recorder.events
    row = slurm.account_row(account)
    assert row is not None
    assert row["ParentName"] == "root"
    assert row["Fairshare"] == "5"
    assert row["GrpTRES"] == "cpu=16,gres/gpu=2,mem=2T", "2Ti = 2097152M reads back as 2T"
    assert row["QOS"] == "normal"
    assert row["GrpSubmitJobs"] == "" and row["GrpJobs"] == ""
    assert slurm.users(account) == {"alice", "bob"}
    assert slurm.description(account) == f"project {account}"
    assert outcome.observation.members == {"alice": ASSOCIATED, "bob": ASSOCIATED}

    again = adapter(slurm, desired(account))
    second = await reconcile_part(again, ListRecorder())
    assert second.condition.status == "True" and not second.wrote
    assert again.sacctmgr.writes == 0 and len(again.sacctmgr.calls) == 1, again.sacctmgr.calls


async def test_members_added_and_removed_in_one_call_each(slurm: SlurmEnv, account: str) -> None:
    await converge(slurm, desired(account, users=["alice", "bob"]))
    outcome, a, recorder = await converge(slurm, desired(account, users=["bob", "carol", "dave", "erin"]))
    assert outcome.wrote
    assert slurm.users(account) == {"bob", "carol", "dave", "erin"}
    verbs = [c.verb for c in a.sacctmgr.calls if c.write]
    assert verbs == ["add user", "delete user"], "one batched add and one batched delete"
    assert any(reason == "UpdatedSlurmAccount" for _, reason, _ in recorder.events)


async def test_limit_change(slurm: SlurmEnv, account: str) -> None:
    await converge(slurm, desired(account))
    await converge(slurm, desired(account, limits={"cpu": 8, "gpu": 4}, fairshare=7))
    row = slurm.account_row(account)
    assert row is not None
    assert row["GrpTRES"] == "cpu=8,gres/gpu=4", "mem limit removed, others changed"
    assert row["Fairshare"] == "7"


async def test_cordon_blocks_submissions_and_uncordon_restores(slurm: SlurmEnv, account: str) -> None:
    # The test submits as the current user (root here), so that user is a member for this test.
    import getpass

    me = getpass.getuser()
    await converge(slurm, desired(account, users=["alice", me], cordoned=True))
    row = slurm.account_row(account)
    assert row is not None and row["GrpSubmitJobs"] == "0" and row["GrpJobs"] == "0"
    assert slurm.users(account) == {"alice", me}, "cordon keeps the associations (history, sacct)"
    refused = slurm.sbatch(account)
    assert refused.returncode != 0 and "AssocGrpSubmitJobsLimit" in refused.stderr, refused.stderr

    await converge(slurm, desired(account, users=["alice", me], cordoned=False))
    row = slurm.account_row(account)
    assert row is not None and row["GrpSubmitJobs"] == "" and row["GrpJobs"] == ""
    try:
        accepted = slurm.sbatch(account)
        assert accepted.returncode == 0, accepted.stderr
    finally:
        slurm.cancel_all(account)


async def test_hand_made_changes_are_repaired(slurm: SlurmEnv, account: str) -> None:
    await converge(slurm, desired(account))
    for change in (
        ["modify", "account", "where", f"name={account}", "set", "fairshare=99", "grptres=cpu=1,gres/gpu=-1"],
        ["modify", "account", "where", f"name={account}", "set", "grpsubmitjobs=0"],
        ["add", "user", "mallory", f"account={account}"],
        ["delete", "user", "where", "name=bob", f"account={account}"],
    ):
        assert slurm.sacctmgr(*change).returncode == 0, change
    a = adapter(slurm, desired(account))
    seen = await a.observe()
    assert not seen.up_to_date
    for words in ("fairshare 99, want 5", "GrpTRES", "cordoned, want not cordoned", "users missing: bob", "mallory"):
        assert words in seen.diff, (words, seen.diff)
    assert seen.members == {"alice": ASSOCIATED, "bob": "Missing"}
    outcome, _, recorder = await converge(slurm, desired(account))
    assert outcome.wrote
    row = slurm.account_row(account)
    assert row is not None
    assert (row["Fairshare"], row["GrpTRES"], row["GrpSubmitJobs"]) == ("5", "cpu=16,gres/gpu=2,mem=2T", "")
    assert slurm.users(account) == {"alice", "bob"}


async def test_missing_qos_is_rejected_without_fast_retry(slurm: SlurmEnv, account: str) -> None:
    outcome = await reconcile_part(adapter(slurm, desired(account, qos=["nosuchqos"])), ListRecorder())
    assert outcome.condition.status == "False"
    assert outcome.condition.reason == reasons.REASON_BACKEND_ERROR
    assert "nosuchqos" in outcome.condition.message
    assert not outcome.retry
    assert slurm.account_row(account) is None, "nothing half-created"


async def test_delete_policy_delete_removes_users_and_account(slurm: SlurmEnv, account: str) -> None:
    _, a, _ = await converge(slurm, desired(account))
    result = await finalize_part(a, "Delete", ListRecorder())
    assert result.done and result.message == "deleted"
    assert slurm.assoc_rows(account) == []
    assert slurm.description(account) is None, "the account record is gone too"
    again = await finalize_part(adapter(slurm, desired(account)), "Delete", ListRecorder())
    assert again.done, "missing is fine"
    assert (await adapter(slurm, desired(account)).delete("Delete")).value == "Deleted"


async def test_delete_policy_retain_keeps_account_without_access(slurm: SlurmEnv, account: str) -> None:
    _, a, _ = await converge(slurm, desired(account))
    result = await finalize_part(a, "Retain", ListRecorder())
    assert result.done and result.message == "retained"
    row = slurm.account_row(account)
    assert row is not None, "account kept so job history stays attached to it"
    assert row["GrpSubmitJobs"] == "0" and row["GrpJobs"] == "0"
    assert row["GrpTRES"] == "cpu=16,gres/gpu=2,mem=2T", "limits untouched"
    assert slurm.users(account) == set()
    assert (await finalize_part(adapter(slurm, desired(account)), "Retain", ListRecorder())).done


async def test_finding_8_1_an_account_made_by_someone_else_is_never_written_or_deleted(
    slurm: SlurmEnv, account: str
) -> None:
    assert slurm.sacctmgr("-i", "add", "account", account, "cluster=enclave", "fairshare=3").returncode == 0
    assert slurm.sacctmgr("-i", "add", "user", "dave", f"account={account}", "cluster=enclave").returncode == 0
    a = adapter(slurm, desired(account))
    assert (await a.claim()).claim is ownership.Claim.FOREIGN
    outcome = await reconcile_part(a, ListRecorder())
    assert (outcome.condition.status, outcome.condition.reason) == ("False", reasons.REASON_NOT_OWNED)
    assert "belongs to no enclave project" in outcome.condition.message and not outcome.retry
    assert slurm.users(account) == {"dave"} and slurm.account_row(account)["Fairshare"] == "3", "untouched"
    finalized = await finalize_part(a, "Delete", ListRecorder())
    assert finalized.done and "never ours" in finalized.message, "deleting the project must not hang on it"
    assert slurm.account_row(account) is not None and slurm.users(account) == {"dave"}


async def test_finding_14_8_a_retained_account_is_adopted_only_when_asked(slurm: SlurmEnv, account: str) -> None:
    _, first, _ = await converge(slurm, desired(account, owner=ownership.Owner(account, "uid-1")))
    assert (await finalize_part(first, "Retain", ListRecorder())).done
    again = ownership.Owner(account, "uid-2")  # a new project with the old name
    outcome = await reconcile_part(adapter(slurm, desired(account, owner=again)), ListRecorder())
    assert (outcome.condition.status, outcome.condition.reason) == ("False", reasons.REASON_NOT_OWNED)
    assert "spec.adopt: [SlurmAccount]" in outcome.condition.message
    assert slurm.users(account) == set(), "nothing taken silently"
    taker = ownership.Owner(account, "uid-2", adopt=frozenset({"SlurmAccount"}))
    outcome, _, recorder = await converge(slurm, desired(account, owner=taker))
    assert ("Normal", "AdoptedSlurmAccount") in {(t, r) for t, r, _ in recorder.events}
    assert slurm.users(account) == {"alice", "bob"}
    assert (await adapter(slurm, desired(account, owner=again)).claim()).claim is ownership.Claim.OWNED
    await finalize_part(adapter(slurm, desired(account, owner=again)), "Delete", ListRecorder())


def _default_account(slurm: SlurmEnv, user: str) -> str:
    result = slurm.sacctmgr("-n", "-P", "show", "user", user, "format=DefaultAccount")
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


async def test_finding_8_2_a_member_whose_default_is_the_project_keeps_a_default(slurm: SlurmEnv, account: str) -> None:
    other = f"{account}o"
    assert slurm.sacctmgr("-i", "add", "account", other, "cluster=enclave").returncode == 0
    try:
        _, a, _ = await converge(slurm, desired(account, users=["alice", "bob", "carol"]))
        for user in ("bob", "carol"):
            assert slurm.sacctmgr("-i", "add", "user", user, f"account={other}", "cluster=enclave").returncode == 0
            assert slurm.sacctmgr("-i", "modify", "user", user, "set", f"defaultaccount={account}").returncode == 0
            assert _default_account(slurm, user) == account
        # carol leaves the project: her default moves before her association goes.
        await converge(slurm, desired(account, users=["alice", "bob"]))
        carols = {r["Account"] for r in slurm.sacctmgr_assoc_of("carol")}  # other tests of the session may add some
        assert other in carols and account not in carols
        assert _default_account(slurm, "carol") in carols, "her default moved to one of her remaining accounts"
        # The project is deleted: bob's default moves to one of his other accounts, and the deletion completes.
        result = await finalize_part(adapter(slurm, desired(account, users=["alice", "bob"])), "Delete", ListRecorder())
        assert result.done, result.message
        remaining = {r["Account"] for r in slurm.sacctmgr_assoc_of("bob")}
        assert other in remaining and account not in remaining
        assert _default_account(slurm, "bob") in remaining, "never left without a default account"
        assert slurm.assoc_rows(account) == []
    finally:
        slurm.sacctmgr("-i", "delete", "user", "where", "name=bob,carol", f"account={other}")
        slurm.sacctmgr("-i", "delete", "account", other)


async def test_finding_8_4_an_account_left_without_associations_is_removed_on_the_next_attempt(
    slurm: SlurmEnv, account: str
) -> None:
    await converge(slurm, desired(account))
    # As a deletion killed between its two deletes leaves it: the record, no association on the cluster.
    assert (await finalize_part(adapter(slurm, desired(account)), "Retain", ListRecorder())).done  # users gone
    assert slurm.sacctmgr("-i", "delete", "account", "where", f"name={account}", "cluster=enclave").returncode == 0
    assert slurm.account_row(account) is None and slurm.description(account) is not None, "record only"
    seen = await adapter(slurm, desired(account)).observe()
    assert seen.exists and not seen.up_to_date, "a record without association still exists"
    result = await finalize_part(adapter(slurm, desired(account)), "Delete", ListRecorder())
    assert result.done and result.message == "deleted", result.message
    assert slurm.description(account) is None, "no orphan account record"


async def test_finding_8_4_a_record_without_association_is_completed_by_a_reconcile(
    slurm: SlurmEnv, account: str
) -> None:
    await converge(slurm, desired(account))
    assert (await finalize_part(adapter(slurm, desired(account)), "Retain", ListRecorder())).done  # users gone
    assert slurm.sacctmgr("-i", "delete", "account", "where", f"name={account}", "cluster=enclave").returncode == 0
    await converge(slurm, desired(account))
    assert slurm.account_row(account) is not None and slurm.users(account) == {"alice", "bob"}
    await finalize_part(adapter(slurm, desired(account)), "Delete", ListRecorder())


async def test_finding_8_6_a_parent_that_does_not_exist_is_said_so(slurm: SlurmEnv, account: str) -> None:
    outcome = await reconcile_part(adapter(slurm, desired(account, parent="nosuchparent")), ListRecorder())
    cond = outcome.condition
    assert (cond.status, cond.reason, outcome.retry) == ("False", reasons.REASON_BACKEND_ERROR, False), cond
    assert cond.message.startswith("cannot create slurmaccount: spec.compute.slurm.parent: "), cond.message
    assert "nosuchparent" in cond.message and "doesn't exist" in cond.message
    assert slurm.account_row(account) is None and slurm.description(account) is None, "nothing half-created"


async def test_accounts_created_together_share_sacctmgr_loads(slurm: SlurmEnv, account: str) -> None:
    """Projects created at once through one runner go into `sacctmgr load`s, not one `add` each (two writes per
    project, ~1.4 s, one at a time): each with its own settings, owner and users; a member who already has a
    default account keeps it, a new one gets a project."""
    runner = Sacctmgr(slurm.settings())
    newcomer = f"n{account}"
    wants = [desired(f"{account}{i:02d}", users=["alice", newcomer] if i == 3 else ["alice", "bob"], fairshare=i + 1,
                     cordoned=i == 5) for i in range(12)]  # fmt: skip
    await converge(slurm, desired(f"{account}first"))  # alice exists with a default account
    alice_default = _default_account(slurm, "alice")
    outcomes = await _create_together(slurm, runner, wants)
    for want, outcome in zip(wants, outcomes, strict=True):
        assert outcome.condition.status == "True", outcome.condition
        row = slurm.account_row(want.name)
        assert row is not None and row["Fairshare"] == str(want.fairshare)
        assert row["GrpTRES"] == "cpu=16,gres/gpu=2,mem=2T" and row["QOS"] == "normal"
        assert row["GrpSubmitJobs"] == ("0" if want.cordoned else ""), want.name
        assert slurm.users(want.name) == set(want.users)
        check = SlurmAccountAdapter(want, Sacctmgr(slurm.settings()))
        assert check._claim(await check.read()).claim is ownership.Claim.OWNED, "the organization marker survived"
    assert _default_account(slurm, newcomer) == wants[3].name
    assert _default_account(slurm, "alice") == alice_default, "an existing member's default is left alone"
    verbs = [call.verb.split()[0] + " " + call.verb.split()[1].split("=")[0] for call in runner.calls if call.write]
    assert "add account" not in verbs and 0 < verbs.count("load file") < len(wants) / 2, verbs
    second = await _create_together(slurm, runner, wants)
    assert not any(outcome.wrote for outcome in second), "converged: nothing left to write"


async def test_a_bad_value_refuses_its_load_and_only_its_own_project(
    slurm: SlurmEnv, account: str, caplog: pytest.LogCaptureFixture
) -> None:
    """One bad value (a QOS Slurm does not know) refuses the whole load it is in: every project of it is then
    added on its own, so the others are created and only that one gets the error. The log says why the load was
    refused (sacctmgr's own words)."""
    runner = Sacctmgr(slurm.settings())
    good = [desired(f"{account}{i}") for i in range(3)]
    bad = desired(f"{account}bad", qos=["nosuchqos"])
    *outcomes, refused = await _create_together(slurm, runner, [*good, bad])
    assert all(outcome.condition.status == "True" for outcome in outcomes), outcomes
    assert refused.condition.status == "False" and "nosuchqos" in refused.condition.message
    assert not refused.retry and slurm.account_row(bad.name) is None, "nothing half-created"
    assert {c.verb for c in runner.calls if c.write} >= {"add account"}, "added on their own after the refusal"
    refusals = [r.getMessage() for r in caplog.records if "load of" in r.getMessage()]
    assert refusals and all("nosuchqos" in m.lower() for m in refusals), refusals


async def test_reads_of_accounts_asked_for_at_once_share_sacctmgr_calls(slurm: SlurmEnv, account: str) -> None:
    """Reconciles observing their accounts at once through one runner share `show account` calls (Sacctmgr
    .show_account): fewer calls than readers, and each reader gets its own account's rows, present or absent.
    One call per account costs ~0.3 s each behind the runner's concurrency bound (a rollout's resyncs)."""
    present = [desired(f"{account}p{i:02d}", users=["alice", "bob", "carol"][: i % 3 + 1], fairshare=i + 1)
               for i in range(6)]  # fmt: skip
    absent = [desired(f"{account}a{i:02d}") for i in range(6)]
    created = await _create_together(slurm, Sacctmgr(slurm.settings()), present)
    assert all(outcome.condition.status == "True" for outcome in created), created
    wants = [want for pair in zip(present, absent, strict=True) for want in pair]  # present and absent mixed
    runner = Sacctmgr(slurm.settings())
    seen = await asyncio.gather(*(SlurmAccountAdapter(want, runner).observe() for want in wants))
    shows = [call.verb for call in runner.calls if call.verb == "show account"]
    assert 0 < len(shows) < len(wants), f"{len(shows)} `show account` calls for {len(wants)} readers"
    assert runner.writes == 0, "observing writes nothing"
    for want, observation in zip(wants, seen, strict=True):
        if want.name in {p.name for p in present}:  # fairshare and users differ: another's rows are not up to date
            assert observation.exists and observation.up_to_date, (want.name, observation.diff)
            assert observation.members == dict.fromkeys(want.users, ASSOCIATED), want.name
        else:
            assert not observation.exists, want.name


async def _create_together(slurm: SlurmEnv, runner: Sacctmgr, wants: Sequence[DesiredSlurmAccount]) -> list[Any]:
    return await asyncio.gather(*(reconcile_part(SlurmAccountAdapter(want, runner),
                                                 ListRecorder()) for want in wants))  # fmt: skip


# --- outages: keep these last, they stop and restart slurmdbd --------------------------------------


async def test_hung_slurmdbd_is_unavailable_within_the_timeout(slurm: SlurmEnv, account: str) -> None:
    slurm.pause_dbd()
    try:
        start = time.monotonic()
        outcome = await reconcile_part(adapter(slurm, desired(account), timeoutSeconds=1.5), ListRecorder())
        elapsed = time.monotonic() - start
    finally:
        slurm.resume_dbd()
    assert outcome.condition.status == "False"
    assert outcome.condition.reason == reasons.REASON_BACKEND_UNAVAILABLE, outcome.condition
    assert outcome.retry
    assert elapsed < 3, f"bounded by timeoutSeconds, took {elapsed:.1f}s"
    await converge(slurm, desired(account))


async def test_stopped_slurmdbd_is_unavailable_then_recovers(slurm: SlurmEnv, account: str) -> None:
    await converge(slurm, desired(account))
    slurm.stop_dbd()
    try:
        start = time.monotonic()
        outcome = await reconcile_part(adapter(slurm, desired(account, users=["carol"])), ListRecorder())
        elapsed = time.monotonic() - start
        assert outcome.condition.status == "False"
        assert outcome.condition.reason == reasons.REASON_BACKEND_UNAVAILABLE, outcome.condition
        assert "slurmdbd unreachable" in outcome.condition.message
        assert outcome.retry and elapsed < 5
    finally:
        slurm.restart()
    outcome, _, _ = await converge(slurm, desired(account, users=["carol"]))
    assert outcome.wrote
    assert slurm.users(account) == {"carol"}


async def test_finding_8_2_projects_sharing_members_deleted_at_once_all_complete(slurm: SlurmEnv, account: str) -> None:
    """Many projects with the same members deleted together through one operator's sacctmgr runner (the chaos
    test's 50 did): each deletion moves a member's default to one of the others, which are going too. Every
    deletion must complete, and no member is left without a default while they still have an account.

    Failed before: slurmdbd 22.05 refused `delete user where name=alice,bob account=P` ("You can not remove the
    default account of a user") when P was bob's default and last account while alice kept another one, so the
    last project of a group of deletions never went."""
    rng = random.Random(7)
    runner = Sacctmgr(slurm.settings())
    members = {f"{account}{i:02d}": ["alice", rng.choice(["bob", "carol"])] for i in range(12)}
    for name, users in members.items():
        await converge(slurm, desired(name, users=users))
    pending = set(members)
    for _ in range(8):
        order = sorted(pending)
        results = await asyncio.gather(*(finalize_part(
            SlurmAccountAdapter(desired(n, users=members[n]), runner), "Delete",
            ListRecorder()) for n in order))  # fmt: skip
        pending -= {n for n, r in zip(order, results, strict=True) if r.done}
        if not pending:
            break
    assert not pending, f"deletions still blocked after 8 attempts each: {sorted(pending)}"
    for name in members:
        assert slurm.assoc_rows(name) == []
    for user in ("alice", "bob", "carol"):
        remaining = {r["Account"] for r in slurm.sacctmgr_assoc_of(user)}
        assert not remaining & set(members)
        if remaining:
            assert _default_account(slurm, user) in remaining, f"{user} left without a default account"
