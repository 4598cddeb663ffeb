"""Every check the agent knows, in one registry: the one place that says what a check means.

Discovery: every module of this package is imported (``pkgutil``) and every ``Check`` subclass
that declares its own ``id`` is registered, so adding a check touches only its module, its test
and its README row. The order is deterministic: by ``priority`` (root causes first), then id.
Two classes with one id are an import-time error: ids are never renamed, incidents key on them.

The rest of the house asks here, and never splits or matches an id string:

- ``check_for(id)``: the class, or None for an id no check declares;
- ``meta(finding_or_id)``: its ``CheckMeta`` (family, ticket kind, priority, wording), with the
  finding's per-code overrides; an unknown id (an old one in the database) gets a safe
  fallback that is shown but never ticketed, instead of a crash;
- ``checks_for(applies_to, options)``: the runnable checks for counter, site, gateway or agent
  evidence, each built with its ``Options`` from the configuration.

After the checks, ``fold_site_outages`` removes the counters' missing-data findings that a
whole-site outage already reports, so a site that goes dark files one ticket.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from collections.abc import Mapping

from pydantic import BaseModel

from diagnostics.checks.base import (
    HARDWARE_FAULT,
    AppliesTo,
    Check,
    CheckMeta,
    CounterEvidence,
    Family,
    SiteEvidence,
    TicketKind,
)
from diagnostics.checks.counts_missing import fold_site_outages
from diagnostics.model import Finding, Status


def _discover() -> dict[str, type[Check]]:
    found: list[type[Check]] = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Check) and cls.__module__ == module.__name__ and "id" in vars(cls):
                found.append(cls)
    registry: dict[str, type[Check]] = {}
    for cls in sorted(found, key=lambda c: (c.priority, c.id)):
        if cls.id in registry:
            other = registry[cls.id]
            raise RuntimeError(
                f"check id {cls.id!r} declared twice: {other.__module__}.{other.__name__} "
                f"and {cls.__module__}.{cls.__name__}"
            )
        registry[cls.id] = cls
    return registry


REGISTRY: dict[str, type[Check]] = _discover()


def check_for(check_id: str) -> type[Check] | None:
    """The class of ``check_id``, or None when no check declares it."""
    return REGISTRY.get(check_id)


def meta(item: Finding | str, code: str | None = None) -> CheckMeta:
    """What a finding (or a check id) means; never raises, whatever the id."""
    if isinstance(item, Finding):
        check_id, code = item.check_id, item.code
    else:
        check_id = item
    cls = REGISTRY.get(check_id)
    if cls is not None:
        return cls.meta(code)
    return CheckMeta(
        id=check_id,
        title=check_id,
        family=Family.AGENT,
        applies_to="agent",
        ticket=TicketKind.NONE,
        priority=1000,
        ticket_subject="{who} {code} {since}",
        ticket_what="{who} has a problem. {said}",
        known=False,
    )


def ids(*, family: Family | None = None, applies_to: AppliesTo | None = None) -> tuple[str, ...]:
    """The registered ids, in registry order, of one family and/or one kind of evidence."""
    return tuple(
        i
        for i, c in REGISTRY.items()
        if (family is None or c.family is family)
        and (applies_to is None or c.applies_to == applies_to)
    )


def counter_up(finding: Finding) -> bool:
    """Does this finding say its counter answers? (counters up, in status and perfdata)"""
    return finding.status is Status.OK and meta(finding).liveness


def checks_for(
    applies_to: AppliesTo, options: Mapping[str, BaseModel | None] | None = None
) -> list[Check]:
    """The checks the runner runs on ``applies_to`` evidence, each with its configured
    ``Options`` (or its defaults); derived checks are not run."""
    options = options or {}
    return [
        cls(options.get(cls.id))
        for cls in REGISTRY.values()
        if cls.applies_to == applies_to and not cls.derived
    ]


def options_model(check_id: str) -> type[BaseModel]:
    """The frozen ``Options`` model of ``check_id``; KeyError for an unknown id."""
    return REGISTRY[check_id].Options


__all__ = [
    "HARDWARE_FAULT",
    "REGISTRY",
    "Check",
    "CheckMeta",
    "CounterEvidence",
    "Family",
    "SiteEvidence",
    "TicketKind",
    "check_for",
    "checks_for",
    "counter_up",
    "fold_site_outages",
    "ids",
    "meta",
    "options_model",
]
