"""`enclave-operator gpu-calendar`: per GPU family and pool, the GPUs booked and free over the coming days,
and who holds them. Reads the cluster ($KUBECONFIG or in-cluster) and Slurm the way the operator does
(the same ledger, the same capacity), so what it prints is what admission decides against."""

from __future__ import annotations

import datetime
from collections.abc import Sequence

from enclave_operator import gpu_calendar
from enclave_operator.backends import kube, slurm_reservations
from enclave_operator.reconcilers import gpu_bookings
from enclave_operator.settings import OperatorSettings


def render(ledger: gpu_bookings.Ledger, settings: OperatorSettings, now: datetime.datetime, days: float,
           family: str | None = None, pool: str | None = None) -> str:  # fmt: skip
    """The calendar as text: one block per (pool, family), one line per step of constant use."""
    now = now.replace(second=0, microsecond=0)
    until = now + datetime.timedelta(days=days)
    lines: list[str] = []
    for (pool_name, family_name), _ in sorted(gpu_bookings.figures(ledger, settings.gpu, now).items()):
        if (family and family_name != family) or (pool and pool_name != pool):
            continue
        capacity = ledger.capacity(pool_name, family_name, settings.gpu)
        held = [b for b in ledger.family_bookings(pool_name, family_name) if b.holds and b.booked]
        pending = ledger.waiting_bookings(pool_name, family_name)
        lines.append(f"{capacity.label}: {capacity.gpus} GPUs ({capacity.detail})"
                     + ("" if capacity.known else " — not readable now"))  # fmt: skip
        for step in gpu_calendar.profile([b.booked for b in held if b.booked], now, until):
            holders = sorted(b.key for b in held if b.booked and b.booked.overlaps(step.start, step.end))
            free = max(capacity.gpus - step.used, 0)
            lines.append(f"  {gpu_calendar.stamp(step.start)} → {gpu_calendar.stamp(step.end)}  "
                         f"{step.used} booked, {free} free  {', '.join(holders)}".rstrip())  # fmt: skip
        if pending:
            lines.append(f"  waiting (approval or project): {', '.join(sorted(b.key for b in pending))}")
        lines.append("")
    return "\n".join(lines) if lines else "no GPU families configured (settings: gpu.families)\n"


async def calendar(settings: OperatorSettings, days: float, family: str | None, pool: str | None,
                   now: datetime.datetime | None = None) -> str:  # fmt: skip
    now = now or datetime.datetime.now(datetime.UTC)
    ledger = gpu_bookings.Ledger()
    client = kube.client(connections=settings.throttle.kubernetes_connections)
    try:
        await gpu_bookings.prime(ledger, client, settings, now.date())
    finally:
        await client.close()
    if settings.slurm is not None and gpu_bookings.slurm_families(settings.gpu):
        await gpu_bookings.refresh_slurm(ledger, slurm_reservations.scontrol(settings.slurm), settings.gpu)
    return render(ledger, settings, now, days, family, pool)


def families(settings: OperatorSettings) -> Sequence[str]:
    return [f.name for f in settings.gpu.families]
