"""Issue 8, "done means": seeded generated manifests sent with server-side dry run to the real API server
and the operator's webhooks. No server error; every rejection names the field it is about; a sample of
the accepted ones, created for real, converges to Ready or to a condition with an actionable reason.

Reproduce a run with FUZZ_SEED=<seed> (printed on failure); FUZZ_COUNT changes the number of manifests.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import yaml

from support import timeouts
from support.cluster import Cluster
from support.fuzz import RawSender, manifests, names_a_field
from support.operator import OperatorProcess
from support.projects import condition, wait_gone
from support.wait import wait_for

SEED = int(os.environ.get("FUZZ_SEED", "8008"))
COUNT = int(os.environ.get("FUZZ_COUNT", "2000"))
CONCURRENCY = 8
SAMPLE = 8
ACTIONABLE = {"AwaitingApproval", "InvalidSpec", "NotOwned", "MembersMissing", "UnverifiedApproval"}
"""Condition reasons that tell a user what to do (with the message naming the field, user or command)."""


def _settled(obj: dict | None) -> dict | None:
    ready = condition(obj, "Ready") or {}
    if ready.get("status") == "True":
        return obj
    if ready.get("reason") in ACTIONABLE or (condition(obj, "Stalled") or {}).get("status") == "True":
        return obj
    parts = [c for c in (obj or {}).get("status", {}).get("conditions", []) if c["type"].endswith("Ready")]
    return obj if parts and all(c["status"] == "True" or c["reason"] in ACTIONABLE for c in parts) else None


async def test_fuzz_admission_names_fields_and_never_fails_on_the_server(
    crds: Cluster, operator: OperatorProcess
) -> None:
    started = time.monotonic()
    objects = manifests(SEED, COUNT, f"fz{SEED % 1000}")
    sender = RawSender(crds.kubeconfig)
    slots = asyncio.Semaphore(CONCURRENCY)

    async def send(obj: dict) -> tuple[dict, object]:
        async with slots:
            return obj, await sender.create(obj)

    try:
        answers = await asyncio.gather(*(send(obj) for obj in objects))
    finally:
        await sender.close()
    server_errors = [(o["metadata"].get("name"), a.code, a.message[:300]) for o, a in answers if a.code >= 500]
    accepted = [o for o, a in answers if a.code in (200, 201)]
    unnamed = [(o["metadata"].get("name"), a.message[:300]) for o, a in answers
               if a.code >= 400 and a.code < 500 and not names_a_field(a)]  # fmt: skip
    sent_in = time.monotonic() - started
    print(f"fuzz seed {SEED}: {len(objects)} manifests in {sent_in:.0f}s, {len(accepted)} accepted")
    assert not server_errors, f"seed {SEED}: server errors: {server_errors[:5]}"
    assert not unnamed, f"seed {SEED}: rejections naming no field: {unnamed[:5]}"
    assert len(accepted) >= COUNT // 10, f"seed {SEED}: too few accepted manifests to sample: {len(accepted)}"

    # A sample of the accepted ones, created for real, converges.
    sample = random.Random(SEED).sample(accepted, SAMPLE)
    for obj in sample:
        crds.apply(yaml.safe_dump(obj))
    try:
        for obj in sample:
            name = obj["metadata"]["name"]
            settled = wait_for(lambda n=name: _settled(crds.get_json("researchproject", n)), timeout=timeouts.READY,
                               what=f"{name} to converge")  # fmt: skip
            ready = condition(settled, "Ready")
            assert ready["status"] == "True" or ready["message"], f"{name}: no reason given: {settled['status']}"
    finally:
        for obj in sample:
            crds.run("delete", "researchproject", obj["metadata"]["name"], "--wait=false", check=False)
        for obj in sample:
            wait_gone(crds, "researchproject", obj["metadata"]["name"])
