"""One way to hand an e-mail to an SMTP server: used by the smtp ticket sink and notifications.

A store gateway usually relays through the chain's own mail server or a hosted one, with a
login. Both callers need the same careful exchange, so it lives here once: an explicit EHLO
name and timeout, STARTTLS or implicit TLS verified against the system CAs (or ``ca_file``),
the password sent only over TLS, and every failure turned into a ``SinkError`` whose
``permanent`` says whether retrying can help.

Contract: ``send_message(settings, message, to=..., cc=...)`` delivers ``message`` (its headers
already set by the caller) to every address of ``to`` and ``cc`` in one SMTP transaction.

- A refused ``to`` address fails the send (permanent for a 5xx answer); a refused ``cc``
  address is logged and dropped, and the message still goes to the rest.
- Refused connections, timeouts and 4xx answers are transient; 5xx answers, a server without
  STARTTLS, a certificate that does not verify, and a login over clear text are permanent.
- A timeout or disconnect after DATA is ``OutcomeUnknown``: the message may have arrived, so a
  retry must send it again with the same ``Message-ID`` for the receiver to drop the copy.
- The password never appears in an error or a log line.
"""

from __future__ import annotations

import builtins
import contextlib
import email.policy
import logging
import smtplib
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

from pydantic import SecretStr

from agent.delivery.sinks.base import OutcomeUnknown, SinkError

log = logging.getLogger(__name__)

# CRLF line ends as SMTP wants them; 7-bit headers (encoded words), so no server needs SMTPUTF8
POLICY = email.policy.SMTP


