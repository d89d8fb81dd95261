"""The Grafana dashboard and the Prometheus alerts in deploy/: every metric they name is one a
real daemon exports, the rules are valid and fire when they should (promtool, when installed),
and the deletion-guard gauge the alerts need follows the guard."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from daemon_harness import DaemonGroup, run_cli, wait_until
from prometheus_client.parser import text_string_to_metric_families
from test_http import get, with_http

from swarm.devtools.devredis import RedisServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
DASHBOARD = REPO / "deploy" / "grafana" / "swarm.json"
ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = REPO / "deploy" / "prometheus" / "prometheus.yml"
# Series Prometheus makes itself for every scrape target, not the daemon.
PROMETHEUS_SERIES = {"up"}
# Labels the rules may template: the scrape's, the rejection reason, and swarm_node_info's.
KNOWN_LABELS = {"instance", "job", "reason", "node", "swarm", "role"}
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "offset", "inf", "nan",
}  # fmt: skip


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads: identifiers that are not functions,
    keywords, label names (in matchers and grouping clauses) or durations."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping labels
    names = set()
    for match in re.finditer(r"(?<![\w$:.])([A-Za-z_:][\w:]*)\s*(\()?", text):
        name, call = match.group(1), match.group(2)
        if call or name in _KEYWORDS:
            continue
        names.add(name)
    return names


def test_the_metric_name_reader_sees_what_a_query_reads() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, node) (rate(swarm_apply_seconds_bucket[5m])'
        ' * on(instance, job) group_left(node, swarm) swarm_node_info{swarm=~"$swarm"}))'
        " and swarm_nope > bool 3 or up offset 5m"
    )
    assert metric_names(expr) == {
        "swarm_apply_seconds_bucket", "swarm_node_info", "swarm_nope", "up",
    }  # fmt: skip


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    rules = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in rules["groups"] for rule in group["rules"]]


def exported_names(port: int) -> set[str]:
    """Every sample name on a daemon's /metrics (with _total, _bucket, ... as queried)."""
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        sample.name
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def metrics_of(port: int) -> dict[str, float]:
    status, text = get(port, "/metrics")
    assert status == 200
    return {
        sample.name: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if not sample.labels
    }


# -- names against a running daemon ----------------------------------------------------------------


def test_every_metric_of_the_dashboard_and_alerts_is_exported_and_the_guard_gauge_follows(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    with DaemonGroup(tmp_path, redis_server.url) as group:
        daemon, port = with_http(group, "a")
        names = ["MEMORY.md", "memory/a.md", "memory/b.md", "memory/c.md"]
        for name in names:
            (daemon.dir / name).parent.mkdir(parents=True, exist_ok=True)
            (daemon.dir / name).write_text(f"- {name}\n")
        daemon.start().wait_ready()
        wait_until(lambda: get(port, "/readyz")[0] == 200, "ready")
        exported = exported_names(port)

        dashboard = set().union(*(metric_names(expr) for expr in dashboard_exprs()))
        alerts = set().union(*(metric_names(rule["expr"]) for rule in alert_rules()))
        assert dashboard - exported == set(), "the dashboard names metrics nobody exports"
        assert alerts - exported - PROMETHEUS_SERIES == set(), "alerts name unexported metrics"
        # what the dashboard is for: propagation latency, lag, outbox, rejects, renders, Redis
        assert {
            "swarm_apply_seconds_bucket", "swarm_render_seconds_bucket", "swarm_lag_operations",
            "swarm_outbox_depth", "swarm_rejected_messages_total", "swarm_rendered_total",
            "swarm_redis_reconnects_total", "swarm_publish_errors_total", "swarm_deletions_held",
        } <= dashboard  # fmt: skip

        # the deletion guard's gauge, which SwarmDeletionGuardTripped reads, follows the guard
        assert metrics_of(port)["swarm_deletions_held"] == 0
        wait_until(lambda: metrics_of(port)["swarm_files_synced"] == len(names), "files synced")
        for name in names:
            (daemon.dir / name).unlink()
        wait_until(lambda: metrics_of(port)["swarm_deletions_held"] == 1, "guard trips", 15)
        assert get(port, "/readyz")[0] == 503
        confirmed = run_cli("confirm-deletes", "--dir", str(daemon.dir), "--state-dir",
                            str(daemon.state_dir))  # fmt: skip
        assert confirmed.returncode == 0, confirmed.stderr
        wait_until(lambda: metrics_of(port)["swarm_deletions_held"] == 0, "guard lifted", 15)


# -- the dashboard ---------------------------------------------------------------------------------


def test_the_dashboard_is_an_importable_grafana_dashboard() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels), "panel ids must be unique"
    for panel in panels:
        x, w = panel["gridPos"]["x"], panel["gridPos"]["w"]
        assert x >= 0 and x + w <= 24, f"{panel['title']} overflows the grid"
        if panel["type"] == "row":
            continue
        assert panel["targets"], panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= set(variables), f"{panel['title']} uses undefined {used}"


# -- the alerts ------------------------------------------------------------------------------------


