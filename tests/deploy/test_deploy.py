"""deploy/: the Prometheus alerting rules and the Grafana dashboard a retail chain loads.

The rules are checked by Prometheus's own ``promtool`` (Debian ``prometheus``): ``check rules``
on the file, ``test rules`` on ``ffc-agent.rules.test.yml`` beside this module (each alert fires
on the series it is meant for and not on the healthy ones beside them), and a mutation test that
disarms each alert in turn and expects the unit tests to notice. ``promtool check metrics`` reads
the agent's real ``/metrics`` on 127.0.0.1 and its textfile. The dashboard's queries may name
only metrics the agent exports, and each must be valid PromQL. Without promtool the tests skip,
and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from agent.service.metrics import Metrics
from diagnostics.model import (
    Assessed,
    Decision,
    Finding,
    Observation,
    ProbeError,
    ProbeErrorCode,
    Status,
    Verdict,
)

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "ffc-agent.rules.yml"
RULE_TESTS = Path(__file__).with_name("ffc-agent.rules.test.yml")
DASHBOARD = ROOT / "deploy" / "grafana" / "ffc-agent.json"
README = ROOT / "README.md"
NOW = datetime(2026, 6, 26, 14, 30, tzinfo=UTC)
TOOL_TIMEOUT_S = 120

# Series that Prometheus itself makes, which the rules may name beside the agent's own.
PROMETHEUS_OWN = {"up"}


def promtool() -> str:
    path = shutil.which("promtool")
    if path:
        return path
    reason = "promtool not found: apt-get install prometheus"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [promtool(), *args],
        input=stdin,
        capture_output=True,
        timeout=TOOL_TIMEOUT_S,
        check=False,
        cwd=ROOT,
    )


# --- what the agent exports


def exported_names() -> set[str]:
    """Every sample name the metrics module can write, from its registry's families."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_count", "_sum", "_created"),
        "gauge": ("",),
        "info": ("_info",),
    }
    return {
        family.name + suffix
        for family in Metrics(version="t").registry.collect()
        for suffix in suffixes[family.type]
    }


def family_names() -> set[str]:
    names = set()
    for family in Metrics(version="t").registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def populated() -> Metrics:
    """Metrics after one cycle with every family holding samples."""
    metrics = Metrics(version="0.1.0", sinks=["local", "rt"])

    @dataclass
    class Cycle:
        duration_s: float
        observations: list[Observation]
        assessed: list[Assessed]

    cycle = Cycle(
        4.0,
        [
            Observation("FFC0001", "api", NOW, True, {"slots_received": 4}),
            Observation.failed("FFC0002", "api", NOW, ProbeError(ProbeErrorCode.REFUSED, "no")),
        ],
        [
            Assessed(
                Finding("counter.offline", Status.FAIL, "refused", "down", NOW, "LDN01", "FFC0002"),
                Verdict(Decision.GENUINE, ("because",), rule="rule"),
            ),
            Assessed(Finding("counter.offline", Status.OK, "ok", "up", NOW, "LDN01", "FFC0001")),
        ],
    )
    metrics.update_from_cycle(cycle, incidents=[], tickets=[], outbox={"rt": (2, 90.0)}, now=NOW)
    metrics.record_filed("rt")
    return metrics


def test_exported_names_cover_what_is_rendered() -> None:
    rendered = {
        line.split("{")[0].split(" ")[0]
        for line in populated().render().decode().splitlines()
        if line and not line.startswith("#")
    }
    assert "ffc_agent_device_up" in rendered
    assert rendered <= exported_names(), rendered - exported_names()


def test_readme_lists_every_metric_and_no_other() -> None:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`(ffc_agent_\w+)`", section))
    assert listed == family_names()


# --- promtool check metrics


def test_promtool_flags_a_metric_named_after_a_type() -> None:
    bad = (
        b"# HELP ffc_agent_counter_up x\n# TYPE ffc_agent_counter_up gauge\n"
        b'ffc_agent_counter_up{counter="A"} 1\n'
    )
    result = run("check", "metrics", stdin=bad)
    assert result.returncode != 0
    assert b"counter" in result.stdout + result.stderr


@pytest.fixture
def served() -> Iterator[int]:
    metrics = populated()
    server, _ = metrics.serve(0, "127.0.0.1")
    try:
        yield int(server.server_port)
    finally:
        metrics.close()


@pytest.mark.integration
def test_metrics_endpoint_passes_promtool(served: int) -> None:
    reply = requests.get(f"http://127.0.0.1:{served}/metrics", timeout=(2, 10))
    assert reply.status_code == 200 and b"ffc_agent_device_up" in reply.content
    result = run("check", "metrics", stdin=reply.content)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.mark.integration
def test_metrics_textfile_passes_promtool(tmp_path: Path) -> None:
    path = populated().write_textfile(tmp_path / "ffc-agent.prom")
    result = run("check", "metrics", stdin=path.read_bytes())
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


