"""The Grafana dashboard and the alert rules ask for metrics a running operator really exports.

Scrapes the session operator's /metrics (after it reconciled a project) and parses every panel query of
charts/enclave-operator/files/grafana-dashboard.json and every alert of the chart's PrometheusRule with a
real PromQL parser: a metric name that is not exported, or a label the metric does not carry, fails.
"""

from __future__ import annotations

import json
import re
from typing import Any

import promql_parser
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from localenv.runtime import CHART
from support.builders import ProjectBuilder
from support.cluster import Cluster
from support.helm import Helm, find, go_tool, rendered
from support.operator import OperatorProcess
from support.projects import wait_ready

DASHBOARD = CHART / "files" / "grafana-dashboard.json"
PROMETHEUS_METRICS = {"up": {"job", "namespace", "instance"}}
"""Series Prometheus itself makes for every target (not in /metrics), with the target labels it adds."""
TARGET_LABELS = {"job", "instance", "namespace", "pod", "service", "container", "endpoint"}
"""Labels Prometheus adds to every scraped series (ServiceMonitor target labels)."""
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}
_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created"),
             "gauge": ("",), "summary": ("", "_sum", "_count", "_created"), "info": ("_info",)}
"""The series a metric family of each type is exported as (prometheus_client's text format)."""


def exported(text: str) -> dict[str, set[str]]:
    """Series name → the label names it carries (empty when the family has no sample yet)."""
    series: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(text):
        for suffix in _SUFFIXES.get(family.type, ("",)):
            series.setdefault(family.name + suffix, set())
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    return series


def selectors(node: Any) -> list[tuple[str, set[str]]]:
    """Every (metric name, label names used with it: matchers and the grouping around it) in a PromQL tree."""
    found: list[tuple[str, set[str]]] = []

    def walk(item: Any, grouping: set[str]) -> None:
        if isinstance(item, promql_parser.VectorSelector):
            found.append((item.name, grouping | {m.name for m in item.matchers.matchers}))
            return
        labels: set[str] = set()
        if isinstance(item, promql_parser.AggregateExpr) and item.modifier is not None:
            labels = set(item.modifier.labels or [])
        for attr in ("args", "expr", "lhs", "rhs", "vector_selector", "param"):
            child = getattr(item, attr, None)
            for sub in child if isinstance(child, list) else [child]:
                if sub is not None and not isinstance(sub, (str, int, float)):
                    walk(sub, grouping | labels)

    walk(node, set())
    return found


def _queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    out = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            out.append((f"panel '{panel['title']}'", expr))
    return out


@pytest.fixture(scope="module")
def scraped(crds: Cluster, operator: OperatorProcess) -> dict[str, set[str]]:
    """The operator's /metrics after it reconciled a project (so labelled series have samples)."""
    name = "observed-1"
    crds.apply(yaml.safe_dump(ProjectBuilder(name).deletion("Delete").obj()))
    wait_ready(crds, name)
    series = exported(operator.metrics())
    crds.run("delete", "researchproject", name, "--timeout=60s")
    return series


def _check(what: str, expr: str, series: dict[str, set[str]]) -> list[str]:
    problems = []
    for name, labels in selectors(promql_parser.parse(expr)):
        known = PROMETHEUS_METRICS.get(name) if name in PROMETHEUS_METRICS else series.get(name)
        if known is None:
            problems.append(f"{what}: metric {name} is not exported")
        elif known and (unknown := labels - known - TARGET_LABELS - {"le"}):
            problems.append(f"{what}: {name} has no label(s) {sorted(unknown)}")
    return problems


def test_every_dashboard_panel_names_exported_metrics_and_labels(scraped: dict[str, set[str]]) -> None:
    queries = _queries()
    assert len(queries) >= 10
    problems = [p for what, expr in queries for p in _check(what, expr, scraped)]
    assert not problems, "\n".join(problems)


def test_every_alert_names_exported_metrics_and_labels(scraped: dict[str, set[str]]) -> None:
    helm = Helm(go_tool("helm"))
    values = {"image": {"repository": "r/enclave-operator"}, "credentials": {"existingSecret": "s"},
              "config": {"s3": {"endpoint": "minio:9000"}}, "prometheusRule": {"enabled": True}}  # fmt: skip
    rules = find(rendered(helm, values), "PrometheusRule")["spec"]["groups"][0]["rules"]
    problems = [p for rule in rules for p in _check(f"alert {rule['alert']}", rule["expr"], scraped)]
    assert not problems, "\n".join(problems)


def test_the_check_itself_catches_a_misspelled_metric_and_label(scraped: dict[str, set[str]]) -> None:
    assert _check("probe", "sum(rate(enclave_reconciles_total[5m]))", scraped) == [
        "probe: metric enclave_reconciles_total is not exported"]  # fmt: skip
    assert _check("probe", "sum by (knd) (rate(enclave_reconcile_total[5m]))", scraped) == [
        "probe: enclave_reconcile_total has no label(s) ['knd']"]  # fmt: skip


def test_object_state_gauges_are_exported_for_every_state(scraped: dict[str, set[str]]) -> None:
    assert {"kind", "state"} <= scraped["enclave_objects"]
    assert {"kind", "type", "status", "reason"} <= scraped["enclave_conditions"]
    assert {"state"} <= scraped["enclave_work_queue_keys"]


def test_dashboard_is_valid_grafana_json() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    assert any(v["type"] == "datasource" for v in dashboard["templating"]["list"])
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("projects by state", "reconcile rate", "reconcile errors", "latency", "backend", "ingest"):
        assert re.search(topic, titles), f"no panel about {topic}"
