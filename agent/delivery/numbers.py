"""Which ticket a number a person typed names: the one place every command resolves it.

People type a ticket's number as they saw it: ``L-000001`` from the local store, ``1`` for it
(the bare number), ``57`` or ``RT-57`` from RT. Each destination's ``get`` reads the forms it
accepts. A number that is a destination's own form — what it writes itself (RT's ``57``, the
local ``L-000001``; any form with letters, which only one kind of destination reads) — names
that destination's ticket *exactly*; digits that a destination reads as another number of its
own (the local store's ``1`` for ``L-000001``) name it *bare*.

- every destination that answers names the same ticket (its key): that ticket, the destination
  whose own form was typed first (``tickets show 1`` shows RT's ticket 1 when ``L-000001`` is
  the same ticket), then the others that hold it;
- they name different tickets (``1``: RT's ticket 1 and ``L-000001``, two tickets): an
  ``AmbiguousNumber``, one line listing each candidate in the full form that names only it
  (``L-000001``, ``RT-1``), never a silent pick — a reply or a file on the wrong ticket
  reaches a stranger. Commands exit ``EX_AMBIGUOUS`` (2) on it.

A destination that cannot answer is skipped (logged): a helpdesk that is down does not stop
the local store's ticket from being read.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from agent.delivery.sinks.base import Sink, SinkError
from rma.tickets import Ticket

log = logging.getLogger(__name__)

EX_AMBIGUOUS = 2  # a usage error: the number given does not say which ticket


class AmbiguousNumber(Exception):
    """A number that names different tickets in different destinations; the text lists each
    candidate with the full number to type for it."""

    def __init__(self, number: str, candidates: Sequence[tuple[Sink, Ticket]]) -> None:
        self.number = number
        self.candidates = [(s.name, full_number(s, t)) for s, t in candidates]
        listed = ", ".join(f"{typed} ({name})" for name, typed in self.candidates)
        super().__init__(
            f"{number!r} names different tickets: type the full number of the one you mean: "
            f"{listed}"
        )


def full_number(sink: Sink, ticket: Ticket) -> str:
    """The number that names ``ticket`` in ``sink`` alone: its own number, or, where that is
    bare digits another destination would also read (RT), the form the destination offers
    (``RT-1``)."""
    number = ticket.number or ""
    spelled = getattr(sink, "full_number", None)
    return str(spelled(number)) if callable(spelled) else number


def named_tickets(sinks: Sequence[Sink], number: str) -> list[tuple[Sink, Ticket]]:
    """The ticket ``number`` names, in each destination whose ``get`` reads it, the exact
    matches first; ``[]`` if none. Raises ``AmbiguousNumber`` if they are different tickets."""
    typed = number.strip()
    found: list[tuple[Sink, Ticket]] = []  # in the order of the configuration
    exact: list[tuple[Sink, Ticket]] = []
    for sink in sinks:
        try:
            ticket = sink.get(typed)
        except SinkError as exc:
            log.warning("cannot look for ticket %s in %s: %s", typed, sink.name, exc)
            continue
        if ticket is None or not ticket.number:
            continue
        found.append((sink, ticket))
        if not typed.isdigit() or ticket.number.casefold() == typed.casefold():
            exact.append((sink, ticket))
    if len({t.key for _, t in found}) > 1:
        raise AmbiguousNumber(typed, found)
    return exact + [m for m in found if m not in exact]


def find_tickets(sinks: Sequence[Sink], number: str) -> list[tuple[Sink, Ticket]]:
    """Ticket ``number`` in every destination that has it: where the number names it
    (``named_tickets``, the exact match first), then where the same ticket (its key) carries
    another number (``L-000003`` in the local store is ``57`` in RT)."""
    found = named_tickets(sinks, number)
    if not found:
        return []
    key = found[0][1].key
    where = dict((s.name, (s, t)) for s, t in found)
    for sink in sinks:
        if sink.name in where:
            continue
        try:
            other = sink.find_by_key(key)
        except SinkError as exc:
            log.warning("cannot look for ticket %s in %s: %s", number, sink.name, exc)
            continue
        if other is not None and other.number:
            where[sink.name] = (sink, other)
    return list(where.values())
