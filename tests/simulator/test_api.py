"""The simulated counters' HTTP API against the documented format (docs/counter-api.md)."""

from __future__ import annotations

import io
import itertools
import re
import tomllib
from datetime import datetime, timedelta
from xml.etree import ElementTree as ET
from zoneinfo import ZoneInfo

import pytest
import requests
from PIL import Image

from tests.simulator.helpers import NOW, counts, token

pytestmark = pytest.mark.integration
ISO_WITH_OFFSET = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d\d:\d\d$")
TODAY = NOW.strftime("%Y%m%d")


def test_token_for_good_credentials_and_401_with_a_json_error_for_bad(running):
    url = running.url("FFC0001") + "/cgi-bin/access_token.cgi"
    good = requests.get(url, params={"username": "admin", "password": "pw1"}, timeout=5)
    again = requests.get(url, params={"username": "admin", "password": "pw1"}, timeout=5)
    bad = requests.get(url, params={"username": "admin", "password": "nope"}, timeout=5)
    missing = requests.get(url, timeout=5)
    assert good.status_code == 200
    assert good.json()["access_token"] == again.json()["access_token"]  # long-lived
    assert bad.status_code == missing.status_code == 401
    assert bad.json()["status"] == "error" and "password" in bad.json()["message"]
    assert "nope" not in bad.text


def test_counts_need_a_valid_token(running):
    assert counts(running, date_start=TODAY).status_code == 401
    wrong = counts(running, date_start=TODAY, access_token="0" * 40)
    assert wrong.status_code == 401 and "access_token" in wrong.json()["message"]
    other = token(running, "FFC0002", "pw2")  # a token of another device
    assert counts(running, date_start=TODAY, access_token=other).status_code == 401


def test_json_reply_has_device_details_and_rows_matching_the_device(running):
    reply = counts(running, date_start=TODAY, resolution_min="15", access_token=token(running))
    assert reply.status_code == 200
    body = reply.json()
    assert body["serial"] == "FFC0001" and body["model"] and body["firmware"]
    assert body["resolution_min"] == 15 and body["data_format"] == "minute"
    assert ISO_WITH_OFFSET.match(body["device_time"])
    assert datetime.fromisoformat(body["device_time"]) == NOW
    rows = body["data"]
    assert all(ISO_WITH_OFFSET.match(r["timestamp"]) for r in rows)
    start = NOW.replace(hour=0, minute=0, second=0)
    expected = running.expected_counts("FFC0001", start, NOW)
    got = [(datetime.fromisoformat(r["timestamp"]), r["in"], r["out"]) for r in rows]
    assert got == expected and len(got) == 56  # 00:00 to 13:45, nothing of the future


def test_both_spellings_of_apicount_answer_alike(running):
    params = {"date_start": TODAY, "access_token": token(running)}
    a = counts(running, path="/cgi-bin/apiCount.cgi", **params)
    b = counts(running, path="/cgi-bin/apiCount_cgi", **params)
    assert a.status_code == b.status_code == 200
    assert a.json()["data"] == b.json()["data"]


def test_xml_reply_carries_the_same_rows(running):
    tok = token(running)
    as_json = counts(running, date_start=TODAY, access_token=tok).json()
    reply = counts(running, date_start=TODAY, data_type="xml", access_token=tok)
    assert reply.headers["Content-Type"] == "application/xml"
    root = ET.fromstring(reply.content)
    assert root.findtext("serial") == "FFC0001"
    assert root.findtext("resolution_min") == "15"
    rows = [
        {
            "timestamp": r.findtext("timestamp"),
            "in": int(r.findtext("in")),
            "out": int(r.findtext("out")),
        }
        for r in root.iter("row")
    ]
    assert rows == as_json["data"]


@pytest.mark.parametrize(
    ("params", "minutes"),
    [({"data_format": "hour"}, 60), ({"data_format": "second"}, 1)]
    + [({"data_format": "minute", "resolution_min": str(m)}, m) for m in (1, 5, 10, 15, 30, 60)],
)
def test_every_resolution_gives_rows_of_that_length(running, params, minutes):
    body = counts(
        running,
        date_start=TODAY,
        time_start="090000",
        time_end="120000",
        access_token=token(running),
        **params,
    ).json()
    starts = [datetime.fromisoformat(r["timestamp"]) for r in body["data"]]
    assert body["resolution_min"] == minutes
    assert len(starts) == 180 // minutes
    step = timedelta(minutes=minutes)
    assert starts[0].hour == 9 and starts[-1] + step == starts[0].replace(hour=12)
    assert {b - a for a, b in itertools.pairwise(starts)} == {step}


def test_at_most_24_hours_per_call(running):
    tok = token(running)
    day = counts(running, date_start="20260310", date_end="20260311", access_token=tok)
    assert day.status_code == 400 and "24 hours" in day.json()["message"]
    ok = counts(
        running,
        date_start="20260310",
        time_start="120000",
        date_end="20260311",
        time_end="120000",
        access_token=tok,
    )
    assert ok.status_code == 200 and len(ok.json()["data"]) == 96


