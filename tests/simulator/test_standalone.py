"""``ffc-agent simulate`` / ``python -m simulator``: a generated fleet, its config, its faults."""

from __future__ import annotations

import io
import socket
import threading
import time
import tomllib

import pytest
import requests

from simulator import FaultSpecError, cli_main, generate, run_standalone


def test_generated_fleets_span_one_or_two_sites_and_include_a_legacy_unit():
    sites, counters = generate(2, seed=3)
    assert [s.code for s in sites] == ["LDN01"] and len(counters) == 2
    sites, counters = generate(6, seed=3, port_base=41000)
    assert [s.code for s in sites] == ["LDN01", "PAR01"]
    assert [c.port for c in counters] == list(range(41000, 41006))
    assert counters[-1].api == "pi-cgi" and counters[0].api == "cgi-bin"
    assert len({c.base_rate for c in counters}) == 6
    assert generate(6, seed=3) == generate(6, seed=3)


def test_a_bad_fault_spec_fails_before_anything_starts(capsys):
    with pytest.raises(FaultSpecError, match="unknown counter 'FFC0042'"):
        run_standalone(2, 7, ["FFC0042:offline"])
    assert cli_main(["--counters", "2", "--fault", "FFC0001:boom"]) == 2
    assert "unknown kind 'boom'" in capsys.readouterr().err


@pytest.mark.integration
def test_run_standalone_prints_a_config_serves_and_applies_faults(tmp_path):
    out = io.StringIO()
    stop = threading.Event()
    runner = threading.Thread(
        target=run_standalone,
        args=(4, 7, ["FFC0002:offline", "FFC0003:under_count:0.5"]),
        kwargs={
            "state_dir": tmp_path / "state",
            "reference_dir": tmp_path / "refs",
            "out": out,
            "stop": stop,
        },
    )
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while "[[sinks]]" not in out.getvalue():
            assert time.monotonic() < deadline, "no config printed"
            stop.wait(0.01)
        config = tomllib.loads(out.getvalue())
        ports = {c["serial"]: c["port"] for c in config["counters"]}
        assert len(ports) == 4 and (tmp_path / "refs" / "FFC0001.jpg").exists()
        snapshot = requests.get(f"http://127.0.0.1:{ports['FFC0001']}/snapshot.jpg", timeout=5)
        assert snapshot.status_code == 200
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", ports["FFC0002"]), timeout=2)
    finally:
        stop.set()
        runner.join(timeout=10)
    assert not runner.is_alive()
