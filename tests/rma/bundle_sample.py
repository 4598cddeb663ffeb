"""A realistic bundle input for the bundle and report tests, with secrets planted everywhere.

One counter at a London store stopped counting at 09:30 on a Thursday and a stretch of slots
went missing after that; the live view is covered. The secrets below are planted in the
configuration, a device output, the log excerpt and a finding's evidence; the tests prove that
none of them survives anywhere in the bundle.
"""

from __future__ import annotations

import io
import math
import random
from datetime import UTC, datetime, timedelta

from PIL import Image, ImageDraw, ImageFilter

from diagnostics.model import Assessed, Decision, Finding, Status, Verdict
from rma.bundle import BundleInput, Collected, CommandOutput, RemediationStep, SeriesRow

# --- planted secrets (each distinctive, so a grep cannot miss one) ---
CONFIG_PASSWORD = "Zq7-counter-Pass!42"  # a counter's API password in the config
SMTP_PASSWORD = "smtp-Secret%2024/x"  # a sink password with URL-special characters
DEVICE_TOKEN = "a1b2c3d4e5f6071829304a5b6c7d8e9f"  # an API token in a device output
BEARER = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJmZmMifQ.c2lnbmF0dXJlLXRlc3Q"
PEM_BODY = "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0"
URL_PASSWORD = "url-pw-9f8e7d"  # in a finding's evidence, inside a URL
WIFI_PSK = "psk-wifi-StoreNet-77"

CONFIG_SECRETS = {CONFIG_PASSWORD, SMTP_PASSWORD}
PLANTED = [CONFIG_PASSWORD, SMTP_PASSWORD, DEVICE_TOKEN, BEARER, PEM_BODY, URL_PASSWORD, WIFI_PSK]

# --- ordinary values that must survive ---
SERIAL = "FFC0002"
PEER = "FFC0003"
SITE = "LDN01"
SITE_NAME = "Oxford Street"
KEY = "ffc-3f9a1c2b7d4e5a60"
ORDINARY = [SERIAL, SITE, SITE_NAME, KEY, "counter.counts.stopped", "zero_run", "612.4"]

NOW = datetime(2025, 6, 26, 14, 30, tzinfo=UTC)  # 15:30 in London (BST)
STARTED = datetime(2025, 6, 26, 8, 30, tzinfo=UTC)  # 09:30 London
CREATED = datetime(2025, 6, 26, 14, 45, tzinfo=UTC)


def _expected(local_hour: float) -> float:
    """A shop door's day: open 09:00-20:00 local, busiest early afternoon."""
    if not 9 <= local_hour < 20:
        return 0.0
    return 4 + 58 * math.exp(-(((local_hour - 13.5) / 3.2) ** 2))


def series(counter: str = SERIAL, seed: int = 7, broken: bool = True) -> list[SeriesRow]:
    """Two days of 15-minute slots; the counter reads zero from 09:30 to 12:00 on the 26th,
    then nothing arrives until 14:30."""
    rng = random.Random(seed)
    rows = []
    start = datetime(2025, 6, 24, 23, 0, tzinfo=UTC)  # 00:00 London on the 25th
    for i in range(int((NOW - start) / timedelta(minutes=15))):
        at = start + timedelta(minutes=15 * i)
        local_hour = (at + timedelta(hours=1)).hour + at.minute / 60
        exp = _expected(local_hour)
        spread = 2.2 * math.sqrt(exp) + 0.12 * exp
        low, high = max(0.0, exp - spread), exp + spread
        total = max(0, round(rng.gauss(exp, math.sqrt(exp) + 0.5))) if exp else 0
        zero = broken and STARTED <= at < datetime(2025, 6, 26, 11, 0, tzinfo=UTC)
        missing = broken and datetime(2025, 6, 26, 11, 0, tzinfo=UTC) <= at
        if zero:
            total = 0
        count_in = total // 2 + (total % 2)
        rows.append(
            SeriesRow(
                start=at,
                counter=counter,
                count_in=None if missing else count_in,
                count_out=None if missing else total - count_in,
                expected=round(exp, 2),
                expected_low=round(low, 2),
                expected_high=round(high, 2),
                missing=missing,
            )
        )
    return rows


