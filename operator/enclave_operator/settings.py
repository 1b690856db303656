"""Operator configuration: one model per concern, loaded once at start-up and validated with errors
that name the field. Non-secret settings come from a YAML file (a ConfigMap in the Helm chart);
credentials come from environment variables (a Secret in the Helm chart) whose names are settings.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml
from pydantic.alias_generators import to_camel

from enclave_operator import signing as approval_keys
from enclave_operator.backends.slurm_accounts import SlurmSettings
from enclave_operator.configerror import ConfigError
from enclave_operator.deid.config import TrustedSopClass

HOST_PORT = r"[A-Za-z0-9.\-\[\]:]+:\d+"
"""An S3 endpoint: host (name, IPv4 or [IPv6]) and port, without a scheme."""
CONFIG_ENV = "ENCLAVE_CONFIG"
"""Environment variable naming the configuration file when --config is not given."""


class _Settings(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True)


def _template(value: str, placeholder: str) -> str:
    """A name template with exactly the one placeholder `{<placeholder>}` (project or node)."""
    if "{" + placeholder + "}" not in value:
        raise ValueError(f"must contain {{{placeholder}}}, or every {placeholder} would share one name")
    try:
        value.format(**{placeholder: "x"})
    except (KeyError, IndexError, ValueError) as error:
        raise ValueError(f"only the placeholder {{{placeholder}}} is allowed ({error})") from None
    return value


class NamingSettings(_Settings):
    """How derived names are made from the project name; `{project}` is replaced by it."""

    namespace: str = pydantic.Field("{project}", description="Namespace name template.")
    bucket: str = pydantic.Field("{project}", description="S3 bucket name template.")
    group: str = pydantic.Field(
        "proj-{project}", description="Identity group template; also the MinIO group prefix and RBAC group."
    )
    slurm_account: str = pydantic.Field("{project}", description="Slurm account name template.")
    reserved_namespaces: list[str] = pydantic.Field(
        default_factory=lambda: ["kube-*", "default", "enclave-system"],
        description="Namespace names (shell patterns) no project may take, besides the ingest namespace and the "
        "operator's own ($POD_NAMESPACE): a project named like one is refused at admission.",
    )

    @pydantic.field_validator("namespace", "bucket", "group", "slurm_account")
    @classmethod
    def _has_placeholder(cls, value: str) -> str:
        return _template(value, "project")


class S3Settings(_Settings):
    """The S3 store (MinIO) holding project buckets."""

    endpoint: str = pydantic.Field(
        description="host:port of the S3 API, without scheme.", json_schema_extra={"pattern": f"^{HOST_PORT}$"}
    )
    secure: bool = pydantic.Field(True, description="Use HTTPS. Only loopback test servers should say false.")
    ca_file: Path | None = pydantic.Field(None, description="CA bundle for the S3 endpoint's certificate.")
    region: str = pydantic.Field("", description="Region passed to the S3 client; MinIO ignores it.")
    access_key_env: str = pydantic.Field("ENCLAVE_S3_ACCESS_KEY", description="Env var holding the admin access key.")
    secret_key_env: str = pydantic.Field("ENCLAVE_S3_SECRET_KEY", description="Env var holding the admin secret key.")
    timeout_seconds: float = pydantic.Field(
        10.0, gt=0, le=300, description="Bound of one S3 call, seconds: a hung MinIO must not stall reconciles."
    )
    max_concurrent_calls: int = pydantic.Field(
        16,
        ge=1,
        le=256,
        description="Most S3 calls at once (threads and pooled connections: the SDK blocks a thread per call). "
        "16 keeps a 2-core MinIO busy; more only queues inside MinIO.",
    )

    @pydantic.field_validator("endpoint")
    @classmethod
    def _no_scheme(cls, value: str) -> str:
        if "://" in value or not re.fullmatch(HOST_PORT, value):
            raise ValueError("must be host:port without a scheme, e.g. minio.enclave.svc:9000")
        return value

    def credentials(self) -> tuple[str, pydantic.SecretStr]:
        """The admin credentials from the environment; an error names the missing variable."""
        access = os.environ.get(self.access_key_env, "")
        secret = os.environ.get(self.secret_key_env, "")
        missing = [name for name, value in ((self.access_key_env, access), (self.secret_key_env, secret)) if not value]
        if missing:
            raise ConfigError(
                f"{self._section()}: environment variable(s) {', '.join(missing)} must hold the S3 admin credentials"
            )
        return access, pydantic.SecretStr(secret)

    def _section(self) -> str:
        """Where these settings are in the configuration, for error messages."""
        return "s3"


class KubernetesSettings(_Settings):
    """How project members appear to the Kubernetes API server."""

    user_prefix: str = pydantic.Field(
        "", max_length=64, description="Prefix of user subjects, as the API server's --oidc-username-prefix adds it."
    )
    group_prefix: str = pydantic.Field(
        "", max_length=64, description="Prefix of group subjects, as --oidc-groups-prefix adds it."
    )
    cluster_role_prefix: str = pydantic.Field(
        "enclave-project-", description="Prefix of the shipped ClusterRoles (…owner, …maintainer, …member, …viewer)."
    )
    operator_service_account: str | None = pydantic.Field(
        None,
        pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="The operator's own service account, namespace/name. With operatorNamespaceRole, the operator "
        "binds itself to that role in each project namespace it creates: it gets Secrets access only there, never "
        "cluster-wide. The Helm chart sets both; unset (a local run with an admin kubeconfig) binds nothing.",
    )
    operator_namespace_role: str | None = pydantic.Field(
        None, max_length=253, description="The ClusterRole the operator binds itself to in project namespaces."
    )

    @pydantic.model_validator(mode="after")
    def _both_or_neither(self) -> KubernetesSettings:
        if (self.operator_service_account is None) != (self.operator_namespace_role is None):
            raise ValueError("operatorServiceAccount and operatorNamespaceRole go together: set both or neither")
        return self


class SelfServiceSettings(_Settings):
    """What researchers may create without a platform admin, and who the admins are."""

    admin_groups: list[str] = pydantic.Field(
        default_factory=lambda: ["system:masters", "enclave:platform-admins"],
        description="Groups whose members act as platform admins (approve, create for others).",
    )
    max_cpu: str = pydantic.Field("32", description="Largest Kubernetes CPU quota without approval (a quantity).")
    max_memory: str = pydantic.Field("128Gi", description="Largest Kubernetes memory quota without approval.")
    max_gpu: int = pydantic.Field(1, ge=0, description="Most Kubernetes GPUs without approval.")
    max_storage: str = pydantic.Field("1Ti", description="Largest bucket quota without approval.")
    egress: list[str] = pydantic.Field(
        default_factory=list,
        description="Networks (CIDRs) projects may reach without approval, e.g. the enclave's web proxy. Any other "
        "spec.network.egress rule waits for a platform admin: no internet except through the proxy.",
    )
    slurm_parent: str = pydantic.Field("root", description="The Slurm parent account that needs no approval.")
    slurm_qos: list[str] = pydantic.Field(
        default_factory=lambda: ["normal"], description="Slurm QOS a project may use without approval."
    )
    max_slurm_cpu: int | None = pydantic.Field(
        256, ge=0, description="Largest Slurm GrpTRES cpu without approval (cores); null: no limit needed."
    )
    max_slurm_mem: str | None = pydantic.Field(
        "1Ti", description="Largest Slurm GrpTRES mem without approval (a quantity); null: no limit needed."
    )
    max_slurm_gpu: int | None = pydantic.Field(
        1, ge=0, description="Largest Slurm GrpTRES gres/gpu without approval; null: no limit needed."
    )

    @pydantic.field_validator("max_cpu", "max_memory", "max_storage", "max_slurm_mem")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        from enclave_operator import quantity

        if value is not None:
            quantity.parse(value)
        return value

    @pydantic.field_validator("egress")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        import ipaddress

        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)
        return value


class WebhookSettings(_Settings):
    """The admission webhooks (mutating and validating), served by every operator process.

    They are not optional (issue 14.2): they enforce who may create, change, approve and delete, and they
    sign the approvals the controller trusts. The deployment (Helm chart, hack/localenv) installs the
    webhook configurations, printed by `enclave-operator webhook-config`, in front of every process.
    """

    enabled: bool = pydantic.Field(
        True, description="Must stay true: the operator does not run the approval gates without its webhook."
    )
    listen_address: str = pydantic.Field("0.0.0.0", description="Address to listen on.")
    port: int = pydantic.Field(9443, ge=1, le=65535, description="Port to listen on (`run --webhook-port` overrides).")
    cert_file: Path = pydantic.Field(
        Path("/etc/enclave/webhook/tls.crt"), description="Serving certificate (PEM), reloaded when it changes."
    )
    key_file: Path = pydantic.Field(Path("/etc/enclave/webhook/tls.key"), description="Serving key (PEM).")
    signing_key_env: str = pydantic.Field(
        "ENCLAVE_SIGNING_KEY",
        min_length=1,
        description="Environment variable holding the key (at least 32 bytes, the same in every operator process) "
        "that signs approvals; whoever holds it can forge one, so keep it in a Secret only the operator reads.",
    )
    configuration_name: str = pydantic.Field(
        "webhooks.enclave.io",
        pattern=r"^[a-z0-9-]+(\.[a-z0-9-]+){2,}$",
        description="Name of the Mutating- and ValidatingWebhookConfiguration (`webhook-config`); a domain with 3+ "
        "parts because webhook names derive from it.",
    )

    @pydantic.field_validator("enabled")
    @classmethod
    def _always(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "the admission webhook cannot be disabled: it enforces who may create, change, approve and delete "
                "projects and ingests, and signs the approvals the controller trusts"
            )
        return value

    def signer(self) -> approval_keys.Signer:
        """The approval signer from the environment; an error names the variable."""
        value = os.environ.get(self.signing_key_env, "")
        try:
            return approval_keys.Signer(value.encode())
        except ValueError as error:
            raise ConfigError(f"webhook: environment variable {self.signing_key_env}: {error}") from None


class PeeringSettings(_Settings):
    """Several operator processes (high availability): all serve the webhooks, one reconciles.

    kopf peering (a ClusterKopfPeering object, manifests/peering.yaml): each process announces itself with a
    priority; lower-priority processes pause. The priority is the start time (older first), so a restarted
    process never takes over from one that runs; when the active one dies its record expires after
    `lifetimeSeconds` and the next-oldest resumes. `run --standalone` skips peering (one process).
    """

    name: str = pydantic.Field("enclave-operator", description="The ClusterKopfPeering object's name.")
    lifetime_seconds: int = pydantic.Field(
        30, ge=5, le=600, description="How long a silent process counts as alive, seconds: the fail-over delay."
    )


class IngestSourceSettings(_Settings):
    """A hospital source that DataIngests may name; its credentials stay in the ingest namespace."""

    name: str = pydantic.Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Source name.")
    kind: Literal["dicomweb", "s3"] = pydantic.Field(description="What the source speaks.")
    url: str | None = pydantic.Field(None, description="DICOMweb base URL (kind dicomweb), as workers reach it.")
    endpoint: str | None = pydantic.Field(None, description="S3 host:port (kind s3), as workers reach it.")
    secure: bool = pydantic.Field(True, description="HTTPS to an S3 source.")
    credentials_secret: str | None = pydantic.Field(
        None, description="Secret in the ingest namespace with keys username and password (or S3 keys)."
    )
    pre_approved: bool = pydantic.Field(
        False, description="Ingests from this source need no data steward's approval (e.g. already anonymous)."
    )
    trusted_sop_classes: list[TrustedSopClass] = pydantic.Field(
        default_factory=list,
        max_length=32,
        description="SOP classes this source delivers without burned-in text (e.g. derived maps from a validated "
        "pipeline): an explicit, audited opt-out from the secondary-capture quarantine, each with configuredBy "
        "and reason, recorded in every ingest's manifest. Empty (default): every secondary capture is quarantined.",
    )

    @pydantic.model_validator(mode="after")
    def _address(self) -> IngestSourceSettings:
        if self.kind == "dicomweb" and not (self.url and self.url.startswith(("http://", "https://"))):
            raise ValueError(f"source {self.name}: url (http(s)://…) is required for kind dicomweb")
        if self.kind == "s3" and not self.endpoint:
            raise ValueError(f"source {self.name}: endpoint (host:port) is required for kind s3")
        return self


class IngestSettings(_Settings):
    """Where and how DataIngest worker Jobs run."""

    namespace: str = pydantic.Field(
        "enclave-ingest",
        description="Namespace of worker Jobs, source credentials and de-identification keys; researchers have "
        "no access to it, so they never see source credentials or keys.",
    )
    image: str = pydantic.Field("enclave-operator:0.1.0", description="Worker image (holds this package).")
    command: list[str] = pydantic.Field(
        default_factory=lambda: ["enclave-ingest-worker"], description="Worker command inside the image."
    )
    steward_groups: list[str] = pydantic.Field(
        default_factory=lambda: ["enclave:data-stewards"], description="Groups whose members approve ingests."
    )
    sources: list[IngestSourceSettings] = pydantic.Field(default_factory=list, description="Known sources.")
    s3_endpoint: str | None = pydantic.Field(
        None, description="S3 endpoint as workers reach it (host:port); default: s3.endpoint."
    )
    backoff_limit_per_index: int = pydantic.Field(2, ge=0, le=10, description="Retries of one shard's pod.")
    active_deadline_seconds: int = pydantic.Field(
        6 * 3600, ge=60, description="A Job running longer than this fails, seconds."
    )
    ttl_seconds_after_finished: int = pydantic.Field(
        7 * 24 * 3600, ge=0, description="Finished worker Jobs are kept this long for their logs, seconds."
    )
    poll_seconds: float = pydantic.Field(5.0, ge=1, description="How often a running ingest's progress is read.")

    def source(self, name: str) -> IngestSourceSettings | None:
        return next((s for s in self.sources if s.name == name), None)




class BackupTargetSettings(S3Settings):
    """A separate S3 store (another endpoint, or another bucket on the same one) that FederatedNode backups go
    to; nodes name it in spec.backup.target. Its admin keys come from environment variables (a Secret)."""

    name: str = pydantic.Field(pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Target name.")
    bucket: str = pydantic.Field(
        "fn-{node}-backup",
        description="Bucket template of a node's backup repository; `{node}` is the node's name. Must differ from "
        "federation.bucket when the target is the store's own endpoint.",
    )
    worker_endpoint: str | None = pydantic.Field(
        None, description="host:port of the target as backup Jobs reach it; default: endpoint."
    )
    access_key_env: str = pydantic.Field(
        "ENCLAVE_BACKUP_S3_ACCESS_KEY", description="Env var holding the target's admin access key."
    )
    secret_key_env: str = pydantic.Field(
        "ENCLAVE_BACKUP_S3_SECRET_KEY", description="Env var holding the target's admin secret key."
    )

    @pydantic.field_validator("bucket")
    @classmethod
    def _placeholder(cls, value: str) -> str:
        return _template(value, "node")

    def _section(self) -> str:
        return f"federation.backupTargets[{self.name}]"


class EgressSettings(_Settings):
    """A destination the pods of every federated node's namespace may reach (e.g. the S3 store)."""

    cidr: str = pydantic.Field(max_length=64, description="Destination network, e.g. 10.96.0.0/12.")
    ports: list[int] = pydantic.Field(default_factory=list, description="TCP ports; empty means every port.")

    @pydantic.field_validator("cidr")
    @classmethod
    def _cidr(cls, value: str) -> str:
        import ipaddress

        ipaddress.ip_network(value, strict=False)  # ValueError names the value
        return value


