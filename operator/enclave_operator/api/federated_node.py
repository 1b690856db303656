"""FederatedNode: a federated data-provider node (INCISIVE, EUCAIM, vantage6/NVFlare consortia) as a
declarative, checked compliance record, with its data store, integrator access, reachability and backups.

Cluster-scoped, owned by the platform team. The requirements a node is checked against come from a
requirements profile (`spec.profile`): profiles are data (YAML, see `enclave_operator/federation/profiles`),
typed by `RequirementsProfile` below; `incisive-2023` is built in and a site adds another by dropping a
file into a configured directory, without code.
"""

from __future__ import annotations

import datetime
from typing import Literal

import pydantic

from enclave_operator.api.common import (
    DNS_LABEL_PATTERN,
    USERNAME_PATTERN,
    ApiModel,
    CelRule,
    ConditionedStatus,
    KindInfo,
    NameRule,
    PrinterColumn,
)
from enclave_operator.api.research_project import DeidentificationKeyStatus, MemoryQuantity, StorageQuantity

MAX_NAME_LENGTH = 40
"""The node's name drives its namespace, buckets, identity group and Job names, each with a tighter limit."""
COUNTRY_PATTERN = r"^[A-Z]{2}$"
EMAIL_PATTERN = r"^[^@\s]+@[^@\s]+\.[^@\s]+$"
PHONE_PATTERN = r"^\+?[0-9 ()./-]{5,32}$"
REFERENCE_PATTERN = r"^[^\n]{1,200}$"
SECRET_NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
DeletionPolicy = Literal["Retain", "Delete"]
HardwareSource = Literal["Measured", "Declared"]
HostingMode = Literal["OnPremises", "Provider"]
Link = Literal["Wired", "Wireless"]
PublicAccess = Literal["VPN", "StaticIP", "DynamicIP"]
RaidLevel = Literal["None", "RAID0", "RAID1", "RAID5", "RAID6", "RAID10", "RAIDZ1", "RAIDZ2", "RAIDZ3", "Other"]
DiskType = Literal["SSD", "NVMe", "HDD"]
OsFamily = Literal["Linux", "Windows", "Other"]
IntegratorChannel = Literal["SSH", "VPN"]
Adoptable = Literal["Bucket"]
Result = Literal["Pass", "Warn", "Fail"]
Source = Literal["Measured", "Declared", "Probed", "Spec", "Missing"]
Category = Literal["Technical", "Legal"]
Reachability = Literal["NeverSeen", "Online", "Offline"]


class ContactPerson(ApiModel):
    """ContactPerson: the site's designated contact for the federation."""

    name: str = pydantic.Field(description="name: full name.", min_length=1, max_length=200)
    email: str = pydantic.Field(description="email: e-mail address.", max_length=254, pattern=EMAIL_PATTERN)
    phone: str = pydantic.Field(description="phone: telephone number, e.g. +31 50 361 0000.", pattern=PHONE_PATTERN)


class LegalReference(ApiModel):
    """LegalReference: a document kept on file (its reference) and when it is next reviewed."""

    reference: str = pydantic.Field(
        description="reference: where the signed document is kept, e.g. a contract number or DMS id.",
        pattern=REFERENCE_PATTERN,
    )
    review_date: datetime.date = pydantic.Field(
        description="reviewDate: the date (UTC) by which the document is reviewed again; after it the "
        "requirement fails until the date is moved."
    )


class Hosting(ApiModel):
    """Hosting: where the node runs and the legal basis for hosting the data there."""

    cel_rules = (
        CelRule(
            "self.mode != 'Provider' || has(self.provider)",
            "hosting.provider is required when hosting.mode is Provider",
            ".provider",
            "FieldValueRequired",
        ),
    )

    mode: HostingMode = pydantic.Field(
        description="mode: OnPremises (the hospital's own data centre) or Provider (an outsourced host)."
    )
    provider: str | None = pydantic.Field(
        None, description="provider: the hosting company, when mode is Provider.", min_length=1, max_length=200
    )
    country: str = pydantic.Field(
        description="country: ISO 3166-1 alpha-2 code of the country the data is hosted in, e.g. NL, DE, US.",
        pattern=COUNTRY_PATTERN,
    )
    processor_agreement: str | None = pydantic.Field(
        None,
        description="processorAgreement: reference of the data-processing agreement (GDPR art. 28 annex) with the "
        "provider; required by profiles for mode Provider.",
        pattern=REFERENCE_PATTERN,
    )
    standard_contractual_clauses: LegalReference | None = pydantic.Field(
        None, description="standardContractualClauses: the SCCs, required for a host outside the EU/EEA."
    )
    transfer_impact_assessment: LegalReference | None = pydantic.Field(
        None, description="transferImpactAssessment: the TIA, required for a host outside the EU/EEA."
    )
    documentation: str | None = pydantic.Field(
        None,
        description="documentation: where the node's legal and technical documentation is kept on file.",
        pattern=REFERENCE_PATTERN,
    )


