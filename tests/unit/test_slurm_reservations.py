"""Reading scontrol's one-line output and deciding what a reservation update must change (no Slurm needed)."""

from __future__ import annotations

import datetime

import pytest

from enclave_operator.backends import slurm_reservations as sr

NODES = """\
NodeName=gpu-a100-1 Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 AvailableFeatures=a100 ActiveFeatures=a100 Gres=gpu:a100:2 NodeAddr=127.0.0.1 OS=Linux 6.1 #1 SMP PREEMPT_DYNAMIC  State=IDLE+RESERVED ThreadsPerCore=1 Partitions=gpu,GPUampere  CfgTRES=cpu=8,gres/gpu=2
NodeName=gpu-a100-2 Arch=x86_64 AvailableFeatures=a100 ActiveFeatures=a100 Gres=gpu:a100:2(S:0-1) State=IDLE+DRAIN Partitions=gpu,GPUampere Reason=board swap [root@2026-11-29T00:27:09]
NodeName=gpu-h100-1 Arch=x86_64 AvailableFeatures=h100 ActiveFeatures=h100 Gres=gpu:h100:4,gpu:2 State=MIXED Partitions=gpu,GPUhopper
NodeName=cpu-1 Arch=x86_64 AvailableFeatures=(null) ActiveFeatures=(null) Gres=(null) State=DOWN* Partitions=gpu
"""  # noqa: E501
RESERVATION = (
    "ReservationName=onco-miccai StartTime=2026-12-01T08:00:00 EndTime=2026-12-03T20:00:00 Duration=2-12:00:00 "
    "Nodes=gpu-a100-1 NodeCnt=1 CoreCnt=8 Features=a100 PartitionName=GPUampere Flags=MAGNETIC,REPLACE_DOWN "
    "TRES=cpu=8 Users=(null) Groups=(null) Accounts=onco Licenses=(null) State=INACTIVE BurstBuffer=(null)"
)
T = datetime.datetime(2026, 12, 1, 8, 0, tzinfo=datetime.UTC)


def test_node_lines_parse_with_spaces_in_values() -> None:
    record = sr.parse_record(NODES.splitlines()[1])
    assert record["Reason"] == "board swap [root@2026-11-29T00:27:09]"
    assert sr.parse_record(NODES.splitlines()[0])["OS"].startswith("Linux 6.1 #1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gpu:a100:4", {"a100": 4}),
        ("gpu:a100:2(S:0-1)", {"a100": 2}),
        ("gpu:h100:4,gpu:2", {"h100": 4, None: 2}),
        ("gpu:a100:2(S:0-1),mps:100,gpu:a100:1", {"a100": 3}),
        ("(null)", {}),
    ],
)
def test_gres(text: str, expected: dict) -> None:
    assert sr.parse_gres(text) == expected


def test_capacity_counts_usable_nodes_of_the_type_only() -> None:
    nodes = sr.parse_nodes(NODES)
    assert [n.usable for n in nodes] == [True, False, True, False], "DRAIN and DOWN* are left out"
    a100 = sr.family_capacity(nodes, "a100")
    assert (a100.gpus, a100.nodes, a100.gpus_per_node) == (2, ("gpu-a100-1",), 2)
    assert a100.unusable == ("gpu-a100-2 (IDLE+DRAIN)",)
    assert sr.family_capacity(nodes, "h100", partition_nodes={"gpu-a100-1"}).gpus == 0, "outside its partition"


def desired(**changes: object) -> sr.DesiredReservation:
    values: dict = dict(name="onco-miccai", start=T, end=T + datetime.timedelta(hours=60), account="onco",
                        node_count=1, partition="GPUampere", feature="a100", flags=("MAGNETIC", "REPLACE_DOWN"))
    values.update(changes)
    return sr.DesiredReservation(**values)


@pytest.mark.parametrize(
    ("want", "observed", "args", "why"),
    [
        (desired(), {}, [], "as desired"),
        (desired(end=T + datetime.timedelta(hours=72)), {}, ["EndTime=2026-12-04T08:00:00"], "end moved"),
        (desired(node_count=2), {}, ["NodeCnt=2"], "more GPUs"),
        (desired(), {"Accounts": "onco,mallory"}, ["Accounts=onco"], "an account added by hand is removed"),
        (desired(), {"Flags": "SPEC_NODES"}, ["Flags=MAGNETIC,REPLACE_DOWN"], "flags removed by hand"),
        (desired(start=T + datetime.timedelta(hours=1)), {"State": "ACTIVE"}, [], "a started start is never moved"),
    ],
)  # fmt: skip
def test_reservation_changes(want: sr.DesiredReservation, observed: dict, args: list[str], why: str) -> None:
    record = {**sr.parse_record(RESERVATION), **observed}
    assert sr.reservation_changes(want, record)[0] == args, why


def test_names_slurm_accepts_only() -> None:
    with pytest.raises(ValueError, match="not a valid Slurm reservation name"):
        desired(name="bad name")


@pytest.mark.parametrize(
    ("observed", "made", "claim", "why"),
    [
        (None, False, "ABSENT", "nothing of that name"),
        ({}, False, "OWNED", "exactly what create makes: a run killed before its status write made it"),
        ({"EndTime": "2026-12-05T08:00:00"}, True, "OWNED", "recorded in the booking's status: drift is repaired"),
        ({"EndTime": "2026-12-05T08:00:00"}, False, "FOREIGN", "another window, not recorded: someone else's"),
        ({"Accounts": "onco,mallory"}, False, "FOREIGN", "another account list, not recorded"),
    ],
)  # fmt: skip
def test_a_reservation_is_the_bookings_when_recorded_or_exactly_as_created(observed: dict | None, made: bool,
                                                                           claim: str, why: str) -> None:
    record = None if observed is None else {**sr.parse_record(RESERVATION), **observed}
    result = sr.reservation_claim(desired(end=datetime.datetime(2026, 12, 3, 20, 0, tzinfo=datetime.UTC)), record,
                                  made=made)  # fmt: skip
    assert result.claim.name == claim, why
    if claim == "FOREIGN":
        assert "was not made for this booking" in result.message and "left as it is" in result.message
