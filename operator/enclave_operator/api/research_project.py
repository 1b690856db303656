"""ResearchProject: one manifest that provisions a research project in every enclave backend.

Cluster-scoped. Its name is a DNS label of at most 40 characters because it drives the derived names
(namespace, bucket, identity group, Slurm account), each of which has its own, tighter limit than a
Kubernetes object name.
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
    bounded_quantity,
)

MAX_NAME_LENGTH = 40
CpuQuantity = bounded_quantity("100000")
"""Cores (a quantity: 8, 1.5, 500m); at most 100000."""
MemoryQuantity = bounded_quantity("1Pi", whole=True)
"""Bytes of memory (64Gi, 1500M); at most 1Pi."""
StorageQuantity = bounded_quantity("10Pi", whole=True)
"""Bytes of storage (500Gi, 2Ti); at most 10Pi."""
Role = Literal["owner", "maintainer", "member", "viewer"]
ROLES: tuple[Role, ...] = ("owner", "maintainer", "member", "viewer")
DeletionPolicy = Literal["Retain", "Delete"]
Adoptable = Literal["Bucket", "SlurmAccount"]
"""What a project may take over from an earlier project of the same name (see spec.adopt)."""


class Member(ApiModel):
    """Member: one person's access to the project; the one list every backend follows."""

    user: str = pydantic.Field(
        description="user: the identity username (as in FreeIPA/LDAP and Slurm), lowercase.",
        min_length=1,
        max_length=64,
        pattern=USERNAME_PATTERN,
    )
    role: Role = pydantic.Field(
        description="role: owner (full control), maintainer (manages work and data), "
        "member (runs work, reads and writes data) or viewer (read only)."
    )
    expires: datetime.date | None = pydantic.Field(
        None, description="expires: the last day (UTC) of this member's access; access ends when it passes."
    )


class StorageSpec(ApiModel):
    """StorageSpec: the project's S3 bucket."""

    quota: StorageQuantity = pydantic.Field(
        "100Gi", description="quota: hard limit of the bucket's size, a quantity such as 500Gi or 2Ti (at most 10Pi)."
    )
    versioning: bool = pydantic.Field(True, description="versioning: keep every version of every object.")


class KubernetesCompute(ApiModel):
    """KubernetesCompute: the project namespace's ResourceQuota."""

    cpu: CpuQuantity = pydantic.Field(
        "8", description="cpu: total CPU requests and limits in the namespace, in cores (at most 100000)."
    )
    memory: MemoryQuantity = pydantic.Field(
        "32Gi", description="memory: total memory requests and limits, in bytes (at most 1Pi)."
    )
    gpu: int = pydantic.Field(0, description="gpu: total requests.nvidia.com/gpu.", ge=0, le=1024)
    pods: int = pydantic.Field(100, description="pods: the most pods that may exist at once.", ge=0, le=10000)
    persistent_volume_claims: int = pydantic.Field(
        20, description="persistentVolumeClaims: the most PVCs in the namespace.", ge=0, le=1000
    )
    storage: StorageQuantity = pydantic.Field(
        "1Ti", description="storage: total requested persistent volume storage, in bytes (at most 10Pi)."
    )


class SlurmLimits(ApiModel):
    """SlurmLimits: the Slurm account's group TRES limits (GrpTRES); absent means unlimited."""

    cpu: int | None = pydantic.Field(None, description="cpu: GrpTRES cpu, in cores.", ge=0, le=10_000_000)
    mem: MemoryQuantity | None = pydantic.Field(
        None, description="mem: GrpTRES mem, a quantity such as 2Ti (at most 1Pi)."
    )
    gpu: int | None = pydantic.Field(None, description="gpu: GrpTRES gres/gpu.", ge=0, le=100_000)


class SlurmCompute(ApiModel):
    """SlurmCompute: the project's Slurm account."""

    parent: str = pydantic.Field(
        "root", description="parent: the parent account.", min_length=1, max_length=64, pattern=USERNAME_PATTERN
    )
    fairshare: int = pydantic.Field(1, description="fairshare: the account's share.", ge=1, le=1_000_000)
    limits: SlurmLimits = pydantic.Field(
        default_factory=SlurmLimits, description="limits: group limits of the account."
    )
    qos: list[str] = pydantic.Field(
        default_factory=lambda: ["normal"],
        description="qos: the QOS names the account may use.",
        max_length=16,
        json_schema_extra={"items": {"type": "string", "maxLength": 64, "pattern": USERNAME_PATTERN}},
    )