# --- the alerting rules


def rules() -> dict[str, Any]:
    return yaml.safe_load(RULES.read_text(encoding="utf-8"))


def alerts(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def test_rules_cover_what_a_chain_needs() -> None:
    exprs = {a["alert"]: a["expr"] for a in alerts(rules())}
    text = " ".join(exprs.values())
    assert "up{" in text and "absent(" in text  # a dead gateway, scraped or federated
    for name in (
        "ffc_agent_device_up",
        "ffc_agent_last_cycle_timestamp_seconds",
        "ffc_agent_tickets_sla_overdue",
        "ffc_agent_outbox_oldest_age_seconds",
        "counter\\\\.counts\\\\.missing",
    ):
        assert name in text, name


def test_rules_name_only_exported_metrics() -> None:
    for alert in alerts(rules()):
        names = metric_names(alert["expr"])
        assert names, alert["alert"]
        assert names <= exported_names() | PROMETHEUS_OWN, (alert["alert"], names)


def test_every_alert_has_a_firing_and_a_quiet_unit_test() -> None:
    groups = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    cases = [c for group in groups for c in group["alert_rule_test"]]
    for alert in alerts(rules()):
        mine = [c for c in cases if c["alertname"] == alert["alert"]]
        assert any(c["exp_alerts"] for c in mine), f"{alert['alert']} never fires in a test"
        assert any(not c["exp_alerts"] for c in mine), f"{alert['alert']} never stays quiet"


@pytest.mark.integration
def test_promtool_checks_the_rules() -> None:
    result = run("check", "rules", str(RULES))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert f"{len(alerts(rules()))} rules found".encode() in result.stdout


@pytest.mark.integration
def test_promtool_unit_tests_pass() -> None:
    result = run("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()


@pytest.mark.integration
def test_each_alert_disarmed_fails_its_unit_test(tmp_path: Path) -> None:
    """The unit tests would notice an alert that no longer fires: replace one expression at a
    time with one that never fires, and the tests must fail naming that alert."""
    for alert in alerts(rules()):
        doc = rules()
        for rule in alerts(doc):
            if rule["alert"] == alert["alert"]:
                rule["expr"] = "vector(1) == 0"
        broken = tmp_path / "broken.rules.yml"
        broken.write_text(yaml.safe_dump(doc), encoding="utf-8")
        tests = yaml.safe_load(RULE_TESTS.read_text())
        tests["rule_files"] = [str(broken)]
        path = tmp_path / "broken.test.yml"
        path.write_text(yaml.safe_dump(tests), encoding="utf-8")
        result = run("test", "rules", str(path))
        assert result.returncode != 0, alert["alert"]
        assert f"alertname: {alert['alert']}".encode() in result.stdout + result.stderr


# --- the dashboard

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_SELECTOR = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_IDENT = re.compile(r"(?<![\w$.:])([A-Za-z_:][\w:]*)\b(?!\s*\()")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (functions, labels, keywords left out)."""
    text = _SELECTOR.sub(" ", _GROUPING.sub(" ", _STRING.sub('""', expr)))
    return {m for m in _IDENT.findall(text) if m.lower() not in _KEYWORDS}


def test_metric_names_reads_promql() -> None:
    assert metric_names(
        'histogram_quantile(0.95, sum by (le, site) (rate(a_bucket{x=~"b|c",le!="1e3"}[5m])))'
    ) == {"a_bucket"}
    assert metric_names("max by (instance) (x offset 1h) unless on (instance) y > 900") == {
        "x",
        "y",
    }
    assert metric_names('count(up{job="a"} == 0) or vector(0)') == {"up"}
    assert metric_names('time() - t_seconds{i=~"$instance"} > 1e3') == {"t_seconds"}


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 10
    return exprs


def test_dashboard_names_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    exported = exported_names()
    seen: set[str] = set()
    for expr in dashboard_exprs():
        names = metric_names(expr)
        assert names, expr
        assert names <= exported, (expr, names - exported)
        seen |= names
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            inner = re.fullmatch(r"label_values\((\w+), *\w+\)", variable["definition"])
            assert inner and inner.group(1) in exported
    # the dashboard shows the counters, the gaps, the tickets and the outbox
    for name in (
        "ffc_agent_device_up",
        "ffc_agent_findings",
        "ffc_agent_tickets_sla_overdue",
        "ffc_agent_outbox_oldest_age_seconds",
    ):
        assert name in seen


def test_a_dashboard_naming_a_metric_the_agent_lacks_is_caught() -> None:
    assert not metric_names("sum(ffc_agent_counter_up)") <= exported_names()


@pytest.mark.integration
def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    # Grafana's variables, as Grafana would substitute them
    exprs = [
        e.replace("$__rate_interval", "5m").replace("$instance", ".*") for e in dashboard_exprs()
    ]
    doc = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:q{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = run("check", "rules", str(path))
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