class FederationSettings(_Settings):
    """FederatedNodes: names, requirements profiles, probes, backup Jobs and targets."""

    namespace: str = pydantic.Field("fn-{node}", description="Namespace template; `{node}` is the node's name.")
    bucket: str = pydantic.Field("fn-{node}", description="Store bucket template on the S3 store (s3).")
    group: str = pydantic.Field(
        "fn-{node}-integrators", description="Identity group template of the node's integrators."
    )
    credential_secret: str = pydantic.Field(
        "node-s3", description="Secret in the node's namespace with the store credential for its platform components."
    )
    profile_dirs: list[Path] = pydantic.Field(
        default_factory=list,
        description="Directories with more requirements profiles (*.yaml, see federation/profiles/); a profile with "
        "a built-in's name replaces it.",
    )
    probe_seconds: float = pydantic.Field(
        60.0, ge=1, description="How often each node's endpoint is probed (22/TCP handshake, DNS over UDP), seconds."
    )
    probe_timeout_seconds: float = pydantic.Field(
        3.0, gt=0, le=60, description="Bound of one probe, seconds: an unanswered probe counts as failed."
    )
    store_egress: list[EgressSettings] = pydantic.Field(
        default_factory=list,
        description="Destinations every node namespace may reach besides DNS and its federation peers (the S3 "
        "store for its platform components); the guideline names none, so the default is none.",
    )
    max_integrator_days: int = pydantic.Field(
        90, ge=1, le=3650, description="Longest integrator access the webhook admits, days from today."
    )
    backup_namespace: str = pydantic.Field(
        "enclave-backup",
        description="Namespace of backup Jobs, backup credentials and repository keys; nobody but the operator and "
        "the platform team has access to it.",
    )
    backup_image: str = pydantic.Field("enclave-operator:0.1.0", description="Backup worker image (this package + "
                                       "restic).")  # fmt: skip
    backup_command: list[str] = pydantic.Field(
        default_factory=lambda: ["enclave-backup-worker"], description="Backup worker command inside the image."
    )
    backup_targets: list[BackupTargetSettings] = pydantic.Field(
        default_factory=list, description="Backup targets nodes may name."
    )
    backup_retry_seconds: float = pydantic.Field(
        3600.0, ge=1, description="After a failed backup, wait this long before the next attempt, seconds."
    )
    backup_poll_seconds: float = pydantic.Field(
        10.0, ge=1, description="How often a running backup or restore drill is looked at, seconds."
    )
    keep_snapshots: int = pydantic.Field(
        26, ge=1, le=10000, description="Snapshots kept per node (restic forget --keep-last); 26 ≈ a year at 14 days."
    )
    active_deadline_seconds: int = pydantic.Field(
        12 * 3600, ge=60, description="A backup or drill Job running longer than this fails, seconds."
    )
    ttl_seconds_after_finished: int = pydantic.Field(
        7 * 24 * 3600, ge=0, description="Finished backup Jobs are kept this long for their logs, seconds."
    )

    @pydantic.field_validator("namespace", "bucket", "group")
    @classmethod
    def _placeholder(cls, value: str) -> str:
        return _template(value, "node")

    def target(self, name: str) -> BackupTargetSettings | None:
        return next((t for t in self.backup_targets if t.name == name), None)


