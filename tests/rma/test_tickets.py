"""The portal ticket's JSON contract, the category rules and the composer's five answers."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from diagnostics.checks import REGISTRY, check_for, meta
from diagnostics.model import Finding, Status
from rma.tickets import (
    Category,
    CategoryNotAllowed,
    ChosenBy,
    CounterRef,
    NextAction,
    ProblemContext,
    Role,
    Stage,
    Task,
    TaskType,
    Ticket,
    TicketStatus,
    check_category,
    compose,
    idempotency_key,
)

JSON_KEYS = {
    "key",
    "number",
    "issue_level",
    "counter_unassigned",
    "site",
    "counters",
    "subject",
    "category",
    "sla_days",
    "occurred_on",
    "comment",
    "attachments",
    "cc",
    "requester",
    "status",
    "next_action",
    "stage",
    "stage_since",
    "plan",
    "eta",
    "messages",
    "tasks",
    "created_at",
    "updated_at",
}

# 26 June: London is on BST (UTC+1), New York on EDT (UTC-4).
NOW = datetime(2025, 6, 26, 14, 30, tzinfo=UTC)
START = datetime(2025, 6, 26, 8, 15, tzinfo=UTC)
MAIN_DOOR = CounterRef("FFC0002", "Main door", "10.20.0.12")


def finding(
    check_id: str, code: str, summary: str = "", *, unknown: bool = False, **evidence: object
) -> Finding:
    """A finding of a registered check (an id no check emits hides bugs: issue 9)."""
    assert unknown or check_for(check_id) is not None, f"{check_id} is not a registered check"
    level = meta(check_id).applies_to
    return Finding(
        check_id=check_id,
        status=Status.FAIL,
        code=code,
        summary=summary,
        at=NOW,
        site="LDN01",
        subject="FFC0002" if level == "counter" else ("gateway" if level == "gateway" else None),
        evidence=dict(evidence),
    )


def context(
    *findings: Finding,
    role: Role = Role.CUSTOMER,
    counters: tuple[CounterRef, ...] = (MAIN_DOOR,),
    timezone: str = "Europe/London",
) -> ProblemContext:
    return ProblemContext(
        key=idempotency_key(findings[0].check_id, "FFC0002", START),
        site_code="LDN01",
        site_name="Oxford Street",
        timezone=timezone,
        counters=counters,
        findings=findings,
        started_at=START,
        requester="store-it@example.com",
        cc=("area-manager@example.com",),
        role=role,
        now=NOW,
    )


OFFLINE = finding(
    "counter.offline",
    "refused",
    "Counter FFC0002 does not answer: connection refused",
    consecutive_failures=3,
    last_ok=START.isoformat(),
)


# --- the JSON form


def test_json_form_has_exactly_the_contract_keys_and_round_trips() -> None:
    ticket = compose(context(OFFLINE))
    ticket = ticket.filed("L-000007").with_message(NOW, "support", "Looking into it.")
    ticket = ticket.model_copy(
        update={
            "tasks": [
                Task(task="Remote session", hours=0.5, type=TaskType.SUPPORT_OPERATION, due=None)
            ]
        }
    )
    data = ticket.to_json()

    assert set(data) == JSON_KEYS
    assert set(data["comment"]) == {"what", "where", "when", "which_device", "how"}
    assert set(data["messages"][0]) == {"at", "author", "body"}
    assert set(data["tasks"][0]) == {"task", "hours", "type", "due", "status"}
    assert data["tasks"][0]["type"] == "support operation"
    assert data["category"] == "Technical Issue"
    assert data["occurred_on"] == "2025-06-26"
    assert data["created_at"] == "2025-06-26T14:30:00+00:00"  # offset spelled out, not "Z"
    assert Ticket.from_json(data) == ticket
    assert Ticket.from_json(data).to_json() == data


def test_ticket_defaults_are_an_open_unfiled_first_line_ticket() -> None:
    ticket = compose(context(OFFLINE))
    assert ticket.number is None
    assert ticket.status is TicketStatus.OPEN
    assert ticket.stage is Stage.FIRST_LINE
    assert ticket.next_action is NextAction.WAITING_ON_FOOTFALLCAM
    assert ticket.messages == [] and ticket.tasks == [] and ticket.attachments == []
    assert ticket.cc == ["area-manager@example.com"]
    assert ticket.requester == "store-it@example.com"


def test_from_json_rejects_unknown_keys_and_inconsistent_levels() -> None:
    data = compose(context(OFFLINE)).to_json()
    with pytest.raises(ValueError, match="extra"):
        Ticket.from_json({**data, "priority": "high"})
    with pytest.raises(ValueError, match="counter_unassigned"):
        Ticket.from_json({**data, "counter_unassigned": True})


def test_status_change_keeps_the_ticket_valid() -> None:
    later = NOW + timedelta(hours=1)
    ticket = compose(context(OFFLINE)).with_status(
        "Suggest To Close", later, NextAction.WAITING_ON_CUSTOMER
    )
    assert ticket.status is TicketStatus.SUGGEST_TO_CLOSE
    assert ticket.next_action is NextAction.WAITING_ON_CUSTOMER
    assert ticket.updated_at == later and ticket.is_open


# --- categories and the role rule


@pytest.mark.parametrize(
    ("category", "sla"),
    [
        (Category.DATA_ACCURACY_ISSUE, 3),
        (Category.TECHNICAL_ISSUE, 1),
        (Category.TRAINING_REQUEST, 1),
        (Category.CONFIGURATION_REQUEST, 3),
        (Category.SERVICE_REQUEST, 1),
        (Category.DEVICE_BUG, 3),
        (Category.SOFTWARE_BUG, 3),
        (Category.BUSINESS_REQUEST, None),
        (Category.ACCURACY_AUDIT_OBSTACLE, None),
    ],
)
def test_each_category_has_its_sla(category: Category, sla: int | None) -> None:
    assert category.sla_days == sla


def test_category_values_are_the_portal_names() -> None:
    assert Category("Accuracy Audit Obstacle") is Category.ACCURACY_AUDIT_OBSTACLE
    assert len(Category) == 9


@pytest.mark.parametrize(
    "category",
    [
        Category.DEVICE_BUG,
        Category.SOFTWARE_BUG,
        Category.ACCURACY_AUDIT_OBSTACLE,
        Category.BUSINESS_REQUEST,
    ],
)
def test_customer_may_not_choose_footfallcam_or_email_categories(category: Category) -> None:
    assert not category.allowed(Role.CUSTOMER)
    with pytest.raises(CategoryNotAllowed, match=re.escape(category.value)):
        check_category(category, Role.CUSTOMER)


def test_customer_categories_are_open_to_both_roles() -> None:
    for category in Category:
        if category.chosen_by is ChosenBy.CUSTOMER:
            assert category.allowed("customer") and category.allowed("footfallcam")


def test_footfallcam_may_choose_device_bug_but_nobody_files_business_requests() -> None:
    assert check_category("Device Bug", "footfallcam") is Category.DEVICE_BUG
    assert Category.ACCURACY_AUDIT_OBSTACLE.allowed(Role.FOOTFALLCAM)
    with pytest.raises(CategoryNotAllowed, match="e-mail"):
        check_category(Category.BUSINESS_REQUEST, Role.FOOTFALLCAM)


def test_customer_refusal_says_what_to_do_instead() -> None:
    with pytest.raises(CategoryNotAllowed, match="RMA request"):
        check_category(Category.DEVICE_BUG, Role.CUSTOMER)


# --- the composer's category


@pytest.mark.parametrize(
    ("check_id", "code", "category"),
    [
        ("counter.offline", "refused", Category.TECHNICAL_ISSUE),
        ("counter.offline", "timeout", Category.TECHNICAL_ISSUE),
        ("counter.counts.stopped", "zero_run", Category.DATA_ACCURACY_ISSUE),
        ("counter.counts.missing", "missing", Category.DATA_ACCURACY_ISSUE),
        ("counter.counts.level", "under_count", Category.DATA_ACCURACY_ISSUE),
        ("counter.counts.level", "over_count", Category.DATA_ACCURACY_ISSUE),
        ("counter.counts.imbalance", "imbalance", Category.DATA_ACCURACY_ISSUE),
        ("counter.liveview.blocked", "covered", Category.TECHNICAL_ISSUE),
        ("counter.device.health", "disk_full", Category.TECHNICAL_ISSUE),
        ("counter.device.clock", "clock_skew", Category.TECHNICAL_ISSUE),
        ("counter.push.silent", "push_silent", Category.TECHNICAL_ISSUE),
    ],
)
@pytest.mark.parametrize("role", list(Role))
def test_category_from_the_finding(
    check_id: str, code: str, category: Category, role: Role
) -> None:
    ticket = compose(context(finding(check_id, code, "something is wrong"), role=role))
    assert ticket.category is category
    assert ticket.sla_days == category.sla_days
    assert ticket.issue_level == "counter" and ticket.counters == ["FFC0002"]
    assert not ticket.counter_unassigned


def test_hardware_fault_as_customer_is_an_rma_request_technical_issue() -> None:
    fault = finding("counter.device.health", "hardware_fault", "Camera module not detected")
    ticket = compose(context(fault, role=Role.CUSTOMER))
    assert ticket.category is Category.TECHNICAL_ISSUE
    assert "RMA request" in ticket.subject
    assert "FFC0002" in ticket.subject


def test_an_unreachable_unit_the_gate_confirmed_as_hardware_is_an_rma_request() -> None:
    # the ladder relabels the offline finding once the gate confirmed a hardware fault behind
    # it (unreachable with link and power after every fix): an RMA request, not "offline"
    fault = finding(
        "counter.offline",
        "hardware_fault",
        "counter FFC0002 does not answer — hardware fault confirmed: unreachable with link up",
    )
    ticket = compose(context(fault, role=Role.CUSTOMER))
    assert ticket.subject.startswith("RMA request:")
    assert "RMA request" in ticket.comment.what and "back up" in ticket.comment.what


def test_hardware_fault_as_footfallcam_is_a_device_bug() -> None:
    fault = finding("counter.device.health", "hardware_fault", "Camera module not detected")
    ticket = compose(context(fault, role=Role.FOOTFALLCAM))
    assert ticket.category is Category.DEVICE_BUG
    assert ticket.sla_days == 3
    assert "RMA request" in ticket.subject


def test_no_role_ever_gets_a_category_it_may_not_choose() -> None:
    codes = [(check_id, code) for check_id in REGISTRY for code in ("hardware_fault", "odd")]
    for role in Role:
        for check_id, code in [*codes, ("weird", "odd")]:
            f = finding(check_id, code, unknown=True)
            assert compose(context(f, role=role)).category.allowed(role)


def test_site_outage_is_a_site_level_ticket_with_no_counter() -> None:
    outage = finding("site.offline", "site_offline", "All 4 counters stopped answering at once")
    ticket = compose(context(outage, counters=()))
    assert ticket.issue_level == "site"
    assert ticket.counter_unassigned is True
    assert ticket.counters == []
    assert ticket.category is Category.TECHNICAL_ISSUE
    assert "Oxford Street" in ticket.subject and "LDN01" in ticket.subject
    assert "whole site" in ticket.comment.where


def test_root_cause_leads_when_an_incident_has_several_findings() -> None:
    missing = finding("counter.counts.missing", "missing", "12 slots missing")
    ticket = compose(context(missing, OFFLINE))
    assert ticket.category is Category.TECHNICAL_ISSUE
    assert "offline" in ticket.subject
    assert "12 slots missing" in ticket.comment.what + ticket.comment.how


def test_agent_errors_alone_never_make_a_ticket() -> None:
    broken = Finding("counter.offline", Status.ERROR, "crash", "check crashed", NOW)
    with pytest.raises(ValueError, match="nothing to report"):
        compose(context(broken))


# --- the subject and the five answers


def test_subject_is_a_short_high_level_description_in_site_time() -> None:
    ticket = compose(context(OFFLINE))
    assert ticket.subject == (
        "Counter FFC0002 'Main door' offline since 26 Jun 09:15 (connection refused)"
    )


def test_five_answers_are_sentences_about_this_counter_in_site_time() -> None:
    answers = compose(context(OFFLINE)).comment

    for text in (answers.what, answers.where, answers.when, answers.which_device, answers.how):
        assert text and text[0].isupper() and text.rstrip()[-1] in ".!?…"
        assert "{" not in text and "}" not in text  # never a raw dict
    assert "FFC0002" in answers.what and "Main door" in answers.what
    assert "Oxford Street" in answers.where and "LDN01" in answers.where
    assert "FFC0002" in answers.where and "Main door" in answers.where
    # 08:15 UTC is 09:15 in London in June (BST)
    assert "09:15 BST" in answers.when and "26 June 2025" in answers.when
    assert "6 hours 15 minutes" in answers.when
    assert "FFC0002" in answers.which_device and "10.20.0.12" in answers.which_device
    assert "connection refused" in answers.how
    assert "3 consecutive checks" in answers.how
    assert "until 09:15" in answers.how
    assert "15:30" in answers.how  # when the probe found it, in site time


def test_answers_follow_the_site_timezone() -> None:
    ticket = compose(context(OFFLINE, timezone="America/New_York"))
    assert "04:15 EDT" in ticket.comment.when
    assert "since 26 Jun 04:15" in ticket.subject
    assert ticket.occurred_on.isoformat() == "2025-06-26"


def test_occurred_on_is_the_local_date() -> None:
    late = ProblemContext(
        **{**context(OFFLINE).__dict__, "started_at": datetime(2025, 6, 26, 23, 30, tzinfo=UTC)}
    )
    assert compose(late).occurred_on.isoformat() == "2025-06-27"  # 00:30 BST next day


@pytest.mark.parametrize("check_id", [*REGISTRY, "something.unknown"])
@pytest.mark.parametrize("code", ["", "hardware_fault", "refused", "under_count"])
def test_compose_never_crashes_on_empty_evidence(check_id: str, code: str) -> None:
    ticket = compose(context(finding(check_id, code, unknown=True)))
    assert "{" not in ticket.subject and "{" not in ticket.comment.what
    for name in ("what", "where", "when", "which_device", "how"):
        assert getattr(ticket.comment, name).strip()
    assert ticket.subject.strip()


def test_odd_evidence_is_written_as_words_and_secrets_are_left_out() -> None:
    odd = finding(
        "counter.counts.level",
        "under_count",
        "Counts are 40% below the peers",
        under_pct=40.0,
        peers={"FFC0001": {"ratio": 0.98}, "FFC0003": None},
        window=["2025-06-26T08:00:00+00:00", "2025-06-26T14:00:00+00:00"],
        start="2025-06-26T08:00:00+00:00",
        password="hunter2",
        api_token="abc123",
        url="http://admin:s3cret@10.20.0.12/cgi-bin/apiCount.cgi?access_token=tok42",
        nested={"a": {"b": {"c": {"d": 1}}}},
        nothing=None,
    )
    ticket = compose(context(odd))
    text = ticket.model_dump_json()
    assert "hunter2" not in text and "abc123" not in text
    assert "s3cret" not in text and "tok42" not in text
    assert "{" not in ticket.comment.how
    assert "09:00" in ticket.comment.how  # the start, in site time
    assert "by 40%" in ticket.subject
    assert ticket.category is Category.DATA_ACCURACY_ISSUE


def test_bad_timezone_falls_back_to_utc_instead_of_failing() -> None:
    ticket = compose(context(OFFLINE, timezone="Mars/Olympus"))
    assert "08:15 UTC" in ticket.comment.when


# --- the idempotency key


def test_idempotency_key_is_stable_and_distinguishes_counter_problem_and_start() -> None:
    key = idempotency_key("counter.offline", "FFC0002", START)
    assert key == idempotency_key("counter.offline", "FFC0002", START)
    # the same instant in another zone is the same incident
    same_instant = START.astimezone(datetime(2025, 1, 1).astimezone().tzinfo)
    assert key == idempotency_key("counter.offline", "FFC0002", same_instant)
    assert re.fullmatch(r"ffc-[0-9a-f]{16}", key)
    others = {
        idempotency_key("counter.offline", "FFC0003", START),
        idempotency_key("counter.counts.stopped", "FFC0002", START),
        idempotency_key("counter.offline", "FFC0002", START + timedelta(minutes=5)),
    }
    assert key not in others and len(others) == 3


def test_idempotency_key_needs_an_aware_start() -> None:
    with pytest.raises(ValueError, match="aware"):
        idempotency_key("counter.offline", "FFC0002", datetime(2025, 6, 26, 8, 15))


# --- issue 9: the check, not its id string, says what the ticket is


def test_a_real_under_count_gets_the_under_count_subject_and_category() -> None:
    """Bug: the kind came from the id string, so ``counter.counts.level`` / ``under_count``
    (what the level check really emits) got the generic "inaccurate counts" subject."""
    from tests.diagnostics.test_counts_level import run, scaled, site

    slots = site()
    slots["A"] = scaled(slots["A"], 0.6)
    [real] = run(slots)
    assert (real.check_id, real.code) == ("counter.counts.level", "under_count")
    real = replace(real, subject="FFC0002")
    ticket = compose(context(real))
    assert "under-counting by " in ticket.subject, ticket.subject
    assert "inaccurate counts" not in ticket.subject
    assert "fewer visitors than expected" in ticket.comment.what
    assert ticket.category is Category.DATA_ACCURACY_ISSUE


def test_a_real_over_count_says_over_counting() -> None:
    from tests.diagnostics.test_counts_level import run, scaled, site

    slots = site()
    slots["B"] = scaled(slots["B"], 1.5, ramp_days=3)
    [real] = run(slots, "B")
    assert real.code == "over_count"
    ticket = compose(context(replace(real, subject="FFC0002")))
    assert "over-counting by " in ticket.subject, ticket.subject
    assert ticket.category is Category.DATA_ACCURACY_ISSUE


@pytest.mark.parametrize("role", list(Role))
def test_a_site_imbalance_is_a_data_accuracy_ticket_about_the_imbalance(role: Role) -> None:
    """Bug: ``site.counts.imbalance`` was filed as "the whole of site … is down", a Technical
    Issue with a 1-day SLA, because every ``site.`` id was taken for an outage."""
    imbalance = finding(
        "site.counts.imbalance", "imbalance", "site Wed 25 Nov 00:00: IN 9000, OUT 8000"
    )
    ticket = compose(context(imbalance, counters=(), role=role))
    assert ticket.category is Category.DATA_ACCURACY_ISSUE
    assert ticket.sla_days == 3
    assert ticket.issue_level == "site" and ticket.counters == []
    assert "IN/OUT imbalance" in ticket.subject
    assert "outage" not in ticket.subject
    assert "down" not in ticket.comment.what and "do not balance" in ticket.comment.what


def test_the_leading_finding_is_the_checks_declared_priority() -> None:
    """Root cause first, whichever order the findings come in: a hardware fault (a per-code
    override) leads an offline counter, which leads its missing data."""
    fault = finding("counter.device.health", "hardware_fault", "camera not detected")
    missing = finding("counter.counts.missing", "missing", "12 slots missing")
    assert meta(fault).priority < meta(OFFLINE).priority < meta(missing).priority
    ticket = compose(context(missing, OFFLINE, fault))
    assert ticket.subject.startswith("RMA request")


def test_an_unknown_old_id_composes_a_generic_ticket_instead_of_crashing() -> None:
    old = finding("counter.counts.under_count", "drop", "old finding", unknown=True)
    ticket = compose(context(old))
    assert ticket.category is Category.TECHNICAL_ISSUE
    assert "drop" in ticket.subject
    assert meta(old).known is False and not meta(old).ticketed
