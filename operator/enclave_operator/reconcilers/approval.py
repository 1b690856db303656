"""The self-service tier: which requests a researcher gets without a platform admin, and whether an
admin's approval covers the current request.

An admin approves by annotating the project with the exact resources approved and their name:

    kubectl annotate researchproject onco-flow enclave.io/approved='cpu=64,gpu=2,memory=256Gi,storage=500Gi' \
        enclave.io/approved-by=<admin>

The admission webhook lets only platform admins set these annotations (and only under their own name).
Raising a request beyond what was approved makes the project wait for approval again.
"""

from __future__ import annotations

import dataclasses
import decimal
from collections.abc import Mapping

from enclave_operator import quantity
from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.settings import SelfServiceSettings

APPROVED_ANNOTATION = "enclave.io/approved"
APPROVED_BY_ANNOTATION = "enclave.io/approved-by"
TIERED = ("cpu", "memory", "gpu", "storage")


def requested(spec: ResearchProjectSpec) -> dict[str, str]:
    k = spec.compute.kubernetes
    return {"cpu": str(k.cpu), "memory": str(k.memory), "gpu": str(k.gpu), "storage": str(spec.storage.quota)}


def tier(settings: SelfServiceSettings) -> dict[str, str]:
    return {"cpu": settings.max_cpu, "memory": settings.max_memory, "gpu": str(settings.max_gpu),
            "storage": settings.max_storage}  # fmt: skip


def render(resources: Mapping[str, str]) -> str:
    return ",".join(f"{key}={resources[key]}" for key in TIERED)


def parse_approval(text: str) -> dict[str, decimal.Decimal]:
    """`cpu=64,gpu=2,...` → values; ValueError naming the bad entry."""
    out: dict[str, decimal.Decimal] = {}
    for entry in filter(None, (e.strip() for e in text.split(","))):
        key, sep, value = entry.partition("=")
        if not sep or key not in TIERED:
            raise ValueError(f"{APPROVED_ANNOTATION}: {entry!r} is not one of {', '.join(TIERED)}=<quantity>")
        out[key] = quantity.parse(value)
    return out


@dataclasses.dataclass(frozen=True)
class ApprovalDecision:
    approved: bool
    reason: str
    message: str


def decide(spec: ResearchProjectSpec, annotations: Mapping[str, str], settings: SelfServiceSettings,
           project: str) -> ApprovalDecision:  # fmt: skip
    """Within the tier, or covered by an admin's approval, or waiting (with the command that approves)."""
    wanted = requested(spec)
    limits = tier(settings)
    over = [k for k in TIERED if quantity.parse(wanted[k]) > quantity.parse(limits[k])]
    if not over:
        return ApprovalDecision(True, "WithinSelfServiceTier", "within the self-service tier")
    text = annotations.get(APPROVED_ANNOTATION, "")
    by = annotations.get(APPROVED_BY_ANNOTATION, "")
    try:
        approved = parse_approval(text) if text else {}
    except ValueError as error:
        return ApprovalDecision(False, "InvalidApproval", str(error))
    uncovered = [k for k in over if k not in approved or quantity.parse(wanted[k]) > approved[k]]
    if not uncovered and by:
        return ApprovalDecision(True, "ApprovedByAdmin", f"approved by {by}: {text}")
    detail = ", ".join(f"{k} {wanted[k]} > {limits[k]}" for k in over)
    return ApprovalDecision(
        False,
        "AwaitingApproval",
        f"above the self-service tier ({detail}); a platform admin approves with: kubectl annotate "
        f"researchproject {project} {APPROVED_ANNOTATION}='{render(wanted)}' {APPROVED_BY_ANNOTATION}=<admin> "
        "--overwrite",
    )
