"""Approvals: who approved what, in a form the operator can verify, and what a project may have meanwhile.

One mechanism for every kind that waits for a human (ResearchProject and GpuReservation: a platform admin;
DataIngest: a data steward):

- The approval lives in the annotation `enclave.io/approval`, written **only by the operator's mutating
  webhook**: JSON `{"by", "at", "grant", "sig"}` where `sig` is an HMAC-SHA256, with a key only the
  operator holds (`webhook.signingKeyEnv`), over the kind, namespace, name, approver, time and grant. An
  annotation someone wrote by hand, copied from another object, or changed does not verify and is
  ignored: the controller trusts no approval it cannot attribute (issue 14.2).
- An approver approves by creating or updating the object (for a project: any create or update by a
  member of `selfService.adminGroups`, e.g. the GitOps service account applying manifests from Git;
  issue 8.9), or explicitly with the trigger annotation `enclave.io/approve=<anything>`, which the
  webhook replaces by the signed record. Nobody else can set either annotation (webhook), and the
  operator's own requests never approve anything.
- For a project the grant is the governed part of the spec as it was approved (`governed`): quotas,
  egress, the Slurm parent, QOS and limits, and validUntil. `decide` compares the spec with what the
  self-service tier and the grant allow and returns the **effective** spec: requested values where
  allowed, else the allowed ones. The reconciler applies the effective spec, so member changes,
  expiries and the cordon never wait for a pending request (issue 14.4); what waits is only the part
  above the allowance.
- validUntil: a project may set its end date when it is created; extending it later is approved like
  a quota (issue 14.3). The date in force is recorded in `status.validUntil` and is the baseline.
- A GpuReservation above its project's booking limits (`Request`, `decide_request`): the grant is the
  amounts asked when it was approved (GPUs held at once, hours, days ahead); a booking waits as a whole
  (it is not admitted in part) until an approval covers every amount above the limits.
"""

from __future__ import annotations

import dataclasses
import datetime
import decimal
import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from enclave_operator import quantity
from enclave_operator.api.research_project import EgressRule, ResearchProjectSpec, SlurmCompute
from enclave_operator.settings import SelfServiceSettings
from enclave_operator.signing import APPROVAL_ANNOTATION, APPROVE_ANNOTATION, Approval, ObjectRef, Signer

__all__ = ["APPROVAL_ANNOTATION", "APPROVE_ANNOTATION", "Approval", "ApprovalDecision", "ObjectRef", "Request",
           "RequestDecision", "Signer", "covers", "decide", "decide_request", "governed", "read"]  # fmt: skip

def read(signer: Signer | None, ref: ObjectRef, annotations: Mapping[str, str]) -> tuple[Approval | None, bool]:
    """(the verified approval or None, whether an annotation was there but did not verify)."""
    text = annotations.get(APPROVAL_ANNOTATION)
    found = signer.verify(ref, text) if signer is not None else None
    return found, bool(text) and found is None


# --- the governed part of a project ----------------------------------------------------------------


def _rule(rule: EgressRule) -> dict[str, Any]:
    return {"cidr": rule.cidr, "ports": sorted(rule.ports)}


def _slurm(slurm: SlurmCompute | None) -> dict[str, Any] | None:
    if slurm is None:
        return None
    limits = slurm.limits
    mem = None if limits.mem is None else str(limits.mem)
    return {"parent": slurm.parent, "qos": sorted(slurm.qos), "cpu": limits.cpu, "mem": mem, "gpu": limits.gpu}


def governed(spec: ResearchProjectSpec) -> dict[str, Any]:
    """What a platform admin approves: the values above the self-service tier can be in (JSON, canonical order)."""
    k = spec.compute.kubernetes
    return {
        "cpu": str(k.cpu),
        "memory": str(k.memory),
        "gpu": k.gpu,
        "storage": str(spec.storage.quota),
        "egress": sorted((_rule(r) for r in spec.network.egress), key=lambda r: (r["cidr"], r["ports"])),
        "slurm": _slurm(spec.compute.slurm),
        "validUntil": spec.valid_until.isoformat(),
    }


@dataclasses.dataclass(frozen=True)
class ApprovalDecision:
    approved: bool
    reason: str
    message: str
    effective: ResearchProjectSpec
    """The spec to apply now: as requested where the tier or the approval allows it, else what they allow."""
    waiting: tuple[str, ...] = ()
    """What is above the allowance, for messages (e.g. 'gpu 4 > 1')."""


def _ports_cover(granted: Sequence[int], requested: Sequence[int]) -> bool:
    """Empty means every port: granted-all covers anything, requested-all needs granted-all."""
    return not granted or (bool(requested) and set(requested) <= set(granted))


