"""Pure builders of the Kubernetes objects in a federated node's namespace: the network policies (deny by
default, then exactly what the guideline names) and the integrators' read access to their credential
Secrets. No I/O: the kube_objects adapter applies what these return (like project_space for projects).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from lightkube.resources.rbac_authorization_v1 import Role, RoleBinding

from enclave_operator.api.federated_node import FederatedNodeSpec
from enclave_operator.backends.kube_namespace import MANAGED_BY, MANAGED_BY_LABEL
from enclave_operator.backends.kube_objects import DesiredObject
from enclave_operator.backends.ownership import Owner, labels_of
from enclave_operator.reconcilers.project_space import OPERATOR_BINDING, network_policy
from enclave_operator.settings import EgressSettings, KubernetesSettings

RBAC_GROUP = "rbac.authorization.k8s.io"
CREDENTIALS_ROLE = "fn-integrator-credentials"
SSH_PORT = 22
DNS_PORT = 53


def _metadata(name: str, namespace: str, owner: Owner) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "labels": labels_of(owner, {MANAGED_BY_LABEL: MANAGED_BY})}


def _peers(destinations: Sequence[tuple[str, Sequence[int]]]) -> list[dict[str, Any]]:
    rules = []
    for cidr, ports in destinations:
        rule: dict[str, Any] = {"to": [{"ipBlock": {"cidr": cidr}}]}
        if ports:
            rule["ports"] = [{"protocol": "TCP", "port": p} for p in ports]
        rules.append(rule)
    return rules


def network_policies(owner: Owner, namespace: str, spec: FederatedNodeSpec,
                     store_egress: Sequence[EgressSettings]) -> list[DesiredObject]:  # fmt: skip
    """Default deny in and out; then 22/TCP in from the integrator's ranges, 53/UDP out, the federation peers
    from the spec, and the platform's store egress (settings). Nothing else, not even within the namespace."""

    def policy(name: str, body: dict[str, Any]) -> DesiredObject:
        return network_policy(_metadata(name, namespace, owner), body)

    out = [
        policy("fn-default-deny", {"policyTypes": ["Ingress", "Egress"]}),
        policy("fn-allow-dns", {"policyTypes": ["Egress"],
                                "egress": [{"ports": [{"protocol": "UDP", "port": DNS_PORT}]}]}),  # fmt: skip
    ]
    ranges = spec.network.integrator_ranges
    if ranges:
        out.append(policy("fn-allow-ssh-from-integrators", {
            "policyTypes": ["Ingress"],
            "ingress": [{"from": [{"ipBlock": {"cidr": c}} for c in ranges],
                         "ports": [{"protocol": "TCP", "port": SSH_PORT}]}],
        }))  # fmt: skip
    peers = [(p.cidr, p.ports) for p in spec.network.federation_peers]
    if peers:
        out.append(policy("fn-allow-federation", {"policyTypes": ["Egress"], "egress": _peers(peers)}))
    if store_egress:
        egress = _peers([(e.cidr, e.ports) for e in store_egress])
        out.append(policy("fn-allow-store", {"policyTypes": ["Egress"], "egress": egress}))
    return out


def operator_access(owner: Owner, namespace: str, settings: KubernetesSettings) -> list[DesiredObject]:
    """The operator itself holds its namespace role here when configured (kubernetes.operatorServiceAccount and
    operatorNamespaceRole, as the Helm chart sets them), as in a project namespace: it writes the store credential
    Secret, and it may grant the integrators read access only to Secrets it may read itself."""
    if not (settings.operator_service_account and settings.operator_namespace_role):
        return []
    sa_namespace, sa_name = settings.operator_service_account.split("/", 1)
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _metadata(OPERATOR_BINDING, namespace, owner),
        "roleRef": {"apiGroup": RBAC_GROUP, "kind": "ClusterRole", "name": settings.operator_namespace_role},
        "subjects": [{"kind": "ServiceAccount", "name": sa_name, "namespace": sa_namespace}],
    }
    return [DesiredObject(RoleBinding, binding)]


def integrator_access(owner: Owner, namespace: str, secrets: Sequence[str], users: Sequence[str],
                      settings: KubernetesSettings) -> list[DesiredObject]:  # fmt: skip
    """A Role that may read exactly the named credential Secrets, bound to the integrators whose access is
    active now; nothing when no Secret is named. Removing a user from `users` revokes their read access.
    The operator's own binding (operator_access) comes first."""
    own = operator_access(owner, namespace, settings)
    if not secrets:
        return own
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _metadata(CREDENTIALS_ROLE, namespace, owner),
        "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": sorted(secrets)}],
    }
    out = [*own, DesiredObject(Role, role)]
    if users:
        binding = {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": _metadata(CREDENTIALS_ROLE, namespace, owner),
            "roleRef": {"apiGroup": RBAC_GROUP, "kind": "Role", "name": CREDENTIALS_ROLE},
            "subjects": [{"kind": "User", "apiGroup": RBAC_GROUP, "name": settings.user_prefix + u}
                         for u in sorted(users)],  # fmt: skip
        }
        out.append(DesiredObject(RoleBinding, binding))
    return out


def members_in_binding(settings: KubernetesSettings) -> Any:
    """Reads, from the objects that exist, which users may read the credential Secrets now."""

    def read(objects: Sequence[Mapping[str, Any]]) -> dict[str, str]:
        found: dict[str, str] = {}
        for obj in objects:
            for subject in obj.get("subjects") or []:
                if subject.get("kind") == "User":
                    found[str(subject["name"]).removeprefix(settings.user_prefix)] = "Granted"
        return found

    return read
