"""Evaluate a FederatedNode against a requirements profile. Pure: no I/O, today's date and the probe
facts are arguments; every rule of the profile yields one line (expected, observed, source, result).

Lines of category Technical decide the `Compliant` condition, lines of category Legal `LegallyCleared`;
a Warn never makes either False. Rules not applicable to the node (e.g. GPU memory without a GPU, SCCs
for a host inside the EU/EEA) produce no line. docs/federated-node.md maps each line to the guideline.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import Sequence
from typing import Any

from enclave_operator import conditions, quantity, reasons
from enclave_operator.api.federated_node import (
    Category,
    FederatedNodeSpec,
    LegalReference,
    RequirementsProfile,
    Result,
    Source,
)
from enclave_operator.federation.hardware import Observed, Value, human_bytes


@dataclasses.dataclass(frozen=True)
class Line:
    id: str
    category: Category
    requirement: str
    expected: str
    observed: str
    source: Source
    result: Result
    message: str = ""

    def to_status(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "category": self.category,
            "requirement": self.requirement,
            "expected": self.expected,
            "observed": self.observed,
            "source": self.source,
            "result": self.result,
            "message": self.message,
        }


@dataclasses.dataclass(frozen=True)
class ProbeFacts:
    """What the reachability probes have shown so far (from status.reachability)."""

    probed: bool = False
    """At least one probe round has run."""
    ssh_seen: bool = False
    """The SSH port has answered at least once."""
    dns_seen: bool = False
    """The DNS server has answered at least once."""


@dataclasses.dataclass(frozen=True)
class Access:
    """Integrators whose access is active now, per channel."""

    ssh: tuple[str, ...] = ()
    vpn: tuple[str, ...] = ()


def _b(value: str | int) -> int:
    return quantity.to_bytes(value)


def _weakest(*values: Value[Any]) -> Source:
    """The source of a line read from several values: Missing, else Declared, else Measured."""
    sources = {v.source for v in values}
    for source in ("Missing", "Declared", "Spec", "Probed"):
        if source in sources:
            return source  # type: ignore[return-value]
    return "Measured"


def _has_gpu(hw: Observed, vendors: Sequence[str]) -> bool:
    """A usable GPU: at least one, of an accepted vendor (any vendor when the profile names none)."""
    if not hw.gpu_count.value:
        return False
    vendor = (hw.gpu_vendor.value or "").lower()
    return not vendors or vendor in {v.lower() for v in vendors}


def _technical(profile: RequirementsProfile, spec: FederatedNodeSpec, hw: Observed, probes: ProbeFacts,
               access: Access) -> list[Line]:  # fmt: skip
    rules, out = profile.rules, []
    gpu = _has_gpu(hw, rules.gpu.vendors if rules.gpu else [])

    def line(id_: str, requirement: str, expected: str, observed: str, source: Source, result: Result,
             message: str = "") -> None:  # fmt: skip
        out.append(Line(id_, "Technical", requirement, expected, observed, source, result, message))

    if (cpu := rules.cpu) is not None:
        options = " or ".join(f"≥ {o.cores} cores at ≥ {o.ghz:g} GHz" for o in cpu.options)
        src = _weakest(hw.cores, hw.ghz)
        if not hw.cores.known or not hw.ghz.known:
            missing = [n for n, v in (("cores", hw.cores), ("clock (ghz)", hw.ghz)) if not v.known]
            line("cpu", f"CPU: {options}", options, "unknown", "Missing", "Fail",
                 f"CPU {' and '.join(missing)} neither measured nor declared (spec.hardware.cpu)")  # fmt: skip
        else:
            cores, ghz = int(hw.cores.value or 0), float(hw.ghz.value or 0)
            seen = f"{cores} cores at {ghz:g} GHz"
            if any(cores >= o.cores and ghz >= o.ghz for o in cpu.options):
                line("cpu", f"CPU: {options}", options, seen, src, "Pass")
            else:
                line("cpu", f"CPU: {options}", options, seen, src, "Fail", f"{seen} meets neither {options}")
        if cpu.recommended_threads or (cpu.without_gpu_threads and not gpu):
            strict = bool(cpu.without_gpu_threads) and not gpu
            want = (cpu.without_gpu_threads if strict else cpu.recommended_threads) or 0
            requirement = (f"threads: ≥ {want} (required without a GPU)" if strict
                           else f"threads: ideally ≥ {want}")  # fmt: skip
            if not hw.threads.known:
                line("cpu.threads", requirement, f"≥ {want}", "unknown", "Missing", "Fail" if strict else "Warn",
                     "thread count neither measured nor declared (spec.hardware.cpu.threads)")  # fmt: skip
            elif int(hw.threads.value or 0) >= want:
                line("cpu.threads", requirement, f"≥ {want}", str(hw.threads.value), hw.threads.source, "Pass")
            else:
                why = f"{hw.threads.value} threads, {'required' if strict else 'recommended'} ≥ {want}"
                if strict:
                    why += " because the node has no GPU"
                line("cpu.threads", requirement, f"≥ {want}", str(hw.threads.value), hw.threads.source,
                     "Fail" if strict else "Warn", why)  # fmt: skip
        if cpu.without_gpu_server_grade and not gpu:
            requirement = "CPU: a server-grade high-core CPU when there is no GPU"
            if hw.server_grade.value is True:
                line("cpu.serverGrade", requirement, "server grade", "server grade", hw.server_grade.source, "Pass")
            else:
                seen = "not server grade" if hw.server_grade.value is False else "not declared"
                line("cpu.serverGrade", requirement, "server grade", seen, hw.server_grade.source, "Fail",
                     "without a GPU the CPU must be server grade (spec.hardware.cpu.serverGrade)")  # fmt: skip

    if (mem := rules.memory) is not None:
        minimum = _b(mem.minimum)
        expected = f"≥ {mem.minimum}" + (f" ({mem.recommended} recommended)" if mem.recommended else "")
        requirement = f"RAM: ≥ {mem.minimum}" + (f"; {mem.recommended} will be needed" if mem.recommended else "")
        if not hw.memory.known:
            line("memory", requirement, expected, "unknown", "Missing", "Fail",
                 "memory neither measured nor declared (spec.hardware.memory.size)")  # fmt: skip
        else:
            size = int(hw.memory.value or 0)
            seen = human_bytes(size)
            if size < minimum:
                line("memory", requirement, expected, seen, hw.memory.source, "Fail",
                     f"{seen} is below the minimum {mem.minimum}")  # fmt: skip
            elif mem.recommended and size < _b(mem.recommended):
                line("memory", requirement, expected, seen, hw.memory.source, "Warn",
                     f"{seen} meets the minimum; {mem.recommended} will be needed down the line")  # fmt: skip
            else:
                line("memory", requirement, expected, seen, hw.memory.source, "Pass")
        if mem.ecc_recommended:
            if hw.ecc.value is True:
                line("memory.ecc", "RAM: ECC recommended", "ECC", "ECC", hw.ecc.source, "Pass")
            else:
                seen = "no ECC" if hw.ecc.value is False else "not declared"
                line("memory.ecc", "RAM: ECC recommended", "ECC", seen, hw.ecc.source, "Warn",
                     "ECC memory is recommended (spec.hardware.memory.ecc)")  # fmt: skip

    if (disk := rules.os_disk) is not None:
        types = "/".join(disk.types)
        expected = f"≥ {disk.minimum}" + (f" {types}" if types else "")
        requirement = f"OS disk: ≥ {disk.minimum}" + (f" {types}" if types else "")
        problems = []
        if not hw.os_disk.known:
            problems.append("size neither measured nor declared (spec.hardware.osDisk.size)")
        elif int(hw.os_disk.value or 0) < _b(disk.minimum):
            problems.append(f"{human_bytes(int(hw.os_disk.value or 0))} is below {disk.minimum}")
        if disk.types and hw.os_disk_type.value not in disk.types:
            problems.append(f"type {hw.os_disk_type.value or 'not declared'} is not {types}")
        seen = " ".join(filter(None, [human_bytes(int(hw.os_disk.value)) if hw.os_disk.known else "unknown size",
                                       str(hw.os_disk_type.value or "")]))  # fmt: skip
        line("osDisk", requirement, expected, seen, _weakest(hw.os_disk, hw.os_disk_type),
             "Fail" if problems else "Pass", "; ".join(problems))  # fmt: skip

    if (data := rules.data_storage) is not None:
        quota, dataset = _b(spec.store.quota), _b(spec.store.dataset_size)
        need = max(_b(data.minimum), dataset if data.cover_dataset else 0)
        expected = f"≥ {data.minimum}" + (" and ≥ the contributed dataset" if data.cover_dataset else "")
        seen = f"{human_bytes(quota)} for a {human_bytes(dataset)} dataset"
        if quota < need:
            why = (f"store quota {human_bytes(quota)} is below "
                   f"{data.minimum if need == _b(data.minimum) else 'the dataset size ' + human_bytes(dataset)}")
            line("dataStorage", "Data storage: ≥ 1 TB and sized to the contributed dataset", expected, seen, "Spec",
                 "Fail", why)  # fmt: skip
        else:
            line("dataStorage", "Data storage: ≥ 1 TB and sized to the contributed dataset", expected, seen, "Spec",
                 "Pass")  # fmt: skip

    if (gpu_rule := rules.gpu) is not None:
        vendors = "/".join(gpu_rule.vendors) or "any vendor"
        count = int(hw.gpu_count.value or 0)
        seen = f"{count} × {hw.gpu_vendor.value or 'unknown vendor'}" if count else "none"
        tightens = " (required)" if gpu_rule.required else " (its absence tightens the CPU rule)"
        requirement = f"GPU: {vendors}{tightens}"
        if gpu:
            line("gpu", requirement, vendors, seen, _weakest(hw.gpu_count, hw.gpu_vendor), "Pass")
        elif count:
            line("gpu", requirement, vendors, seen, _weakest(hw.gpu_count, hw.gpu_vendor),
                 "Fail" if gpu_rule.required else "Warn",
                 f"GPU vendor {hw.gpu_vendor.value or 'not declared'} is not {vendors}; counted as no GPU")  # fmt: skip
        else:
            line("gpu", requirement, vendors, seen, hw.gpu_count.source, "Fail" if gpu_rule.required else "Pass",
                 "a GPU is required" if gpu_rule.required else "no GPU: the stricter CPU rule applies")  # fmt: skip
        if gpu and gpu_rule.recommended_memory:
            want = _b(gpu_rule.recommended_memory)
            if not hw.gpu_memory.known:
                line("gpu.memory", f"GPU memory: ≥ {gpu_rule.recommended_memory} preferred",
                     f"≥ {gpu_rule.recommended_memory}", "unknown", "Missing", "Warn",
                     "GPU memory neither measured nor declared (spec.hardware.gpu.memory)")  # fmt: skip
            else:
                size = int(hw.gpu_memory.value or 0)
                line("gpu.memory", f"GPU memory: ≥ {gpu_rule.recommended_memory} preferred",
                     f"≥ {gpu_rule.recommended_memory}", human_bytes(size), hw.gpu_memory.source,
                     "Pass" if size >= want else "Warn",
                     "" if size >= want else f"{human_bytes(size)} per GPU; ≥ {gpu_rule.recommended_memory} preferred")
        if gpu and gpu_rule.preferred_architectures:
            archs = "/".join(gpu_rule.preferred_architectures)
            arch = hw.gpu_architecture.value
            ok = arch is not None and arch.lower() in {a.lower() for a in gpu_rule.preferred_architectures}
            line("gpu.architecture", f"GPU architecture: {archs} preferred", archs, arch or "unknown",
                 hw.gpu_architecture.source, "Pass" if ok else "Warn",
                 "" if ok else f"architecture {arch or 'not declared'}; {archs} preferred")  # fmt: skip

    if (os_rule := rules.os) is not None:
        families = "/".join(os_rule.families)
        family = hw.os_family.value
        if family in os_rule.families:
            line("os", f"OS: {families}", families, str(family), hw.os_family.source, "Pass")
        else:
            line("os", f"OS: {families}", families, str(family or "unknown"), hw.os_family.source, "Fail",
                 f"operating system {family or 'neither measured nor declared'} is not {families}")  # fmt: skip

    if (net := rules.network) is not None:
        n = spec.network
        ok = n.bandwidth_mbps >= net.minimum_mbps
        line("network.bandwidth", f"Network: ≥ {net.minimum_mbps} Mbps", f"≥ {net.minimum_mbps} Mbps",
             f"{n.bandwidth_mbps} Mbps", "Declared", "Pass" if ok else "Fail",
             "" if ok else f"{n.bandwidth_mbps} Mbps is below {net.minimum_mbps} Mbps")  # fmt: skip
        if net.links:
            links = "/".join(net.links)
            ok = n.link in net.links
            line("network.link", f"Network: {links}", links, n.link, "Declared", "Pass" if ok else "Fail",
                 "" if ok else f"a {n.link.lower()} link; the guideline asks for {links.lower()}")  # fmt: skip
        if net.public_static_ip_unless_vpn:
            requirement = "Network: a public static IP unless a VPN is used"
            seen = {"VPN": "VPN", "StaticIP": f"static IP {n.public_ip}", "DynamicIP": "dynamic IP, no VPN"}[n.access]
            ok = n.access in ("VPN", "StaticIP")
            line("network.access", requirement, "VPN or static public IP", seen, "Declared", "Pass" if ok else "Fail",
                 "" if ok else "neither a VPN nor a public static IP (spec.network.access)")  # fmt: skip
        if net.open_ports:
            requirement = "Firewall: allows 22/TCP and 53/UDP"
            ep = n.endpoint
            if not probes.probed:
                line("network.ports", requirement, "22/TCP and 53/UDP answer", "not probed yet", "Probed", "Warn",
                     "the reachability probes have not run yet")  # fmt: skip
            elif probes.ssh_seen and probes.dns_seen:
                line("network.ports", requirement, "22/TCP and 53/UDP answer", "both answered", "Probed", "Pass")
            else:
                closed = [p for p, seen in ((f"{ep.ssh_port}/TCP", probes.ssh_seen),
                                            (f"{ep.dns_port}/UDP", probes.dns_seen)) if not seen]  # fmt: skip
                line("network.ports", requirement, "22/TCP and 53/UDP answer", f"{', '.join(closed)} never answered",
                     "Probed", "Fail", f"{' and '.join(closed)} on {ep.host} never answered a probe")  # fmt: skip

    if (raid := rules.raid) is not None:
        ok = spec.store.raid in raid.acceptable
        line("raid", "Backups: RAID (or similar) for the data drives", "/".join(raid.acceptable), spec.store.raid,
             "Declared", "Pass" if ok else "Fail",
             "" if ok else f"{spec.store.raid} gives no redundancy to the data drives (spec.store.raid)")  # fmt: skip

    if (backup := rules.backup) is not None:
        days = spec.backup.interval_days
        ok = days <= backup.max_interval_days
        line("backup.interval", f"Backups: an exact replica at least every {backup.max_interval_days} days",
             f"≤ {backup.max_interval_days} days", f"every {days} days", "Spec", "Pass" if ok else "Fail",
             "" if ok else f"every {days} days is longer than {backup.max_interval_days} (spec.backup.intervalDays)")

    if (integrator := rules.integrator) is not None:
        channels = "/".join(integrator.channels)
        have = {"SSH": access.ssh, "VPN": access.vpn}
        lacking = [c for c in integrator.channels if not have[c]]
        seen = "; ".join(f"{c}: {', '.join(have[c]) or 'nobody'}" for c in integrator.channels)
        line("integratorAccess", f"Access: {channels} credentials handed to the integrator", f"{channels} for "
             "an integrator", seen, "Spec", "Warn" if lacking else "Pass",
             f"no integrator has {'/'.join(lacking)} access now" if lacking else "")  # fmt: skip
    return out


def _review(id_: str, what: str, ref: LegalReference | None, today: datetime.date, out: list[Line]) -> None:
    requirement = f"Legal: {what} for a transfer to a third country"
    if ref is None:
        out.append(Line(id_, "Legal", requirement, "on file, review date not passed", "missing", "Missing", "Fail",
                        f"hosting outside the region needs {what}; none is recorded"))  # fmt: skip
    elif ref.review_date < today:
        out.append(Line(id_, "Legal", requirement, "on file, review date not passed",
                        f"{ref.reference} (review due {ref.review_date})", "Spec", "Fail",
                        f"{what} {ref.reference} was due for review on {ref.review_date}"))  # fmt: skip
    else:
        out.append(Line(id_, "Legal", requirement, "on file, review date not passed",
                        f"{ref.reference} (review by {ref.review_date})", "Spec", "Pass"))  # fmt: skip


def _legal(profile: RequirementsProfile, spec: FederatedNodeSpec, today: datetime.date) -> list[Line]:
    rules, out = profile.rules, []
    if rules.contact:
        c = spec.contact
        complete = bool(c.name and c.email and c.phone)
        out.append(Line("contact", "Legal", "A designated contact person", "name, e-mail and phone",
                        f"{c.name} <{c.email}>, {c.phone}", "Spec", "Pass" if complete else "Fail",
                        "" if complete else "the contact person needs a name, an e-mail and a phone"))  # fmt: skip
    legal = rules.legal
    if legal is None:
        return out
    hosting = spec.hosting
    inside = hosting.country in legal.region
    adequate = hosting.country in legal.adequate
    where = f"{hosting.country}" + (f" ({hosting.provider})" if hosting.provider else " (on premises)")
    if inside or adequate:
        out.append(Line("legal.location", "Legal", f"Legal: hosting inside the {legal.region_name} recommended",
                        legal.region_name, where, "Spec", "Pass",
                        "" if inside else f"{hosting.country}: adequacy decision accepted by the profile"))  # fmt: skip
    else:
        out.append(Line("legal.location", "Legal", f"Legal: hosting inside the {legal.region_name} recommended",
                        legal.region_name, where, "Spec", "Warn",
                        f"{hosting.country} is outside the {legal.region_name}: hosting there is a transfer to a "
                        "third country"))  # fmt: skip
        if legal.third_country_needs_scc:
            _review("legal.scc", "Standard Contractual Clauses", hosting.standard_contractual_clauses, today, out)
        if legal.third_country_needs_tia:
            _review("legal.tia", "a Transfer Impact Assessment", hosting.transfer_impact_assessment, today, out)
    if legal.provider_needs_processor_agreement and hosting.mode == "Provider":
        ok = hosting.processor_agreement is not None
        out.append(Line("legal.processorAgreement", "Legal", "Legal: an outsourced host needs a processor agreement",
                        "a data-processing agreement on file", hosting.processor_agreement or "missing",
                        "Spec" if ok else "Missing", "Pass" if ok else "Fail",
                        "" if ok else f"host {hosting.provider} needs a processor agreement "
                        "(spec.hosting.processorAgreement)"))  # fmt: skip
    if legal.documentation_required:
        ok = hosting.documentation is not None
        out.append(Line("legal.documentation", "Legal", "Legal: documentation kept on file", "a reference",
                        hosting.documentation or "missing", "Spec" if ok else "Missing", "Pass" if ok else "Fail",
                        "" if ok else "no record of where the documentation is kept (spec.hosting.documentation)"))
    return out


def evaluate(
    profile: RequirementsProfile,
    spec: FederatedNodeSpec,
    hardware: Observed,
    probes: ProbeFacts,
    access: Access,
    today: datetime.date,
) -> list[Line]:
    """Every line of the profile for this node: technical first, then legal."""
    return _technical(profile, spec, hardware, probes, access) + _legal(profile, spec, today)


def summary(profile: RequirementsProfile, lines: Sequence[Line]) -> dict[str, Any]:
    return {
        "passed": sum(line.result == "Pass" for line in lines),
        "warnings": sum(line.result == "Warn" for line in lines),
        "failed": sum(line.result == "Fail" for line in lines),
        "profile": f"{profile.name}: {profile.title}"[:256],
    }


def verdicts(lines: Sequence[Line]) -> list[conditions.Cond]:
    """Compliant (technical lines) and LegallyCleared (legal lines): False naming every failed line."""
    out = []
    for category, type_, ok_reason, bad_reason in (
        ("Technical", reasons.COMPLIANT, reasons.REASON_REQUIREMENTS_MET, reasons.REASON_REQUIREMENTS_FAILED),
        ("Legal", reasons.LEGALLY_CLEARED, reasons.REASON_REQUIREMENTS_MET, reasons.REASON_REQUIREMENTS_FAILED),
    ):
        mine = [line for line in lines if line.category == category]
        failed = [line for line in mine if line.result == "Fail"]
        warned = [line for line in mine if line.result == "Warn"]
        if failed:
            message = "; ".join(f"{line.id}: {line.message}" for line in failed)
            out.append(conditions.false(type_, bad_reason, f"{len(failed)} failed: {message}"))
        else:
            note = f" ({len(warned)} warnings: {', '.join(line.id for line in warned)})" if warned else ""
            out.append(conditions.true(type_, ok_reason, f"all {len(mine)} requirements met{note}"))
    return out