def _allowed(key: str, requested: int | str, limit: int | str, grant: Mapping[str, Any],
             waiting: list[str]) -> int | str | None:  # fmt: skip
    """None when `requested` is within max(limit, grant[key]); else that maximum (and a line in `waiting`)."""
    allowed = limit
    granted = grant.get(key)
    if granted is not None and quantity.parse(granted) > quantity.parse(allowed):
        allowed = granted
    if quantity.parse(requested) <= quantity.parse(allowed):
        return None
    waiting.append(f"{key} {requested} > {allowed}")
    return allowed


class _Allowance:
    """The self-service tier and, if there is one, a verified grant: what a project may have without waiting."""

    def __init__(self, tier: SelfServiceSettings, grant: Mapping[str, Any] | None, baseline: datetime.date) -> None:
        self.tier, self.grant, self.baseline = tier, dict(grant or {}), baseline
        self.waiting: list[str] = []

    def amount(self, key: str, requested: int | str, tier_max: int | str) -> int | str:
        """A quantity: requested if within max(tier, grant), else that maximum."""
        allowed = _allowed(key, requested, tier_max, self.grant, self.waiting)
        if allowed is None:
            return requested
        return allowed if isinstance(requested, str) else int(quantity.parse(allowed))

    def egress(self, rules: Sequence[EgressRule]) -> list[EgressRule]:
        tier_nets = [ipaddress.ip_network(c, strict=False) for c in self.tier.egress]
        granted = self.grant.get("egress") or []
        kept = []
        for rule in rules:
            net = ipaddress.ip_network(rule.cidr, strict=False)
            in_tier = any(net.version == t.version and net.subnet_of(t) for t in tier_nets)  # type: ignore[arg-type]
            in_grant = any(_ports_cover(g["ports"], rule.ports) for g in granted if g["cidr"] == rule.cidr)
            if in_tier or in_grant:
                kept.append(rule)
            else:
                ports = f" ports {','.join(map(str, rule.ports))}" if rule.ports else ""
                self.waiting.append(f"egress to {rule.cidr}{ports}")
        return kept

    def slurm(self, slurm: SlurmCompute | None) -> SlurmCompute | None:
        if slurm is None:
            return None
        granted = self.grant.get("slurm") or {}
        parents = {self.tier.slurm_parent, granted.get("parent")}
        parent = slurm.parent
        if parent not in parents:
            self.waiting.append(f"slurm parent {parent}")
            parent = granted.get("parent") or self.tier.slurm_parent
        allowed_qos = set(self.tier.slurm_qos) | set(granted.get("qos") or [])
        qos = [q for q in slurm.qos if q in allowed_qos]
        if len(qos) != len(slurm.qos):
            self.waiting.append(f"slurm qos {','.join(q for q in slurm.qos if q not in allowed_qos)}")
            qos = qos or list(self.tier.slurm_qos)
        limits = {}
        for key, tier_max in (("cpu", self.tier.max_slurm_cpu), ("mem", self.tier.max_slurm_mem),
                              ("gpu", self.tier.max_slurm_gpu)):  # fmt: skip
            limits[key] = self._limit(key, getattr(slurm.limits, key), tier_max, granted)
        return slurm.model_copy(
            update={"parent": parent, "qos": qos, "limits": slurm.limits.model_copy(update=limits)}
        )

    def _limit(self, key: str, requested: int | str | None, tier_max: int | str | None,
               granted: Mapping[str, Any]) -> int | str | None:  # fmt: skip
        """A Slurm limit; None means unlimited, the largest of all."""

        def value(v: int | str | None) -> decimal.Decimal:
            return decimal.Decimal("Infinity") if v is None else quantity.parse(v)

        allowed: int | str | None = tier_max
        if granted and key in granted and value(granted[key]) > value(allowed):
            allowed = granted[key]
        if value(requested) <= value(allowed):
            return requested
        self.waiting.append(f"slurm {key} {'unlimited' if requested is None else requested} > {allowed}")
        return allowed

    def valid_until(self, requested: datetime.date) -> datetime.date:
        allowed = self.baseline
        granted = self.grant.get("validUntil")
        if granted and datetime.date.fromisoformat(granted) > allowed:
            allowed = datetime.date.fromisoformat(granted)
        if requested <= allowed:
            return requested
        self.waiting.append(f"validUntil {requested.isoformat()} > {allowed.isoformat()}")
        return allowed