class Compute(ApiModel):
    """Compute: what the project may use on Kubernetes and on Slurm."""

    kubernetes: KubernetesCompute = pydantic.Field(
        default_factory=KubernetesCompute, description="kubernetes: the namespace's quota."
    )
    slurm: SlurmCompute | None = pydantic.Field(None, description="slurm: the Slurm account; absent means none.")


class EgressRule(ApiModel):
    """EgressRule: one destination the project's pods may reach besides DNS and each other."""

    cel_rules = (CelRule("isCIDR(self.cidr)", "cidr must be a valid CIDR such as 10.20.0.0/16", ".cidr"),)

    cidr: str = pydantic.Field(description="cidr: the destination network, e.g. 10.20.0.0/16.", max_length=64)
    ports: list[int] = pydantic.Field(
        default_factory=list,
        description="ports: destination TCP ports; empty means every port.",
        max_length=32,
        json_schema_extra={"items": {"type": "integer", "minimum": 1, "maximum": 65535}},
    )


class IdentitySpec(ApiModel):
    """IdentitySpec: the project's group in the identity provider."""

    gid_number: int | None = pydantic.Field(
        None, description="gidNumber: pin the group's POSIX GID (e.g. to match existing file ownership).",
        ge=1000, le=2147483647,
    )  # fmt: skip


class NetworkSpec(ApiModel):
    """NetworkSpec: the project's network policy beyond the default deny."""

    egress: list[EgressRule] = pydantic.Field(
        default_factory=list, description="egress: allowed destinations outside the namespace.", max_length=64
    )


class ResearchProjectSpec(ApiModel):
    """ResearchProjectSpec: the desired state of a research project."""

    cel_rules = (
        CelRule(
            "self.members.exists(m, m.user == self.owner && m.role == 'owner')",
            "spec.owner must be listed in spec.members with role owner",
            ".owner",
        ),
    )

    display_name: str = pydantic.Field(
        description="displayName: the project's human-readable title.", min_length=1, max_length=200
    )
    description: str | None = pydantic.Field(None, description="description: what the project is for.", max_length=2000)
    owner: str = pydantic.Field(
        description="owner: the principal investigator's username; must be a member with role owner.",
        min_length=1,
        max_length=64,
        pattern=USERNAME_PATTERN,
    )
    members: list[Member] = pydantic.Field(
        description="members: who has access and with which role; every backend follows this one list.",
        min_length=1,
        max_length=500,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["user"]},
    )
    valid_until: datetime.date = pydantic.Field(
        description="validUntil: end of the ethics approval or data-use agreement (UTC); after it the project is "
        "cordoned: members keep read access but cannot write or start new work."
    )
    storage: StorageSpec = pydantic.Field(default_factory=StorageSpec, description="storage: the S3 bucket.")
    compute: Compute = pydantic.Field(default_factory=Compute, description="compute: Kubernetes and Slurm quotas.")
    network: NetworkSpec = pydantic.Field(default_factory=NetworkSpec, description="network: egress rules.")
    identity: IdentitySpec = pydantic.Field(
        default_factory=IdentitySpec, description="identity: the project group in FreeIPA or LDAP."
    )
    deletion_policy: DeletionPolicy = pydantic.Field(
        "Retain",
        description="deletionPolicy: Retain (default) revokes access but keeps the bucket with its objects and "
        "the namespace's persistent volumes; Delete removes everything the project created.",
    )
    adopt: list[Adoptable] = pydantic.Field(
        default_factory=list,
        description="adopt: what an earlier project with this name kept under deletionPolicy Retain and this "
        "project takes over: Bucket (with every object) and/or SlurmAccount (with its job history). Without it, "
        "a name whose retained bucket or account still exists is refused, and nothing is ever taken silently.",
        max_length=2,
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )

    @pydantic.model_validator(mode="after")
    def _owner_is_an_owner_member(self) -> ResearchProjectSpec:
        """Mirror of the CEL rule, for objects that reached the operator without it (older CRDs)."""
        if not any(m.user == self.owner and m.role == "owner" for m in self.members):
            raise ValueError("spec.owner must be listed in spec.members with role owner")
        return self


