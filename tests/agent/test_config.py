"""agent.config: every kind of mistake gives one readable line at the right path."""

from __future__ import annotations

import copy
import tomllib
from datetime import date, datetime, time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agent.config import (
    EX_CONFIG,
    Config,
    ConfigError,
    LocalSinkConfig,
    example_config,
    load_config,
    parse_config,
    parse_quiet_hours,
)
from diagnostics.calendar import Hours, parse_hours

SECRET = "s3cr3t-Pa55word-planted"


def minimal() -> dict[str, Any]:
    return {
        "sites": [
            {
                "code": "LDN01",
                "name": "London",
                "timezone": "Europe/London",
                "opening_hours": {"mon": "09:00-17:00"},
            }
        ],
        "counters": [{"serial": "FC1", "name": "Entrance", "site": "LDN01", "host": "127.0.0.1"}],
    }


def errors(data: dict[str, Any], **kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data, **kwargs)
    return info.value.lines


def with_(path: str, value: Any, data: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of ``data`` (default: minimal()) with the dotted ``path`` set to ``value``."""
    data = copy.deepcopy(data if data is not None else minimal())
    node: Any = data
    parts = [int(p) if p.isdigit() else p for p in path.split(".")]
    for part in parts[:-1]:
        if isinstance(part, str) and part not in node:
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value
    return data


# --- unknown and missing keys ------------------------------------------------------------------


def test_unknown_top_level_key() -> None:
    assert errors(with_("sitez", [])) == ["sitez: unknown key"]


@pytest.mark.parametrize(
    ("path", "line"),
    [
        ("agent.cycle_second", "agent.cycle_second: unknown key"),
        ("counters.0.prot", "counters[0].prot: unknown key"),
        ("sites.0.closed_on_holidays", "sites[0].closed_on_holidays: unknown key"),
    ],
)
def test_unknown_nested_key(path: str, line: str) -> None:
    assert errors(with_(path, 1)) == [line]


def test_unknown_key_in_ssh_table() -> None:
    data = with_("counters.0.ssh", {"user": "support", "key_file": "/k", "prot": 22})
    assert errors(data) == ["counters[0].ssh.prot: unknown key"]


def test_missing_required_key() -> None:
    data = minimal()
    del data["sites"][0]["timezone"]
    del data["counters"][0]["name"]
    assert errors(data) == [
        "sites[0].timezone: missing required key",
        "counters[0].name: missing required key",
    ]


def test_no_sites_at_all() -> None:
    assert errors({}) == ["sites: missing required key"]
    assert errors({"sites": []}) == ["sites: needs at least one [[sites]] table"]


# --- types and values --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "value", "line"),
    [
        ("agent.cycle_seconds", "abc", "agent.cycle_seconds: expected an integer, got 'abc'"),
        ("agent.cycle_seconds", 0, "agent.cycle_seconds: must be greater than 0, got 0"),
        ("agent.max_parallel", 257, "agent.max_parallel: must be at most 256, got 257"),
        ("agent.probe_timeout_seconds", "5s", "agent.probe_timeout_seconds: expected a number"),
        ("agent.cc", "a@example.com", "agent.cc: expected a list, got 'a@example.com'"),
        ("agent.cc", ["a@example.com", "nope"], "agent.cc[1]: not an e-mail address: 'nope'"),
        ("agent", 5, "agent: expected a table, got 5"),
        ("counters.0.verify_tls", "yes", "counters[0].verify_tls: expected true or false"),
        ("counters.0.host", "http://10.0.0.5/", "counters[0].host: expected a host name or IP"),
    ],
)
def test_wrong_type_or_value(path: str, value: Any, line: str) -> None:
    lines = errors(with_(path, value))
    assert len(lines) == 1
    assert lines[0].startswith(line)


def test_bad_site_code() -> None:
    data = with_("sites.0.code", "LDN 01")
    data["counters"][0]["site"] = "LDN 01"
    assert errors(data) == [
        "sites[0].code: may hold only letters, digits, '_', '.' and '-', got 'LDN 01'"
    ]


@pytest.mark.parametrize(
    ("value", "line"),
    [
        (0, "counters[0].port: must be at least 1, got 0"),
        (70000, "counters[0].port: must be at most 65535, got 70000"),
        ("80", "counters[0].port: expected an integer, got '80'"),
        (True, "counters[0].port: expected an integer, got true"),
    ],
)
def test_bad_port(value: Any, line: str) -> None:
    assert errors(with_("counters.0.port", value)) == [line]


def test_bad_ssh_port() -> None:
    data = with_("counters.0.ssh", {"user": "u", "key_file": "/k", "port": 0})
    assert errors(data) == ["counters[0].ssh.port: must be at least 1, got 0"]


def test_bad_role() -> None:
    assert errors(with_("agent.role", "admin")) == [
        "agent.role: must be one of 'customer', 'footfallcam', got 'admin'"
    ]


def test_bad_timezone_exact_message() -> None:
    assert errors(with_("sites.0.timezone", "Europe/Lndon")) == [
        "sites[0].timezone: unknown time zone 'Europe/Lndon'"
    ]


@pytest.mark.parametrize("zone", ["Europe", "", "/etc/passwd"])
def test_timezone_that_is_not_a_zone(zone: str) -> None:
    assert errors(with_("sites.0.timezone", zone)) == [
        f"sites[0].timezone: unknown time zone {zone!r}"
    ]


def test_bad_holidays_region() -> None:
    lines = errors(with_("sites.0.holidays", "XX"))
    assert len(lines) == 1
    assert lines[0].startswith("sites[0].holidays: ")
    assert "'XX'" in lines[0]


def test_closed_on_public_holidays_needs_a_region() -> None:
    assert errors(with_("sites.0.closed_on_public_holidays", True)) == [
        "sites[0].closed_on_public_holidays: needs 'holidays' (a region such as \"GB-ENG\") "
        "to know the holidays"
    ]


@pytest.mark.parametrize(
    ("hours", "line"),
    [
        ({"mon": "9-17"}, "sites[0].opening_hours.mon: expected 'HH:MM-HH:MM' or 'closed'"),
        ({"tue": "17:00-09:00"}, "sites[0].opening_hours.tue: closing time must be after"),
        # once read as 09:00:00.3-17:00:00.3 and accepted; quiet_hours refused it
        ({"wed": "09.30-17.30"}, "sites[0].opening_hours.wed: expected 'HH:MM-HH:MM' or 'closed'"),
        ({"mond": "09:00-17:00"}, "sites[0].opening_hours.mond: unknown key; the days are mon"),
        ({"sun": 9}, "sites[0].opening_hours.sun: expected a string, got 9"),
    ],
)
def test_bad_opening_hours(hours: dict[str, Any], line: str) -> None:
    lines = errors(with_("sites.0.opening_hours", hours))
    assert len(lines) == 1
    assert lines[0].startswith(line)


@pytest.mark.parametrize(
    "span",
    ["09:30-17:30", " 09:30 - 17:30 ", "09.30-17.30", "0930-1730", "T09:30-17:30", "09:30Z-17:30",
     "9:30-17:30", "09:30-17:30+01:00", "09:30-24:00", "24:00-07:00", "09:60-17:00"],
)  # fmt: skip
def test_opening_hours_and_quiet_hours_read_a_span_alike(span: str) -> None:
    # one reader in diagnostics.calendar serves the calendar, the config and the quiet hours
    def reads(parse: Any) -> bool:
        try:
            parse(span)
        except (ValueError, ConfigError):
            return False
        return True

    accepted = reads(parse_hours)
    assert reads(parse_quiet_hours) == accepted
    assert reads(lambda _: parse_config(with_("sites.0.opening_hours", {"mon": span}))) == accepted
    special = [{"date": "2025-12-24", "hours": span}]
    assert reads(lambda _: parse_config(with_("sites.0.special_hours", special))) == accepted


def test_closure_from_after_to() -> None:
    closure = {"from": date(2025, 3, 12), "to": date(2025, 3, 10), "reason": "refit"}
    assert errors(with_("sites.0.closures", [closure])) == [
        "sites[0].closures[0].from: 2025-03-12 is after 'to' 2025-03-10"
    ]


@pytest.mark.parametrize(
    ("value", "line"),
    [
        ("2025-13-01", "sites[0].closures[0].to: not a real date: '2025-13-01'"),
        ("next week", "sites[0].closures[0].to: expected a date like 2024-12-24, got 'next week'"),
        (20250101, "sites[0].closures[0].to: expected a date like 2024-12-24, got 20250101"),
        (datetime(2025, 3, 1, 9, 0), "sites[0].closures[0].to: expected a date like 2024-12-24"),
    ],
)
def test_closure_bad_date(value: Any, line: str) -> None:
    closure = {"from": "2025-01-01", "to": value, "reason": "refit"}
    lines = errors(with_("sites.0.closures", [closure]))
    assert len(lines) == 1
    assert lines[0].startswith(line)


def test_closure_dates_as_toml_dates_or_strings_are_the_same() -> None:
    as_dates = {"from": date(2025, 3, 10), "to": date(2025, 3, 12), "reason": "refit"}
    as_text = {"from": "2025-03-10", "to": "2025-03-12", "reason": "refit"}
    a = parse_config(with_("sites.0.closures", [as_dates])).sites[0].closures[0]
    b = parse_config(with_("sites.0.closures", [as_text])).sites[0].closures[0]
    assert a == b
    assert (a.start, a.end) == (date(2025, 3, 10), date(2025, 3, 12))


# --- across tables ------------------------------------------------------------------------------


def test_duplicate_site_code() -> None:
    data = minimal()
    data["sites"].append(copy.deepcopy(data["sites"][0]))
    assert errors(data) == ["sites[1].code: duplicate site code 'LDN01' (also sites[0])"]


def test_duplicate_serial() -> None:
    data = minimal()
    data["counters"].append({"serial": "FC1", "name": "Again", "site": "LDN01"})
    assert errors(data) == ["counters[1].serial: duplicate serial 'FC1' (also counters[0])"]


def test_counter_naming_an_unknown_site() -> None:
    assert errors(with_("counters.0.site", "X")) == ["counters[0].site: unknown site 'X'"]


def test_cross_field_errors_come_with_field_errors() -> None:
    data = with_("counters.0.site", "X")
    data["counters"][0]["port"] = 0
    assert errors(data) == [
        "counters[0].site: unknown site 'X'",
        "counters[0].port: must be at least 1, got 0",
    ]


def test_errors_are_in_document_order_and_never_repeated() -> None:
    text = """
[[sites]]
code = "A"
name = "a"
timezone = "Nowhere/Town"
opening_hours = { mon = "9-5" }

[[counters]]
serial = "C1"
name = "c"
site = "B"
port = 0

[agent]
role = "admin"
"""
    lines = errors(tomllib.loads(text))
    assert [line.split(":")[0] for line in lines] == [
        "sites[0].timezone",
        "sites[0].opening_hours.mon",
        "counters[0].site",
        "counters[0].port",
        "agent.role",
    ]
    assert len(set(lines)) == len(lines)


# --- secrets ----------------------------------------------------------------------------------


def test_both_password_and_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET)
    data = with_("counters.0.password", "x")
    data["counters"][0]["password_file"] = "pw"
    assert errors(data, base_dir=tmp_path) == [
        "counters[0].password_file: give either 'password' or 'password_file', not both"
    ]


def test_missing_password_file(tmp_path: Path) -> None:
    lines = errors(with_("counters.0.password_file", "missing.pw"), base_dir=tmp_path)
    assert lines == [
        f"counters[0].password_file: cannot read '{tmp_path / 'missing.pw'}': "
        "No such file or directory"
    ]


def test_empty_password_file(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text("\n")
    lines = errors(with_("counters.0.password_file", "pw"), base_dir=tmp_path)
    assert lines == [f"counters[0].password_file: '{tmp_path / 'pw'}' is empty"]


def test_password_file_is_read_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET + "\n")
    (tmp_path / "ffc.toml").write_text(
        """
[[sites]]
code = "S"
name = "s"
timezone = "UTC"
opening_hours = { mon = "09:00-17:00" }

[[counters]]
serial = "C1"
name = "c"
site = "S"
password_file = "pw"
"""
    )
    counter = load_config(tmp_path / "ffc.toml").counter("C1")
    assert counter.password is not None
    assert counter.password.get_secret_value() == SECRET
    assert counter.password_file == tmp_path / "pw"


def test_password_file_found_in_credentials_directory_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    creds, etc = tmp_path / "credentials", tmp_path / "etc"
    creds.mkdir()
    etc.mkdir()
    (creds / "counter.pw").write_text(SECRET)
    (etc / "counter.pw").write_text("the-wrong-one")
    (etc / "only-here.pw").write_text("from-etc")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    data = with_("counters.0.password_file", "counter.pw")
    data["counters"].append(
        {"serial": "FC2", "name": "b", "site": "LDN01", "password_file": "only-here.pw"}
    )
    config = parse_config(data, base_dir=etc)
    first, second = config.counters
    assert first.password_file == creds / "counter.pw"
    assert first.password is not None and first.password.get_secret_value() == SECRET
    assert second.password is not None and second.password.get_secret_value() == "from-etc"


def test_ssh_key_file_found_in_credentials_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "id_ed25519").write_text("key")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    data = with_("counters.0.ssh", {"user": "support", "key_file": "id_ed25519"})
    config = parse_config(data, base_dir=Path("/etc/ffc-agent"))
    ssh = config.counters[0].ssh
    assert ssh is not None
    assert ssh.key_file == tmp_path / "id_ed25519"
    assert ssh.port == 22


def test_secrets_absent_from_repr_str_and_json(tmp_path: Path) -> None:
    (tmp_path / "pw").write_text(SECRET)
    data = with_("counters.0.password", SECRET)
    data["counters"].append({"serial": "FC2", "name": "b", "site": "LDN01", "password_file": "pw"})
    config = parse_config(data, base_dir=tmp_path)
    for text in (repr(config), str(config), config.model_dump_json(), repr(config.counters)):
        assert SECRET not in text
    assert config.secret_values() == {SECRET}
    assert config.counters[0].password is not None
    assert config.counters[0].password.get_secret_value() == SECRET


def test_secret_never_echoed_in_errors() -> None:
    data = with_("counters.0.password", 12345678)
    data["counters"][0]["port"] = 0  # a second error, so the raw table is carried along
    data["counters"][0]["site"] = "X"  # and a cross-field one too
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert "counters[0].password: expected a string" in info.value.lines
    assert "12345678" not in str(info.value)
    assert info.value.__cause__ is None


def test_secret_values_empty_without_passwords() -> None:
    assert parse_config(minimal()).secret_values() == set()


# --- files ----------------------------------------------------------------------------------------


def test_invalid_toml_names_the_line(tmp_path: Path) -> None:
    path = tmp_path / "ffc.toml"
    path.write_text('[agent]\nrole = "customer"\ncycle_seconds = \n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert len(info.value.lines) == 1
    assert info.value.lines[0].startswith(f"{path}: invalid TOML at line 3 column 17: ")


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "nope.toml")
    assert info.value.lines == [f"{tmp_path / 'nope.toml'}: no such file"]


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path)
    assert info.value.lines == [f"{tmp_path}: is a directory, not a file"]


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "ffc.toml"
    path.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.lines == [f"{path}: not UTF-8 text"]


def test_ex_config() -> None:
    assert EX_CONFIG == 78


# --- what a good file gives -------------------------------------------------------------------


def test_defaults() -> None:
    config = parse_config(minimal())
    agent = config.agent
    assert agent.state_dir == Path("/var/lib/ffc-agent")
    assert (agent.role, agent.cycle_seconds, agent.max_parallel) == ("customer", 300, 8)
    assert agent.probe_timeout_seconds == 5.0
    assert (agent.requester, agent.cc) == ("", ())
    counter = config.counters[0]
    assert (counter.port, counter.api, counter.scheme, counter.verify_tls) == (
        80,
        "cgi-bin",
        "http",
        True,
    )
    assert counter.snapshot_path == "/snapshot.jpg"
    assert counter.username is None and counter.password is None and counter.ssh is None
    assert config.sinks == (LocalSinkConfig(type="local", directory=agent.state_dir / "tickets"),)
    assert config.sites[0].closed_on_public_holidays is False


def test_https_defaults_to_port_443_unless_given() -> None:
    assert parse_config(with_("counters.0.scheme", "https")).counters[0].port == 443
    data = with_("counters.0.scheme", "https")
    data["counters"][0]["port"] = 8443
    counter = parse_config(data).counters[0]
    assert counter.base_url == "https://127.0.0.1:8443"


def test_local_sink_follows_state_dir(tmp_path: Path) -> None:
    data = with_("agent.state_dir", "state")
    data["sinks"] = [{"type": "local"}, {"type": "local", "directory": "/srv/tickets"}]
    config = parse_config(data, base_dir=tmp_path)
    assert config.agent.state_dir == tmp_path / "state"
    assert [s.directory for s in config.sinks] == [
        tmp_path / "state" / "tickets",
        Path("/srv/tickets"),
    ]


def test_unknown_sink_type() -> None:
    assert errors(with_("sinks", [{"type": "jira"}])) == [
        "sinks[0].type: must be one of 'local', 'rt', 'smtp', 'webhook', got 'jira'"
    ]
    assert errors(with_("sinks", [{"directory": "/x"}])) == ["sinks[0].type: missing required key"]


def test_counter_needs_only_serial_name_and_site() -> None:
    data = minimal()
    data["counters"] = [{"serial": "FC9", "name": "Exported", "site": "LDN01", "group": "g"}]
    counter = parse_config(data).counter("FC9")
    assert counter.host is None and counter.base_url is None


def test_config_is_frozen() -> None:
    config = parse_config(minimal())
    with pytest.raises(ValidationError):
        config.agent.cycle_seconds = 5  # type: ignore[misc]


def test_lookups_and_peers() -> None:
    data = minimal()
    data["sites"].append(copy.deepcopy(data["sites"][0]) | {"code": "MAN01"})
    data["counters"] = [
        {"serial": "A1", "name": "a", "site": "LDN01", "group": "front"},
        {"serial": "A2", "name": "b", "site": "LDN01", "group": "front"},
        {"serial": "A3", "name": "c", "site": "LDN01"},
        {"serial": "A4", "name": "d", "site": "LDN01", "group": "back"},
        {"serial": "B1", "name": "e", "site": "MAN01", "group": "front"},
    ]
    config = parse_config(data)
    assert config.site("MAN01").code == "MAN01"
    assert config.counter("A3").name == "c"
    assert [c.serial for c in config.counters_at("LDN01")] == ["A1", "A2", "A3", "A4"]
    assert config.peers("A1") == ["A2"]  # the group, and only at its own site
    assert config.peers("A3") == ["A1", "A2", "A4"]  # no group: the whole site
    assert config.peers("A4") == []
    assert config.counter("B1").peers(config) == []
    with pytest.raises(KeyError):
        config.site("NOPE")
    with pytest.raises(KeyError):
        config.counter("NOPE")


def test_calendar_round_trip() -> None:
    site = {
        "code": "LDN01",
        "name": "London",
        "timezone": "Europe/London",
        "holidays": "GB-ENG",
        "closed_on_public_holidays": True,
        "opening_hours": {d: "09:00-17:30" for d in ("mon", "tue", "wed", "thu", "fri")}
        | {"sat": "10:00-24:00"},
        "closures": [{"from": "2025-03-10", "to": date(2025, 3, 12), "reason": "refit"}],
    }
    calendar = parse_config(with_("sites", [site])).site("LDN01").calendar()
    assert calendar.timezone == "Europe/London"
    assert calendar.weekly[0] == Hours(time(9, 0), time(17, 30))
    assert calendar.weekly[5] == Hours(time(10, 0), time.max)
    assert calendar.weekly[6] is None
    assert not calendar.day(date(2025, 3, 9)).open  # a Sunday
    assert calendar.day(date(2025, 3, 13)).open  # a Thursday after the refit
    for day in (date(2025, 3, 10), date(2025, 3, 12)):  # both ends of the closure
        status = calendar.day(day)
        assert not status.open and "refit" in status.reason
    # The late-summer bank holiday is England's, not Scotland's (GB-SCT has 4 August).
    holiday = calendar.day(date(2025, 8, 25))
    assert not holiday.open and "public holiday" in holiday.reason
    assert calendar.day(date(2025, 8, 4)).open


def test_example_config_loads(tmp_path: Path) -> None:
    text = example_config()
    path = tmp_path / "ffc-agent.toml"
    path.write_text(text)
    config = load_config(path)
    assert isinstance(config, Config)
    assert "password_file" in text  # the real-deployment way is shown
    assert len(config.counters) == 2
    assert sum(c.ssh is not None for c in config.counters) == 1
    site = config.sites[0]
    assert site.holidays and site.closures and site.calendar().weekly[0] is not None
    assert [s.type for s in config.sinks] == ["local"]
    assert config.secret_values()
    assert not any(v in config.model_dump_json() for v in config.secret_values())


def test_helpdesk_sinks_take_their_secrets_from_files(tmp_path: Path) -> None:
    token = tmp_path / "rt.token"
    token.write_text("rt-token-value\n")
    secret = tmp_path / "hook.secret"
    secret.write_text("hmac-secret-value")
    config = parse_config(
        with_(
            "sinks",
            [
                {
                    "type": "rt",
                    "url": "https://rt.example.com/",
                    "token_file": "rt.token",
                    "queues": {"Technical Issue": "Tech"},
                },
                {
                    "type": "smtp",
                    "host": "mail.example.com",
                    "from": "agent@example.com",
                    "to": ["help@example.com"],
                    "username": "agent",
                    "password": "smtp-pass",
                },
                {
                    "type": "webhook",
                    "url": "https://hooks.example.com/x",
                    "secret_file": "hook.secret",
                },
            ],
        ),
        base_dir=tmp_path,
    )
    rt, smtp, hook = config.sinks
    assert rt.url == "https://rt.example.com" and rt.token.get_secret_value() == "rt-token-value"
    assert hook.secret.get_secret_value() == "hmac-secret-value"
    assert smtp.sender == "agent@example.com" and smtp.security == "starttls"
    assert {"rt-token-value", "smtp-pass", "hmac-secret-value"} <= config.secret_values()
    assert "rt-token-value" not in repr(config) and "hmac-secret-value" not in repr(config)


def test_helpdesk_sink_mistakes() -> None:
    assert errors(with_("sinks", [{"type": "rt", "url": "https://rt"}])) == [
        "sinks[0].token: missing: give 'token' or 'token_file'"
    ]
    assert errors(with_("sinks", [{"type": "rt", "url": "ftp://rt", "token": "t"}])) == [
        "sinks[0].url: expected an http:// or https:// URL (not shown: it may hold a token)"
    ]
    assert errors(
        with_("sinks", [{"type": "webhook", "url": "https://u:p@h/x", "secret": "s"}])
    ) == ["sinks[0].url: put credentials in their own setting, not in the URL"]
    lines = errors(with_("sinks", [{"type": "smtp", "host": "m", "to": ["bad"]}]))
    assert "sinks[0].from: missing required key" in lines
    assert "sinks[0].to[0]: not an e-mail address: 'bad'" in lines


def test_remediation_poe_command_placeholders_are_checked() -> None:
    import pytest as _pytest

    from agent.config import RemediationConfig

    ok = RemediationConfig(poe_command=("/usr/local/bin/poe", "{host}", "{poe_port}"))
    assert ok.poe_command[1] == "{host}"
    with _pytest.raises(ValueError, match="unknown placeholder"):
        RemediationConfig(poe_command=("/usr/local/bin/poe", "{port}"))