MemberAttribute = Literal["member", "uniqueMember", "memberUid"]
"""How an LDAP group lists its members (LdapSettings.memberAttribute)."""


class FreeIpaSettings(_Settings):
    """How the operator reaches FreeIPA. The password comes from an environment variable (a Secret)."""

    url: str = pydantic.Field(description="https://host[:port] of the FreeIPA server (the /ipa path is implied).")
    ca_file: Path | None = pydantic.Field(
        None, description="CA bundle for the server's certificate; the system CAs when unset. Always verified."
    )
    username: str = pydantic.Field(min_length=1, description="The operator's service account (a FreeIPA user).")
    password_env: str = pydantic.Field(
        "ENCLAVE_IPA_PASSWORD", min_length=1, description="Environment variable holding that account's password."
    )
    timeout_seconds: float = pydantic.Field(
        10.0, gt=0, le=300, description="Bound of one HTTP request to FreeIPA, seconds."
    )

    @pydantic.field_validator("url")
    @classmethod
    def _https(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme != "https" or not parts.hostname:
            raise ValueError("must be an https:// URL (FreeIPA sends a session cookie; plain HTTP is refused)")
        if parts.path not in ("", "/", "/ipa", "/ipa/") or parts.query or parts.fragment:
            raise ValueError("must be https://host[:port] without a path")
        return value.rstrip("/").removesuffix("/ipa")

    @property
    def host(self) -> str:
        """host[:port], as ClientMeta wants it."""
        return self.url.removeprefix("https://")

    def password(self) -> pydantic.SecretStr:
        """The service account's password from the environment; an error names the missing variable."""
        value = os.environ.get(self.password_env, "")
        if not value:
            raise ConfigError(
                f"freeipa: environment variable {self.password_env} must hold the password of {self.username}"
            )
        return pydantic.SecretStr(value)


class LdapSettings(_Settings):
    """How the operator reaches the LDAP directory and how groups and users look there."""

    uri: str = pydantic.Field(description="ldap://host:port or ldaps://host:port.")
    bind_dn: str = pydantic.Field(min_length=1, description="DN the operator binds as.")
    password_env: str = pydantic.Field(
        "ENCLAVE_LDAP_PASSWORD", min_length=1, description="Environment variable holding the bind password."
    )
    groups_base_dn: str = pydantic.Field(min_length=1, description="Where project groups live (one level).")
    users_base_dn: str = pydantic.Field(min_length=1, description="Where users are searched (subtree).")
    member_attribute: MemberAttribute = pydantic.Field(
        "member", description="member/uniqueMember hold user DNs; memberUid holds usernames."
    )
    group_object_class: str = pydantic.Field(
        "groupOfNames", min_length=1, description="Structural object class of new groups (posixGroup for memberUid)."
    )
    user_id_attribute: str = pydantic.Field("uid", min_length=1, description="Attribute holding the username.")
    empty_member: str | None = pydantic.Field(
        None,
        description="Placeholder member DN of a group with no real member (member/uniqueMember only); "
        "the group's own DN when unset.",
    )
    timeout_seconds: float = pydantic.Field(10.0, gt=0, le=300, description="Bound of one LDAP operation, seconds.")
    ca_file: Path | None = pydantic.Field(None, description="CA bundle for ldaps:// or StartTLS; system CAs if unset.")
    start_tls: bool = pydantic.Field(False, description="Upgrade ldap:// with StartTLS before binding.")

    @pydantic.field_validator("uri")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("ldap://", "ldaps://")):
            raise ValueError("must start with ldap:// or ldaps://")
        return value.rstrip("/")

    def password(self) -> pydantic.SecretStr:
        """The bind password from the environment; an error names the missing variable."""
        value = os.environ.get(self.password_env, "")
        if not value:
            raise ConfigError(f"ldap: environment variable {self.password_env} must hold the password of the bind DN")
        return pydantic.SecretStr(value)