MemberState = Literal["Active", "Expired", "Cordoned"]


class MemberStatus(ApiModel):
    """MemberStatus: one member's access as each backend has it now, so drift is visible without logs."""

    user: str = pydantic.Field(description="user: the member's username.", max_length=64)
    role: Role = pydantic.Field(description="role: the role from spec.members.")
    state: MemberState = pydantic.Field(description="state: Active, Expired (past expires) or Cordoned.")
    backends: dict[str, str] = pydantic.Field(
        default_factory=dict,
        description="backends: per backend part (kubernetes, storage, identity, scheduler) the member's access there.",
    )


KeyFate = Literal["Kept", "Deleted"]


class DeidentificationKeyStatus(ApiModel):
    """DeidentificationKeyStatus: where a de-identification key lives and what deletion does with it.

    A project's key, or a federated node's (DataIngest can deliver to either)."""

    secret: str = pydantic.Field(
        description="secret: <namespace>/<name> of the Secret holding the key (created by the first DataIngest, "
        "in the ingest namespace where researchers have no access).",
        max_length=317,
    )
    on_delete: KeyFate = pydantic.Field(
        description="onDelete: Kept (deletionPolicy Retain: the retained data and an object adopting it keep "
        "their pseudonyms) or Deleted (deletionPolicy Delete: a later object with this name gets a new key, so "
        "its pseudonyms never link to this one's).",
    )


class ResearchProjectStatus(ConditionedStatus):
    """ResearchProjectStatus: what the operator observed and did."""

    namespace: str | None = pydantic.Field(None, description="namespace: the project's namespace.", max_length=63)
    bucket: str | None = pydantic.Field(None, description="bucket: the project's S3 bucket.", max_length=63)
    group: str | None = pydantic.Field(None, description="group: the project's identity group.", max_length=64)
    slurm_account: str | None = pydantic.Field(
        None, description="slurmAccount: the project's Slurm account, when it has one.", max_length=64
    )
    member_count: int | None = pydantic.Field(
        None, description="memberCount: number of members whose access has not expired.", ge=0
    )
    valid_until: datetime.date | None = pydantic.Field(
        None,
        description="validUntil: the end date in force: spec.validUntil, or the last approved date while an "
        "extension waits for a platform admin's approval.",
    )
    deidentification_key: DeidentificationKeyStatus | None = pydantic.Field(
        None, description="deidentificationKey: the project's de-identification key Secret and its fate on deletion."
    )
    members: list[MemberStatus] = pydantic.Field(
        default_factory=list,
        description="members: per member, the state in each backend.",
        max_length=500,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["user"]},
    )


class ResearchProject(ApiModel):
    """ResearchProject provisions a research project everywhere: namespace, storage, identity, scheduler."""

    spec: ResearchProjectSpec = pydantic.Field(description="spec: the desired state of the project.")
    status: ResearchProjectStatus | None = pydantic.Field(None, description="status: the observed state.")


KIND = KindInfo(
    kind="ResearchProject",
    plural="researchprojects",
    singular="researchproject",
    short_names=("rp", "rproj"),
    scope="Cluster",
    description=ResearchProject.__doc__ or "",
    name_rule=NameRule(
        MAX_NAME_LENGTH,
        DNS_LABEL_PATTERN,
        f"must be a DNS label (lowercase letters, digits, '-', starting with a letter) of at most {MAX_NAME_LENGTH} "
        "characters: it names the namespace, bucket, group and Slurm account",
    ),
    printer_columns=(
        PrinterColumn("Owner", ".spec.owner"),
        PrinterColumn("Members", ".status.memberCount", "integer"),
        PrinterColumn("Ready", '.status.conditions[?(@.type=="Ready")].status'),
        PrinterColumn("Cordoned", '.status.conditions[?(@.type=="Cordoned")].status'),
        PrinterColumn("Reason", '.status.conditions[?(@.type=="Ready")].reason', priority=1),
        PrinterColumn("Valid-Until", ".spec.validUntil", priority=1),
        PrinterColumn("Age", ".metadata.creationTimestamp", "date"),
    ),
)
