"""``[checks."ID"]``: each check's options in the TOML, parsed into its frozen ``Options``."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.config import ConfigError, example_config, parse_config
from agent.store import Store
from diagnostics.checks import REGISTRY


def minimal(**checks: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "agent": {"state_dir": "/tmp/unused"},
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
    if checks:
        data["checks"] = checks
    return data


def errors(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    return info.value.lines


def test_a_checks_table_is_parsed_into_that_checks_options() -> None:
    config = parse_config(minimal(**{"counter.counts.imbalance": {"warn_ratio": 0.07}}))
    options = config.check_options()
    assert set(options) == {"counter.counts.imbalance"}
    got = options["counter.counts.imbalance"]
    assert isinstance(got, REGISTRY["counter.counts.imbalance"].Options)
    assert got.warn_ratio == 0.07 and got.fail_ratio == 0.10  # the rest keep their defaults


def test_no_checks_table_means_every_check_keeps_its_defaults() -> None:
    assert parse_config(minimal()).check_options() == {}


def test_a_bad_option_is_one_line_at_its_toml_path() -> None:
    lines = errors(minimal(**{"counter.counts.imbalance": {"warn_ratio": 2, "min_share": 0.3}}))
    assert lines == [
        'checks."counter.counts.imbalance".warn_ratio: must be less than 1.0, got 2',
        'checks."counter.counts.imbalance".min_share: unknown key',
    ]


def test_an_unknown_check_id_is_an_error_naming_it() -> None:
    [line] = errors(minimal(**{"counter.counts.levle": {"min_change": 0.1}}))
    assert line.startswith('checks."counter.counts.levle": unknown check id')
    assert "'counter.counts.levle'" in line and "counter.counts.level" in line


def test_config_check_exits_78_for_a_bad_checks_table(tmp_path: Path) -> None:
    text = example_config() + '\n[checks."counter.device.clock"]\nwarn_s = -1\n'
    path = tmp_path / "bad.toml"
    path.write_text(text)
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 78
    assert 'checks."counter.device.clock".warn_s: must be greater than 0' in result.output


def test_the_examples_commented_checks_table_is_valid_when_uncommented() -> None:
    text = example_config()
    assert '# [checks."counter.counts.imbalance"]' in text
    text = text.replace('# [checks."', '[checks."').replace("# warn_ratio =", "warn_ratio =")
    options = parse_config(tomllib.loads(text)).check_options()
    assert options["counter.counts.imbalance"].warn_ratio == 0.07


def test_the_runner_builds_each_check_with_its_options(tmp_path: Path) -> None:
    data = minimal(
        **{
            "counter.device.clock": {"warn_s": 5.0},
            "site.counts.imbalance": {"min_days": 3},
            "gateway.health": {"free_warn_pct": 20.0},
        }
    )
    data["agent"]["state_dir"] = str(tmp_path / "state")
    config = parse_config(data)
    with Store.open(tmp_path / "state") as store:
        runner = make_runner(config, store)
    built = {c.id: c for c in (*runner.checks, *runner.site_checks, *runner.gateway_checks)}
    assert built["counter.device.clock"].options.warn_s == 5.0
    assert built["site.counts.imbalance"].options.min_days == 3
    assert built["gateway.health"].options.free_warn_pct == 20.0
    assert built["counter.device.health"].options == REGISTRY["counter.device.health"].Options()
    # the runner dispatches on applies_to: each kind of evidence gets exactly its checks
    assert {c.applies_to for c in runner.checks} == {"counter"}
    assert {c.applies_to for c in runner.site_checks} == {"site"}
    assert {c.applies_to for c in runner.gateway_checks} == {"gateway"}
    assert not any(type(c).derived for c in built.values())