class IdentitySettings(_Settings):
    """The identity provider holding project groups: FreeIPA (JSON-RPC) or a plain LDAP directory."""

    provider: Literal["freeipa", "ldap"] = pydantic.Field(description="Which directory holds project groups.")
    freeipa: FreeIpaSettings | None = pydantic.Field(None, description="FreeIPA connection (provider freeipa).")
    ldap: LdapSettings | None = pydantic.Field(None, description="LDAP connection (provider ldap).")

    @pydantic.model_validator(mode="after")
    def _section_present(self) -> IdentitySettings:
        if getattr(self, self.provider) is None:
            raise ValueError(f"provider is {self.provider} but the {self.provider} section is missing")
        return self


class IntervalSettings(_Settings):
    """How often things happen."""

    resync_seconds: float = pydantic.Field(
        300.0,
        ge=5,
        description="Re-observe every project and federated node this long after its last reconcile, to repair "
        "drift and act on dates, seconds.",
    )
    retry_seconds: float = pydantic.Field(
        10.0, ge=1, description="Delay before retrying a part that is not ready yet, seconds."
    )
    resync_jitter: float = pydantic.Field(
        0.1,
        ge=0,
        le=1,
        description="Each resync is due after a random extra wait of up to this fraction of resyncSeconds (0.1 of "
        "300 s: up to 30 s), so that projects created or resumed together do not re-observe their backends in "
        "the same second, and drift apart further with every cycle.",
    )
    resyncs_per_second: float = pydantic.Field(
        20.0,
        ge=0,
        description="At most this many resyncs start per second (0: no limit but throttle.reconciles), so that a "
        "full pass over many objects is spread out: 10,000 projects take at least 500 s at 20/s, and the resync "
        "interval stretches to that when it is shorter. Edits and creations are never held back by it.",
    )


