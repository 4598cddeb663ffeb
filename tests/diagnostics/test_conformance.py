"""Every registered check conforms: metadata present and valid, ids unique and never renamed,
options documented, and it runs on empty evidence of its kind without raising."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import string
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, ValidationError

import diagnostics.checks as registry
from diagnostics.checks import REGISTRY, checks_for, meta
from diagnostics.checks.agent import OutboxState
from diagnostics.checks.base import (
    APPLIES_TO,
    TEMPLATE_FIELDS,
    Check,
    CounterEvidence,
    Family,
    SiteEvidence,
    TicketKind,
)
from diagnostics.checks.gateway import GatewayEvidence
from diagnostics.model import Finding, Status
from tests.diagnostics.helpers import calendar

# Incidents, silences, shadow_checks and tickets key on these: a check may be added, never
# renamed or dropped. Adding one means adding it here (and a README row).
IDS = {
    "agent.outbox",
    "agent.probe",
    "counter.counts.imbalance",
    "counter.counts.level",
    "counter.counts.missing",
    "counter.counts.stopped",
    "counter.device.clock",
    "counter.device.health",
    "counter.liveview.blocked",
    "counter.offline",
    "counter.push.silent",
    "counter.ssh.hostkey",
    "gateway.health",
    "gateway.storm",
    "site.counts.imbalance",
    "site.counts.outage",
    "site.offline",
}

NOW = datetime(2026, 11, 25, 15, 30, tzinfo=UTC)
README = Path(__file__).resolve().parents[2] / "README.md"
CHECKS = list(REGISTRY.values())


def empty_evidence(applies_to: str) -> object:
    cal = calendar()
    return {
        "counter": CounterEvidence(serial="FFC1", name="x", site="LDN01", calendar=cal, now=NOW),
        "site": SiteEvidence(site="LDN01", calendar=cal, now=NOW),
        "gateway": GatewayEvidence(now=NOW),
        "agent": OutboxState(now=NOW),
    }[applies_to]


def test_the_registered_ids_are_exactly_the_pinned_ones() -> None:
    assert set(REGISTRY) == IDS, "a check id was renamed or dropped, or a new one is not pinned"


def test_discovery_finds_every_check_class_in_the_package_once() -> None:
    declared = []
    for info in pkgutil.iter_modules(registry.__path__):
        module = importlib.import_module(f"diagnostics.checks.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Check) and cls.__module__ == module.__name__ and "id" in vars(cls):
                declared.append(cls)
    assert sorted(c.id for c in declared) == sorted(REGISTRY)  # ids unique: none lost
    assert set(declared) == set(CHECKS)


def test_the_order_is_deterministic_root_causes_first() -> None:
    keys = [(c.priority, c.id) for c in CHECKS]
    assert keys == sorted(keys)


@pytest.mark.parametrize("cls", CHECKS, ids=lambda c: c.id)
def test_metadata_is_present_and_valid(cls: type[Check]) -> None:
    assert cls.id and cls.id == cls.id.strip() and " " not in cls.id
    assert cls.title.strip()
    assert isinstance(cls.family, Family)
    assert cls.applies_to in APPLIES_TO
    assert isinstance(cls.ticket, TicketKind)
    assert isinstance(cls.priority, int) and cls.priority >= 0
    assert cls.remediation.strip(), "a problem must say what to do about it"
    for code in (None, *cls.codes):
        m = cls.meta(code)
        assert isinstance(m.ticket, TicketKind) and isinstance(m.priority, int)
        for template in (m.ticket_subject, m.ticket_what):
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            assert fields <= TEMPLATE_FIELDS, f"{cls.id} {code}: unknown {fields - TEMPLATE_FIELDS}"
        named = {f for _, f, _, _ in string.Formatter().parse(m.ticket_subject) if f}
        assert named & {"who", "low", "site"}, "a subject names what it is about"
    for other in cls.explained_by:
        assert other in REGISTRY and REGISTRY[other].applies_to == "counter"
    if cls.applies_to in ("gateway", "agent"):
        assert cls.ticket is TicketKind.NONE, "the gateway and the agent are the store's IT's"


@pytest.mark.parametrize("cls", CHECKS, ids=lambda c: c.id)
def test_options_are_frozen_strict_and_documented(cls: type[Check]) -> None:
    options = cls.Options
    assert issubclass(options, BaseModel)
    assert options.model_config.get("frozen") is True
    assert options.model_config.get("extra") == "forbid"
    for name, field in options.model_fields.items():
        assert field.description and field.description.strip(), f"{cls.id}.{name} undocumented"
    with pytest.raises(ValidationError):
        options(no_such_option=1)
    built = cls()
    assert isinstance(built.options, options)


@pytest.mark.parametrize("cls", CHECKS, ids=lambda c: c.id)
def test_runs_on_empty_evidence_of_its_kind_without_raising(cls: type[Check]) -> None:
    found = cls().run(empty_evidence(cls.applies_to))
    assert isinstance(found, list)
    for f in found:
        assert isinstance(f, Finding) and f.check_id == cls.id
        assert f.status is not Status.ERROR  # error means the check broke
    if cls.derived:
        assert found == []  # made elsewhere: the runner never runs it
    else:
        assert found, "a run always says something, if only why it skipped"


@pytest.mark.parametrize("cls", CHECKS, ids=lambda c: c.id)
def test_every_check_has_its_readme_row(cls: type[Check]) -> None:
    assert f"`{cls.id}`" in README.read_text(encoding="utf-8")


def test_the_runner_gets_every_runnable_check_once_by_its_evidence() -> None:
    runnable = [c for c in CHECKS if not c.derived]
    got = [type(c) for kind in APPLIES_TO for c in checks_for(kind)]
    assert sorted(c.id for c in got) == sorted(c.id for c in runnable)
    assert all(type(c).applies_to == "counter" for c in checks_for("counter"))


def test_checks_are_built_with_their_configured_options() -> None:
    level = REGISTRY["counter.counts.level"]
    opts = level.Options(min_change=0.1)
    [built] = [c for c in checks_for("counter", {level.id: opts}) if c.id == level.id]
    assert built.options is opts


def test_an_unknown_id_gets_a_safe_fallback_that_is_never_ticketed() -> None:
    old = Finding("counter.counts.under_count", Status.FAIL, "drop", "old", NOW, subject="X")
    m = meta(old)
    assert m.known is False and not m.ticketed and m.priority > max(c.priority for c in CHECKS)
    assert registry.check_for(old.check_id) is None


def test_a_per_code_override_changes_only_that_code() -> None:
    health = REGISTRY["counter.device.health"]
    assert health.meta("hardware_fault").ticket is TicketKind.HARDWARE
    assert health.meta("disk_full").ticket is TicketKind.TECHNICAL
    assert health.meta("hardware_fault").family is health.family


def test_counters_up_are_the_ok_findings_of_the_one_liveness_check() -> None:
    [live] = [c for c in CHECKS if c.liveness]
    assert live.applies_to == "counter"
    ok = Finding(live.id, Status.OK, "online", "answers", NOW, subject="X")
    assert registry.counter_up(ok)
    assert not registry.counter_up(Finding(live.id, Status.FAIL, "refused", "no", NOW))
    other = next(c for c in CHECKS if not c.liveness and c.applies_to == "counter")
    assert not registry.counter_up(Finding(other.id, Status.OK, "ok", "fine", NOW))