def test_the_alert_rules_cover_what_operators_need_and_are_well_formed() -> None:
    rules = alert_rules()
    by_name = {rule["alert"]: rule for rule in rules}
    assert len(by_name) == len(rules), "alert names must be unique"
    for what, alert, metric in [
        ("node offline", "SwarmNodeDown", "up"),
        ("node offline for its swarm", "SwarmRedisDisconnected", "swarm_redis_connected"),
        ("not converged for N", "SwarmNotConverged", "swarm_lag_operations"),
        ("outbox growing", "SwarmOutboxGrowing", "swarm_outbox_depth"),
        ("rejected messages", "SwarmRejectedMessages", "swarm_rejected_messages_total"),
        ("deletion guard", "SwarmDeletionGuardTripped", "swarm_deletions_held"),
        ("protected files", "SwarmProtectedFileRefused", "swarm_protected_refused_total"),
    ]:
        assert metric in metric_names(by_name[alert]["expr"]), what
    assert "min_over_time" in by_name["SwarmNotConverged"]["expr"]  # for N, not once
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}
        assert {"summary", "description"} <= set(rule["annotations"])
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), rule["alert"]
        assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
        for text in rule["annotations"].values():
            labels = set(re.findall(r"\{\{\s*\$labels\.(\w+)\s*\}\}", text))
            assert labels <= KNOWN_LABELS, f"{rule['alert']} templates unknown {labels}"
            assert render(text, dict.fromkeys(KNOWN_LABELS, "x"), "1").count("{{") == 0


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool not installed (Debian package prometheus); structure checked above")
    return path


def test_promtool_accepts_the_rules_and_the_example_config() -> None:
    tool = promtool()
    for args in (["check", "rules", str(ALERTS)], ["check", "config", str(PROMETHEUS_CONFIG)]):
        result = subprocess.run([tool, *args], capture_output=True, text=True, check=False)
        assert result.returncode == 0, result.stdout + result.stderr


# -- the alerts fire when they should (promtool test rules) ----------------------------------------

TARGET = {"instance": "a:8732", "job": "swarm"}
NODE = {**TARGET, "node": "laptop", "swarm": "wren", "role": "local"}


def series(name: str, values: str, **labels: str) -> dict[str, str]:
    merged = {**TARGET, **labels}
    inner = ",".join(f'{key}="{value}"' for key, value in sorted(merged.items()))
    return {"series": f"{name}{{{inner}}}", "values": values}


INFO = series("swarm_node_info", "1x40", node="laptop", swarm="wren", role="local")

# (alert, input series, evaluation time, labels of the expected alert or None, $value)
CASES: list[tuple[str, list[dict[str, str]], str, dict[str, str] | None, str]] = [
    ("SwarmNodeDown", [series("up", "1 1 0x6")], "5m", {**TARGET, "severity": "warning"}, ""),
    ("SwarmNodeDown", [series("up", "1 1 0 1 0 1")], "5m", None, ""),
    ("SwarmRedisDisconnected", [INFO, series("swarm_redis_connected", "1 1 0x6")], "5m",
     {**NODE, "severity": "warning"}, ""),
    ("SwarmNotConverged", [INFO, series("swarm_lag_operations", "5x15")], "12m",
     {**NODE, "severity": "warning"}, "5"),
    # lag was 0 once within the 10 minutes: the swarm did converge, no alert
    ("SwarmNotConverged", [INFO, series("swarm_lag_operations", "5 5 5 5 5 0 5x10")], "12m",
     None, ""),
    ("SwarmOutboxGrowing", [INFO, series("swarm_outbox_depth", "1+1x30")], "25m",
     {**NODE, "severity": "warning"}, ""),
    ("SwarmOutboxGrowing", [INFO, series("swarm_outbox_depth", "5x30")], "25m", None, ""),
    ("SwarmRejectedMessages",
     [INFO, series("swarm_rejected_messages_total", "0 0 3 6 6", reason="wrong-key")], "4m",
     {**NODE, "reason": "wrong-key", "severity": "warning"}, ""),
    ("SwarmProtectedFileRefused",
     [INFO, series("swarm_protected_refused_total", "0 0 2 2")], "3m",
     {**NODE, "severity": "critical"}, ""),
    ("SwarmProtectedFileRefused", [INFO, series("swarm_protected_refused_total", "4x5")], "3m",
     None, ""),
    ("SwarmDeletionGuardTripped", [INFO, series("swarm_deletions_held", "0 0 1x5")], "3m",
     {**NODE, "severity": "critical"}, ""),
    ("SwarmDeletionGuardTripped", [INFO, series("swarm_deletions_held", "0x5")], "3m", None, ""),
    ("SwarmDiskErrors",
     [INFO, series("swarm_render_errors_total", "0 0 1 1"),
      series("swarm_ingest_errors_total", "0x3")], "3m", {**NODE, "severity": "warning"}, ""),
]  # fmt: skip


def render(template: str, labels: dict[str, str], value: str) -> str:
    """The few template forms the rules use, rendered as Prometheus does."""
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)
    return re.sub(r"\{\{\s*\$value\s*\}\}", value, text)


def promtool_tests() -> Iterator[dict[str, Any]]:
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for alert, inputs, at, labels, value in CASES:
        expected = []
        if labels is not None:
            annotations = {
                name: render(text, labels, value)
                for name, text in rules[alert]["annotations"].items()
            }
            expected.append({"exp_labels": labels, "exp_annotations": annotations})
        yield {
            "interval": "1m",
            "input_series": inputs,
            "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
        }


def test_the_alerts_fire_when_they_should_and_only_then(tmp_path: Path) -> None:
    tool = promtool()
    spec = {
        "rule_files": [str(ALERTS)],
        "evaluation_interval": "1m",
        "tests": list(promtool_tests()),
    }
    test_file = tmp_path / "alerts_test.yml"
    test_file.write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = subprocess.run(
        [tool, "test", "rules", str(test_file)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
