"""The planted-secret test: secrets put where a gateway really holds them never leave it.

Distinct secrets are planted in the configuration (the counter's API password, the webhook's
signing secret), in what the device prints over SSH (a Wi-Fi passphrase, the counter password
in a service's log line, a PEM private key) and in the agent's own log lines (the counter
password, a bearer token). Then the counter's camera goes missing, so a hardware-fault ticket
is filed with its diagnostics bundle, locally and to a webhook on 127.0.0.1. Everything that
leaves is read back whole — every file of the bundle, the ticket's JSON and page, what the
webhook received, the log stream and the bundle's log excerpt, the ``--json`` output of the
command line, every text file in the state directory — and none of the planted values may be
in any of it, while the ordinary values support needs (serial, site, readings, commands) stay.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.config import load_config
from agent.delivery.outbox import DELIVERED
from agent.delivery.sinks import LocalSink
from agent.service.logs import LogRing, setup_logging
from agent.store import Store
from simulator import FakeClock, Fleet, SimCounter, SimSite
from tests.agent.test_webhook_sink import SECRET as WEBHOOK_SECRET
from tests.agent.test_webhook_sink import Receiver, _Handler, _Server, make_cert
from tests.sshd import Sshd

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
WEEK = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}
SERIAL = "FFC7001"
SITE_NAME = "Oxford Street"
DISK_PCT = 87

# planted, each distinct, none a word that could appear by chance
COUNTER_PASSWORD = "Ctr-pl4nted-Pw-9fK2xQ"  # config: the counter's API password
DEVICE_PSK = "Wpa-pl4nted-Psk-66TqZ"  # device output: psk=...
DEVICE_DB_PASSWORD = "Db-pl4nted-Pw-31mNc"  # device output: password=...
BEARER_TOKEN = "Brr-pl4nted-T0ken-5531xyzQ"  # log line: Authorization: Bearer ...
PEM_BODY = [  # device output: a private key a careless script printed
    "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW",
    "QyNTUxOQAAACDpl4ntedKeyMaterialForTheTestOnly0123456789abcdefAAAAJiA1b2Z",
    "gNW9mAAAAAtzc2gtZWQyNTUxOQAAACDpl4ntedKeyMaterialForTheTestOnly01234567",
]
PEM = (
    "-----BEGIN OPENSSH PRIVATE KEY-----\n"
    + "\n".join(PEM_BODY)
    + "\n-----END OPENSSH PRIVATE KEY-----"
)
PLANTED = {
    "counter password": COUNTER_PASSWORD,
    "webhook secret": WEBHOOK_SECRET,
    "device psk": DEVICE_PSK,
    "device password": DEVICE_DB_PASSWORD,
    "bearer token": BEARER_TOKEN,
    **{f"pem line {i}": line for i, line in enumerate(PEM_BODY)},
}

KERNEL = "dmesg --level=err,crit,alert,emerg"
DMESG = "\n".join(
    [
        "[   14.201337] brcmfmac: wpa_supplicant: association failed, psk=" + DEVICE_PSK,
        f"[   15.004211] mmc0: ffc-sync db login admin:{COUNTER_PASSWORD} refused",
        f"[   15.300000] ffc-sync: retrying with password={DEVICE_DB_PASSWORD}",
        "[   16.000001] ffc-sync: key dump follows",
        *PEM.splitlines(),
        "[   17.123456] mmc0: I/O error, dev mmcblk0, sector 2048",
        "",
    ]
)


@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[Receiver]:
    """The webhook helpdesk on 127.0.0.1 (HTTPS; it checks every signature)."""
    cert = make_cert(tmp_path / "tls")
    server = _Server(("127.0.0.1", 0), _Handler)
    server.socket = cert.server_context().wrap_socket(server.socket, server_side=True)
    server.receiver = Receiver(f"https://127.0.0.1:{server.server_address[1]}/intake", cert)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server.receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def write_config(tmp_path: Path, fleet: Fleet, sshd: Sshd, receiver: Receiver) -> Path:
    text = fleet.agent_config_toml(
        tmp_path / "state",
        probe_timeout_seconds=3,
        agent={"confirm_checks": 1, "ssh_seconds": 0},
    )
    assert f'password = "{COUNTER_PASSWORD}"' in text  # planted in the config
    text = text.replace(
        '[[sinks]]\ntype = "local"\n',
        f"""[counters.ssh]