class ThrottleSettings(_Settings):
    """How hard the operator drives itself and its backends, whatever the number of objects."""

    reconciles: int = pydantic.Field(
        16,
        ge=1,
        le=1024,
        description="Most reconciles at once. The others wait in order of priority: edits and deletions of existing "
        "objects first, then creations (and the resumes after a restart), then resyncs; so a single edit takes "
        "effect in seconds while thousands of objects are being created. 16 keeps the backends of a small "
        "enclave busy; more only lengthens their queues.",
    )
    reserved_for_edits: int = pydantic.Field(
        2,
        ge=0,
        le=1024,
        description="Of the reconciles slots, this many are kept for edits and deletions of existing objects (at "
        "most reconciles - 1): during a rollout creations hold every other slot for seconds, and an edit then "
        "starts at once instead of waiting for one of them to end.",
    )
    kubernetes_connections: int = pydantic.Field(
        16,
        ge=8,
        le=256,
        description="Connections of the operator to the Kubernetes API server, all kept open (kopf's watches and "
        "patches have their own); requests beyond them wait for one. More is slower here: before and after each "
        "request the client checks every idle connection (1,000 new projects: 55 CPU-s of the operator with 16, 69 "
        "with the client's default of 100 (20 kept open), 80 with 100 kept open). The GPU ledger's watches hold two "
        "or three.",
    )
    kubernetes_per_second: float = pydantic.Field(
        0.0, ge=0, description="Most Kubernetes API calls per second by the parts (kopf's own watches and patches "
        "are not counted); 0: no limit.",
    )  # fmt: skip
    s3_per_second: float = pydantic.Field(0.0, ge=0, description="Most S3 calls per second; 0: no limit.")
    identity_per_second: float = pydantic.Field(
        0.0, ge=0, description="Most FreeIPA commands or LDAP exchanges per second; 0: no limit."
    )
    slurm_per_second: float = pydantic.Field(0.0, ge=0, description="Most sacctmgr runs per second; 0: no limit.")


