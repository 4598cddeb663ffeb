"""A real Request Tracker 5 on 127.0.0.1, a throwaway instance per test session.

The RT sink is tested against the helpdesk it talks to in production, not against a mock of
REST 2: what RT accepts on create, how it searches custom fields and subjects, what it answers a
token without rights, are all behaviour of RT itself. Debian's ``request-tracker5``,
``rt5-db-sqlite`` and ``rt5-standalone`` provide it (``scripts/test`` installs it).

The instance touches nothing of the system's RT: ``RT_SITE_CONFIG`` points at a site config in
the working directory and ``RT_SITE_CONFIG_DIR`` at an empty folder beside it, so Debian's
``/etc/request-tracker5/RT_SiteConfig.d`` is never read; the site config also moves RT's
variable, Mason cache and session folders into the working directory (it is Perl evaluated in
package RT, which is what makes that possible). The SQLite database is a file there too.
``rt-setup-database --action init`` creates the schema, then ``--action insert`` loads our
initial data: one queue per category the tests use, the idempotency-key custom field, an agent
user with the rights a helpdesk admin would grant an integration, a read-only user, and
auth tokens (RT 5's ``RT::AuthToken``) for both and for root, written to ``tokens.json``.

``rt-server`` (Starlet) listens on 127.0.0.1 only (``--host``). Readiness is a condition: the
process is alive and ``GET /REST/2.0/rt`` answers 200. Without the packages the tests skip, or
fail under ``CI=true`` (DESIGN.md §7).

``FaultyProxy`` sits in front of RT and answers a scripted status (500, 429, …) for the next N
requests before forwarding, to test how the sink classifies a helpdesk that is busy or broken.
"""

from __future__ import annotations

import http.client
import http.server
import json
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

RT_SERVER = Path("/usr/share/request-tracker5/libexec/rt-server")
RT_SETUP_DATABASE = Path("/usr/sbin/rt-setup-database-5")
START_TIMEOUT_S = 60.0
SETUP_TIMEOUT_S = 180.0

# Queues the tests file into: the default plus one per category the sink config maps.
DEFAULT_QUEUES = ("General", "Technical Issue", "Data Accuracy Issue", "Service Request")
KEY_FIELD = "FFC Key"

# What an RT admin grants an integration account: see, create, update and talk on tickets in
# every queue, and set the key custom field. Nothing administrative.
AGENT_RIGHTS = (
    "SeeQueue",
    "ShowTicket",
    "ShowTicketComments",
    "CreateTicket",
    "ModifyTicket",
    "ReplyToTicket",
    "CommentOnTicket",
    "SeeCustomField",
    "ModifyCustomField",
    "SetInitialCustomField",
)


