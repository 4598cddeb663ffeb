"""The composed ticket read as a second-line engineer reads it: can support act on it without
asking back? The device's identity and remote access, one clear ask, the questions only the
store can answer, the reachability of an offline counter, and no statistics in the answers
(they are in the bundle's findings.json)."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from diagnostics.checks import REGISTRY, meta
from diagnostics.checks.offline import CounterOffline
from diagnostics.model import Finding, Observation, ProbeError, ProbeErrorCode, Status
from rma.bundle import BundleInput, build_bundle
from rma.redact import Redactor
from rma.tickets import (
    CounterRef,
    DeviceFacts,
    ProblemContext,
    Role,
    Ticket,
    compose,
    idempotency_key,
)
from tests.diagnostics.helpers import NOW as CHECK_NOW
from tests.diagnostics.helpers import evidence

NOW = datetime(2025, 6, 26, 14, 30, tzinfo=UTC)
START = datetime(2025, 6, 26, 13, 50, tzinfo=UTC)
DOOR = CounterRef("FFC0002", "Main door", "10.20.0.12")
IDENTITY = DeviceFacts(
    serial="FFC0002",
    model="FootfallCam 3D Pro2",
    firmware="4.3.1",
    reported_serial="FFC0002",
    mac="b8:27:eb:12:34:56",
    remote_access="SSH not configured: deep checks unavailable; no remote power-cycle configured",
)
# what the remediation ladder and the RMA gate add to a finding's evidence (agent.remediate)
LADDER = {
    "remediation": [],
    "ladder": {"reason": "no safe fix is available (no SSH or PoE command configured)"},
    "gate": {"rma": False, "reason": "no hardware-fault signature: a Technical Issue"},
}


def finding(check_id: str, code: str, summary: str, **ev: object) -> Finding:
    return Finding(
        check_id=check_id,
        status=Status.FAIL,
        code=code,
        summary=summary,
        at=NOW,
        site="LDN01",
        subject="FFC0002",
        evidence=dict(ev),
    )


def ticket(f: Finding, devices: tuple[DeviceFacts, ...] = (IDENTITY,)) -> Ticket:
    return compose(
        ProblemContext(
            key=idempotency_key(f.check_id, "FFC0002", START),
            site_code="LDN01",
            site_name="Oxford Street",
            timezone="Europe/London",
            counters=(DOOR,),
            findings=(f,),
            started_at=START,
            requester="store-it@example.com",
            cc=(),
            role=Role.CUSTOMER,
            now=NOW,
            devices=devices,
        )
    )


def answers(t: Ticket) -> str:
    return " ".join(getattr(t.comment, name) for name, _ in t.comment.QUESTIONS)


def findings_json(f: Finding) -> list[dict[str, object]]:
    inp = BundleInput(agent_version="test", created_at=NOW, key="ffc-x", site="LDN01", findings=[f])
    made = build_bundle(inp, Redactor())
    with tarfile.open(fileobj=io.BytesIO(made.data), mode="r:gz") as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("findings.json"))
        handle = tar.extractfile(member)
        assert handle is not None
        loaded: list[dict[str, object]] = json.loads(handle.read())
        return loaded


OFFLINE = finding(
    "counter.offline",
    "timeout",
    "counter FFC0002 does not answer (timed out): no answer before the deadline",
    error="no answer before the deadline",
    failing_since=START.isoformat(),
    consecutive_failures=4,
    last_success=(START - timedelta(minutes=5)).isoformat(),
    last_count_slot=(START - timedelta(minutes=15)).isoformat(),
    reachability={"ping": False, "arp": "incomplete", "port_80": "timeout"},
    **LADDER,
)


def test_which_device_names_the_unit_as_it_reports_itself_and_the_remote_access() -> None:
    device = ticket(OFFLINE).comment.which_device
    assert "serial FFC0002, named 'Main door', at network address 10.20.0.12" in device
    assert "model FootfallCam 3D Pro2, firmware 4.3.1, serial FFC0002" in device
    assert "MAC address b8:27:eb:12:34:56" in device
    assert "Remote access: SSH not configured: deep checks unavailable" in device


def test_a_device_that_never_answered_says_so_and_a_swapped_serial_is_flagged() -> None:
    silent = ticket(OFFLINE, (DeviceFacts("FFC0002", remote_access="SSH works"),))
    device = silent.comment.which_device
    assert "has not reported its model, firmware or serial" in device
    assert "MAC address not known" in device
    swapped = replace(IDENTITY, reported_serial="FFC0999")
    assert "may have been swapped" in ticket(OFFLINE, (swapped,)).comment.which_device


def test_an_offline_ticket_asks_once_and_carries_last_good_data_and_reachability() -> None:
    t = ticket(OFFLINE)
    assert "What we ask: Please bring the counter back online" in t.comment.what
    assert "recover the counts it kept while it was offline" in t.comment.what
    how = t.comment.how
    # the last good data, in site time (BST)
    assert "the counter answered normally until 14:45" in how
    assert "last count slot 14:35" in how
    # is it on the network at all?
    assert "does not answer ping" in how
    assert "ARP entry for it is incomplete" in how
    assert "port 80 timeout" in how
    # the questions only the store can answer
    assert "What colour is the counter's LED" in how
    assert "power-cycled" in how
    # what the ladder tried, in words; the gate's internals stay in the bundle
    assert "No remote fix was tried: no safe fix is available" in how
    for noise in ("gate rma", "ladder", "signature", "[REDACTED]", "{"):
        assert noise not in answers(t), noise


def test_an_unplugged_counter_reads_as_such() -> None:
    reach = {"ping": None, "arp": "incomplete", "notes": ["nothing answers ARP at that address"]}
    how = ticket(replace(OFFLINE, evidence={**OFFLINE.evidence, "reachability": reach})).comment.how
    assert (
        "Reachability from the gateway: it was not pinged (nothing answers ARP at that address); "
        "the gateway's ARP entry for it is incomplete (nothing answered at that address)."
    ) in how


def test_bad_credentials_ask_about_the_login_not_power_and_cable() -> None:
    obs = Observation.failed(
        "FFC0002",
        "api",
        CHECK_NOW,
        ProbeError(ProbeErrorCode.AUTH_FAILED, "the counter refused the credentials"),
    )
    ev = replace(evidence((), CHECK_NOW), observations={"api": obs})
    [f] = CounterOffline().run(ev)
    assert "password" in f.remediation and "cable" not in f.remediation.replace(
        "power and cabling are fine", ""
    )
    t = ticket(replace(f, site="LDN01", subject="FFC0002"))
    assert "login was changed or reset" in t.comment.what
    assert "LED" not in t.comment.how and "power-cycled" not in t.comment.how
    assert "changed the counter's password" in t.comment.how
    # another failure keeps the power-and-cable advice
    obs = Observation.failed("FFC0002", "api", CHECK_NOW, ProbeError(ProbeErrorCode.TIMEOUT, "x"))
    [f] = CounterOffline().run(replace(ev, observations={"api": obs}))
    assert "power and network cable" in f.remediation


STOPPED = finding(
    "counter.counts.stopped",
    "zero_run",
    "no counts for 4.0 h of opening time since Thu 26 Jun 10:15; about 514 visitors were expected",
    zero_since=START.isoformat(),
    last_slot_end=NOW.isoformat(),
    open_minutes=240,
    observed=0,
    baseline_weeks=4,
    expected=513.6,
    expected_alone=498.2,
    log10_probability=-54.21,
    log10_probability_alone=-52.07,
    dispersion_k=3.17,
    peer_factor=0.981,
    peers_observed=1503,
    peers_expected=1525.7,
    **LADDER,
)

BLOCKED = finding(
    "counter.liveview.blocked",
    "covered",
    "live view blocked (covered, 86% of the view) in the last 4 snapshots since Thu 26 Jun 14:50",
    reference="against the tuning reference image",
    metrics={"mean_luma": 50.9, "reference_mean_luma": 140.0, "matching": 0.19},
    reasons=["85% of the view covered by a flat surface"],
    kind="covered",
    blocked_fraction=0.86,
    since=START.isoformat(),
    snapshots=4,
)


@pytest.mark.parametrize(
    ("f", "ask", "question", "noise", "kept"),
    [
        (
            STOPPED,
            "restart the counter's counting service and recover the counts it missed",
            "Was the entrance open and used as usual",
            ("log10", "-54", "54.2", "dispersion", "3.17", "10^", "peer factor", "alone"),
            ("log10_probability", "dispersion_k", "expected_alone"),
        ),
        (
            BLOCKED,
            "re-aim or re-tune the counter",
            "Is anything covering or standing in front of the counter",
            ("luma", "matching", "50.9", "0.19"),
            ("metrics",),
        ),
    ],
)
def test_statistics_and_raw_metrics_stay_in_findings_json(
    f: Finding, ask: str, question: str, noise: tuple[str, ...], kept: tuple[str, ...]
) -> None:
    t = ticket(f)
    assert ask in t.comment.what
    assert question in t.comment.how
    text = answers(t)
    for word in noise:
        assert word not in text, word
    # what a person needs is there
    assert "Evidence:" in t.comment.how
    assert "findings.json" in t.comment.how
    [stored] = findings_json(f)
    evidence_json = stored.get("evidence") or stored.get("finding", {}).get("evidence")  # type: ignore[union-attr]
    assert isinstance(evidence_json, dict)
    for key in kept:
        assert key in evidence_json, key


def test_every_ticketed_check_asks_for_something() -> None:
    for check_id, cls in REGISTRY.items():
        for code in (None, *cls.codes):
            m = meta(check_id, code)
            if m.ticketed:
                assert m.ticket_ask.strip(), (check_id, code)
                assert m.ticket_ask.rstrip().endswith("."), (check_id, code)
                assert all(q.endswith("?") for q in m.store_questions), (check_id, code)


# --- the bundle's report: its header ------------------------------------------------------------


def test_the_report_header_shows_the_ticket_number_and_counts_no_skip_as_ok() -> None:
    import re

    from rma.report import render_report
    from tests.rma.bundle_sample import SERIAL, findings, sample_input

    skipped = Finding(
        check_id="counter.device.health",
        status=Status.SKIP,
        code="ssh_not_configured",
        summary="SSH is not configured for this counter: deep device checks are off",
        at=NOW,
        site="LDN01",
        subject=SERIAL,
    )
    healthy = replace(skipped, check_id="counter.offline", status=Status.OK, code="online")
    inp = sample_input(findings=[*findings(), skipped, skipped, healthy], ticket_number="L-000042")
    page = render_report(inp)
    header = page.split("</header>", 1)[0]
    assert "Ticket L-000042" in header and "<dd>L-000042</dd>" in header
    chips = dict(
        (words, int(n))
        for n, words in re.findall(r'<span class="chip [a-z_]+">(\d+) ([^<]+)<', header)
    )
    assert chips["ok"] == 1  # the one check that passed; not the two that were skipped
    assert chips["skipped"] == 2
    assert chips["genuine"] == 2 and chips["ruled out"] == 1 and chips["pending"] == 1
    # not filed yet: the header says so instead of showing a number it cannot know
    unfiled = render_report(sample_input()).split("</header>", 1)[0]
    assert "not filed yet" in unfiled and "Ticket L-" not in unfiled
