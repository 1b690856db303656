"""The Helm chart rendered by the real Helm (built from Go modules): lint, values the schema refuses, and the
API server's verdict on every rendered object (server-side dry-run). Installing it and running the operator
as its Deployment says: tests/e2e/test_helm_chart.py.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml

from enclave_operator.api import crdgen
from localenv.runtime import CHART
from support.cluster import Cluster
from support.helm import Helm, find, go_tool, rendered, template

NAMESPACE = "enclave-system"
QUICK_START = {
    "image": {"repository": "registry.hospital.example/enclave-operator"},
    "config": {"s3": {"endpoint": "minio.storage.svc:9000"}},
    "credentials": {"existingSecret": "enclave-backends"},
}
"""The README's quick start: three values."""
EVERYTHING = {
    **QUICK_START,
    "metrics": {"serviceMonitor": {"enabled": True}},
    "prometheusRule": {"enabled": True},
    "grafanaDashboard": {"enabled": True},
    "argocdHealth": {"enabled": True},
}


@pytest.fixture(scope="module")
def helm(cluster: Cluster) -> Helm:
    return Helm(go_tool("helm"), cluster.kubeconfig)


def test_lint_passes_with_the_three_quick_start_values(helm: Helm) -> None:
    result = helm.run("lint", str(CHART), "--strict", "-f", helm.values_file(QUICK_START))
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"image": {"repository": ""}}, "image.repository"),
        ({"credentials": {"existingSecret": ""}}, "credentials.existingSecret"),
        ({"config": {"s3": {"endpoint": "https://minio:9000"}}}, "config.s3.endpoint"),
        ({"config": {"s3": {"endpoint": "minio:9000", "secure": "yes"}}}, "config.s3.secure"),
        ({"config": {"intervals": {"resyncSeconds": 1}}}, "config.intervals.resyncSeconds"),
        ({"config": {"identity": {"provider": "kerberos"}}}, "config.identity.provider"),
        ({"config": {"s3": {"endpoint": "minio:9000", "bucketz": "x"}}}, "bucketz"),
        ({"config": {"webhook": {"enabled": False}}}, "webhook"),
        ({"webhook": {"enabled": False}}, "webhook.enabled"),
        ({"hostNetwork": "yes"}, "hostNetwork"),
        ({"replicaCount": 0}, "replicaCount"),
        ({"logLevel": "debug"}, "logLevel"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_values_fail_at_install_naming_the_value(helm: Helm, values: dict[str, Any], named: str) -> None:
    merged = {**QUICK_START, **values}
    if "config" in values:
        merged["config"] = {**QUICK_START["config"], **values["config"]}
    result = template(helm, merged, check=False)
    assert result.returncode != 0, f"{named}: accepted"
    message = result.stderr.replace("/", ".")
    assert named.split(".")[-1] in message, f"the error does not name {named}: {result.stderr}"


def test_rendered_chart_passes_server_side_dry_run(helm: Helm, crds: Cluster) -> None:
    """Every object the chart renders (but the monitoring ones, whose CRDs are not here) is valid to the API server."""
    objects = rendered(helm, {**EVERYTHING, "metrics": {"serviceMonitor": {"enabled": False}},
                             "prometheusRule": {"enabled": False}})  # fmt: skip
    # What Helm installs from crds/ before the templates: ours (the `crds` fixture) and kopf's peering CRD.
    crds.run("apply", "--server-side", "--force-conflicts", "-f",
             str(CHART / "crds" / "kopf.dev_clusterkopfpeerings.yaml"))
    crds.run("wait", "--for=condition=Established", "--timeout=60s", "crd/clusterkopfpeerings.kopf.dev")
    for ns in (NAMESPACE, "enclave-ingest", "enclave-backup"):
        crds.run("create", "namespace", ns, check=False)
    namespaces = [o for o in objects if o["kind"] == "Namespace"]
    rest = [o for o in objects if o["kind"] != "Namespace"]
    for batch in (namespaces, rest):
        manifest = "\n---\n".join(yaml.safe_dump(o) for o in batch)
        result = crds.run("apply", "--dry-run=server", "--server-side", "--force-conflicts", "-f", "-",
                          input=manifest, check=False)  # fmt: skip
        assert result.returncode == 0, result.stderr
    kinds = {o["kind"] for o in objects}
    assert {"Deployment", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "ValidatingAdmissionPolicy",
            "ClusterRole", "NetworkPolicy", "ConfigMap", "Secret", "Service", "ServiceAccount", "PodDisruptionBudget",
            "ClusterKopfPeering"} <= kinds  # fmt: skip


def test_rendered_configuration_is_one_the_operator_accepts(helm: Helm, tmp_path: Path) -> None:
    objects = rendered(helm, QUICK_START)
    config_map = find(objects, "ConfigMap", "enclave-operator")
    # The pod's mounts, here: the webhook's TLS Secret at /tls.
    tls = find(objects, "Secret", "enclave-operator-webhook-tls")["data"]
    for name in ("tls.crt", "tls.key"):
        (tmp_path / name).write_bytes(base64.b64decode(tls[name]))
    path = tmp_path / "config.yaml"
    path.write_text(config_map["data"]["config.yaml"].replace("/tls/", f"{tmp_path}/"))
    signing_key = find(objects, "Secret", "enclave-operator-signing-key")["data"]["ENCLAVE_SIGNING_KEY"]
    env = {**os.environ, "ENCLAVE_S3_ACCESS_KEY": "a", "ENCLAVE_S3_SECRET_KEY": "b",
           "ENCLAVE_SIGNING_KEY": base64.b64decode(signing_key).decode()}  # as the pod gets it
    result = subprocess.run([sys.executable, "-m", "enclave_operator", "check-config", "--config", str(path)],
                            capture_output=True, text=True, env=env)  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(config_map["data"]["config.yaml"])
    assert config["webhook"] == {"port": 9443, "certFile": "/tls/tls.crt", "keyFile": "/tls/tls.key",
                                 "signingKeyEnv": "ENCLAVE_SIGNING_KEY"}  # fmt: skip
    assert config["kubernetes"]["operatorServiceAccount"] == f"{NAMESPACE}/enclave-operator"
    assert config["ingest"]["image"] == "registry.hospital.example/enclave-operator:0.1.0"


def test_deployment_is_restricted_and_runs_the_configured_command(helm: Helm) -> None:
    objects = rendered(helm, QUICK_START)
    pod = find(objects, "Deployment")["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["enclave-operator"]
    assert container["args"][:2] == ["run", "--config=/etc/enclave/config.yaml"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True,
                                            "capabilities": {"drop": ["ALL"]}}  # fmt: skip
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["tcpSocket"]["port"] == "webhook"
    assert container["envFrom"] == [{"secretRef": {"name": "enclave-backends"}}]
    assert "ENCLAVE_S3" not in yaml.safe_dump(objects), "no credential may come from values"
    env = {e["name"]: e.get("valueFrom") for e in container["env"]}
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}, "kopf peering identity"
    assert env["ENCLAVE_SIGNING_KEY"] == {"secretKeyRef": {"name": "enclave-operator-signing-key",
                                                           "key": "ENCLAVE_SIGNING_KEY"}}  # fmt: skip
    key = base64.b64decode(find(objects, "Secret", "enclave-operator-signing-key")["data"]["ENCLAVE_SIGNING_KEY"])
    assert len(key) >= 32
    assert "--standalone" not in container["args"], "peering always: never two writers, not even in a rollout"
    assert find(objects, "ClusterKopfPeering")["metadata"]["name"] == "enclave-operator"
    assert find(objects, "Deployment")["spec"]["replicas"] == 2
    assert find(objects, "PodDisruptionBudget")["spec"]["minAvailable"] == 1


def test_host_network_pods_listen_on_their_address_one_per_node(helm: Helm) -> None:
    pod = find(rendered(helm, {**QUICK_START, "hostNetwork": True}), "Deployment")["spec"]["template"]["spec"]
    assert pod["hostNetwork"] is True and pod["dnsPolicy"] == "ClusterFirstWithHostNet"
    container = pod["containers"][0]
    assert {"--bind=$(POD_IP)", "--webhook-address=$(POD_IP)"} <= set(container["args"])
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in container["env"]
    (term,) = pod["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"


def test_webhook_configurations_are_what_the_operator_prints_for_the_service(helm: Helm, tmp_path: Path) -> None:
    """One generator: the chart's configurations equal `enclave-operator webhook-config --service` for its Service
    and its service account (whose own requests skip the webhooks)."""
    objects = rendered(helm, QUICK_START)
    ca = tmp_path / "ca.crt"
    ca.write_bytes(base64.b64decode(find(objects, "Secret", "enclave-operator-webhook-tls")["data"]["ca.crt"]))
    printed = subprocess.run([sys.executable, "-m", "enclave_operator", "webhook-config", "--service",
                              f"{NAMESPACE}/enclave-operator:443", "--ca-file", str(ca),
                              "--operator-user", f"system:serviceaccount:{NAMESPACE}:enclave-operator"],
                             capture_output=True, text=True, check=True).stdout  # fmt: skip
    expected = {d["kind"]: d for d in yaml.safe_load_all(printed)}
    assert sorted(expected) == ["MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"]
    for kind, configuration in expected.items():
        chart = find(objects, kind)
        assert chart["metadata"]["name"] == configuration["metadata"]["name"]
        assert chart["webhooks"] == configuration["webhooks"], kind


def test_generated_webhook_certificate_is_signed_by_its_ca_bundle(helm: Helm, tmp_path: Path) -> None:
    objects = rendered(helm, QUICK_START)
    secret = find(objects, "Secret", "enclave-operator-webhook-tls")
    hook = find(objects, "ValidatingWebhookConfiguration")
    ca = base64.b64decode(hook["webhooks"][0]["clientConfig"]["caBundle"])
    assert ca == base64.b64decode(secret["data"]["ca.crt"])
    (tmp_path / "ca.crt").write_bytes(ca)
    (tmp_path / "tls.crt").write_bytes(base64.b64decode(secret["data"]["tls.crt"]))
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(tmp_path / "ca.crt"), str(tmp_path / "tls.crt")],
                            capture_output=True, text=True)  # fmt: skip
    assert verify.returncode == 0, verify.stderr
    names = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in", str(tmp_path / "tls.crt")],
                           capture_output=True, text=True).stdout  # fmt: skip
    assert f"enclave-operator.{NAMESPACE}.svc" in names
    for entry in hook["webhooks"]:
        assert entry["clientConfig"]["service"] == {"name": "enclave-operator", "namespace": NAMESPACE, "port": 443,
                                                    "path": entry["clientConfig"]["service"]["path"]}  # fmt: skip


