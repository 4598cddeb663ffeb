"""A client for one counter's local REST API (DESIGN.md §3): token, counts, snapshot.

The wire format lives in ``counter_format`` (one small tolerant parser); this module only moves
bytes, under the caller's deadline, and turns every failure into a ``ProbeError``. Each request
ends within the probe timeout (and the caller's deadline) whatever the counter does, and
follows no redirect: a counter that answers with one gets a ``redirect`` error naming where
it pointed (a captive portal, a login page on another host, a loop). Tokens are
long-lived, so one is kept per counter for the life of the process and fetched again only when
the device rejects it. Neither the password nor the token is ever logged or put in an error.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import ClassVar
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

import requests

from agent.probes import counter_format as fmt
from agent.transport.http import Reply, get
from diagnostics.model import ProbeError, ProbeErrorCode

MAX_SPAN = timedelta(hours=24)  # the device refuses longer ranges
SNAPSHOT_MAX_BYTES = 4 * 1024 * 1024


class CounterClient:
    """Talks to one counter. Thread-safe enough for one worker at a time per counter."""

    # tokens are long-lived and shared by every client of the same device in this process
    _tokens: ClassVar[dict[str, str]] = {}
    _tokens_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        *,
        serial: str,
        base_url: str,
        username: str | None,
        password: str | None,
        api: str,
        snapshot_path: str,
        tz: ZoneInfo,
        session: requests.Session,
        timeout_s: float,
        resolution_min: int = 15,
    ) -> None:
        self.serial = serial
        self.base_url = base_url.rstrip("/")
        self._username = username or ""
        self._password = password or ""
        self.api = api
        self.snapshot_path = snapshot_path
        self.tz = tz
        self.session = session
        self.timeout_s = timeout_s
        self.resolution_min = resolution_min

    def __repr__(self) -> str:
        return f"CounterClient({self.serial!r}, {self.base_url!r})"

    @classmethod
    def tokens(cls) -> list[str]:
        """Every token handed out so far, for the redactor to scrub wherever it appears."""
        with cls._tokens_lock:
            return list(cls._tokens.values())

    # -- plumbing ---------------------------------------------------------------------------

    def _timeout(self, deadline: float) -> tuple[float, float]:
        left = deadline - time.monotonic()
        if left <= 0:
            raise ProbeError(ProbeErrorCode.TIMEOUT, "cycle deadline passed before the request")
        t = min(self.timeout_s, left)
        return (t, t)

    def _deadline(self, deadline: float) -> float:
        """The request's total deadline: the probe timeout, within the caller's deadline."""
        return min(deadline, time.monotonic() + self.timeout_s)

    def _get(
        self,
        path: str,
        deadline: float,
        params: dict[str, str] | None = None,
        max_bytes: int = fmt.MAX_BODY_BYTES,
        auth: tuple[str, str] | None = None,
    ) -> Reply:
        return get(
            self.session,
            self.base_url + path,
            params=params,
            timeout=self._timeout(deadline),
            max_bytes=max_bytes,
            deadline=self._deadline(deadline),
            auth=auth,
        )

    # -- the API ------------------------------------------------------------------------------

    def token(self, deadline: float, *, fresh: bool = False) -> str:
        key = f"{self.base_url}|{self._username}"
        with self._tokens_lock:
            cached = None if fresh else self._tokens.get(key)
        if cached:
            return cached
        reply = self._get(
            "/cgi-bin/access_token.cgi",
            deadline,
            params={"username": self._username, "password": self._password},
        )
        if reply.status in (401, 403):
            raise ProbeError(ProbeErrorCode.AUTH_FAILED, "the counter refused the credentials")
        _raise_for_status(reply, "login")
        try:
            token = fmt.parse_token(reply.body)
        except fmt.FormatError as exc:
            raise ProbeError(ProbeErrorCode.BAD_RESPONSE, f"login: {exc}") from None
        with self._tokens_lock:
            self._tokens[key] = token
        return token

    def counts(
        self, start: datetime, end: datetime, deadline: float, *, max_slots: int | None = None
    ) -> fmt.CountsReply:
        """Counts for ``[start, end)``, in calls of at most 24 h, merged in time order.

        A long fetch (the first one fetches weeks of history) that the caller's deadline cuts
        short after some calls were answered returns what it has, ``partial``: the counter
        answered, the store keeps the slots, and the next cycle goes on from there instead of
        failing the whole fetch again. A call that used its full timeout is the counter's
        fault and fails as always. A fetch given ``max_slots`` (a back-fill's share of a cycle)
        also returns ``partial`` once the calls answered hold that many: days the counter holds
        nothing for cost a call each, not a share."""
        if self.api == "pi-cgi":
            return self._legacy_counts(start, end, deadline)
        replies: list[fmt.CountsReply] = []
        received = 0
        chunk_start = start
        while chunk_start < end:
            if max_slots is not None and received >= max_slots:
                merged = fmt.merge_replies(replies)
                _refuse_far_future(merged, end)
                return replace(merged, partial=True, reached=chunk_start)
            chunk_end = min(end, chunk_start + MAX_SPAN)
            cut_by_caller = deadline - time.monotonic() < self.timeout_s
            try:
                replies.append(self._counts_chunk(chunk_start, chunk_end, deadline))
            except ProbeError as exc:
                if replies and cut_by_caller and exc.code is ProbeErrorCode.TIMEOUT:
                    merged = fmt.merge_replies(replies)
                    _refuse_far_future(merged, end)
                    return replace(merged, partial=True, reached=chunk_start)
                raise
            received += len(replies[-1].slots)
            chunk_start = chunk_end
        merged = fmt.merge_replies(replies)
        _refuse_far_future(merged, end)
        return merged

    def _counts_chunk(self, start: datetime, end: datetime, deadline: float) -> fmt.CountsReply:
        for attempt in (0, 1):
            token = self.token(deadline, fresh=attempt == 1)
            params = fmt.counts_query(
                start,
                end,
                resolution_min=self.resolution_min,
                data_type="json",
                token=token,
                tz=self.tz,
            )
            reply = self._get("/cgi-bin/apiCount.cgi", deadline, params=params)
            if reply.status in (401, 403) and attempt == 0:
                continue  # the token expired or the device was reset: fetch a new one once
            if reply.status in (401, 403):
                raise ProbeError(ProbeErrorCode.AUTH_FAILED, "the counter refused the token")
            _raise_for_status(reply, "counts")
            try:
                return fmt.parse_counts(
                    reply.body,
                    data_type="json",
                    serial=self.serial,
                    tz=self.tz,
                    minutes=self.resolution_min,
                )
            except fmt.FormatError as exc:
                raise ProbeError(ProbeErrorCode.BAD_RESPONSE, f"counts: {exc}") from None
        raise AssertionError("unreachable")

    def _legacy_counts(self, start: datetime, end: datetime, deadline: float) -> fmt.CountsReply:
        replies = []
        day = start.astimezone(self.tz).date()
        last = (end - timedelta(microseconds=1)).astimezone(self.tz).date()
        while day <= last:
            reply = self._get(
                "/pi-cgi/data.json",
                deadline,
                params=fmt.legacy_query(day),
                auth=(self._username, self._password),
            )
            if reply.status in (401, 403):
                raise ProbeError(ProbeErrorCode.AUTH_FAILED, "the counter refused the credentials")
            _raise_for_status(reply, "legacy counts")
            try:
                replies.append(
                    fmt.parse_legacy(reply.body, data_type="json", serial=self.serial, tz=self.tz)
                )
            except fmt.FormatError as exc:
                raise ProbeError(ProbeErrorCode.BAD_RESPONSE, f"legacy counts: {exc}") from None
            day += timedelta(days=1)
        merged = fmt.merge_replies(replies)
        _refuse_far_future(merged, end)
        keep = tuple(s for s in merged.slots if start <= s.start < end)
        return fmt.CountsReply(
            merged.serial, merged.model, merged.firmware, merged.device_time, keep
        )

    def snapshot(self, deadline: float) -> bytes:
        reply = self._get(self.snapshot_path, deadline, max_bytes=SNAPSHOT_MAX_BYTES)
        if reply.status in (401, 403):
            raise ProbeError(ProbeErrorCode.AUTH_FAILED, "the counter refused the snapshot")
        _raise_for_status(reply, "snapshot")
        try:
            fmt.check_snapshot(reply.body)
        except fmt.FormatError as exc:
            raise ProbeError(ProbeErrorCode.BAD_RESPONSE, str(exc)) from None
        return reply.body


FAR_FUTURE = timedelta(days=1)  # a slot further ahead than this is a broken clock or a lie


def _refuse_far_future(reply: fmt.CountsReply, end: datetime) -> None:
    late = [s.start for s in reply.slots if s.start > end + FAR_FUTURE]
    if late:
        raise ProbeError(
            ProbeErrorCode.BAD_RESPONSE,
            f"counts: a slot at {max(late).isoformat()} is in the far future "
            f"(asked up to {end.isoformat()})",
        )


def _raise_for_status(reply: Reply, what: str) -> None:
    if 300 <= reply.status < 400:
        raise ProbeError(
            ProbeErrorCode.REDIRECT,
            f"{what}: HTTP {reply.status} redirect to {_where(reply.headers.get('Location'))}"
            " (not followed)",
        )
    if reply.status >= 400:
        raise ProbeError(ProbeErrorCode.HTTP_ERROR, f"{what}: HTTP {reply.status}")


def _where(location: str | None) -> str:
    """The host a redirect points at, never its path or query (they may carry the token)."""
    if not location:
        return "nowhere (no Location header)"
    try:
        parts = urlsplit(location.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return "an unreadable Location"
    if not host:
        return "another path on the same counter"
    host = re.sub(r"[^A-Za-z0-9.:_-]", "?", host)[:80]
    return f"host {host}:{port}" if port else f"host {host}"
