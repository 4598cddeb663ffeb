"""A page as a browser loads it: headless Chromium driven over the DevTools protocol.

Chromium is started with ``--remote-debugging-pipe`` (the protocol's JSON messages on file
descriptors 3 and 4, each ended by a NUL byte), so no port is opened and no WebSocket client is
needed. ``load`` opens a file, waits for its load event, and returns what a test asks of a
page: the text and counts from the DOM (any JavaScript expression), every console message and
uncaught exception, every log entry (a Content-Security-Policy violation is one), and every
request the page made. Networking features are off and the profile is a throwaway folder.

Needs Debian's ``chromium``: a missing browser skips the test, or fails it under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

TIMEOUT_S = 90.0  # a guard against a hung browser, never a measure of speed


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.environ.get("CI") == "true":
        pytest.fail("chromium is not installed (Debian package 'chromium')")
    pytest.skip("chromium is not installed (Debian package 'chromium')")


@dataclass
class Loaded:
    values: dict[str, Any]  # name -> the value of its expression, evaluated after load
    console: list[dict[str, Any]] = field(default_factory=list)  # Runtime.consoleAPICalled
    exceptions: list[dict[str, Any]] = field(default_factory=list)  # Runtime.exceptionThrown
    log: list[dict[str, Any]] = field(default_factory=list)  # Log.entryAdded entries
    requests: list[str] = field(default_factory=list)  # every URL the page asked for

    @property
    def errors(self) -> list[str]:
        """Console errors, uncaught exceptions and error-level log entries, as text."""
        out = [json.dumps(c.get("args")) for c in self.console if c.get("type") == "error"]
        out += [json.dumps(e.get("exceptionDetails")) for e in self.exceptions]
        out += [str(e.get("text")) for e in self.log if e.get("level") == "error"]
        return out


class _Pipe:
    def __init__(self, browser: str, profile: Path) -> None:
        to_r, self._to_w = os.pipe()
        self._from_r, from_w = os.pipe()

        def fds() -> None:  # in the child: the browser reads fd 3 and writes fd 4
            a, b = os.dup(to_r), os.dup(from_w)
            os.dup2(a, 3)
            os.dup2(b, 4)

        self.proc = subprocess.Popen(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            close_fds=False,
            preexec_fn=fds,
        )
        os.close(to_r)
        os.close(from_w)
        self._buffer = b""
        self._next = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, params: dict[str, Any] | None = None, session: str = "") -> Any:
        self._next += 1
        message: dict[str, Any] = {"id": self._next, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_w, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._read()
            if reply.get("id") == self._next:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict[str, Any]:
        for event in self.events:
            if event.get("method") == method:
                return event
        while True:
            event = self._read()
            self.events.append(event)
            if event.get("method") == method:
                return event

    def _read(self) -> dict[str, Any]:
        deadline = time.monotonic() + TIMEOUT_S
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._from_r], [], [], max(0.0, left))
            if not ready:
                raise TimeoutError("chromium did not answer")
            chunk = os.read(self._from_r, 65536)
            if not chunk:
                raise EOFError("chromium closed the DevTools pipe")
            self._buffer += chunk
        raw, _, self._buffer = self._buffer.partition(b"\0")
        data: dict[str, Any] = json.loads(raw)
        return data

    def close(self) -> None:
        try:
            os.write(self._to_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_w)
        os.close(self._from_r)


def load(page: Path, expressions: dict[str, str]) -> Loaded:
    """Open ``page`` in headless Chromium; evaluate each expression once it has loaded."""
    browser = chromium()
    with tempfile.TemporaryDirectory(prefix="ffc-chromium-") as profile:
        pipe = _Pipe(browser, Path(profile))
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
                "sessionId"
            ]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            pipe.wait_for("Page.loadEventFired")
            values = {}
            for name, expression in expressions.items():
                result = pipe.send(
                    "Runtime.evaluate",
                    {"expression": expression, "returnByValue": True},
                    session=session,
                )
                if "exceptionDetails" in result:
                    raise AssertionError(f"{name}: {result['exceptionDetails']}")
                values[name] = result["result"].get("value")
        finally:
            pipe.close()
    loaded = Loaded(values)
    for event in pipe.events:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            loaded.console.append(params)
        elif method == "Runtime.exceptionThrown":
            loaded.exceptions.append(params)
        elif method == "Log.entryAdded":
            loaded.log.append(params.get("entry", {}))
        elif method == "Network.requestWillBeSent":
            loaded.requests.append(str(params.get("request", {}).get("url")))
    return loaded