GPU_LABEL_KEY = "nvidia.com/gpu.product"
"""The node label NVIDIA's GPU Operator (GPU feature discovery) sets to the GPU's product name."""


class GpuFamilySettings(_Settings):
    """One GPU family researchers can book, and how each pool recognises its GPUs."""

    name: str = pydantic.Field(
        pattern=r"^[a-z]([-a-z0-9]*[a-z0-9])?$", max_length=63, description="Family name researchers book, e.g. a100."
    )
    node_label_value: str | None = pydantic.Field(
        None,
        max_length=63,
        description="Value of gpu.nodeLabelKey on the family's Kubernetes nodes (e.g. NVIDIA-A100-SXM4-80GB); "
        "None: the family is not in the Kubernetes pool.",
    )
    slurm_gres_type: str | None = pydantic.Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Type in the Slurm nodes' GRES (gpu:<type>:<count>), e.g. a100; None: not in the Slurm pool.",
    )
    slurm_partition: str | None = pydantic.Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Partition holding the family's Slurm nodes (sites name them after the architecture, e.g. "
        "GPUampere); reservations take whole nodes from it.",
    )
    slurm_feature: str | None = pydantic.Field(
        None,
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="Node feature (slurm.conf Feature=) marking the family's nodes; used with or instead of "
        "slurmPartition to choose the reservation's nodes.",
    )
    booking_required: bool = pydantic.Field(
        False,
        description="On Kubernetes, GPU pods may use this family only during an active booking of it; otherwise "
        "any project's GPU pods within its quota may.",
    )

    @pydantic.model_validator(mode="after")
    def _slurm_nodes_selectable(self) -> GpuFamilySettings:
        if self.slurm_gres_type and not (self.slurm_partition or self.slurm_feature):
            raise ValueError(
                f"family {self.name}: slurmPartition or slurmFeature is required with slurmGresType "
                "(Slurm 22.05 reserves whole nodes, chosen by partition or feature)"
            )
        return self