class Endpoint(ApiModel):
    """Endpoint: the address the operator probes (SSH handshake, DNS query)."""

    host: str = pydantic.Field(
        description="host: IP address or DNS name of the node as seen from the operator.",
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9.:-]+$",
    )
    ssh_port: int = pydantic.Field(22, description="sshPort: the TCP port of sshd.", ge=1, le=65535)
    dns_port: int = pydantic.Field(53, description="dnsPort: the UDP port of the DNS server.", ge=1, le=65535)
    dns_query: str = pydantic.Field(
        ".",
        description="dnsQuery: the name asked for (type SOA); any answer, even NXDOMAIN or REFUSED, proves that "
        "DNS over UDP reaches the node.",
        min_length=1,
        max_length=253,
        pattern=r"^[A-Za-z0-9._-]+$",
    )


class FederationPeer(ApiModel):
    """FederationPeer: a federation endpoint (central server, aggregator) the node's components may reach."""

    cel_rules = (CelRule("isCIDR(self.cidr)", "cidr must be a valid CIDR such as 192.0.2.0/24", ".cidr"),)

    cidr: str = pydantic.Field(description="cidr: the peer's network, e.g. 192.0.2.10/32.", max_length=64)
    ports: list[int] = pydantic.Field(
        default_factory=list,
        description="ports: TCP ports; empty means every port.",
        max_length=32,
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 65535}},
    )


class NetworkSpec(ApiModel):
    """NetworkSpec: the node's network as the guideline asks for it, and what its namespace may reach."""

    cel_rules = (
        CelRule(
            "self.access != 'StaticIP' || has(self.publicIP)",
            "network.publicIP is required when network.access is StaticIP",
            ".publicIP",
            "FieldValueRequired",
        ),
        CelRule(
            "!has(self.publicIP) || isIP(self.publicIP)", "network.publicIP must be an IP address", ".publicIP"
        ),
        CelRule(
            "!has(self.integratorRanges) || self.integratorRanges.all(c, isCIDR(c))",
            "every network.integratorRanges entry must be a CIDR such as 198.51.100.0/24",
            ".integratorRanges",
        ),
    )

    bandwidth_mbps: int = pydantic.Field(
        description="bandwidthMbps: the node's network bandwidth in Mbit/s.", ge=1, le=1_000_000
    )
    link: Link = pydantic.Field(description="link: Wired or Wireless.")
    access: PublicAccess = pydantic.Field(
        description="access: how the federation reaches the node: VPN, StaticIP (a public static address) or "
        "DynamicIP (neither)."
    )
    public_ip: str | None = pydantic.Field(
        None, alias="publicIP", description="publicIP: the public static address (access StaticIP).", max_length=45
    )
    endpoint: Endpoint = pydantic.Field(description="endpoint: the address the operator probes.")
    integrator_ranges: list[str] = pydantic.Field(
        default_factory=list,
        description="integratorRanges: CIDRs the integrator connects from; 22/TCP is let into the node's "
        "namespace from these only.",
        max_length=32,
        json_schema_extra={"items": {"type": "string", "maxLength": 64}},
    )
    federation_peers: list[FederationPeer] = pydantic.Field(
        default_factory=list,
        description="federationPeers: federation endpoints the node's namespace may reach.",
        max_length=32,
    )


class Cpu(ApiModel):
    """Cpu: the processor(s)."""

    cores: int | None = pydantic.Field(None, description="cores: physical cores (all sockets).", ge=1, le=100_000)
    threads: int | None = pydantic.Field(None, description="threads: hardware threads.", ge=1, le=200_000)
    ghz: float | None = pydantic.Field(None, description="ghz: base clock in GHz, e.g. 2.4.", gt=0, le=10)
    server_grade: bool | None = pydantic.Field(
        None, description="serverGrade: a server-grade processor (e.g. Xeon, EPYC)."
    )
    model: str | None = pydantic.Field(None, description="model: the processor model.", max_length=200)