user = "{sshd.user}"
key_file = "{sshd.client_key}"
port = {sshd.port}

[[sinks]]
type = "local"

[[sinks]]
type = "webhook"
name = "chain-intake"
url = "{receiver.url}"
secret = "{WEBHOOK_SECRET}"
ca_file = "{receiver.cert.cert_file}"
timeout_seconds = 10
""",
    )
    path = tmp_path / "agent.toml"
    # the ladder's reboot is checked at once, not by the next cycle: this is about secrets
    path.write_text(text + "\n[remediation]\nrecheck_seconds = 0\n")
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        cwd=ROOT,
        env={k: v for k, v in os.environ.items() if not k.startswith("FFC_AGENT_TEST")},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


def untar(data: bytes) -> dict[str, str]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        out = {}
        for member in tar.getmembers():
            handle = tar.extractfile(member)
            assert handle is not None
            out[member.name] = handle.read().decode("utf-8", "replace")
        return out


def every_file(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` as text; bundles are opened and read file by file."""
    out = {}
    for path in sorted(folder.rglob("*")):
        if not path.is_file():
            continue
        data = path.read_bytes()
        if path.name.endswith(".tar.gz"):
            out |= {f"{path}!{name}": text for name, text in untar(data).items()}
            continue
        # SQLite pages and images too: a secret stored as text is still those bytes
        out[str(path)] = data.decode("utf-8", "replace")
    return out


def leaks(texts: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{what} in {where}"
        for where, text in texts.items()
        for what, secret in secrets.items()
        if secret in text
    ]


def key_lines(key_file: Path) -> dict[str, str]:
    """The body of the agent's own SSH private key: a secret the config only points at."""
    lines = key_file.read_text().splitlines()[1:-1]
    assert lines
    return {f"ssh client key line {i}": line for i, line in enumerate(lines) if len(line) >= 16}


