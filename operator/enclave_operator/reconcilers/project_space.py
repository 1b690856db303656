"""Pure builders of the Kubernetes objects inside a project's namespace: quota, limits, network
policies and role bindings. No I/O: the kube_objects adapter applies what these return.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightkube.resources.core_v1 import LimitRange, ResourceQuota
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.rbac_authorization_v1 import RoleBinding

from enclave_operator.api.research_project import ROLES, ResearchProjectSpec, Role
from enclave_operator.backends.kube_namespace import MANAGED_BY, MANAGED_BY_LABEL, PROJECT_LABEL
from enclave_operator.backends.kube_objects import DesiredObject
from enclave_operator.settings import GpuSettings, KubernetesSettings

RBAC_GROUP = "rbac.authorization.k8s.io"
BINDING_PREFIX = "enclave-"
GROUP_BINDING = "enclave-project-group"
OPERATOR_BINDING = "enclave-operator"
"""The operator's own access in the namespace (kubernetes.operatorNamespaceRole): Secrets here, never cluster-wide."""
LIMIT_DEFAULTS = {
    "default": {"cpu": "1", "memory": "1Gi"},
    "defaultRequest": {"cpu": "100m", "memory": "256Mi"},
}
"""Container defaults: small enough that forgotten requests do not eat the quota, large enough to start."""


def _metadata(name: str, namespace: str, project: str) -> dict[str, Any]:
    return {
        "name": name,
        "namespace": namespace,
        "labels": {PROJECT_LABEL: project, MANAGED_BY_LABEL: MANAGED_BY},
    }


def resource_quota(
    project: str, namespace: str, spec: ResearchProjectSpec, cordoned: bool, booked_gpus: int = 0
) -> DesiredObject:
    """Quota from spec.compute.kubernetes, plus the GPUs of the project's active Kubernetes bookings; a
    cordoned project may start no new pods."""
    k = spec.compute.kubernetes
    hard = {
        "requests.cpu": str(k.cpu),
        "limits.cpu": str(k.cpu),
        "requests.memory": str(k.memory),
        "limits.memory": str(k.memory),
        "requests.nvidia.com/gpu": str(k.gpu + booked_gpus),
        "pods": "0" if cordoned else str(k.pods),
        "persistentvolumeclaims": str(k.persistent_volume_claims),
        "requests.storage": str(k.storage),
    }
    manifest = {
        "apiVersion": "v1",
        "kind": "ResourceQuota",
        "metadata": _metadata("enclave-quota", namespace, project),
        "spec": {"hard": hard},
    }
    return DesiredObject(ResourceQuota, manifest)


GPU_LABEL_ANNOTATION = "enclave.io/gpu-node-label"
GPU_VALUES_ANNOTATION = "enclave.io/gpu-node-values"
"""Namespace annotations read by the shipped ValidatingAdmissionPolicy (manifests/policy/gpu-placement.yaml):
GPU pods of the namespace must select, with a nodeSelector on the label, one of the values. On the
namespace (not a ConfigMap) because project members cannot change their namespace's annotations."""


def gpu_placement(settings: GpuSettings, booked_families: Sequence[str]) -> dict[str, str]:
    """Where the project's GPU pods may run now: the families of its active Kubernetes bookings; without
    one, the families open to every project (bookingRequired false)."""
    chosen = [f for f in settings.families if f.name in booked_families] if booked_families else [
        f for f in settings.families if not f.booking_required
    ]  # fmt: skip
    values = sorted({f.node_label_value for f in chosen if f.node_label_value})
    return {GPU_LABEL_ANNOTATION: settings.node_label_key, GPU_VALUES_ANNOTATION: ",".join(values)}


def limit_range(project: str, namespace: str) -> DesiredObject:
    manifest = {
        "apiVersion": "v1",
        "kind": "LimitRange",
        "metadata": _metadata("enclave-limits", namespace, project),
        "spec": {"limits": [{"type": "Container", **LIMIT_DEFAULTS}]},
    }
    return DesiredObject(LimitRange, manifest)