class Memory(ApiModel):
    """Memory: the main memory."""

    size: MemoryQuantity | None = pydantic.Field(None, description="size: total RAM, a quantity such as 128Gi.")
    ecc: bool | None = pydantic.Field(None, description="ecc: error-correcting memory.")


class Disk(ApiModel):
    """Disk: the operating-system disk."""

    size: StorageQuantity | None = pydantic.Field(None, description="size: capacity, a quantity such as 1Ti.")
    type: DiskType | None = pydantic.Field(None, description="type: SSD, NVMe or HDD.")


class Gpu(ApiModel):
    """Gpu: the GPUs (all of one kind)."""

    count: int = pydantic.Field(0, description="count: number of GPUs; 0 means none.", ge=0, le=1024)
    vendor: str | None = pydantic.Field(None, description="vendor: e.g. NVIDIA.", max_length=64)
    memory: MemoryQuantity | None = pydantic.Field(None, description="memory: memory of one GPU, e.g. 24Gi.")
    architecture: str | None = pydantic.Field(
        None, description="architecture: e.g. Ampere, Volta, Hopper.", max_length=64
    )


class OperatingSystem(ApiModel):
    """OperatingSystem: the node's operating system."""

    family: OsFamily | None = pydantic.Field(None, description="family: Linux, Windows or Other.")
    distribution: str | None = pydantic.Field(None, description="distribution: e.g. Ubuntu 22.04.", max_length=200)


class HardwareSpec(ApiModel):
    """HardwareSpec: the machine, measured from Kubernetes Node objects or declared (a VM, a remote host).

    With source Measured, what Node objects tell (threads, memory, ephemeral storage, GPU count and memory,
    OS, node-feature-discovery labels) is measured and the declared fields supply the rest (clock, ECC,
    server grade); each requirement line in status says which it used.
    """

    cel_rules = (
        CelRule(
            "self.source != 'Measured' || has(self.nodeSelector)",
            "hardware.nodeSelector is required when hardware.source is Measured",
            ".nodeSelector",
            "FieldValueRequired",
        ),
    )

    source: HardwareSource = pydantic.Field(
        description="source: Measured (from the Kubernetes nodes that make up the node) or Declared."
    )
    node_selector: dict[str, str] | None = pydantic.Field(
        None,
        description="nodeSelector: labels selecting the Kubernetes Node objects that make up this node (Measured).",
        json_schema_extra={"maxProperties": 16, "additionalProperties": {"type": "string", "maxLength": 63}},
    )
    cpu: Cpu = pydantic.Field(default_factory=Cpu, description="cpu: the processors.")
    memory: Memory = pydantic.Field(default_factory=Memory, description="memory: the RAM.")
    os_disk: Disk = pydantic.Field(default_factory=Disk, description="osDisk: the operating-system disk.")
    gpu: Gpu = pydantic.Field(default_factory=Gpu, description="gpu: the GPUs.")
    os: OperatingSystem = pydantic.Field(default_factory=OperatingSystem, description="os: the operating system.")


class StoreSpec(ApiModel):
    """StoreSpec: the node's data store (an S3 bucket with quota) and the storage behind the node's data."""

    quota: StorageQuantity = pydantic.Field(description="quota: hard limit of the store bucket, e.g. 2Ti.")
    dataset_size: StorageQuantity = pydantic.Field(
        "0", description="datasetSize: size of the dataset this site contributes; the store must hold it."
    )
    raid: RaidLevel = pydantic.Field(
        description="raid: redundancy of the data drives (RAID1/5/6/10, RAIDZ1-3, Other, or None)."
    )