def require_rt() -> None:
    """Skip (fail under CI=true) unless Debian's RT 5 packages are installed."""
    missing = [str(p) for p in (RT_SERVER, RT_SETUP_DATABASE) if not os.access(p, os.X_OK)]
    try:
        import_check = subprocess.run(
            ["perl", "-MStarlet", "-MDBD::SQLite", "-e", "1"],
            capture_output=True,
            timeout=30,
        )
        if import_check.returncode != 0:
            missing.append("perl Starlet / DBD::SQLite")
    except FileNotFoundError:
        missing.append("perl")
    if not missing:
        return
    reason = (
        "Request Tracker 5 not installed (scripts/test installs request-tracker5 rt5-db-sqlite "
        f"rt5-standalone); missing: {', '.join(missing)}"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason)
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _perl_str(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class RtServer:
    """One RT instance in ``workdir``: ``setup`` once, then ``start``/``stop`` as often as needed.

    ``url`` is RT's web root (what ``RtSinkConfig.url`` takes); ``agent_token`` belongs to the
    integration user, ``staff_token`` to root (a person at the helpdesk), ``readonly_token`` to
    a user who may see queues and tickets but not create or change them. ``api(...)`` calls
    REST 2 as staff, for tests that act like a person in the web UI: raising a ticket by hand,
    resolving one.
    """

    def __init__(self, workdir: Path, *, queues: Iterable[str] = DEFAULT_QUEUES) -> None:
        require_rt()
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.queues = tuple(dict.fromkeys(["General", *queues]))
        self.key_field = KEY_FIELD
        self.host = "127.0.0.1"
        self.port = free_port()
        self.database = self.workdir / "rt.sqlite"
        self.site_config = self.workdir / "RT_SiteConfig.pm"
        self.config_dir = self.workdir / "RT_SiteConfig.d"  # stays empty: see the docstring
        self.initialdata = self.workdir / "initialdata.pl"
        self.tokens_file = self.workdir / "tokens.json"
        self.log_file = self.workdir / "rt-server.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tokens: dict[str, str] = {}
        self.timings: dict[str, float] = {}

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def agent_token(self) -> str:
        return self.tokens["ffc-agent"]

    @property
    def staff_token(self) -> str:
        return self.tokens["root"]

    @property
    def readonly_token(self) -> str:
        return self.tokens["ffc-readonly"]

    # -- one-time setup ---------------------------------------------------------------------

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("RT_")}
        env.update(
            RT_SITE_CONFIG=str(self.site_config),
            RT_SITE_CONFIG_DIR=str(self.config_dir),
            FFC_RT_TOKENS=str(self.tokens_file),
            LANG="C.UTF-8",
        )
        return env

    def _write_site_config(self) -> None:
        var = self.workdir / "var"
        for sub in ("var", "var/mason_data", "var/session_data", "var/log"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(exist_ok=True)
        lines = [
            "# ffc-agent tests: a throwaway RT on 127.0.0.1; nothing here is the system's RT.",
            f"$RT::VarPath = {_perl_str(str(var))};",
            f"$RT::MasonDataDir = {_perl_str(str(var / 'mason_data'))};",
            f"$RT::MasonSessionDir = {_perl_str(str(var / 'session_data'))};",
            "Set($rtname, 'ffc-test');",
            "Set($Organization, 'example.com');",
            "Set($CorrespondAddress, 'rt@example.com');",
            "Set($CommentAddress, 'rt-comment@example.com');",
            "Set($Timezone, 'UTC');",
            "Set($DatabaseType, 'SQLite');",
            f"Set($DatabaseName, {_perl_str(str(self.database))});",
            "Set($DatabaseHost, 'localhost');",
            "Set($DatabaseUser, '');",
            "Set($DatabasePassword, '');",
            "Set($WebPath, '');",
            f"Set($WebDomain, '{self.host}');",
            f"Set($WebPort, {self.port});",
            f"Set($WebBaseURL, '{self.url}');",
            "Set($LogToSyslog, undef);",
            "Set($LogToFile, undef);",
            "Set($LogToSTDERR, 'error');",
            # Outgoing mail (auto-replies to the requestor) goes to an mbox in var/, never out.
            "Set($MailCommand, 'mbox');",
            # RT checks the token's bcrypt hash on every request: at the default cost of 12
            # that is ~0.2 s a call. The minimum cost keeps the suite fast; RT's own behaviour
            # is otherwise unchanged (production pays the 0.2 s, see agent/delivery/sinks/rt.py).
            "Set($BcryptCost, 4);",
            "1;",
        ]
        self.site_config.write_text("\n".join(lines) + "\n")

    def _write_initialdata(self) -> None:
        queues = ",\n".join(
            f"    {{ Name => {_perl_str(q)}, Description => 'ffc-agent tests' }}"
            for q in self.queues
            if q != "General"  # RT's own initial data creates it
        )
        rights = " ".join(AGENT_RIGHTS)
        self.initialdata.write_text(
            f"""# ffc-agent tests: queues, the key custom field, users, rights and tokens.
@Queues = (
{queues}
);
@CustomFields = (
    {{ Name => {_perl_str(self.key_field)}, Type => 'FreeformSingle',
      LookupType => 'RT::Queue-RT::Ticket', Description => 'ffc-agent idempotency key' }},
);
@Users = (
    {{ Name => 'ffc-agent', EmailAddress => 'ffc-agent@example.com',
      RealName => 'ffc-agent integration', Privileged => 1 }},
    {{ Name => 'ffc-readonly', EmailAddress => 'readonly@example.com',
      Privileged => 1 }},
);
@ACL = (
    (map {{ {{ Right => $_, UserId => 'ffc-agent' }} }} qw({rights})),
    (map {{ {{ Right => $_, UserId => 'ffc-readonly' }} }} qw(SeeQueue ShowTicket)),
);
@Final = (sub {{
    my %tokens;
    for my $name (qw(ffc-agent ffc-readonly root)) {{
        my $user = RT::User->new(RT->SystemUser);
        $user->Load($name) or die "no user $name";
        my $token = RT::AuthToken->new(RT->SystemUser);
        my ($id, $msg, $auth) = $token->Create(Owner => $user->Id, Description => 'ffc tests');
        die "token for $name: $msg" unless $id;
        $tokens{{$name}} = $auth;
    }}
    open my $fh, '>', $ENV{{FFC_RT_TOKENS}} or die "tokens file: $!";
    print $fh JSON::to_json(\\%tokens);
    close $fh;
}});
1;
"""
        )

    def setup(self) -> None:
        """Create the database, schema, queues, users and tokens (about 5 s)."""
        started = time.monotonic()
        self._write_site_config()
        self._write_initialdata()
        self.database.unlink(missing_ok=True)
        for args in (
            ["--action", "init", "--skip-create"],
            ["--action", "insert", "--datafile", str(self.initialdata)],
        ):
            done = subprocess.run(
                [str(RT_SETUP_DATABASE), *args],
                env=self._env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=SETUP_TIMEOUT_S,
            )
            if done.returncode != 0 or "[error]" in done.stderr or "[critical]" in done.stderr:
                raise RuntimeError(
                    f"rt-setup-database {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
                )
        self.tokens = json.loads(self.tokens_file.read_text())
        self.timings["setup_s"] = time.monotonic() - started

    # -- the server -------------------------------------------------------------------------

    def start(self) -> None:
        if self.proc is not None:
            raise RuntimeError("rt-server already running")
        if not self.tokens:
            self.setup()
        started = time.monotonic()
        log = self.log_file.open("ab")
        try:
            self.proc = subprocess.Popen(
                [
                    str(RT_SERVER),
                    "--server",
                    "Starlet",
                    "--host",
                    self.host,
                    "--port",
                    str(self.port),
                    # two workers: enough for concurrent tests, few enough for SQLite's lock
                    "--max-workers",
                    "2",
                ],
                env=self._env(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # so stop() can end the workers with their parent
            )
        finally:
            log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("rt-server did not start:\n" + self.log())
            self.proc_wait(0.2)
        self.timings["start_s"] = time.monotonic() - started

    def proc_wait(self, seconds: float) -> None:
        """Wait up to ``seconds`` for the server process to end (a bounded pause in polling)."""
        if self.proc is not None:
            try:
                self.proc.wait(timeout=seconds)
            except subprocess.TimeoutExpired:
                pass

    def _answers(self) -> bool:
        try:
            reply = requests.get(
                f"{self.url}/REST/2.0/rt",
                headers={"Authorization": f"token {self.staff_token}"},
                timeout=(1, 5),
            )
        except requests.RequestException:
            return False
        return reply.status_code == 200

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        # Starlet's workers are children of the master: end the whole process group.
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=15)
        # wait until the port is free, so a restart on it cannot race a lingering worker
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            with socket.socket() as s:
                s.settimeout(0.5)
                if s.connect_ex((self.host, self.port)) != 0:
                    break
            _pause(0.1)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")[-8000:]
        except FileNotFoundError:
            return ""

    def __enter__(self) -> RtServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- acting as a person at the helpdesk -------------------------------------------------

    def api(
        self, method: str, path: str, *, token: str | None = None, **kwargs: Any
    ) -> requests.Response:
        """Call REST 2 (``path`` below ``/REST/2.0/``) as root, or with ``token``."""
        headers = {"Authorization": f"token {token or self.staff_token}"}
        return requests.request(
            method,
            f"{self.url}/REST/2.0/{path.lstrip('/')}",
            headers=headers,
            timeout=(5, 60),
            **kwargs,
        )

    def create_ticket(self, queue: str, subject: str, content: str = "", **fields: Any) -> str:
        """Raise a ticket by hand, as a person would in the web UI; returns its id."""
        body = {"Queue": queue, "Subject": subject, "Content": content or subject, **fields}
        reply = self.api("POST", "ticket", json=body)
        if reply.status_code != 201:
            raise RuntimeError(f"RT refused the ticket: {reply.status_code} {reply.text}")
        return str(reply.json()["id"])

    def search(self, query: str) -> list[dict[str, Any]]:
        """Every ticket matching TicketSQL ``query``, with Subject, Status and Queue."""
        items: list[dict[str, Any]] = []
        page = 1
        while True:
            reply = self.api(
                "GET",
                "tickets",
                params={
                    "query": query,
                    "fields": "Subject,Status,Queue",
                    "per_page": "100",
                    "page": str(page),
                },
            )
            reply.raise_for_status()
            data = reply.json()
            items += data.get("items", [])
            if page >= int(data.get("pages") or 1):
                return items
            page += 1


def _pause(seconds: float) -> None:
    # A bounded pause inside a poll loop of the helper (never in a test): a threading.Event
    # nobody sets is a sleep that reads as what it is.
    threading.Event().wait(seconds)


class FaultyProxy:
    """An HTTP proxy on 127.0.0.1 in front of RT that misbehaves on purpose.

    ``fail(status, times, method=None)``: the next ``times`` requests (of ``method`` only, if
    given) are answered ``status`` (with ``Retry-After: 1`` for 429) and never reach RT.
    ``hold(method)``: the next such request is forwarded and RT answers it, but the answer is
    kept until ``release()`` — what a client whose read times out after sending sees.
    ``drop(method)``: the same, but the connection is closed instead of answering.
    ``before_forward``: called with (method, path) just before a request goes to RT, e.g. to
    let "another gateway" file the same ticket first. ``seen`` counts requests by method.
    """

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._faults: list[tuple[int, str | None]] = []
        self._hold: tuple[str, str] | None = None  # (method, "hold" or "drop")
        self._released = threading.Event()
        self.before_forward: Callable[[str, str], None] | None = None
        self.seen: dict[str, int] = {}
        self.held = threading.Event()  # set once a held answer has arrived from RT
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the test output is no place for an access log

            def _reply(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for k, v in headers:
                    if k.lower() not in ("connection", "transfer-encoding", "content-length"):
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                fault, then = proxy._decide(self.command)
                if fault is not None:
                    payload = json.dumps({"message": f"injected {fault}"}).encode()
                    headers = [("Content-Type", "application/json")]
                    if fault == 429:
                        headers.append(("Retry-After", "1"))
                    self._reply(fault, headers, payload)
                    return
                if proxy.before_forward is not None:
                    proxy.before_forward(self.command, self.path)
                status, headers, data = proxy._forward(self.command, self.path, self.headers, body)
                if then == "drop":
                    proxy.held.set()
                    self.close_connection = True
                    return  # RT has done the work; its answer goes nowhere
                if then == "hold":
                    proxy.held.set()
                    proxy._released.wait(120)
                    self.close_connection = True
                try:
                    self._reply(status, headers, data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting: that was the point of holding

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _decide(self, method: str) -> tuple[int | None, str | None]:
        with self._lock:
            self.seen[method] = self.seen.get(method, 0) + 1
            for i, (status, only) in enumerate(self._faults):
                if only is None or only == method:
                    del self._faults[i]
                    return status, None
            if self._hold is not None and self._hold[0] == method:
                then, self._hold = self._hold[1], None
                return None, then
            return None, None

    def _forward(
        self, method: str, path: str, headers: Any, body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        conn = http.client.HTTPConnection(*self.upstream, timeout=60)
        try:
            sent = {k: v for k, v in headers.items() if k.lower() not in ("host", "connection")}
            sent["Content-Length"] = str(len(body))
            conn.request(method, path, body=body, headers=sent)
            reply = conn.getresponse()
            return reply.status, reply.getheaders(), reply.read()
        finally:
            conn.close()

    def fail(self, status: int, times: int = 1, method: str | None = None) -> None:
        with self._lock:
            self._faults += [(status, method)] * times

    def hold(self, method: str, then: str = "hold") -> None:
        with self._lock:
            self._hold = (method, then)
            self._released.clear()
            self.held.clear()

    def drop(self, method: str) -> None:
        self.hold(method, then="drop")

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> FaultyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()


def rt_session(workdir: Path) -> Iterator[RtServer]:
    """A started RT for a whole test session (the body of the ``rt_server`` fixture)."""
    server = RtServer(workdir)
    try:
        server.start()
        yield server
    finally:
        server.stop()