def test_a_whole_25_hour_local_day_fits_in_one_call(running, clock):
    clock.set(NOW.replace(month=10, day=27))
    body = counts(
        running, date_start="20261025", data_format="hour", access_token=token(running)
    ).json()
    stamps = [r["timestamp"] for r in body["data"]]
    assert len(stamps) == 25
    assert "2026-10-25T01:00:00+01:00" in stamps and "2026-10-25T01:00:00+00:00" in stamps


@pytest.mark.parametrize(
    ("params", "complaint"),
    [
        ({"data_type": "csv"}, "data_type"),
        ({"data_format": "week"}, "data_format"),
        ({"resolution_min": "7"}, "resolution_min"),
        ({"resolution_min": "x"}, "resolution_min"),
        ({"date_start": "2026-03-12"}, "date_start"),
        ({"date_start": "20260231"}, "date_start"),
        ({"date_end": "2026031"}, "date_end"),
        ({"time_start": "2500"}, "time_start"),
        ({"time_start": "126000"}, "time_start"),
        ({"time_end": "1200"}, "time_end"),
        ({"time_start": "120000", "time_end": "110000"}, "after the start"),
        ({"date_start": None}, "date_start is required"),
    ],
)
def test_bad_parameters_are_a_400_with_a_reason(running, params, complaint):
    query = {"date_start": TODAY, "access_token": token(running)}
    query.update(params)
    query = {k: v for k, v in query.items() if v is not None}
    reply = counts(running, **query)
    assert reply.status_code == 400
    assert complaint in reply.json()["message"]


def test_xml_errors_are_xml(running):
    reply = counts(running, date_start="bad", data_type="xml", access_token=token(running))
    assert reply.status_code == 400
    assert ET.fromstring(reply.content).get("status") == "error"


def test_legacy_json_and_xml_with_basic_auth(running):
    url = running.url("FFC0003")
    auth = ("admin", "pw3")
    as_json = requests.get(url + "/pi-cgi/data.json", params={"date": TODAY}, auth=auth, timeout=5)
    as_xml = requests.get(url + "/pi-cgi/data.xml", params={"date": TODAY}, auth=auth, timeout=5)
    assert as_json.status_code == as_xml.status_code == 200
    body = as_json.json()
    assert body["SerialNumber"] == "FFC0003" and body["Interval"] == 15
    paris = ZoneInfo("Europe/Paris")
    start = datetime(2026, 3, 12, tzinfo=paris)
    expected = running.expected_counts("FFC0003", start, start + timedelta(days=1))
    got = [(datetime.fromisoformat(r["Time"]), r["In"], r["Out"]) for r in body["Data"]]
    assert got == expected and got
    root = ET.fromstring(as_xml.content)
    xml_rows = []
    for slot in root.iter("Slot"):
        by_type = {c.get("typeid"): int(c.text) for c in slot.iter("Count")}
        xml_rows.append((datetime.fromisoformat(slot.get("Time")), by_type["3"], by_type["4"]))
    assert xml_rows == expected


def test_legacy_needs_credentials(running):
    url = running.url("FFC0003") + "/pi-cgi/data.json"
    anonymous = requests.get(url, timeout=5)
    wrong = requests.get(url, auth=("admin", "pw1"), timeout=5)
    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous.headers["WWW-Authenticate"].startswith("Basic")


def test_each_device_speaks_only_its_own_api(running):
    legacy = running.url("FFC0003")
    assert requests.get(legacy + "/cgi-bin/access_token.cgi", timeout=5).status_code == 404
    assert requests.get(running.url("FFC0001") + "/pi-cgi/data.json", timeout=5).status_code == 404


def test_snapshot_and_reference_are_768x576_jpegs(running):
    for path in ("/snapshot.jpg", "/reference.jpg"):
        reply = requests.get(running.url("FFC0002") + path, timeout=5)
        assert reply.status_code == 200 and reply.headers["Content-Type"] == "image/jpeg"
        assert Image.open(io.BytesIO(reply.content)).size == (768, 576)
    assert requests.get(running.url("FFC0002") + "/reference.jpg", timeout=5).content == (
        running.reference("FFC0002")
    )


def test_agent_config_points_at_the_running_fleet(running, tmp_path):
    refs = running.write_references(tmp_path / "refs")
    config = tomllib.loads(running.agent_config_toml(tmp_path / "state", tmp_path / "refs"))
    assert config["agent"]["state_dir"] == str(tmp_path / "state")
    assert config["agent"]["role"] == "customer"
    by_serial = {c["serial"]: c for c in config["counters"]}
    for serial, counter in by_serial.items():
        assert counter["port"] == running.port(serial)
        assert counter["host"] == "127.0.0.1"
        assert counter["reference_image"] == str(refs[serial])
    assert by_serial["FFC0003"]["api"] == "pi-cgi" and by_serial["FFC0001"]["group"] == "a"
    assert "group" not in by_serial["FFC0002"]
    london = next(s for s in config["sites"] if s["code"] == "LDN01")
    assert london["opening_hours"]["sun"] == "closed"
    assert london["closures"] == [
        {"from": "2026-03-10", "to": "2026-03-10", "reason": "closed for refit"}
    ]
    assert config["sinks"] == [{"type": "local"}]