class GpuLimits(_Settings):
    """What one project may book without a platform admin's approval."""

    max_gpus: int = pydantic.Field(
        8, ge=0, le=100_000, description="Most GPUs the project holds at any instant, over all its bookings."
    )
    max_hours: float = pydantic.Field(168.0, gt=0, description="Longest window of one booking, hours (default a week).")
    max_lead_days: float = pydantic.Field(
        90.0, ge=0, description="Furthest a booking may start ahead of now, days (default a quarter)."
    )


class GpuSettings(_Settings):
    """GPU bookings (GpuReservation): the families, the limits, and how bookings are enforced."""

    families: list[GpuFamilySettings] = pydantic.Field(
        default_factory=list, description="The bookable GPU families; empty: GpuReservations are refused."
    )
    node_label_key: str = pydantic.Field(
        GPU_LABEL_KEY, max_length=253, description="Node label whose value names a node's GPU family."
    )
    resource_name: str = pydantic.Field(
        "nvidia.com/gpu", max_length=253, description="The extended resource of one GPU on Kubernetes nodes."
    )
    limits: GpuLimits = pydantic.Field(default_factory=GpuLimits, description="Default limits per project.")
    project_limits: dict[str, GpuLimits] = pydantic.Field(
        default_factory=dict, description="Limits of named projects, instead of `limits`."
    )
    slurm_reservation: str = pydantic.Field(
        "{namespace}-{name}",
        description="Slurm reservation name template; {namespace} and {name} are the GpuReservation's.",
    )
    slurm_flags: list[str] = pydantic.Field(
        default_factory=lambda: ["MAGNETIC", "REPLACE_DOWN"],
        description="Flags of every Slurm reservation: MAGNETIC lets the account's jobs use it without "
        "--reservation; REPLACE_DOWN swaps nodes that go down or are drained.",
    )
    end_grace_seconds: float = pydantic.Field(
        300.0,
        ge=0,
        description="After a Kubernetes booking ends, its project's GPU pods on the family's nodes are evicted "
        "after this many seconds (time to checkpoint), unless another active booking covers them.",
    )
    capacity_poll_seconds: float = pydantic.Field(
        30.0, ge=1, description="How often Slurm node capacity is read again (Kubernetes nodes are watched)."
    )
    decision_settle_seconds: float = pydantic.Field(
        1.5,
        ge=1,
        le=60,
        description="A new booking is decided this long after its creation second began: creation times have "
        "whole seconds, so only then are all bookings of the same second known and ordered by name.",
    )
    calendar_horizon_days: float = pydantic.Field(
        14.0, gt=0, le=366, description="How far around a refused window free windows are looked for, days."
    )

    @pydantic.field_validator("families")
    @classmethod
    def _unique(cls, value: list[GpuFamilySettings]) -> list[GpuFamilySettings]:
        names = [f.name for f in value]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"family names must be unique: {', '.join(duplicates)}")
        return value

    @pydantic.field_validator("slurm_reservation")
    @classmethod
    def _template(cls, value: str) -> str:
        if "{name}" not in value or "{namespace}" not in value:
            raise ValueError("must contain {namespace} and {name}, or two bookings would share a reservation")
        return value

    @pydantic.field_validator("slurm_flags")
    @classmethod
    def _flags(cls, value: list[str]) -> list[str]:
        for flag in value:
            if not re.fullmatch(r"[A-Z_]{1,32}", flag):
                raise ValueError(f"{flag!r} is not a Slurm reservation flag (e.g. MAGNETIC)")
        return value

    def family(self, name: str) -> GpuFamilySettings | None:
        return next((f for f in self.families if f.name == name), None)

    def limits_for(self, project: str) -> GpuLimits:
        return self.project_limits.get(project, self.limits)


