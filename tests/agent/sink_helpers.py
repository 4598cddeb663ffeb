"""Shared by the e-mail and webhook sink tests: a throwaway TLS certificate for 127.0.0.1,
a composed ticket with a requester and CC, a wait on a condition with a deadline, and the
outbox that drives a write-only sink as the agent does (its record is what the sink reads)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agent.delivery.outbox import Delivery, Outbox
from agent.delivery.sinks.base import Sink
from agent.store import Store
from diagnostics.model import Finding, Status
from rma.tickets import CounterRef, ProblemContext, Role, Ticket, compose, idempotency_key

NOW = dt.datetime(2025, 11, 26, 15, 30, tzinfo=dt.UTC)
START = dt.datetime(2025, 11, 26, 9, 15, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Cert:
    cert_file: Path  # self-signed: a client trusts it by passing it as its ca_file
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, self.key_file)
        return context


def make_cert(directory: Path, name: str = "server") -> Cert:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / f"{name}.crt", directory / f"{name}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return Cert(cert_file, key_file)


def make_ticket(serial: str = "FFC0002", cc: tuple[str, ...] = ("area-manager@example.com",)):
    found = Finding(
        check_id="counter.offline",
        status=Status.FAIL,
        code="refused",
        summary=f"Counter {serial} does not answer",
        at=NOW,
        site="LDN01",
        subject=serial,
        evidence={"consecutive_failures": 3},
    )
    ticket: Ticket = compose(
        ProblemContext(
            key=idempotency_key("counter.offline", serial, START),
            site_code="LDN01",
            site_name="Oxford Street",
            timezone="Europe/London",
            counters=(CounterRef(serial, "Main door"),),
            findings=(found,),
            started_at=START,
            requester="store-it@example.com",
            cc=cc,
            role=Role.CUSTOMER,
            now=NOW,
        )
    )
    return ticket


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met before the deadline")
        time.sleep(0.01)


def file_via_outbox(
    sink: Sink,
    state: Path,
    ticket: Ticket,
    attachments: dict[str, bytes] | None = None,
    *,
    now: dt.datetime = NOW,
) -> Delivery:
    """Queue ``ticket`` for ``sink`` in the outbox of ``state`` and run one delivery."""
    with Store.open(state) as store:
        outbox = Outbox(store, state)
        outbox.enqueue_ticket([sink], ticket, incident_id=None, attachments=attachments, now=now)
        [done] = outbox.deliver([sink], now)
    return done


def follow_up_via_outbox(
    sink: Sink,
    state: Path,
    key: str,
    body: str,
    at: dt.datetime,
    *,
    status: str | None = None,
    attachments: dict[str, bytes] | None = None,
    author: str = "ffc-agent",
    now: dt.datetime = NOW,
) -> list[Delivery]:
    """Queue a follow-up on ticket ``key`` for ``sink`` and run one delivery."""
    with Store.open(state) as store:
        outbox = Outbox(store, state)
        outbox.enqueue_message(
            [sink],
            key,
            author=author,
            body=body,
            at=at,
            status=status,
            attachments=attachments,
            now=now,
        )
        return outbox.deliver([sink], now)
