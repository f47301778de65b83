"""The chart's alerting rules, checked by Prometheus's own tool: `promtool check rules` on the
rules as the chart renders them, `promtool test rules` feeding series and asserting which alerts
fire (with which labels) and which do not, and every runbook link pointing at a section of
docs/runbooks.md. promtool comes with Debian's prometheus package (aiops.devenv.prometheus
installs it when missing, as the Prometheus tests do)."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from aiops.devenv.prometheus import ensure_prometheus
from aiops.devenv.toolchain import ensure_kubectl_helm

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "aiops-operator"
RUNBOOKS = ROOT / "docs" / "runbooks.md"
VALUES = {"metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}}}
JOB = "aiops-operator-metrics"


@pytest.fixture(scope="module")
def promtool() -> str:
    binary = Path(ensure_prometheus()).with_name("promtool")
    found = str(binary) if binary.exists() else shutil.which("promtool")
    assert found, "promtool ships with the prometheus package beside the prometheus binary"
    return found


@pytest.fixture(scope="module")
def rules(tmp_path_factory) -> Path:
    """The rule groups of the rendered PrometheusRule, as a Prometheus rules file."""
    _, helm = ensure_kubectl_helm()
    tmp = tmp_path_factory.mktemp("rules")
    (tmp / "values.yaml").write_text(yaml.safe_dump(VALUES))
    out = subprocess.run([str(helm), "template", "aiops-operator", str(CHART), "-n", "aiops-system",
                          "-f", str(tmp / "values.yaml")], capture_output=True, text=True, check=True, timeout=120)
    [rule] = [d for d in yaml.safe_load_all(out.stdout) if d and d["kind"] == "PrometheusRule"]
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    return path


def alerts(rules: Path) -> list[dict]:
    return [r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"] if "alert" in r]


def test_promtool_accepts_the_rules(promtool, rules):
    result = subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alerts(rules))} rules found" in result.stdout


def test_every_alert_links_a_runbook_section_that_exists(rules):
    anchors = {h.strip().lower() for h in re.findall(r"^## (\S+)\s*$", RUNBOOKS.read_text(), re.MULTILINE)}
    for alert in alerts(rules):
        url = alert["annotations"]["runbook_url"]
        assert url.startswith("https://") and url.split("#")[0].endswith("docs/runbooks.md"), url
        assert url.split("#")[1] == alert["alert"].lower() in anchors, (alert["alert"], sorted(anchors))


# Series in promtool's notation: each value per 1m step ("0+1x30" counts up by one a minute).
TESTS = [
    {   # The operator gone: fires after 5 minutes without a successful scrape, and not before.
        "interval": "1m",
        "input_series": [{"series": f'up{{job="{JOB}", instance="10.0.0.7:9090"}}', "values": "1 1 0x20"}],
        "alert_rule_test": [
            {"eval_time": "4m", "alertname": "AiopsOperatorDown", "exp_alerts": []},
            {"eval_time": "10m", "alertname": "AiopsOperatorDown", "exp_alerts": [{"exp_labels": {
                "severity": "critical"}}]},
        ],
    },
    {   # Reconcile errors: 6 a minute (0.1/s, over the 0.05/s default) fire by kind; 1 a minute does not.
        "interval": "1m",
        "input_series": [
            {"series": 'aiops_reconcile_errors_total{kind="ModelDeployment"}', "values": "0+6x40"},
            {"series": 'aiops_reconcile_errors_total{kind="VectorIndex"}', "values": "0+1x40"},
        ],
        "alert_rule_test": [{"eval_time": "30m", "alertname": "AiopsReconcileErrors", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "kind": "ModelDeployment"}, "value": "100m"}]}],
    },
    {   # A degraded serving version for longer than degradedFor (10m) fires, with its identity.
        "interval": "1m",
        "input_series": [
            {"series": 'aiops_modeldeployment_degraded{namespace="ai", name="llm", version="2"}', "values": "0 0 1x20"},
            {"series": 'aiops_modeldeployment_degraded{namespace="ai", name="classifier", version="4"}',
             "values": "0x22"},
        ],
        "alert_rule_test": [
            {"eval_time": "8m", "alertname": "AiopsModelDeploymentDegraded", "exp_alerts": []},
            {"eval_time": "15m", "alertname": "AiopsModelDeploymentDegraded", "exp_alerts": [{"exp_labels": {
                "severity": "warning", "namespace": "ai", "name": "llm", "version": "2"}}]},
        ],
    },
    {   # Recall under 0.9 for 30 minutes fires; 0.96 never does.
        "interval": "5m",
        "input_series": [
            {"series": 'aiops_vectorindex_recall_ratio{namespace="search", name="manuals"}', "values": "0.8x12"},
            {"series": 'aiops_vectorindex_recall_ratio{namespace="search", name="faq"}', "values": "0.96x12"},
        ],
        "alert_rule_test": [{"eval_time": "40m", "alertname": "AiopsVectorIndexRecallLow", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "namespace": "search", "name": "manuals"}, "value": "80%"}]}],
    },
    {   # A rollback fires at once, by reason, and is quiet an hour later.
        "interval": "1m",
        "input_series": [{"series": 'aiops_rollbacks_total{reason="HealthCheckFailed"}', "values": "0 0 1x90"}],
        "alert_rule_test": [
            {"eval_time": "10m", "alertname": "AiopsModelRolledBack", "exp_alerts": [{"exp_labels": {
                "severity": "warning", "reason": "HealthCheckFailed"}}]},
            {"eval_time": "80m", "alertname": "AiopsModelRolledBack", "exp_alerts": []},
        ],
    },
    {   # Slow reconciles: every one in the 30 s bucket for 20 minutes makes the p99 over 10 s.
        "interval": "1m",
        "input_series": [
            {"series": f'aiops_reconcile_duration_seconds_bucket{{kind="TrainingJob", le="{le}"}}', "values": values}
            for le, values in (("10", "0x40"), ("30", "0+10x40"), ("+Inf", "0+10x40"))],
        "alert_rule_test": [{"eval_time": "30m", "alertname": "AiopsReconcileSlow", "exp_alerts": [
            {"exp_labels": {"severity": "warning", "kind": "TrainingJob"}}]}],
    },
]


def expected_annotations(rule: dict, labels: dict, value: str | None) -> dict:
    """The rule's annotations as Prometheus renders them for `labels` and a value printed as `value`:
    the test then also checks that every template in them renders to what it should."""
    def render(text: str) -> str:
        text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], text)
        return re.sub(r"\{\{\s*\$value \| humanize(Percentage)?\s*\}\}", lambda m: value, text)

    rendered = {k: render(v) for k, v in rule["annotations"].items()}
    assert not any("{{" in v for v in rendered.values()), rendered
    return rendered


def test_the_alerts_fire_on_what_they_describe_and_not_otherwise(promtool, rules, tmp_path):
    by_name = {a["alert"]: a for a in alerts(rules)}
    cases = copy.deepcopy(TESTS)
    for case in cases:
        for check in case["alert_rule_test"]:
            for exp in check["exp_alerts"]:
                exp["exp_annotations"] = expected_annotations(by_name[check["alertname"]], exp["exp_labels"],
                                                              exp.pop("value", None))
    tests = tmp_path / "tests.yaml"
    tests.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": cases}))
    result = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    tested = {t["alertname"] for case in TESTS for t in case["alert_rule_test"]}
    assert tested == {a["alert"] for a in alerts(rules)}, "every alert has a firing test"