def network_policy(metadata: Mapping[str, Any], body: Mapping[str, Any]) -> DesiredObject:
    """A NetworkPolicy for every pod of the namespace (a project's or a federated node's)."""
    manifest = {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": dict(metadata),
        "spec": {"podSelector": {}, **body},
    }
    return DesiredObject(NetworkPolicy, manifest)


def network_policies(project: str, namespace: str, spec: ResearchProjectSpec) -> list[DesiredObject]:
    """Default deny in and out; allow within the namespace, DNS, and spec.network.egress."""

    def policy(name: str, body: dict[str, Any]) -> DesiredObject:
        return network_policy(_metadata(name, namespace, project), body)

    dns_ports = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    out = [
        policy("enclave-default-deny", {"policyTypes": ["Ingress", "Egress"]}),
        policy(
            "enclave-allow-same-namespace",
            {
                "policyTypes": ["Ingress", "Egress"],
                "ingress": [{"from": [{"podSelector": {}}]}],
                "egress": [{"to": [{"podSelector": {}}]}],
            },
        ),
        policy(
            "enclave-allow-dns",
            {"policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}], "ports": dns_ports}]},
        ),
    ]
    if spec.network.egress:
        rules = []
        for rule in spec.network.egress:
            entry: dict[str, Any] = {"to": [{"ipBlock": {"cidr": rule.cidr}}]}
            if rule.ports:
                entry["ports"] = [{"protocol": "TCP", "port": p} for p in rule.ports]
            rules.append(entry)
        out.append(policy("enclave-allow-egress", {"policyTypes": ["Egress"], "egress": rules}))
    return out


def effective_role(role: Role, cordoned: bool) -> Role:
    """What a member may do now: everyone is a viewer while the project is cordoned."""
    return "viewer" if cordoned else role


def role_bindings(
    project: str,
    namespace: str,
    group: str,
    active: Sequence[tuple[str, Role]],
    cordoned: bool,
    settings: KubernetesSettings,
) -> list[DesiredObject]:
    """One RoleBinding per role that someone holds, to our shipped ClusterRoles; the project group views; the
    operator itself holds its namespace role (when configured)."""
    by_role: dict[Role, list[str]] = {}
    for user, role in active:
        by_role.setdefault(effective_role(role, cordoned), []).append(user)
    out = []
    for role in ROLES:
        users = sorted(by_role.get(role, []))
        if not users:
            continue
        subjects = [{"kind": "User", "apiGroup": RBAC_GROUP, "name": settings.user_prefix + u} for u in users]
        out.append(
            _binding(f"{BINDING_PREFIX}{role}", namespace, project, settings.cluster_role_prefix + role, subjects)
        )
    group_subject = [{"kind": "Group", "apiGroup": RBAC_GROUP, "name": settings.group_prefix + group}]
    out.append(_binding(GROUP_BINDING, namespace, project, settings.cluster_role_prefix + "viewer", group_subject))
    if settings.operator_service_account and settings.operator_namespace_role:
        sa_namespace, sa_name = settings.operator_service_account.split("/", 1)
        operator = [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}]
        out.append(_binding(OPERATOR_BINDING, namespace, project, settings.operator_namespace_role, operator))
    return out


def _binding(
    name: str, namespace: str, project: str, cluster_role: str, subjects: list[dict[str, str]]
) -> DesiredObject:
    manifest = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(name, namespace, project),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": cluster_role},
        "subjects": subjects,
    }
    return DesiredObject(RoleBinding, manifest)


def members_in_bindings(settings: KubernetesSettings) -> Any:
    """A function that reads, from the bindings that exist, which role each user has now."""

    def read(bindings: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        found: dict[str, str] = {}
        for binding in bindings:
            role = str(binding.get("roleRef", {}).get("name", "")).removeprefix(settings.cluster_role_prefix)
            for subject in binding.get("subjects") or []:
                if subject.get("kind") == "User":
                    found[str(subject["name"]).removeprefix(settings.user_prefix)] = role
        return found

    return read
