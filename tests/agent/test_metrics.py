"""agent.service.metrics: what Prometheus reads from the textfile and the loopback endpoint."""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from agent.config import ConfigError, parse_config
from agent.service.metrics import CYCLE_BUCKETS, Metrics, loopback_host
from agent.store import Incident
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
from rma.tickets import Category, Ticket, TicketStatus

NOW = datetime(2025, 6, 26, 14, 30, tzinfo=UTC)
SECRET = "s3cr3t-Pa55word-planted"


@dataclass
class FakeCycle:
    """What the metrics read of the runner's CycleResult."""

    assessed: list[Assessed]
    duration_s: float
    tickets: list[Ticket] = field(default_factory=list)
    observations: list[Observation] = field(default_factory=list)


def finding(check: str, status: Status, subject: str | None = "FFC0001") -> Finding:
    return Finding(
        check_id=check,
        status=status,
        code="x",
        summary=f"{check} on {subject}",
        at=NOW,
        site="LDN01",
        subject=subject,
        evidence={"password": SECRET},
    )


def verdict(decision: Decision) -> Verdict:
    return Verdict(decision, ("because",), rule="rule")


def api(serial: str, code: ProbeErrorCode | None = None) -> Observation:
    if code is None:
        return Observation(serial, "api", NOW, True, {"slots_received": 4})
    return Observation.failed(serial, "api", NOW, ProbeError(code, f"{code} for {SECRET}"))


def incident(id_: int, check: str, state: str) -> Incident:
    return Incident(
        id=id_,
        check_id=check,
        site="LDN01",
        subject="FFC0001",
        state=state,
        code="x",
        summary="s",
        opened_at=NOW - timedelta(hours=1),
        updated_at=NOW,
        resolved_at=None,
        ticket_key=None,
        ticket_number=None,
        last_finding={},
    )


def ticket(category: Category, created_at: datetime, status: TicketStatus) -> Ticket:
    return Ticket.from_json(
        {
            "key": f"ffc-{category.name}-{status.name}-{created_at:%Y%m%d%H%M}".lower(),
            "issue_level": "site",
            "counter_unassigned": True,
            "site": "LDN01",
            "subject": "A problem",
            "category": category.value,
            "occurred_on": created_at.date().isoformat(),
            "comment": {
                "what": "w",
                "where": "w",
                "when": "w",
                "which_device": "w",
                "how": "w",
            },
            "requester": "it@example.com",
            "status": status.value,
            "created_at": created_at.isoformat(),
            "updated_at": created_at.isoformat(),
        }
    )


def first_cycle() -> FakeCycle:
    return FakeCycle(
        assessed=[
            Assessed(finding("counter.offline", Status.FAIL), verdict(Decision.GENUINE)),
            Assessed(finding("counter.liveview.blocked", Status.WARN), verdict(Decision.PENDING)),
            Assessed(
                finding("counter.counts.stopped", Status.WARN, "FFC0002"),
                verdict(Decision.FALSE_ALARM),
            ),
            Assessed(
                finding("counter.counts.stopped", Status.FAIL, "FFC0003"),
                verdict(Decision.FALSE_ALARM),
            ),
            Assessed(finding("counter.offline", Status.OK, "FFC0002")),
            Assessed(finding("counter.device.health", Status.ERROR)),
        ],
        duration_s=7.5,
        observations=[
            api("FFC0001", ProbeErrorCode.REFUSED),
            api("FFC0002"),
            Observation.failed(
                "FFC0002", "snapshot", NOW, ProbeError(ProbeErrorCode.TIMEOUT, "slow")
            ),
            api("FFC0003", ProbeErrorCode.REFUSED),
        ],
    )