class Integrator(ApiModel):
    """Integrator: one person of the federation's integrator with SSH and/or VPN access until a date."""

    user: str = pydantic.Field(
        description="user: the integrator's identity username (FreeIPA/LDAP), lowercase.",
        min_length=1,
        max_length=64,
        pattern=USERNAME_PATTERN,
    )
    expires: datetime.date = pydantic.Field(
        description="expires: the last day (UTC) of access; afterwards the access is revoked."
    )
    channels: list[IntegratorChannel] = pydantic.Field(
        default_factory=lambda: ["SSH", "VPN"],
        description="channels: SSH and/or VPN.",
        min_length=1,
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


class IntegratorAccess(ApiModel):
    """IntegratorAccess: who of the integrator may reach the node, until when, and where their keys are."""

    integrators: list[Integrator] = pydantic.Field(
        default_factory=list,
        description="integrators: the people with access; each in the node's identity group and able to read the "
        "credential Secrets until `expires`.",
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["user"]},
    )
    credential_secrets: list[str] = pydantic.Field(
        default_factory=list,
        description="credentialSecrets: names of Secrets in the node's namespace holding what the integrator's "
        "credentials come from (VPN profile or certificates, SSH keys); the operator never reads them, it "
        "grants and revokes read access.",
        max_length=16,
        json_schema_extra={"items": {"type": "string", "maxLength": 253, "pattern": SECRET_NAME_PATTERN}},
    )