def decide(
    spec: ResearchProjectSpec,
    approval: Approval | None,
    settings: SelfServiceSettings,
    project: str,
    *,
    baseline_valid_until: datetime.date | None = None,
    unverified: bool = False,
) -> ApprovalDecision:
    """Within the tier, or covered by a verified approval, or waiting; and the spec to apply meanwhile.

    `baseline_valid_until` is the end date in force (status.validUntil); None for a new project, whose own
    validUntil is its baseline.
    """
    allow = _Allowance(settings, approval.grant if approval else None, baseline_valid_until or spec.valid_until)
    k = spec.compute.kubernetes
    kubernetes = k.model_copy(update={
        "cpu": allow.amount("cpu", k.cpu, settings.max_cpu),
        "memory": allow.amount("memory", k.memory, settings.max_memory),
        "gpu": allow.amount("gpu", k.gpu, settings.max_gpu),
    })  # fmt: skip
    storage = spec.storage.model_copy(update={"quota": allow.amount("storage", spec.storage.quota,
                                                                    settings.max_storage)})  # fmt: skip
    egress = allow.egress(spec.network.egress)
    slurm = allow.slurm(spec.compute.slurm)
    valid_until = allow.valid_until(spec.valid_until)
    effective = spec.model_copy(update={
        "compute": spec.compute.model_copy(update={"kubernetes": kubernetes, "slurm": slurm}),
        "storage": storage,
        "network": spec.network.model_copy(update={"egress": egress}),
        "valid_until": valid_until,
    })  # fmt: skip
    if not allow.waiting:
        if approval is not None:
            return ApprovalDecision(True, "ApprovedByAdmin", f"approved by {approval.by} at {approval.at}", effective)
        return ApprovalDecision(True, "WithinSelfServiceTier", "within the self-service tier", effective)
    how = (f"a platform admin approves the request as it stands with: kubectl annotate researchproject {project} "
           f"{APPROVE_ANNOTATION}=yes --overwrite (any create or update by a platform admin approves too)")  # fmt: skip
    reason = "UnverifiedApproval" if unverified else "AwaitingApproval"
    ignored = f"the {APPROVAL_ANNOTATION} annotation is not signed by this operator and is ignored; "
    message = (f"{ignored if unverified else ''}waiting for approval: {'; '.join(allow.waiting)}; meanwhile the "
               f"project runs with what is allowed; {how}")  # fmt: skip
    return ApprovalDecision(False, reason, message, effective, tuple(allow.waiting))


def covers(approval: Approval | None, spec: ResearchProjectSpec, settings: SelfServiceSettings) -> bool:
    """Whether `approval` (or the tier alone) allows everything `spec` asks, validUntil included (no baseline):
    the webhook keeps an admin's earlier approval only when it covers the whole request."""
    return decide(spec, approval, settings, "", baseline_valid_until=datetime.date.min).approved


# --- amounts above limits (a GpuReservation) --------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """What one object asks for in amounts, what it gets without approval, and how messages name them."""

    wanted: Mapping[str, str]
    """Amount per key, as the grant records it (the grant of an approval is `wanted` when it was approved)."""
    limits: Mapping[str, str]
    limits_name: str
    """How messages name the limits, e.g. "project onco's booking limits"."""
    within_reason: str
    """The reason when no approval is needed, e.g. WithinBookingLimits."""
    target: str
    """The object as kubectl names it, e.g. `gpureservation -n onco-flow miccai-deadline`."""


@dataclasses.dataclass(frozen=True)
class RequestDecision:
    approved: bool
    reason: str
    message: str


def decide_request(request: Request, approval: Approval | None, *, unverified: bool = False) -> RequestDecision:
    """Within the limits, or every amount above them covered by a verified approval, or waiting (with the command
    that approves)."""
    waiting: list[str] = []
    grant = approval.grant if approval is not None else {}
    for key, wanted in request.wanted.items():
        _allowed(key, wanted, request.limits[key], grant, waiting)
    if not waiting:
        if approval is not None and any(
            quantity.parse(w) > quantity.parse(request.limits[k]) for k, w in request.wanted.items()
        ):
            return RequestDecision(True, "ApprovedByAdmin", f"approved by {approval.by} at {approval.at}")
        return RequestDecision(True, request.within_reason, f"within {request.limits_name}")
    ignored = f"the {APPROVAL_ANNOTATION} annotation is not signed by this operator and is ignored; "
    message = (f"{ignored if unverified else ''}above {request.limits_name} ({'; '.join(waiting)}); a platform admin "
               f"approves the request as it stands with: kubectl annotate {request.target} {APPROVE_ANNOTATION}=yes "
               "--overwrite")  # fmt: skip
    return RequestDecision(False, "UnverifiedApproval" if unverified else "AwaitingApproval", message)
