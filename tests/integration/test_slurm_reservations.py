"""GPU bookings against the real slurmctld with slurmd and typed GPU GRES: capacity read from the nodes,
a reservation created, changed, repaired and deleted through the engine, and the project's job runs in
it while another account's job is held out.

Checks read Slurm with their own commands (`scontrol show reservation`, `squeue`), not the adapter's parser.
"""

from __future__ import annotations

import datetime
import os
import secrets
import subprocess
from collections.abc import Iterator

import pytest

from enclave_operator.backends import slurm_reservations as sr
from enclave_operator.engine import managed
from enclave_operator.engine.recorder import ListRecorder
from localenv.slurm import GPU_NODES, client_env
from support.slurm import SlurmEnv
from support.wait import wait_for

FAMILIES = {family: (family, str(f["partition"]), family) for family, f in GPU_NODES.items()}


def scontrol(slurm: SlurmEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["scontrol", *args], env={**os.environ, **client_env(slurm.conf), "TZ": "UTC"},
                          capture_output=True, text=True, timeout=30)  # fmt: skip


def shown(slurm: SlurmEnv, name: str) -> dict[str, str]:
    out = scontrol(slurm, "show", "reservation", name, "-o")
    if out.returncode != 0:
        return {}
    return dict(field.split("=", 1) for field in out.stdout.split() if "=" in field)


def utc(hours: float) -> datetime.datetime:
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    return now + datetime.timedelta(hours=hours)


@pytest.fixture
def accounts(slurm: SlurmEnv) -> Iterator[tuple[str, str]]:
    """A project account and another one, both with the current user (who submits the test jobs)."""
    import getpass

    mine, other = f"gpu{secrets.token_hex(3)}", f"oth{secrets.token_hex(3)}"
    assert slurm.sacctmgr("add", "account", f"{mine},{other}").returncode == 0
    assert slurm.sacctmgr("add", "user", getpass.getuser(), f"account={mine},{other}").returncode == 0
    try:
        yield mine, other
    finally:
        for account in (mine, other):
            slurm.cancel_all(account)
        slurm.sacctmgr("delete", "user", getpass.getuser(), f"account={mine},{other}")
        slurm.sacctmgr("delete", "account", f"{mine},{other}")


def reservation(name: str, account: str, start: datetime.datetime, end: datetime.datetime,
                nodes: int = 1, family: str = "a100") -> sr.DesiredReservation:  # fmt: skip
    partition = str(GPU_NODES[family]["partition"])
    return sr.DesiredReservation(name, start, end, account, nodes, partition, family, ("MAGNETIC", "REPLACE_DOWN"))


async def test_capacity_is_read_from_the_nodes_and_a_drained_node_leaves_it(slurm: SlurmEnv) -> None:
    runner = sr.scontrol(slurm.settings())
    capacity = await sr.read_capacity(runner, FAMILIES)
    assert capacity["a100"].gpus == 4 and capacity["a100"].gpus_per_node == 2
    assert capacity["h100"].gpus == 4 and capacity["h100"].nodes == ("gpu-h100-1",)
    assert scontrol(slurm, "update", "NodeName=gpu-a100-2", "State=DRAIN", "Reason=capacity test").returncode == 0
    try:
        drained = await sr.read_capacity(runner, FAMILIES)
        assert drained["a100"].gpus == 2 and drained["a100"].unusable[0].startswith("gpu-a100-2 (")
    finally:
        scontrol(slurm, "update", "NodeName=gpu-a100-2", "State=RESUME")
    # A resumed node is NOT_RESPONDING until slurmctld's next ping (a second or two): not yet capacity.
    wait_for(lambda: "IDLE" == shown_node(slurm, "gpu-a100-2"), timeout=30, what="gpu-a100-2 back in service")
    assert (await sr.read_capacity(runner, FAMILIES))["a100"].gpus == 4


def shown_node(slurm: SlurmEnv, node: str) -> str:
    out = scontrol(slurm, "show", "node", node, "-o").stdout
    return next((f.split("=", 1)[1] for f in out.split() if f.startswith("State=")), "")


async def test_reservation_created_changed_repaired_and_deleted(slurm: SlurmEnv, accounts: tuple[str, str]) -> None:
    mine, _ = accounts
    runner = sr.scontrol(slurm.settings())
    name = f"{mine}-booking"
    start, end = utc(2), utc(4)
    recorder = ListRecorder()

    outcome = await managed.reconcile_part(sr.SlurmReservationAdapter(runner, reservation(name, mine, start, end)),
                                           recorder)  # fmt: skip
    assert outcome.condition.status == "True", outcome.condition.message
    seen = shown(slurm, name)
    assert seen["Accounts"] == mine and seen["NodeCnt"] == "1" and seen["Features"] == "a100"
    assert seen["StartTime"] == start.strftime(sr.TIME_FORMAT) and "MAGNETIC" in seen["Flags"]
    assert seen["Nodes"].startswith("gpu-a100-")

    later = utc(6)
    changed = reservation(name, mine, start, later, nodes=2)
    # From here on the booking's status records the reservation as made for it (made=True).
    outcome = await managed.reconcile_part(sr.SlurmReservationAdapter(runner, changed, made=True), recorder)
    assert outcome.wrote and outcome.condition.status == "True"
    assert shown(slurm, name)["NodeCnt"] == "2" and shown(slurm, name)["EndTime"] == later.strftime(sr.TIME_FORMAT)

    assert scontrol(slurm, "update", f"ReservationName={name}", "Accounts=root", "Flags=-MAGNETIC").returncode == 0
    outcome = await managed.reconcile_part(sr.SlurmReservationAdapter(runner, changed, made=True), recorder)
    assert outcome.wrote, "drift is repaired"
    assert shown(slurm, name)["Accounts"] == mine and "MAGNETIC" in shown(slurm, name)["Flags"]
    assert ("Normal", "UpdatedSlurmReservation") in [e[:2] for e in recorder.events]

    done = await managed.finalize_part(sr.SlurmReservationAdapter(runner, changed, made=True), "Delete", recorder)
    assert done.done and shown(slurm, name) == {}
    again = await managed.finalize_part(sr.SlurmReservationAdapter(runner, changed, made=True), "Delete", recorder)
    assert again.done, "deleting what is gone is not an error"