def test_planted_secrets_leave_in_no_bundle_ticket_or_log_line(
    tmp_path: Path, sshd: Sshd, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    now = datetime.now(UTC).replace(microsecond=0)  # the CLI below runs on the real clock
    clock = FakeClock(now)
    fleet = Fleet(
        [SimSite("LDN01", SITE_NAME, "Europe/London", WEEK)],
        [SimCounter(SERIAL, "Main door", "LDN01", base_rate=150.0, password=COUNTER_PASSWORD)],
        seed=3,
        clock=clock,
    )
    stderr = io.StringIO()
    root = logging.getLogger()
    handlers = list(root.handlers)
    with fleet:
        fleet.start()
        path = write_config(tmp_path, fleet, sshd, receiver)
        enrolled = CliRunner().invoke(cli, ["enroll", SERIAL, "--config", str(path), "--json"])
        assert enrolled.exit_code == 0, enrolled.output
        # the device: camera gone (an RMA), disk filling, and secrets in what it prints
        sshd.write_state(
            camera=False,
            disk_used_pct=DISK_PCT,
            outputs={KERNEL: {"stdout": DMESG, "stderr": "", "exit": 0}},
        )
        config = load_config(path)
        try:
            with Store.open(config.agent.state_dir) as store:
                runner = make_runner(config, store, clock=clock)
                # the daemon's wiring: the log stream and the bundle's excerpt scrub with the
                # runner's redactor, which knows every secret of the configuration
                setup_logging(1, redactor=runner.redactor, stream=stderr, journald=False)
                ring = LogRing(redactor=runner.redactor)
                root.addHandler(ring)
                runner.tickets.evidence.log_excerpt = ring.text
                log = logging.getLogger("agent.test")
                log.warning("counter %s refused the password %s", SERIAL, COUNTER_PASSWORD)
                log.warning("helpdesk said 401 to Authorization: Bearer %s", BEARER_TOKEN)
                log.info("plain news: site %s has %s counters", SITE_NAME, 1)
                result = runner.run_cycle()
                items = runner.tickets.outbox.items()
        finally:
            for handler in root.handlers[:]:
                if handler not in handlers:
                    root.removeHandler(handler)

        health = [a for a in result.assessed if a.finding.check_id == "counter.device.health"]
        assert health and health[0].finding.code == "hardware_fault" and health[0].genuine
        tickets = [t for t in result.tickets if t.counters == [SERIAL]]
        assert {t.number for t in tickets} >= {"L-000001"}
        assert {(i.sink, i.state) for i in items if i.kind == "create"} == {
            ("local", DELIVERED),
            ("chain-intake", DELIVERED),
        }

        listed = run("tickets", "list", "--config", str(path), "--json")
        checked = run("check", "--config", str(path), "--json")
        human = run("check", "--config", str(path))
    assert listed.returncode == 0, listed.stderr
    assert checked.returncode in (0, 1, 2), checked.stderr

    state = config.agent.state_dir
    local = LocalSink(state / "tickets")
    [ticket] = [t for t in local.list() if t.counters == [SERIAL] and "RMA" in t.subject]
    assert ticket.number is not None
    [bundle_name] = [a.name for a in ticket.attachments if a.name.endswith(".tar.gz")]
    bundle = untar((local.directory / ticket.number / bundle_name).read_bytes())
    names = {name.split("/", 1)[1] for name in bundle}
    assert {"manifest.json", "findings.json", "report.html", "log-excerpt.txt"} <= names
    assert any(name.startswith("device/") for name in names)

    everything: dict[str, str] = {
        "ticket.json": (state / "tickets" / f"{ticket.number}.json").read_text(),
        "ticket.md": (state / "tickets" / f"{ticket.number}.md").read_text(),
        "agent stderr": stderr.getvalue(),
        "log ring": ring.text(),
        # the records as every handler after the agent's own sees them (pytest's capture
        # handler is installed first and formats its caplog.text before the agent scrubs:
        # that text is the test harness's, not a line the agent writes anywhere)
        "caplog records": "\n".join(r.getMessage() for r in caplog.records),
        "enroll output": enrolled.output,
        "tickets list --json": listed.stdout,
        "tickets list stderr": listed.stderr,
        "check --json": checked.stdout,
        "check stderr": checked.stderr,
        "check": human.stdout + human.stderr,
        **{f"bundle {name}": text for name, text in bundle.items()},
        **{f"webhook {s.path}": s.body.decode("utf-8", "replace") for s in receiver.seen},
        **{f"webhook headers {i}": json.dumps(s.headers) for i, s in enumerate(receiver.seen)},
        **every_file(state),
    }
    secrets = PLANTED | key_lines(sshd.client_key)
    assert leaks(everything, secrets) == [], "\n".join(leaks(everything, secrets))

    # the planted values did get where they were planted: the test is not vacuous
    assert any(o.probe == "api" and o.ok for o in result.observations)  # the password works
    device = bundle_text(bundle, "device/")
    assert "psk=[REDACTED]" in device and "password=[REDACTED]" in device
    assert "-----OPENSSH PRIVATE KEY [REDACTED]-----" in device
    assert "admin:[REDACTED]" in device  # the counter password, known by value
    assert "Authorization: Bearer [REDACTED]" in stderr.getvalue()
    assert "refused the password [REDACTED]" in ring.text()
    assert receiver.seen and all(s.signature_ok for s in receiver.seen)  # signed with it

    # and what support needs is still there
    shown = "\n".join(bundle.values())
    assert SERIAL in shown and SITE_NAME in shown
    assert f"{DISK_PCT}%" in bundle_text(bundle, "device/") and "df -P /" in shown
    assert "mmc0: I/O error" in shown  # the kernel line next to the secrets is kept
    findings = next(t for name, t in bundle.items() if name.endswith("/findings.json"))
    assert re.search(rf'"disk_used_pct": {DISK_PCT}(\.0)?\b', findings)
    assert f"plain news: site {SITE_NAME} has 1 counters" in ring.text()
    assert SERIAL in everything["ticket.md"] and SITE_NAME in everything["ticket.md"]
    assert SERIAL in listed.stdout and SERIAL in checked.stdout


def bundle_text(bundle: dict[str, str], prefix: str) -> str:
    """The files of the bundle under ``prefix`` (``device/``: the command outputs)."""
    return "\n".join(
        text for name, text in bundle.items() if name.split("/", 1)[1].startswith(prefix)
    )