def test_cert_manager_mode_asks_for_a_certificate_and_ca_injection(helm: Helm) -> None:
    objects = rendered(helm, {**QUICK_START, "webhook": {"certManager": {"enabled": True}}})
    certificate = find(objects, "Certificate")
    assert certificate["spec"]["secretName"] == "enclave-operator-webhook-tls"
    assert f"enclave-operator.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": "enclave-operator-selfsigned", "kind": "Issuer"}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        hook = find(objects, kind)
        injected = hook["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
        assert injected == f"{NAMESPACE}/enclave-operator-webhook"
        assert all("caBundle" not in w["clientConfig"] for w in hook["webhooks"])
    secrets = [o["metadata"]["name"] for o in objects if o["kind"] == "Secret"]
    assert secrets == ["enclave-operator-signing-key"], "cert-manager writes the TLS Secret"


def test_service_monitor_selects_the_service_and_its_metrics_port(helm: Helm) -> None:
    objects = rendered(helm, EVERYTHING)
    monitor, service = find(objects, "ServiceMonitor"), find(objects, "Service")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert monitor["spec"]["endpoints"][0]["port"] in [p["name"] for p in service["spec"]["ports"]]


def _metric_names(node: Any) -> set[str]:
    found: set[str] = set()
    if isinstance(node, promql_parser.VectorSelector):
        found.add(node.name)
    for attr in ("args", "expr", "lhs", "rhs", "vector_selector", "param"):
        child = getattr(node, attr, None)
        for item in child if isinstance(child, list) else [child]:
            if item is not None:
                found |= _metric_names(item)
    return found


def test_alert_rules_are_valid_promql(helm: Helm) -> None:
    """PromQL of every alert parses; that the metrics they name exist: tests/e2e/test_observability.py."""
    rules = find(rendered(helm, EVERYTHING), "PrometheusRule")["spec"]["groups"][0]["rules"]
    alerts = {r["alert"] for r in rules}
    assert {"EnclaveOperatorDown", "EnclaveProjectStalled", "EnclaveBackendUnavailable",
            "EnclaveBackupOverdue"} <= alerts
    for rule in rules:
        assert _metric_names(promql_parser.parse(rule["expr"])), rule["alert"]


def test_argocd_snippet_has_one_health_check_per_kind(helm: Helm) -> None:
    data = find(rendered(helm, EVERYTHING), "ConfigMap", "enclave-operator-argocd-health")["data"]
    assert sorted(data) == sorted(f"resource.customizations.health.enclave.io_{info.kind}" for _, info in crdgen.KINDS)
    assert all(v == (CHART / "files" / "argocd" / "health.lua").read_text() for v in data.values())


def test_grafana_dashboard_configmap_holds_the_dashboard(helm: Helm) -> None:
    values = {**EVERYTHING, "grafanaDashboard": {"enabled": True, "namespace": "cattle-dashboards"}}
    config_map = find(rendered(helm, values), "ConfigMap", "enclave-operator-dashboard")
    assert config_map["metadata"]["namespace"] == "cattle-dashboards"
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert yaml.safe_load(config_map["data"]["enclave-operator.json"])["uid"] == "enclave-operator"