class RestoreDrill(ApiModel):
    """RestoreDrill: restore a snapshot into a scratch bucket and compare checksums; a new name runs a new drill."""

    name: str = pydantic.Field(
        description="name: names this drill; change it (e.g. to the date) to run another one.",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    snapshot: str = pydantic.Field(
        "latest",
        description="snapshot: the restic snapshot id to restore, or latest.",
        min_length=1,
        max_length=64,
        pattern=r"^(latest|[0-9a-f]{8,64})$",
    )


class BackupSpec(ApiModel):
    """BackupSpec: replicas of the data store on a separate backup target, on a schedule."""

    target: str = pydantic.Field(
        description="target: a backup target defined in the operator configuration (federation.backupTargets).",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    interval_days: int = pydantic.Field(
        14, description="intervalDays: days between backups; the profile sets the longest allowed.", ge=1, le=366
    )
    restore_drill: RestoreDrill | None = pydantic.Field(None, description="restoreDrill: the latest drill asked for.")


class FederatedNodeSpec(ApiModel):
    """FederatedNodeSpec: the node's compliance record and what the operator runs for it."""

    federation: str = pydantic.Field(
        description="federation: the network the node belongs to, e.g. incisive.",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    site: str = pydantic.Field(description="site: the data provider, e.g. the hospital.", min_length=1, max_length=200)
    profile: str = pydantic.Field(
        "incisive-2023",
        description="profile: the requirements profile the node is checked against (built in: incisive-2023).",
        min_length=1,
        max_length=63,
        pattern=DNS_LABEL_PATTERN,
    )
    contact: ContactPerson = pydantic.Field(description="contact: the designated contact person.")
    hosting: Hosting = pydantic.Field(description="hosting: where the data is hosted and on which legal basis.")
    network: NetworkSpec = pydantic.Field(description="network: bandwidth, access and the probed endpoint.")
    hardware: HardwareSpec = pydantic.Field(description="hardware: measured or declared.")
    store: StoreSpec = pydantic.Field(description="store: the data store and the RAID behind the data drives.")
    integrator_access: IntegratorAccess = pydantic.Field(
        default_factory=IntegratorAccess, description="integratorAccess: the integrator's access, with expiry."
    )
    backup: BackupSpec = pydantic.Field(description="backup: schedule and target of the store's backups.")
    deletion_policy: DeletionPolicy = pydantic.Field(
        "Retain",
        description="deletionPolicy: Retain (default) revokes every access but keeps the store bucket, the backup "
        "repository and its key; Delete removes them too.",
    )
    adopt: list[Adoptable] = pydantic.Field(
        default_factory=list,
        description="adopt: Bucket takes over the store bucket and backup repository an earlier node of this name "
        "kept under deletionPolicy Retain; without it such a name is refused.",
        max_length=1,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )


# Status.


class RequirementStatus(ApiModel):
    """RequirementStatus: one requirement of the profile, what was observed and the verdict."""

    id: str = pydantic.Field(description="id: the rule, e.g. memory, legal.tia.", max_length=64)
    category: Category = pydantic.Field(description="category: Technical (Compliant) or Legal (LegallyCleared).")
    requirement: str = pydantic.Field(description="requirement: the guideline's words.", max_length=512)
    expected: str = pydantic.Field(description="expected: what passes.", max_length=512)
    observed: str = pydantic.Field(description="observed: what the operator found.", max_length=512)
    source: Source = pydantic.Field(description="source: Measured, Declared, Probed, Spec or Missing.")
    result: Result = pydantic.Field(description="result: Pass, Warn or Fail.")
    message: str = pydantic.Field("", description="message: why, for a Warn or Fail.", max_length=1024)


class ComplianceSummary(ApiModel):
    """ComplianceSummary: counts of the requirement lines."""

    passed: int = pydantic.Field(0, description="passed: lines that pass.", ge=0)
    warnings: int = pydantic.Field(0, description="warnings: lines that warn.", ge=0)
    failed: int = pydantic.Field(0, description="failed: lines that fail.", ge=0)
    profile: str = pydantic.Field("", description="profile: the profile evaluated, with its title.", max_length=256)


class ProbeStatus(ApiModel):
    """ProbeStatus: the last result of one probe."""

    ok: bool = pydantic.Field(description="ok: the probe succeeded.")
    detail: str = pydantic.Field("", description="detail: the answer or the error.", max_length=512)
    last_success: datetime.datetime | None = pydantic.Field(None, description="lastSuccess: when it last succeeded.")


class ReachabilityStatus(ApiModel):
    """ReachabilityStatus: whether the node's endpoint answers on 22/TCP and 53/UDP."""

    state: Reachability = pydantic.Field(description="state: NeverSeen, Online or Offline.")
    last_probe: datetime.datetime | None = pydantic.Field(None, description="lastProbe: when probed last.")
    last_seen: datetime.datetime | None = pydantic.Field(None, description="lastSeen: when both probes last passed.")
    last_error: str = pydantic.Field("", description="lastError: why the last failing probe failed.", max_length=512)
    ssh: ProbeStatus | None = pydantic.Field(None, description="ssh: the TCP handshake on the SSH port.")
    dns: ProbeStatus | None = pydantic.Field(None, description="dns: the DNS query over UDP.")


class MeasuredHardware(ApiModel):
    """MeasuredHardware: totals over the Kubernetes nodes that make up the node."""

    nodes: list[str] = pydantic.Field(
        default_factory=list, description="nodes: the Node objects measured.", max_length=256,
        json_schema_extra={"items": {"type": "string", "maxLength": 253}},
    )  # fmt: skip
    threads: int | None = pydantic.Field(None, description="threads: logical CPUs (capacity cpu).", ge=0)
    cores: int | None = pydantic.Field(None, description="cores: physical cores, when SMT is known.", ge=0)
    memory: str | None = pydantic.Field(None, description="memory: capacity memory.", max_length=64)
    ephemeral_storage: str | None = pydantic.Field(None, description="ephemeralStorage: capacity.", max_length=64)
    gpus: int | None = pydantic.Field(None, description="gpus: capacity nvidia.com/gpu.", ge=0)
    gpu_memory: str | None = pydantic.Field(None, description="gpuMemory: smallest per-GPU memory.", max_length=64)


class IntegratorStatus(ApiModel):
    """IntegratorStatus: one integrator's access now."""

    user: str = pydantic.Field(description="user: the integrator.", max_length=64)
    expires: datetime.date = pydantic.Field(description="expires: the last day of access.")
    state: Literal["Active", "Expired", "Revoked"] = pydantic.Field(
        description="state: Active, Expired (past expires) or Revoked (the node is being retired)."
    )
    access: dict[str, str] = pydantic.Field(
        default_factory=dict, description="access: per channel (identity, secrets) what the integrator has now."
    )


class BackupRun(ApiModel):
    """BackupRun: one backup's outcome."""

    time: datetime.datetime = pydantic.Field(description="time: when the run finished.")
    job: str = pydantic.Field("", description="job: the Job's namespace/name.", max_length=256)
    snapshot: str = pydantic.Field("", description="snapshot: the restic snapshot id.", max_length=64)
    objects: int = pydantic.Field(0, description="objects: objects in the snapshot.", ge=0)
    bytes: int = pydantic.Field(0, description="bytes: bytes in the snapshot.", ge=0)
    added_bytes: int = pydantic.Field(0, description="addedBytes: bytes new to the repository.", ge=0)
    message: str = pydantic.Field("", description="message: what happened.", max_length=1024)


class BackupStatus(ApiModel):
    """BackupStatus: the schedule's state and the last outcomes."""

    target: str = pydantic.Field("", description="target: the backup target.", max_length=63)
    repository: str = pydantic.Field("", description="repository: where the snapshots are.", max_length=512)
    runs: int = pydantic.Field(0, description="runs: backups started so far (names the next Job).", ge=0)
    request: str | None = pydantic.Field(
        None, description="request: the last enclave.io/backup-requested annotation served.", max_length=128
    )
    running: str | None = pydantic.Field(None, description="running: the Job running now.", max_length=256)
    last_success: BackupRun | None = pydantic.Field(None, description="lastSuccess: the last successful backup.")
    last_failure: BackupRun | None = pydantic.Field(None, description="lastFailure: the last failed backup.")
    next_due: datetime.datetime | None = pydantic.Field(None, description="nextDue: when the next backup is due.")


class RestoreDrillStatus(ApiModel):
    """RestoreDrillStatus: the latest restore drill."""

    name: str = pydantic.Field(description="name: the drill (spec.backup.restoreDrill.name).", max_length=63)
    phase: Literal["Waiting", "Running", "Passed", "Failed"] = pydantic.Field(
        description="phase: Waiting (for a first backup, or the running one), Running, Passed or Failed."
    )
    job: str = pydantic.Field("", description="job: the Job's namespace/name.", max_length=256)
    snapshot: str = pydantic.Field("", description="snapshot: the snapshot restored.", max_length=64)
    scratch_bucket: str = pydantic.Field("", description="scratchBucket: where it was restored.", max_length=63)
    objects: int = pydantic.Field(0, description="objects: objects restored and compared.", ge=0)
    bytes: int = pydantic.Field(0, description="bytes: bytes restored.", ge=0)
    mismatches: int = pydantic.Field(0, description="mismatches: objects whose checksum differs.", ge=0)
    compared_live: int = pydantic.Field(
        0, description="comparedLive: objects also compared with the unchanged live object.", ge=0
    )
    time: datetime.datetime | None = pydantic.Field(None, description="time: when the drill finished.")
    message: str = pydantic.Field("", description="message: the outcome.", max_length=1024)


class FederatedNodeStatus(ConditionedStatus):
    """FederatedNodeStatus: the compliance verdict, the store, access, reachability and backups."""

    compliance: ComplianceSummary | None = pydantic.Field(None, description="compliance: counts of the lines.")
    requirements: list[RequirementStatus] = pydantic.Field(
        default_factory=list,
        description="requirements: one line per requirement of the profile.",
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["id"]},
    )
    measured: MeasuredHardware | None = pydantic.Field(None, description="measured: what Node objects said.")
    namespace: str | None = pydantic.Field(None, description="namespace: the node's namespace.", max_length=63)
    bucket: str | None = pydantic.Field(None, description="bucket: the store bucket.", max_length=63)
    group: str | None = pydantic.Field(None, description="group: the integrators' identity group.", max_length=64)
    integrators: list[IntegratorStatus] = pydantic.Field(
        default_factory=list,
        description="integrators: who has access until when.",
        max_length=64,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["user"]},
    )
    reachability: ReachabilityStatus | None = pydantic.Field(None, description="reachability: the probes.")
    backup: BackupStatus | None = pydantic.Field(None, description="backup: the schedule and last outcomes.")
    restore_drill: RestoreDrillStatus | None = pydantic.Field(None, description="restoreDrill: the latest drill.")
    deidentification_key: DeidentificationKeyStatus | None = pydantic.Field(
        None, description="deidentificationKey: the node's de-identification key Secret and its fate on deletion."
    )


class FederatedNode(ApiModel):
    """FederatedNode records a federated data-provider node and checks it: compliance, store, access, reachability, backups."""  # noqa: E501

    spec: FederatedNodeSpec = pydantic.Field(description="spec: the node's record and what to run for it.")
    status: FederatedNodeStatus | None = pydantic.Field(None, description="status: the observed state.")


KIND = KindInfo(
    kind="FederatedNode",
    plural="federatednodes",
    singular="federatednode",
    short_names=("fn", "fednode"),
    scope="Cluster",
    description=FederatedNode.__doc__ or "",
    name_rule=NameRule(
        MAX_NAME_LENGTH,
        DNS_LABEL_PATTERN,
        f"must be a DNS label (lowercase letters, digits, '-', starting with a letter) of at most {MAX_NAME_LENGTH} "
        "characters: it names the node's namespace, buckets, group and backup Jobs",
    ),
    printer_columns=(
        PrinterColumn("Profile", ".spec.profile"),
        PrinterColumn("Compliant", '.status.conditions[?(@.type=="Compliant")].status'),
        PrinterColumn("Reachable", ".status.reachability.state"),
        PrinterColumn("Last-Backup", ".status.backup.lastSuccess.time", "date"),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
        PrinterColumn("Federation", ".spec.federation", priority=1),
        PrinterColumn("Legally-Cleared", '.status.conditions[?(@.type=="LegallyCleared")].status', priority=1),
        PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status', priority=1),
        PrinterColumn("Failed", ".status.compliance.failed", "integer", priority=1),
    ),
)


# Requirements profiles: data, typed here. See federation/profiles/incisive-2023.yaml.


class ProfileModel(pydantic.BaseModel):
    """Base of the profile models: camelCase YAML, unknown keys rejected (a typo must not drop a rule)."""

    model_config = pydantic.ConfigDict(
        alias_generator=pydantic.alias_generators.to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class CpuOption(ProfileModel):
    """CpuOption: one way to pass the CPU rule: at least `cores` cores at at least `ghz` GHz."""

    cores: int = pydantic.Field(ge=1)
    ghz: float = pydantic.Field(gt=0)


class CpuRule(ProfileModel):
    options: list[CpuOption] = pydantic.Field(min_length=1)
    recommended_threads: int | None = pydantic.Field(None, ge=1)
    without_gpu_server_grade: bool = False
    """Without a GPU the CPU must be server grade."""
    without_gpu_threads: int | None = pydantic.Field(None, ge=1)
    """Without a GPU the recommended thread count becomes a requirement of at least this."""


class MemoryRule(ProfileModel):
    minimum: str
    recommended: str | None = None
    ecc_recommended: bool = False


class DiskRule(ProfileModel):
    minimum: str
    types: list[DiskType] = pydantic.Field(default_factory=list)


class DataStorageRule(ProfileModel):
    minimum: str
    cover_dataset: bool = True


class GpuRule(ProfileModel):
    required: bool = False
    vendors: list[str] = pydantic.Field(default_factory=list)
    recommended_memory: str | None = None
    preferred_architectures: list[str] = pydantic.Field(default_factory=list)


class OsRule(ProfileModel):
    families: list[OsFamily] = pydantic.Field(min_length=1)


class NetworkRule(ProfileModel):
    minimum_mbps: int = pydantic.Field(ge=1)
    links: list[Link] = pydantic.Field(default_factory=list)
    public_static_ip_unless_vpn: bool = True
    open_ports: bool = True
    """22/TCP and 53/UDP shown open by the probes."""


class RaidRule(ProfileModel):
    acceptable: list[RaidLevel] = pydantic.Field(min_length=1)


class BackupRule(ProfileModel):
    max_interval_days: int = pydantic.Field(ge=1)


class IntegratorRule(ProfileModel):
    channels: list[IntegratorChannel] = pydantic.Field(default_factory=lambda: ["SSH", "VPN"])


class LegalRule(ProfileModel):
    region_name: str = "EU/EEA"
    region: list[str] = pydantic.Field(min_length=1)
    """ISO 3166-1 alpha-2 codes where hosting needs no transfer safeguards."""
    adequate: list[str] = pydantic.Field(default_factory=list)
    """Countries with an adequacy decision the profile accepts like the region (none in incisive-2023)."""
    third_country_needs_scc: bool = True
    third_country_needs_tia: bool = True
    provider_needs_processor_agreement: bool = True
    documentation_required: bool = True


class ProfileRules(ProfileModel):
    """Which rules the profile has; an absent rule is not checked."""

    cpu: CpuRule | None = None
    memory: MemoryRule | None = None
    os_disk: DiskRule | None = None
    data_storage: DataStorageRule | None = None
    gpu: GpuRule | None = None
    os: OsRule | None = None
    network: NetworkRule | None = None
    raid: RaidRule | None = None
    backup: BackupRule | None = None
    integrator: IntegratorRule | None = None
    contact: bool = True
    legal: LegalRule | None = None


class RequirementsProfile(ProfileModel):
    """RequirementsProfile: a federation's requirements for a data-provider node, as data."""

    api_version: Literal["enclave.io/v1alpha1"] = "enclave.io/v1alpha1"
    kind: Literal["RequirementsProfile"] = "RequirementsProfile"
    name: str = pydantic.Field(pattern=DNS_LABEL_PATTERN, max_length=63)
    title: str = pydantic.Field(max_length=200)
    source: str = pydantic.Field("", max_length=500)
    """Where the requirements come from (document, version)."""
    rules: ProfileRules