class SmtpSettings(Protocol):
    """What ``send_message`` needs to know about the server (``SmtpServerConfig`` has it)."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def security(self) -> str: ...  # "starttls" | "ssl" | "none"
    @property
    def username(self) -> str | None: ...
    @property
    def password(self) -> SecretStr | None: ...
    @property
    def sender(self) -> str: ...
    @property
    def verify_tls(self) -> bool: ...
    @property
    def ca_file(self) -> Path | None: ...
    @property
    def timeout_seconds(self) -> float: ...


def send_message(
    settings: SmtpSettings,
    message: EmailMessage,
    *,
    to: Sequence[str],
    cc: Sequence[str] = (),
    name: str = "smtp",
    to_label: str = "the recipient address",
) -> None:
    """Deliver ``message`` to ``to`` and ``cc``; raise ``SinkError`` (see the module docstring).

    ``name`` labels errors and log lines (a sink's name, or "notifications"); ``to_label``
    names the ``to`` addresses in the error when the server refuses them.
    """
    data = message.as_bytes(policy=POLICY)
    required = builtins.list(dict.fromkeys(to))
    copies = [a for a in dict.fromkeys(cc) if a not in required]
    phase = "connect"
    try:
        with _connection(settings, name) as conn:
            phase = "envelope"
            options = [f"SIZE={len(data)}"] if conn.has_extn("size") else []
            code, reply = conn.mail(settings.sender, options)
            if code != 250:
                raise smtplib.SMTPSenderRefused(code, reply, settings.sender)
            refused = {}
            for address in [*required, *copies]:
                code, reply = conn.rcpt(address)
                if code not in (250, 251):
                    refused[address] = (code, reply)
            _check_recipients(settings, name, refused, required, to_label)
            phase = "data"
            code, reply = conn.data(data)
            if code != 250:
                raise smtplib.SMTPDataError(code, reply)
    except SinkError:
        raise
    except (smtplib.SMTPException, OSError) as exc:
        raise _error(settings, name, exc, phase, message["Message-ID"]) from None


@contextlib.contextmanager
def _connection(cfg: SmtpSettings, name: str) -> Iterator[smtplib.SMTP]:
    # An explicit EHLO name: smtplib's default (getfqdn) asks DNS, outside any timeout.
    local = socket.gethostname() or "ffc-agent"
    if cfg.username and cfg.security == "none":
        raise SinkError(
            f"{name}: security = 'none' would send the password in clear; use 'starttls' or 'ssl'",
            permanent=True,
        )
    if cfg.username and cfg.password is None:
        raise SinkError(f"{name}: 'username' is set but no password", permanent=True)
    conn: smtplib.SMTP
    if cfg.security == "ssl":
        conn = smtplib.SMTP_SSL(
            cfg.host,
            cfg.port,
            local_hostname=local,
            timeout=cfg.timeout_seconds,
            context=_tls(cfg),
        )
    else:
        conn = smtplib.SMTP(cfg.host, cfg.port, local_hostname=local, timeout=cfg.timeout_seconds)
    try:
        conn.ehlo_or_helo_if_needed()
        if cfg.security == "starttls":
            if not conn.has_extn("starttls"):
                # never fall back to clear text: the password and the bundle would leak
                raise SinkError(
                    f"{name}: {cfg.host}:{cfg.port} does not offer STARTTLS; "
                    "set security = 'ssl' or fix the server",
                    permanent=True,
                )
            conn.starttls(context=_tls(cfg))
            conn.ehlo_or_helo_if_needed()
        if cfg.username and cfg.password is not None:
            conn.login(cfg.username, cfg.password.get_secret_value())
        yield conn
        with contextlib.suppress(smtplib.SMTPException, OSError):
            conn.quit()  # the message is accepted; a slow goodbye changes nothing
    finally:
        conn.close()


def _tls(cfg: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if not cfg.verify_tls:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _check_recipients(
    cfg: SmtpSettings,
    name: str,
    refused: Mapping[str, tuple[int, bytes]],
    required: Sequence[str],
    to_label: str,
) -> None:
    for address, (code, reply) in refused.items():
        if address not in required:
            log.warning(
                "%s: the server refused CC %s (%s); sending without it",
                name,
                address,
                _reply(cfg, code, reply),
            )
    lost = {a: r for a, r in refused.items() if a in required}
    if lost:
        permanent = any(code >= 500 for code, _ in lost.values())
        said = "; ".join(f"{a}: {_reply(cfg, *r)}" for a, r in lost.items())
        raise SinkError(f"{name}: the server refused {to_label} ({said})", permanent=permanent)


def _error(cfg: SmtpSettings, name: str, exc: BaseException, phase: str, mid: str) -> SinkError:
    where = f"{name} ({cfg.host}:{cfg.port})"
    sent = phase == "data"
    if isinstance(exc, smtplib.SMTPResponseException):
        code = exc.smtp_code
        text = f"{where}: the server answered {_reply(cfg, code, exc.smtp_error)}"
        if isinstance(exc, smtplib.SMTPAuthenticationError):
            text = f"{where}: login as {cfg.username!r} failed: {_reply(cfg, code, b'')}"
        return SinkError(text, permanent=500 <= code < 600)
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return SinkError(f"{where}: every recipient was refused", permanent=True)
    if sent and isinstance(exc, (smtplib.SMTPServerDisconnected, OSError)):
        return OutcomeUnknown(
            f"{where}: no answer after the message was sent ({type(exc).__name__}); it "
            f"may have arrived. A retry re-sends it as {mid}."
        )
    if isinstance(exc, smtplib.SMTPServerDisconnected):
        return SinkError(f"{where}: the server closed the connection")
    if isinstance(exc, (smtplib.SMTPNotSupportedError, smtplib.SMTPException)):
        return SinkError(f"{where}: {_scrub(cfg, str(exc))}", permanent=True)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return SinkError(
            f"{where}: the server's TLS certificate does not verify "
            f"({exc.verify_message}); set ca_file to the CA that signed it",
            permanent=True,
        )
    if isinstance(exc, ssl.SSLError):
        return SinkError(
            f"{where}: TLS failed ({exc.reason or type(exc).__name__}); check 'security' "
            "and the port",
            permanent=True,
        )
    if isinstance(exc, TimeoutError):
        return SinkError(f"{where}: timed out after {cfg.timeout_seconds:g} s ({phase})")
    if isinstance(exc, ConnectionRefusedError):
        return SinkError(f"{where}: connection refused")
    reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
    return SinkError(f"{where}: cannot connect: {reason}")


def _reply(cfg: SmtpSettings, code: int, reply: bytes | str) -> str:
    text = reply.decode("utf-8", "replace") if isinstance(reply, bytes) else str(reply)
    text = " ".join(text.split())[:200]
    return _scrub(cfg, f"{code} {text}".strip())


def _scrub(cfg: SmtpSettings, text: str) -> str:
    password = cfg.password.get_secret_value() if cfg.password else ""
    return text.replace(password, "***") if password else text
