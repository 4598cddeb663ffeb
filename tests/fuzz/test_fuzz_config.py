"""Fuzzing the config loader: any file is a ``Config`` or a ``ConfigError``, never a secret.

``load_config`` promises that nothing else escapes for a bad file: ``config check`` prints
``ConfigError.lines`` and exits 78, the daemon keeps its running config on a bad reload.
Fuzzed three ways: any bytes, any text, and a valid file made wrong one field at a time
(random values and types, unknown keys, a table replaced by a scalar, a key removed). A
password in the file must never appear in an error line. The state engineer's branch
(``state``) hardens the loader; tests that find an escape here are xfail (not strict)
until it is merged, with the input named.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from agent.config import Config, ConfigError, load_config
from tests.fuzz.hostile import toml_document, toml_values

SECRET = "s3cret-Pa55word-do-not-echo"
BASE: dict[str, Any] = {
    "agent": {"state_dir": "state", "cycle_seconds": 300, "requester": "it@example.com"},
    "sites": [
        {
            "code": "LDN01",
            "name": "London",
            "timezone": "Europe/London",
            "holidays": "GB-ENG",
            "closed_on_public_holidays": True,
            "opening_hours": {"mon": "09:00-20:00", "sat": "10:00-18:00"},
            "closures": [{"from": "2025-01-13", "to": "2025-01-19", "reason": "refit"}],
            "quiet_hours": "21:00-08:00",
        }
    ],
    "counters": [
        {
            "serial": "FFC0001",
            "name": "Main door",
            "site": "LDN01",
            "host": "127.0.0.1",
            "username": "admin",
            "password": SECRET,
            "ssh": {"user": "support", "key_file": "ssh-key"},
        }
    ],
    "sinks": [{"type": "local"}],
    "metrics": {"textfile": "", "http_port": 9400},
    "mqtt": {"host": "127.0.0.1", "username": "u", "password": SECRET},
}
# where a mutation may land: a path to a table, and the keys that table knows
TABLES: list[tuple[tuple[str | int, ...], tuple[str, ...]]] = [
    (("agent",), ("state_dir", "role", "cycle_seconds", "cc", "shadow_checks", "max_parallel")),
    (("sites", 0), ("code", "timezone", "holidays", "closures", "special_hours", "quiet_hours")),
    (("sites", 0, "opening_hours"), ("mon", "tue", "sun")),
    (("counters", 0), ("serial", "site", "host", "port", "password", "password_file", "api")),
    (("counters", 0, "ssh"), ("user", "key_file", "port")),
    (("sinks", 0), ("type", "directory", "url", "token")),
    (("metrics",), ("textfile", "http_port", "http_host")),
    (("mqtt",), ("host", "port", "topic", "tls", "ca_file", "password")),
    ((), ("agent", "sites", "counters", "sinks", "notifications", "mqtt")),
]

ESCAPES = (
    "escapes found by fuzzing, fixed on the state branch (load_config: every failure is a "
    "ConfigError): see the @example inputs; merge, then drop this mark"
)


@pytest.fixture(scope="module")
def folder() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ffc-fuzz-config-") as name:
        (Path(name) / "ssh-key").write_text("not a key\n")
        yield Path(name)


def load(folder: Path, data: bytes) -> Config | None:
    path = folder / "ffc-agent.toml"
    path.write_bytes(data)
    try:
        config = load_config(path)
    except ConfigError as exc:
        assert exc.lines and all(isinstance(line, str) and line for line in exc.lines)
        assert not any(SECRET in line for line in exc.lines), exc.lines
        return None
    assert isinstance(config, Config) and config.sites
    sites = {s.code for s in config.sites}
    assert all(c.site in sites for c in config.counters)
    assert SECRET not in repr(config)
    config.secret_values()
    return config


def test_the_base_file_loads(folder: Path) -> None:
    assert load(folder, toml_document(BASE).encode()) is not None


@settings(max_examples=200)
@given(data=st.binary(max_size=300))
@example(data=b"\xef\xbb\xbf[agent]\n")
def test_any_bytes(folder: Path, data: bytes) -> None:
    load(folder, data)


@settings(max_examples=200)
@given(text=st.text(alphabet=st.sampled_from(list("[]{}=\"'.,#=\n abc123-:TZ")), max_size=200))
def test_any_text_of_toml_characters(folder: Path, text: str) -> None:
    load(folder, text.encode())


def test_more_digits_than_python_converts(folder: Path) -> None:
    """Escaped on main: tomllib's own ValueError (int() refuses more than 4,300 digits)."""
    load(folder, b"x = 1" + b"0" * 5000)


@settings(max_examples=30)
@given(depth=st.integers(1, 20_000), opener=st.sampled_from(["x = [", "x = {a = "]))
@example(depth=5_000, opener="x = [")  # escaped on main: RecursionError from tomllib
def test_deep_nesting(folder: Path, depth: int, opener: str) -> None:
    if opener.endswith("["):
        text = "x = " + "[" * depth + "]" * depth
    else:
        text = "x = " + "{a = " * depth + "1" + "}" * depth
    load(folder, text.encode())


@st.composite
def mutated(draw: st.DrawFn) -> dict[str, Any]:
    data = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 3))):
        path, keys = draw(st.sampled_from(TABLES))
        table: Any = data
        try:
            for part in path:
                table = table[part]
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced this table
        if not isinstance(table, dict):
            continue
        key = draw(st.one_of(st.sampled_from(keys), st.text(min_size=1, max_size=10)))
        action = draw(st.integers(0, 4))
        if action == 0 and key in table:
            del table[key]
        elif action == 1 and path:  # the table itself becomes a scalar or a list
            parent: Any = data
            for part in path[:-1]:
                parent = parent[part]
            parent[path[-1]] = draw(toml_values)
        else:
            table[key] = draw(toml_values)
    return data


@settings(max_examples=200)
@given(data=mutated())
@example(data={**BASE, "agent": {"state_dir": "a\x00b"}})
@example(data={**BASE, "counters": [{**BASE["counters"][0], "password_file": "a\x00b"}]})
@example(data={**BASE, "agent": {"cycle_seconds": float("nan")}})
@example(data={**BASE, "sites": [{**BASE["sites"][0], "timezone": "\x00" + "x" * 300}]})
def test_structured_but_wrong(folder: Path, data: dict[str, Any]) -> None:
    try:
        text = toml_document(data)
    except ValueError:  # an int too long for str(): not a file anyone can write either
        return
    load(folder, text.encode())


@settings(max_examples=100)
@given(
    value=st.one_of(
        st.just(SECRET),
        st.builds(lambda v: [SECRET, v], toml_values),
        st.builds(lambda v: {"x": SECRET, "y": v}, toml_values),
    ),
    where=st.sampled_from(["counters", "mqtt"]),
    broken=toml_values,
)
def test_a_password_is_never_echoed(folder: Path, value: Any, where: str, broken: Any) -> None:
    data = copy.deepcopy(BASE)
    table = data["counters"][0] if where == "counters" else data["mqtt"]
    table["password"] = value
    table["port"] = broken  # usually wrong too: the error lines are printed side by side
    load(folder, toml_document(data).encode())