class OperatorSettings(_Settings):
    """All settings of the operator."""

    finalizer: str = pydantic.Field("enclave.io/finalizer", description="Finalizer put on managed objects.")
    s3: S3Settings = pydantic.Field(description="The S3 store.")
    naming: NamingSettings = pydantic.Field(default_factory=NamingSettings, description="Naming templates.")
    intervals: IntervalSettings = pydantic.Field(default_factory=IntervalSettings, description="Intervals.")
    throttle: ThrottleSettings = pydantic.Field(
        default_factory=ThrottleSettings, description="Reconciles at once and backend calls per second."
    )
    kubernetes: KubernetesSettings = pydantic.Field(default_factory=KubernetesSettings, description="RBAC subjects.")
    self_service: SelfServiceSettings = pydantic.Field(
        default_factory=SelfServiceSettings, description="Self-service tier and admins."
    )
    webhook: WebhookSettings = pydantic.Field(default_factory=WebhookSettings, description="Admission webhooks.")
    peering: PeeringSettings = pydantic.Field(default_factory=PeeringSettings, description="Several processes.")
    ingest: IngestSettings = pydantic.Field(default_factory=IngestSettings, description="DataIngest workers.")
    identity: IdentitySettings | None = pydantic.Field(None, description="Identity groups; absent means none.")
    slurm: SlurmSettings | None = pydantic.Field(None, description="Slurm accounting; absent means no Slurm.")
    gpu: GpuSettings = pydantic.Field(default_factory=GpuSettings, description="GPU bookings.")
    federation: FederationSettings = pydantic.Field(
        default_factory=FederationSettings, description="FederatedNodes: profiles, probes, backups."
    )

    def worker_s3_endpoint(self) -> str:
        """The S3 store as worker Jobs (ingest, backup) reach it: ingest.s3Endpoint, else s3.endpoint."""
        return self.ingest.s3_endpoint or self.s3.endpoint


def _format_errors(error: pydantic.ValidationError) -> str:
    lines = []
    for item in error.errors():
        path = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {path}: {item['msg']}")
    return "\n".join(lines)


def parse(data: Any, source: str = "configuration") -> OperatorSettings:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: must be a mapping of settings")
    try:
        return OperatorSettings.model_validate(data)
    except pydantic.ValidationError as error:
        raise ConfigError(f"{source} is invalid:\n{_format_errors(error)}") from None


def load(path: Path | str | None = None, *, check_secrets: bool = True) -> OperatorSettings:
    """Load and validate the configuration file (or $ENCLAVE_CONFIG); check_secrets=False for commands that
    only read the cluster (gpu-calendar) and need no backend credentials."""
    path = path or os.environ.get(CONFIG_ENV)
    if not path:
        raise ConfigError(f"no configuration: pass --config FILE or set {CONFIG_ENV}")
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as error:
        raise ConfigError(f"cannot read configuration {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"configuration {path} is not valid YAML: {error}") from None
    settings = parse(data, str(path))
    if not check_secrets:
        return settings
    settings.s3.credentials()  # fail at start-up, not at the first reconcile
    settings.webhook.signer()
    for name, file in (("certFile", settings.webhook.cert_file), ("keyFile", settings.webhook.key_file)):
        if not file.is_file():
            raise ConfigError(f"webhook.{name}: {file} does not exist (the webhook's serving certificate and key)")
    for target in settings.federation.backup_targets:
        target.credentials()
    from enclave_operator.federation import profiles  # a broken requirements profile stops the start too

    profiles.load(settings.federation.profile_dirs)
    if settings.identity is not None:
        section = settings.identity.freeipa if settings.identity.provider == "freeipa" else settings.identity.ldap
        assert section is not None
        section.password()
    return settings
