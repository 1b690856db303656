"""Builders of the namespace's objects, and the field comparison that keeps resyncs write-free."""

from __future__ import annotations

import pytest

from enclave_operator.api.research_project import ResearchProjectSpec
from enclave_operator.backends.kube_objects import covers
from enclave_operator.reconcilers import project_space
from enclave_operator.settings import KubernetesSettings
from support.builders import ProjectBuilder

K8S = KubernetesSettings(user_prefix="oidc:", group_prefix="oidc:")


def _spec(**changes: object) -> ResearchProjectSpec:
    spec = ProjectBuilder("p1").member("bob").member("carol", "viewer").spec()
    spec.update(changes)
    return ResearchProjectSpec.model_validate(spec)


def test_quota_follows_spec_and_cordon_stops_new_pods() -> None:
    spec = _spec(compute={"kubernetes": {"cpu": "64", "memory": "256Gi", "gpu": 2}})
    hard = project_space.resource_quota("p1", "p1", spec, cordoned=False).manifest["spec"]["hard"]
    assert hard["requests.nvidia.com/gpu"] == "2" and hard["limits.memory"] == "256Gi" and hard["pods"] == "100"
    assert project_space.resource_quota("p1", "p1", spec, cordoned=True).manifest["spec"]["hard"]["pods"] == "0"


def test_role_bindings_group_members_by_role_with_prefix_and_group_subject() -> None:
    active = (("alice", "owner"), ("bob", "member"), ("dave", "member"), ("carol", "viewer"))
    bindings = {b.name: b.manifest for b in project_space.role_bindings("p1", "p1", "proj-p1", active, False, K8S)}
    assert set(bindings) == {"enclave-owner", "enclave-member", "enclave-viewer", "enclave-project-group"}
    assert [s["name"] for s in bindings["enclave-member"]["subjects"]] == ["oidc:bob", "oidc:dave"]
    assert bindings["enclave-member"]["roleRef"]["name"] == "enclave-project-member"
    assert bindings["enclave-project-group"]["subjects"] == [
        {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "oidc:proj-p1"}
    ]


def test_cordon_makes_everyone_a_viewer() -> None:
    active = (("alice", "owner"), ("bob", "member"))
    bindings = project_space.role_bindings("p1", "p1", "g", active, True, K8S)
    assert [b.name for b in bindings] == ["enclave-viewer", "enclave-project-group"]
    assert [s["name"] for s in bindings[0].manifest["subjects"]] == ["oidc:alice", "oidc:bob"]


def test_members_in_bindings_reads_roles_back() -> None:
    active = (("alice", "owner"), ("bob", "member"))
    manifests = [b.manifest for b in project_space.role_bindings("p1", "p1", "g", active, False, K8S)]
    assert project_space.members_in_bindings(K8S)(manifests) == {"alice": "owner", "bob": "member"}


def test_network_policies_default_deny_dns_and_egress() -> None:
    spec = _spec(network={"egress": [{"cidr": "10.20.0.0/16", "ports": [443]}]})
    policies = {p.name: p.manifest["spec"] for p in project_space.network_policies("p1", "p1", spec)}
    assert policies["enclave-default-deny"]["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in policies["enclave-default-deny"] and "egress" not in policies["enclave-default-deny"]
    assert policies["enclave-allow-dns"]["egress"][0]["ports"][0] == {"protocol": "UDP", "port": 53}
    assert policies["enclave-allow-egress"]["egress"] == [
        {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"protocol": "TCP", "port": 443}]}
    ]
    assert "enclave-allow-egress" not in {p.name for p in project_space.network_policies("p1", "p1", _spec())}


@pytest.mark.parametrize(
    ("actual", "desired", "expected", "why"),
    [
        ({"hard": {"cpu": "1500m"}}, {"hard": {"cpu": "1.5"}}, True, "quantities compare by value"),
        ({"hard": {"memory": "1Gi"}}, {"hard": {"memory": "1024Mi"}}, True, "binary units"),
        ({"hard": {"pods": "10"}}, {"hard": {"pods": "11"}}, False, "different value"),
        ({"a": 1, "extra": 2}, {"a": 1}, True, "server-added fields are ignored"),
        ({"l": [1, 2]}, {"l": [1]}, False, "lists must match in length"),
        ({"name": "x"}, {"name": "y"}, False, "plain strings"),
        ({"port": 53}, {"port": 53}, True, "equal ints"),
        (None, {"a": 1}, False, "missing object"),
    ],
)
def test_covers(actual: object, desired: object, expected: bool, why: str) -> None:
    assert covers(actual, desired) is expected, why
