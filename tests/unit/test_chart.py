"""The Helm chart's generated parts match the code, and its hand-written parts agree with each other.

Rendering, linting and the API server's verdict on the rendered objects: tests/integration/test_chart.py.
"""

from __future__ import annotations

import json

import pytest
import yaml

import chartgen
from enclave_operator import handlers
from enclave_operator.api import crdgen
from enclave_operator.reconcilers import project_space
from enclave_operator.settings import KubernetesSettings, OperatorSettings
from localenv.runtime import CHART

pytestmark = pytest.mark.unit


def test_generated_chart_files_are_current() -> None:
    """files/webhooks.yaml, files/argocd/kinds.yaml, the peering CRD and the settings part of values.schema.json."""
    stale = [str(p.relative_to(CHART)) for p, content in chartgen.rendered().items()
             if not p.exists() or p.read_text() != content]  # fmt: skip
    assert not stale, f"stale generated chart files {stale}; run `make generate` and commit"


def test_every_kind_gets_the_webhooks_the_operator_serves() -> None:
    """Both configurations, one webhook per handler the operator registers (handlers.WEBHOOKS), path = its id."""
    configurations = yaml.safe_load((CHART / "files" / "webhooks.yaml").read_text())
    assert [c["kind"] for c in configurations] == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    served = {(h.type, h.plural, f"/{h.id}") for h in handlers.WEBHOOKS}
    rendered = {(c["kind"].removesuffix("WebhookConfiguration"), rule["resources"][0],
                 hook["clientConfig"]["service"]["path"])
                for c in configurations for hook in c["webhooks"] for rule in hook["rules"]}  # fmt: skip
    assert rendered == served
    assert {info.plural for _, info in crdgen.KINDS} <= {plural for _, plural, _ in rendered}, "a kind without webhooks"
    assert {h["failurePolicy"] for c in configurations for h in c["webhooks"]} == {"Fail"}


def test_argocd_health_check_covers_every_kind() -> None:
    kinds = yaml.safe_load((CHART / "files" / "argocd" / "kinds.yaml").read_text())
    assert kinds == [info.kind for _, info in crdgen.KINDS]


def test_values_schema_describes_every_value_and_forbids_unknown_ones() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(value: object, node: dict[str, object], path: str) -> None:
        if "$ref" in node:
            node = schema["$defs"][str(node["$ref"]).rsplit("/", 1)[-1]]
        assert "description" in node or path.startswith("config."), f"{path} has no description in the schema"
        props = node.get("properties")
        if isinstance(value, dict) and isinstance(props, dict):
            assert node.get("additionalProperties") is False, f"{path}: unknown keys must fail"
            for key, item in value.items():
                assert key in props, f"{path}.{key} is in values.yaml but not in values.schema.json"
                walk(item, props[key], f"{path}.{key}".lstrip("."))

    walk(values, schema, "")


def test_rancher_questions_name_real_values() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    questions = yaml.safe_load((CHART / "questions.yaml").read_text())["questions"]
    variables = [q["variable"] for q in questions]
    variables += [sub["variable"] for q in questions for sub in q.get("subquestions", [])]

    def exists(path: str) -> bool:
        node: dict = schema
        for part in path.split("."):
            if "$ref" in node:
                node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
            props = node.get("properties") or {}
            if part in props:
                node = props[part]
            elif isinstance(node.get("additionalProperties"), dict):
                node = node["additionalProperties"]
            else:
                return False
        return True

    assert [v for v in variables if not exists(v)] == []


def test_chart_managed_settings_are_real_settings() -> None:
    """What the chart renders into the configuration (webhook, operator identity) is what settings.py reads."""
    config = OperatorSettings.model_validate({
        "s3": {"endpoint": "minio:9000"},
        "kubernetes": {"operatorServiceAccount": "enclave-system/enclave-operator",
                       "operatorNamespaceRole": "enclave-operator-namespace"},
        "webhook": {"port": 9443, "certFile": "/tls/tls.crt", "keyFile": "/tls/tls.key",
                    "signingKeyEnv": "ENCLAVE_SIGNING_KEY"},
    })  # fmt: skip
    assert str(config.webhook.cert_file) == "/tls/tls.crt" and config.webhook.signing_key_env == "ENCLAVE_SIGNING_KEY"


def test_the_operator_binds_itself_in_project_namespaces_only_when_configured() -> None:
    plain = project_space.role_bindings("p", "p", "proj-p", [("alice", "owner")], False, KubernetesSettings())
    assert project_space.OPERATOR_BINDING not in [b.name for b in plain]
    settings = KubernetesSettings(operator_service_account="enclave-system/op", operator_namespace_role="op-ns")
    bindings = {b.name: b.manifest for b in project_space.role_bindings("p", "p", "proj-p", [("alice", "owner")],
                                                                         False, settings)}  # fmt: skip
    own = bindings[project_space.OPERATOR_BINDING]
    assert own["roleRef"]["name"] == "op-ns"
    assert own["subjects"] == [{"kind": "ServiceAccount", "name": "op", "namespace": "enclave-system"}]
    members = project_space.members_in_bindings(settings)(list(bindings.values()))
    assert members == {"alice": "owner"}, "the operator's own binding is not a member"


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ({"operatorServiceAccount": "enclave-system/op"}, "the role is missing"),
        ({"operatorNamespaceRole": "op-ns"}, "the service account is missing"),
        ({"operatorServiceAccount": "op", "operatorNamespaceRole": "op-ns"}, "not namespace/name"),
    ],
)
def test_operator_identity_settings_are_checked(fields: dict[str, str], reason: str) -> None:
    with pytest.raises(ValueError, match="operator"):
        KubernetesSettings.model_validate(fields)