def scene(covered: bool = False, size: tuple[int, int] = (768, 576), exif: bool = False) -> bytes:
    """A synthetic view down onto a shop entrance; ``covered``: a bag over most of it."""
    rng = random.Random(3)
    img = Image.new("RGB", size, (148, 140, 128))
    d = ImageDraw.Draw(img)
    w, h = size
    for i in range(0, w, w // 12):  # floor tiles
        d.line([(i, 0), (i, h)], fill=(120, 112, 100), width=3)
    for j in range(0, h, h // 9):
        d.line([(0, j), (w, j)], fill=(120, 112, 100), width=3)
    d.rectangle([w * 0.08, h * 0.1, w * 0.3, h * 0.9], fill=(70, 90, 120))  # door frame
    d.rectangle([w * 0.7, h * 0.15, w * 0.92, h * 0.55], fill=(180, 60, 50))  # a display
    for _ in range(6):  # people from above
        x, y = rng.randrange(w), rng.randrange(h)
        d.ellipse([x - 22, y - 22, x + 22, y + 22], fill=(40, 35, 30))
    if covered:
        d.polygon(
            [(0, 0), (w * 0.85, 0), (w * 0.7, h * 0.8), (0, h)], fill=(25, 25, 28)
        )  # a dark bag over most of the lens
        img = img.filter(ImageFilter.GaussianBlur(2))
    out = io.BytesIO()
    if exif:
        ex = Image.Exif()
        ex[0x010F] = "FootfallCam"  # Make
        ex[0x0131] = f"firmware token={DEVICE_TOKEN}"  # Software: a secret in EXIF
        img.save(out, "JPEG", quality=92, exif=ex)
    else:
        img.save(out, "JPEG", quality=92)
    return out.getvalue()


def findings() -> list[Assessed]:
    stopped = Finding(
        check_id="counter.counts.stopped",
        status=Status.FAIL,
        code="zero_run",
        summary="no counts for 2.5 h of opening time since 09:30",
        at=NOW,
        site=SITE,
        subject=SERIAL,
        evidence={
            "zero_since": STARTED.isoformat(),
            "last_slot_end": datetime(2025, 6, 26, 11, 0, tzinfo=UTC).isoformat(),
            "expected": 612.4,
            "observed": 0,
            "log10_probability": -9.3,
            "source": f"http://admin:{URL_PASSWORD}@10.20.0.12/cgi-bin/apiCount.cgi",
            "password": CONFIG_PASSWORD,
        },
        remediation="check the live view; restart the counting service",
    )
    blocked = Finding(
        check_id="counter.liveview.blocked",
        status=Status.FAIL,
        code="covered",
        summary="the live view is covered (78 % of the view hidden)",
        at=NOW,
        site=SITE,
        subject=SERIAL,
        evidence={"kind": "covered", "fraction": 0.78, "snapshots": 3},
    )
    missing = Finding(
        check_id="counter.counts.missing",
        status=Status.WARN,
        code="missing",
        summary="14 slots have not arrived since 12:00",
        at=NOW,
        site=SITE,
        subject=SERIAL,
        evidence={"start": "2025-06-26T11:00:00+00:00", "end": NOW.isoformat(), "slots": 14},
    )
    peer = Finding(
        check_id="counter.counts.level",
        status=Status.WARN,
        code="under_count",
        summary="FFC0003 counted 12 % fewer than its peers on Tuesday",
        at=NOW,
        site=SITE,
        subject=PEER,
        evidence={"factor": 0.88},
    )
    return [
        Assessed(stopped, Verdict(Decision.GENUINE, ("no rule explains it: the store is open",))),
        Assessed(blocked, Verdict(Decision.GENUINE, ("confirmed on 3 snapshots in a row",))),
        Assessed(
            missing,
            Verdict(
                Decision.PENDING,
                ("the counter keeps unsent counts for 7 days",),
                rule="upload_window",
                until=NOW + timedelta(days=5),
            ),
        ),
        Assessed(
            peer,
            Verdict(
                Decision.FALSE_ALARM,
                ("peers show the same dip: a real traffic drop",),
                rule="peers_same_dip",
            ),
        ),
    ]


def commands() -> list[CommandOutput]:
    return [
        CommandOutput(
            command="uptime",
            exit_status=0,
            stdout=" 15:31:02 up 12 days,  3:04,  0 users,  load average: 0.08, 0.12, 0.10\n",
            elapsed_s=0.21,
            counter=SERIAL,
            at=NOW,
        ),
        CommandOutput(
            command="cat /etc/ffc/device.conf",
            exit_status=0,
            stdout=(
                "serial=FFC0002\nserver=portal.footfallcam.example\n"
                f'api_token={DEVICE_TOKEN}\nwpa_psk="{WIFI_PSK}"\nmode=bidirectional\n'
                f"upload_url=https://ffc:{SMTP_PASSWORD}@upload.example/data\n"
            ),
            elapsed_s=0.18,
            counter=SERIAL,
            at=NOW,
        ),
        CommandOutput(
            command="systemctl is-active ffc-counting",
            exit_status=3,
            stdout="failed\n",
            stderr="",
            elapsed_s=0.35,
            counter=SERIAL,
            at=NOW,
        ),
    ]


def log_excerpt() -> str:
    return (
        "2025-06-26T08:30:04Z INFO agent.runner cycle 412 started\n"
        "2025-06-26T08:30:05Z DEBUG agent.transport.http GET http://10.20.0.12/cgi-bin/"
        f"access_token.cgi?username=admin&password={CONFIG_PASSWORD} -> 200\n"
        "2025-06-26T08:30:05Z DEBUG agent.transport.http headers: "
        f"{{'Authorization': 'Bearer {BEARER}'}}\n"
        "2025-06-26T08:31:10Z WARNING agent.probes.ssh loaded key:\n"
        "-----BEGIN OPENSSH PRIVATE KEY-----\n"
        f"{PEM_BODY}\n{PEM_BODY[::-1]}\n"
        "-----END OPENSSH PRIVATE KEY-----\n"
        "2025-06-26T09:00:00Z INFO diagnostics counter FFC0002 zero run 09:30-now, "
        "expected 612.4\n"
        "2025-06-26T14:30:00Z INFO agent.incidents incident ffc-3f9a1c2b7d4e5a60 confirmed\n"
    )


def sample_input(**overrides: object) -> BundleInput:
    base: dict[str, object] = {
        "agent_version": "0.1.0",
        "created_at": CREATED,
        "key": KEY,
        "site": SITE,
        "site_name": SITE_NAME,
        "timezone": "Europe/London",
        "counters": (SERIAL,),
        "subject": "FFC0002 'Main door' stopped counting since 09:30",
        "category": "Data Accuracy Issue",
        "started_at": STARTED,
        "findings": findings(),
        "series": series() + series(PEER, seed=11, broken=False),
        "snapshot": scene(covered=True, exif=True),
        "snapshot_at": NOW,
        "reference": scene(),
        "commands": commands(),
        "log_excerpt": log_excerpt(),
        "remediation": [
            RemediationStep(NOW - timedelta(minutes=20), "re-fetch the API token", "no change"),
            RemediationStep(
                NOW - timedelta(minutes=12),
                "restart the counting service over SSH",
                "service failed again after 40 s",
                detail="systemctl restart ffc-counting; is-active: failed",
            ),
        ],
        "collected": [
            Collected("count slots", "agent.probes.counter_api", 1.42, size=18_400, at=NOW),
            Collected("live-view snapshot", "agent.probes.snapshot", 0.88, size=61_000, at=NOW),
            Collected("device commands", "agent.probes.device", 0.74, at=NOW),
            Collected(
                "clock offset",
                "agent.probes.device",
                5.0,
                ok=False,
                timed_out=True,
                error="timeout: no answer in 5.0 s",
                at=NOW,
            ),
        ],
    }
    base.update(overrides)
    return BundleInput(**base)  # type: ignore[arg-type]