async def test_a_reservation_of_that_name_made_by_someone_else_is_never_changed_or_deleted(
    slurm: SlurmEnv, accounts: tuple[str, str]
) -> None:
    mine, other = accounts
    runner = sr.scontrol(slurm.settings())
    name = f"{mine}-taken"
    start, end = utc(2), utc(3)
    made_by_admin = scontrol(slurm, "create", "reservation", f"ReservationName={name}",
                             f"StartTime={start.strftime(sr.TIME_FORMAT)}", f"EndTime={end.strftime(sr.TIME_FORMAT)}",
                             f"Accounts={other}", "NodeCnt=1", "PartitionName=GPUampere")  # fmt: skip
    assert made_by_admin.returncode == 0, made_by_admin.stderr
    try:
        recorder = ListRecorder()
        adapter = sr.SlurmReservationAdapter(runner, reservation(name, mine, start, end))
        outcome = await managed.reconcile_part(adapter, recorder)
        assert outcome.condition.status == "False" and outcome.condition.reason == "NotOwned"
        assert "was not made for this booking" in outcome.condition.message and not outcome.retry
        assert shown(slurm, name)["Accounts"] == other, "the admin's reservation is unchanged"
        done = await managed.finalize_part(adapter, "Delete", recorder)
        assert done.done and "never ours" in done.message
        assert shown(slurm, name)["Accounts"] == other, "and not deleted"
    finally:
        scontrol(slurm, "delete", f"ReservationName={name}")


async def test_more_nodes_than_the_family_has_is_refused_by_slurm_with_its_reason(
    slurm: SlurmEnv, accounts: tuple[str, str]
) -> None:
    runner = sr.scontrol(slurm.settings())
    adapter = sr.SlurmReservationAdapter(runner, reservation(f"{accounts[0]}-big", accounts[0], utc(2), utc(3), 3))
    outcome = await managed.reconcile_part(adapter, ListRecorder())
    assert outcome.condition.status == "False"
    assert "Requested node configuration is not available" in outcome.condition.message


def sbatch(slurm: SlurmEnv, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["sbatch", "--parsable", "-t", "5", *args, "--wrap", "sleep 120"], capture_output=True,
                          text=True, timeout=30, env={**os.environ, **client_env(slurm.conf)}, cwd="/tmp")  # fmt: skip


def job_state(slurm: SlurmEnv, job: str) -> tuple[str, str]:
    out = subprocess.run(["squeue", "-h", "-j", job, "-o", "%T|%r"], capture_output=True, text=True, timeout=30,
                         env={**os.environ, **client_env(slurm.conf)})  # fmt: skip
    state, _, reason = out.stdout.strip().partition("|")
    return state, reason


async def test_the_project_runs_in_its_reservation_while_another_account_is_held_out(
    slurm: SlurmEnv, accounts: tuple[str, str]
) -> None:
    mine, other = accounts
    runner = sr.scontrol(slurm.settings())
    name = f"{mine}-now"
    # Both a100 nodes, from now for an hour: the whole a100 family belongs to the project.
    desired = reservation(name, mine, utc(0), utc(1), nodes=2)
    adapter = sr.SlurmReservationAdapter(runner, desired)
    assert (await managed.reconcile_part(adapter, ListRecorder())).condition.status == "True"
    try:
        refused = sbatch(slurm, "-A", other, f"--reservation={name}", "--gres=gpu:a100:1")
        assert refused.returncode != 0 and "Access denied to requested reservation" in refused.stderr
        held = sbatch(slurm, "-A", other, "-p", "GPUampere", "--gres=gpu:a100:1")
        assert held.returncode == 0, held.stderr
        # MAGNETIC: the project's job goes into its reservation without naming it.
        ran = sbatch(slurm, "-A", mine, "-p", "GPUampere", "--gres=gpu:a100:2")
        assert ran.returncode == 0, ran.stderr
        wait_for(lambda: job_state(slurm, ran.stdout.strip())[0] == "RUNNING", timeout=60,
                 what="the project's job to run in its reservation")  # fmt: skip
        state, reason = job_state(slurm, held.stdout.strip())
        assert state == "PENDING" and ("Reserv" in reason or "ReqNodeNotAvail" in reason), (state, reason)
    finally:
        slurm.cancel_all(mine)
        slurm.cancel_all(other)
        await managed.finalize_part(adapter, "Delete", ListRecorder())