TICKETS = [
    ticket(Category.TECHNICAL_ISSUE, NOW - timedelta(days=1, hours=2), TicketStatus.OPEN),
    ticket(Category.TECHNICAL_ISSUE, NOW - timedelta(hours=2), TicketStatus.OPEN),
    ticket(Category.DATA_ACCURACY_ISSUE, NOW - timedelta(days=1, hours=2), TicketStatus.OPEN),
    ticket(Category.DATA_ACCURACY_ISSUE, NOW - timedelta(days=9), TicketStatus.CLOSED),
]


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(
    found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> float | None:
    return found.get((name, frozenset(labels.items())))


def names(found: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str) -> list[dict]:
    return [dict(labels) for (n, labels) in found if n == name]


def update(metrics: Metrics, cycle: FakeCycle, **kwargs: Any) -> None:
    args: dict[str, Any] = {
        "incidents": [
            incident(1, "counter.offline", "open"),
            incident(2, "counter.liveview.blocked", "suspected"),
            incident(3, "counter.liveview.blocked", "suspected"),
        ],
        "tickets": TICKETS,
        "outbox": {"local": (0, None), "rt": (3, 420.0)},
        "now": NOW,
        "counter_sites": {"FFC0001": "LDN01", "FFC0002": "LDN01", "FFC0003": "MAN02"},
    }
    metrics.update_from_cycle(cycle, **{**args, **kwargs})


@pytest.fixture
def metrics() -> Metrics:
    return Metrics(version="1.2.3", sinks=["local", "rt"])


def test_textfile_holds_every_family_of_one_cycle(metrics: Metrics, tmp_path: Path) -> None:
    update(metrics, first_cycle())
    path = metrics.write_textfile(tmp_path / "metrics" / "ffc-agent.prom")

    found = samples(path.read_text())
    assert value(found, "ffc_agent_info", version="1.2.3") == 1
    assert value(found, "ffc_agent_device_up", counter="FFC0001", site="LDN01") == 0
    assert value(found, "ffc_agent_device_up", counter="FFC0002", site="LDN01") == 1
    assert value(found, "ffc_agent_device_up", counter="FFC0003", site="MAN02") == 0

    def findings(check: str, verdict_: str, status: str) -> float | None:
        return value(found, "ffc_agent_findings", check=check, verdict=verdict_, status=status)

    assert findings("counter.offline", "genuine", "fail") == 1
    assert findings("counter.offline", "none", "ok") == 1
    assert findings("counter.liveview.blocked", "pending", "warn") == 1
    assert findings("counter.counts.stopped", "false_alarm", "warn") == 1
    assert findings("counter.counts.stopped", "false_alarm", "fail") == 1
    assert findings("counter.device.health", "none", "error") == 1
    assert len(names(found, "ffc_agent_findings")) == 6

    assert value(found, "ffc_agent_incidents_open", check="counter.offline", state="open") == 1
    blocked = "counter.liveview.blocked"
    assert value(found, "ffc_agent_incidents_open", check=blocked, state="suspected") == 2
    assert value(found, "ffc_agent_outbox_depth", sink="rt") == 3
    assert value(found, "ffc_agent_outbox_oldest_age_seconds", sink="rt") == 420
    assert value(found, "ffc_agent_outbox_depth", sink="local") == 0
    assert value(found, "ffc_agent_outbox_oldest_age_seconds", sink="local") == 0

    tech, data = Category.TECHNICAL_ISSUE.value, Category.DATA_ACCURACY_ISSUE.value
    assert value(found, "ffc_agent_tickets", status="Open", category=tech) == 2
    assert value(found, "ffc_agent_tickets", status="Open", category=data) == 1
    assert value(found, "ffc_agent_tickets", status="Closed", category=data) == 1
    # 26 hours old: late on a 1-day Technical Issue, in time on a 3-day Data Accuracy Issue
    assert value(found, "ffc_agent_tickets_sla_overdue", category=tech) == 1
    assert value(found, "ffc_agent_tickets_sla_overdue", category=data) == 0

    assert value(found, "ffc_agent_probe_errors_total", code="refused") == 2
    assert value(found, "ffc_agent_probe_errors_total", code="timeout") == 1
    assert value(found, "ffc_agent_probe_errors_total", code="auth_failed") == 0
    assert value(found, "ffc_agent_tickets_filed_total", sink="rt") == 0
    assert value(found, "ffc_agent_cycles_total") == 1
    assert value(found, "ffc_agent_last_cycle_timestamp_seconds") == NOW.timestamp()
    assert value(found, "ffc_agent_cycle_duration_seconds_count") == 1
    assert value(found, "ffc_agent_cycle_duration_seconds_sum") == 7.5
    assert value(found, "ffc_agent_cycle_duration_seconds_bucket", le="5.0") == 0
    assert value(found, "ffc_agent_cycle_duration_seconds_bucket", le="10.0") == 1


def test_what_went_away_disappears_and_totals_keep_counting(
    metrics: Metrics, tmp_path: Path
) -> None:
    update(metrics, first_cycle())
    second = FakeCycle(
        assessed=[Assessed(finding("counter.offline", Status.FAIL), verdict(Decision.GENUINE))],
        duration_s=12.0,
        observations=[api("FFC0001", ProbeErrorCode.REFUSED)],  # FFC0002/3 left the config
    )
    update(
        metrics,
        second,
        incidents=[],
        tickets=[],
        outbox={"rt": (0, None)},
        now=NOW + timedelta(minutes=5),
    )
    metrics.record_filed("rt")
    found = samples(metrics.write_textfile(tmp_path / "ffc-agent.prom").read_text())

    assert names(found, "ffc_agent_device_up") == [{"counter": "FFC0001", "site": "LDN01"}]
    assert names(found, "ffc_agent_findings") == [
        {"check": "counter.offline", "verdict": "genuine", "status": "fail"}
    ]
    assert names(found, "ffc_agent_incidents_open") == []
    assert names(found, "ffc_agent_tickets") == []
    assert names(found, "ffc_agent_outbox_depth") == [{"sink": "rt"}]
    # categories with an SLA stay present at 0, so an alert on `> 0` has a series to watch
    assert value(found, "ffc_agent_tickets_sla_overdue", category="Technical Issue") == 0

    assert value(found, "ffc_agent_probe_errors_total", code="refused") == 3
    assert value(found, "ffc_agent_tickets_filed_total", sink="rt") == 1
    assert value(found, "ffc_agent_cycles_total") == 2
    assert value(found, "ffc_agent_cycle_duration_seconds_count") == 2
    assert value(found, "ffc_agent_cycle_duration_seconds_sum") == 19.5
    assert (
        value(found, "ffc_agent_last_cycle_timestamp_seconds")
        == (NOW + timedelta(minutes=5)).timestamp()
    )


def test_observations_can_be_passed_beside_the_result(metrics: Metrics) -> None:
    cycle = first_cycle()
    observations, cycle.observations = cycle.observations, []
    update(metrics, cycle, observations=observations[:1])
    found = samples(metrics.render().decode())
    assert names(found, "ffc_agent_device_up") == [{"counter": "FFC0001", "site": "LDN01"}]


def test_site_label_falls_back_to_the_findings(metrics: Metrics) -> None:
    update(metrics, first_cycle(), counter_sites=None)
    found = samples(metrics.render().decode())
    assert value(found, "ffc_agent_device_up", counter="FFC0003", site="LDN01") == 0


def test_nothing_secret_or_free_text_reaches_the_output(metrics: Metrics) -> None:
    update(metrics, first_cycle())
    text = metrics.render().decode()
    assert SECRET not in text
    assert "counter.offline on FFC0001" not in text  # summaries are not labels


def test_a_naive_now_is_refused(metrics: Metrics) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        update(metrics, first_cycle(), now=NOW.replace(tzinfo=None))


def test_two_instances_have_registries_of_their_own() -> None:
    a, b = Metrics(version="a"), Metrics(version="b")
    a.update_from_cycle(first_cycle(), incidents=[], tickets=[], outbox={}, now=NOW)
    assert value(samples(a.render().decode()), "ffc_agent_cycles_total") == 1
    assert value(samples(b.render().decode()), "ffc_agent_cycles_total") == 0


def test_buckets_cover_one_to_a_hundred_and_twenty_seconds() -> None:
    assert CYCLE_BUCKETS[0] <= 1 and 120 in CYCLE_BUCKETS
    assert list(CYCLE_BUCKETS) == sorted(CYCLE_BUCKETS)


# --- the textfile


def test_textfile_replaces_the_old_one_readable_by_node_exporter(
    metrics: Metrics, tmp_path: Path
) -> None:
    path = tmp_path / "ffc-agent.prom"
    path.write_text("stale\n")
    metrics.write_textfile(path)
    assert "ffc_agent_info" in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffc-agent.prom"]


def test_a_failed_write_leaves_no_temporary_file(metrics: Metrics, tmp_path: Path) -> None:
    path = tmp_path / "ffc-agent.prom"
    path.mkdir()  # a directory in the way: the rename fails
    (path / "keep").write_text("x")
    with pytest.raises(OSError):
        metrics.write_textfile(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ffc-agent.prom"]


# --- the loopback endpoint


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.10", "::", "example.com", ""])
def test_non_loopback_hosts_are_refused(metrics: Metrics, host: str) -> None:
    with pytest.raises(ValueError, match="loopback"):
        metrics.serve(0, host)
    assert metrics._servers == []


def test_loopback_names() -> None:
    assert loopback_host("localhost") == "127.0.0.1"
    assert loopback_host("127.0.0.2") == "127.0.0.2"
    assert loopback_host("::1") == "::1"


@pytest.mark.integration
def test_serves_the_metrics_on_loopback(metrics: Metrics) -> None:
    update(metrics, first_cycle())
    server, thread = metrics.serve(0, "127.0.0.1")
    try:
        port = server.server_port
        assert port > 0 and thread.is_alive()
        reply = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=(2, 5))
        assert reply.status_code == 200
        found = samples(reply.text)
        assert value(found, "ffc_agent_info", version="1.2.3") == 1
        assert value(found, "ffc_agent_device_up", counter="FFC0002", site="LDN01") == 1
        assert value(found, "ffc_agent_cycles_total") == 1
    finally:
        metrics.close()
    assert not thread.is_alive()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/metrics", timeout=(2, 5))


# --- [metrics] in the configuration


def site_only(**tables: Any) -> dict[str, Any]:
    site = {"code": "LDN01", "name": "London", "timezone": "Europe/London", "opening_hours": {}}
    return {"sites": [site], **tables}


def test_config_defaults_to_a_textfile_in_the_state_dir(tmp_path: Path) -> None:
    config = parse_config(site_only(agent={"state_dir": "state"}), base_dir=tmp_path)
    assert config.metrics.textfile == tmp_path / "state" / "metrics" / "ffc-agent.prom"
    assert config.metrics.http_port is None
    assert config.metrics.http_host == "127.0.0.1"


def test_config_metrics_table(tmp_path: Path) -> None:
    config = parse_config(
        site_only(metrics={"textfile": "", "http_port": 9464, "http_host": "localhost"}),
        base_dir=tmp_path,
    )
    assert config.metrics.textfile is None  # "" turns the textfile off
    assert (config.metrics.http_port, config.metrics.http_host) == (9464, "127.0.0.1")
    relative = parse_config(site_only(metrics={"textfile": "m/x.prom"}), base_dir=tmp_path)
    assert relative.metrics.textfile == tmp_path / "m" / "x.prom"


def test_config_metrics_mistakes_are_one_line_each() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            site_only(metrics={"textfile": "/tmp/x.txt", "http_host": "0.0.0.0", "http_port": 0})
        )
    lines = info.value.lines
    assert len(lines) == 3
    assert lines[0].startswith("metrics.textfile: must end in .prom")
    assert lines[1].startswith("metrics.http_host: '0.0.0.0' is not a loopback address")
    assert lines[2] == "metrics.http_port: must be at least 1, got 0"


def test_open_rmas_show_by_counter_and_state(metrics: Metrics) -> None:
    update(metrics, first_cycle(), rma_states={"FFC0001": "requested"})
    found = samples(metrics.render().decode())
    assert value(found, "ffc_agent_rma_open", counter="FFC0001", state="requested") == 1
    update(metrics, first_cycle())  # the RMA closed: the series goes away
    assert names(samples(metrics.render().decode()), "ffc_agent_rma_open") == []
