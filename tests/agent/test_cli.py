"""The command line as a user meets it: exit codes, error lines, JSON shapes."""

import itertools
import json
import re
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner

from agent.cli import cli
from agent.config import AgentConfig
from simulator import FakeClock
from tests.rma.test_tickets import JSON_KEYS

# the portal form's keys, as issue 2 fixes them (one list, kept with the ticket's own tests)
TICKET_KEYS = JSON_KEYS


def invoke(*args):
    return CliRunner().invoke(cli, list(args))


def test_config_example_passes_config_check(tmp_path):
    result = invoke("config", "example")
    assert result.exit_code == 0
    path = tmp_path / "ffc-agent.toml"
    path.write_text(result.output)
    checked = invoke("config", "check", str(path))
    assert checked.exit_code == 0, checked.output
    assert "OK" in checked.output


def test_bad_config_prints_one_line_per_field_and_exits_78(tmp_path):
    text = CliRunner().invoke(cli, ["config", "example"]).output
    text = text.replace('timezone = "Europe/London"', 'timezone = "Europe/Lndon"', 1)
    text = text.replace("[[counters]]\n", "[[counters]]\nprot = 80\n", 1)
    path = tmp_path / "bad.toml"
    path.write_text(text)
    for args in (
        ["config", "check", str(path)],
        ["check", "--config", str(path)],
        ["tickets", "list", "--config", str(path)],
    ):
        result = invoke(*args)
        assert result.exit_code == 78, args
        lines = result.output.strip().splitlines()
        assert "sites[0].timezone: unknown time zone 'Europe/Lndon'" in lines
        assert "counters[0].prot: unknown key" in lines
        assert len(lines) == 2


def test_missing_config_file_exits_78(tmp_path):
    result = invoke("check", "--config", str(tmp_path / "nope.toml"))
    assert result.exit_code == 78 and "nope.toml" in result.output


@pytest.mark.integration
def test_demo_end_to_end_as_a_user_runs_it(tmp_path):
    state = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--json", "--state-dir", str(state)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert set(data) >= {"findings", "ruled_out", "tickets"}
    found = {
        (f["counter"], f["check_id"], f["code"])
        for f in data["findings"]
        if f["verdict"] == "genuine"
    }
    assert ("FFC1002", "counter.offline", "refused") in found
    assert ("FFC1003", "counter.offline", "timeout") in found
    assert ("FFC1004", "counter.counts.stopped", "zero_run") in found
    assert ("FFC1005", "counter.liveview.blocked", "covered") in found
    assert not any(c == "FFC1001" for c, _, _ in found)
    ruled = {(f["counter"], f["rule"]) for f in data["ruled_out"]}
    assert ("FFC2001", "store_closed") in ruled
    assert all(
        any("refit" in r for r in f["reasons"])
        for f in data["ruled_out"]
        if f["counter"] == "FFC2001"
    )
    tickets = data["tickets"]
    assert {t["counters"][0] for t in tickets} >= {"FFC1002", "FFC1003", "FFC1004"}
    assert all(set(t) == TICKET_KEYS for t in tickets)
    assert not any("FFC2001" in t["counters"] for t in tickets)
    for t in tickets:
        assert (state / "tickets" / f"{t['number']}.json").exists()
        assert (state / "tickets" / f"{t['number']}.md").exists()
    # the waits of a real install (agent.config's defaults), told over the simulated clock:
    # the offline counters' tickets wait out a reboot, the store is first asked to clear the
    # covered view, and each is filed once its wait ran out with the problem still there
    offline = AgentConfig.model_fields["offline_ticket_minutes"].default
    grace = AgentConfig.model_fields["blocked_view_grace_minutes"].default
    assert (offline, grace) == (10, 60)
    assert f"offline_ticket_minutes = {offline}" in (state / "ffc-agent.toml").read_text()
    first = datetime.fromisoformat(data["cycles"][0]["at"])
    held = {}
    for cycle in data["cycles"]:
        for h in cycle["held"]:
            held.setdefault(h["counter"], (datetime.fromisoformat(cycle["at"]), h))
            assert h["subject"] not in {
                t["subject"] for t in tickets if t["number"] in cycle["filed"]
            }
    assert set(held) == {"FFC1002", "FFC1003", "FFC1005"}  # nothing waits for stopped counts
    by_counter = {t["counters"][0]: t for t in tickets}
    for serial in ("FFC1002", "FFC1003"):
        seen, hold = held[serial]
        until = datetime.fromisoformat(hold["until"])
        assert hold["why"] == "ruling out a reboot" and hold["store_asked"] is None
        assert until == first + timedelta(minutes=offline) > seen
        assert datetime.fromisoformat(by_counter[serial]["created_at"]) >= until
        assert by_counter[serial]["subject"] == hold["subject"]
    seen, hold = held["FFC1005"]
    until = datetime.fromisoformat(hold["until"])
    asked = hold["store_asked"]
    assert hold["why"] == "the store is asked to clear the view"
    assert until == first + timedelta(minutes=grace) > seen
    assert asked.startswith(hold["subject"] + ". Please clear it at the store: ")
    assert f"still blocked at {until.astimezone(ZoneInfo('Europe/London')):%H:%M}" in asked
    filed_at = datetime.fromisoformat(by_counter["FFC1005"]["created_at"])
    assert filed_at >= until and filed_at == datetime.fromisoformat(data["simulated_time"])
    stopped = datetime.fromisoformat(by_counter["FFC1004"]["created_at"])
    assert stopped < first + timedelta(minutes=offline)  # stopped counts: filed at once
    # status at the demo's time: MCR02 is closed for a refit, so nobody is expected there
    at = FakeClock(datetime.fromisoformat(data["simulated_time"]))
    config = str(state / "ffc-agent.toml")
    status = CliRunner().invoke(cli, ["status", "--config", config, "--json"], obj={"clock": at})
    assert status.exit_code == 0, status.output
    today = {c["serial"]: c["today"] for c in json.loads(status.stdout)["counters"]}
    assert today["FFC2001"]["expected"] == 0 and today["FFC2001"]["counted"] == 0
    assert any("store refit" in why for why in today["FFC2001"]["closed"])
    assert today["FFC1001"]["expected"] > 0 and today["FFC1001"]["closed"] == []
    human = CliRunner().invoke(cli, ["status", "--config", config], obj={"clock": at})
    lines = human.output.splitlines()
    first = next(i for i, ln in enumerate(lines) if ln.startswith("│ FFC2001"))
    rest = itertools.takewhile(lambda ln: ln.startswith("│         │"), lines[first + 1 :])
    row = [lines[first], *rest]
    cell = " ".join(ln.split("│")[6].strip() for ln in row)  # the "today" column, rejoined
    assert cell.startswith("0 / 0 expected (closed ") and "store refit" in cell, human.output
    # each ticket's page and bundle, by path
    files = {f["number"]: f for f in data["ticket_files"]}
    assert set(files) == {t["number"] for t in tickets}
    for number, f in files.items():
        assert f["page"] == str(state / "tickets" / f"{number}.md")
        [bundle] = [p for p in f["attachments"] if p.endswith(".tar.gz")]
        assert Path(bundle).is_file() and Path(bundle).parent == state / "tickets" / number
    # the secret of every simulated counter stays out of everything printed
    assert "secret" not in proc.stdout and "secret" not in proc.stderr

    listed = invoke("tickets", "list", "--state-dir", str(state), "--json")
    assert listed.exit_code == 0
    assert {t["number"] for t in json.loads(listed.stdout)} == {t["number"] for t in tickets}
    shown = invoke("tickets", "show", tickets[0]["number"], "--state-dir", str(state), "--json")
    assert json.loads(shown.stdout)["subject"] == tickets[0]["subject"]
    missing = invoke("tickets", "show", "L-999999", "--state-dir", str(state))
    assert missing.exit_code != 0 and "no ticket" in missing.output
    human = invoke("tickets", "show", tickets[0]["number"], "--state-dir", str(state))
    assert human.exit_code == 0 and tickets[0]["counters"][0] in human.output

    # as a person reads it: the path of each ticket's page and bundle, one line each
    again = tmp_path / "again"
    shown = subprocess.run(
        [sys.executable, "-m", "agent", "demo", "--state-dir", str(again)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert "Tickets it held back, and why" in shown.stdout
    assert shown.stdout.count("ruling out a reboot") == 2
    [asked] = [ln for ln in lines if ln.startswith("Asked the store at ")]
    assert "FFC1005" in asked and "a ticket goes to FootfallCam support." in asked
    for t in tickets:
        page = again / "tickets" / f"{t['number']}.md"
        assert f"{t['number']}: page {page}" in lines
        folder = again / "tickets" / t["number"]
        bundles = [ln.split(" ", 3)[-1] for ln in lines if ln.startswith("  bundle ")]
        assert any(Path(b).parent == folder and Path(b).is_file() for b in bundles), t["number"]


@pytest.mark.integration
def test_simulate_then_check_as_a_nagios_plugin(tmp_path):
    config = tmp_path / "sim.toml"
    with config.open("w") as out:
        sim = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent",
                "simulate",
                "--counters",
                "3",
                "--seed",
                "5",
                "--fault",
                "FFC0002:offline",
            ],
            stdout=out,
            stderr=subprocess.PIPE,
            text=True,
            cwd=tmp_path,
        )
        try:
            ready = sim.stderr.readline()  # the fleet says so once the config is written
            assert "simulating 3 counters" in ready, ready
            checked = subprocess.run(
                [sys.executable, "-m", "agent", "check", "--config", str(config), "--json"],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
            human = subprocess.run(
                [sys.executable, "-m", "agent", "check", "--config", str(config)],
                capture_output=True,
                text=True,
                timeout=120,
                check=False,
            )
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    assert sim.returncode == 0
    assert checked.returncode == 2, checked.stderr
    findings = json.loads(checked.stdout)
    refused = [f for f in findings if f["check_id"] == "counter.offline" and f["status"] == "fail"]
    assert [(f["counter"], f["code"], f["verdict"]) for f in refused] == [
        ("FFC0002", "refused", "genuine")
    ]
    # every counter, the site (None), the gateway and the agent itself (its outbox) are judged
    subjects = {f["counter"] for f in findings}
    assert subjects == {"FFC0001", "FFC0002", "FFC0003", None, "gateway", "agent"}
    assert human.returncode == 2
    # the worst problem leads the one-line summary (the gateway's own clock may add a warning)
    assert human.stdout.startswith("FFC-AGENT CRITICAL - FFC0002 refused")


def test_simulate_rejects_a_bad_fault_before_starting():
    result = invoke("simulate", "--counters", "2", "--fault", "FFC0009:offline")
    assert result.exit_code == 2 and "FFC0009" in result.output
    result = invoke("simulate", "--counters", "2", "--fault", "FFC0001:melted")
    assert result.exit_code == 2 and "melted" in result.output


ANALYZE_CONFIG = """
[[sites]]
code = "LDN01"
name = "London"
timezone = "Europe/London"
holidays = "GB-ENG"
opening_hours = { mon = "09:00-20:00", tue = "09:00-20:00", wed = "09:00-20:00", \
thu = "09:00-20:00", fri = "09:00-20:00", sat = "09:00-20:00", sun = "10:00-18:00" }

[[counters]]
serial = "A"
name = "Main door"
site = "LDN01"
group = "front"

[[counters]]
serial = "B"
name = "Side door"
site = "LDN01"
group = "front"
"""


def test_analyze_counts_json_and_errors(tmp_path):
    from datetime import timedelta

    from tests.diagnostics.helpers import NOW, history

    cfg = tmp_path / "site.toml"
    cfg.write_text(ANALYZE_CONFIG)
    rows = ["timestamp,counter,in,out"]
    for serial, seed, zero in (("A", 1, NOW - timedelta(hours=5)), ("B", 2, None)):
        rows += [
            f"{s.start.isoformat()},{s.counter},{s.count_in},{s.count_out}"
            for s in history(serial, NOW, seed=seed, zero_from=zero)
        ]
    rows.append(f"{NOW.isoformat()},STRANGER,1,1")
    data = tmp_path / "counts.csv"
    data.write_text("\n".join(rows) + "\n")

    result = CliRunner().invoke(
        cli, ["analyze", "counts", str(data), "--config", str(cfg), "--json"]
    )
    assert result.exit_code == 0, result.output
    problems = json.loads(result.stdout)
    keys = {"site", "counter", "kind", "start", "end", "verdict", "reasons", "expected", "observed"}
    assert problems and all(keys <= set(p) for p in problems)
    zero = [p for p in problems if p["kind"] == "zero_run"]
    assert [(p["counter"], p["verdict"]) for p in zero] == [("A", "genuine")]
    assert zero[0]["observed"] == 0 and zero[0]["expected"] > 0
    assert "STRANGER" in result.stderr  # an unknown counter is a warning, not a crash

    human = invoke("analyze", "counts", str(data), "--config", str(cfg))
    assert human.exit_code == 0 and "Count problems as of" in human.output

    bad = tmp_path / "bad.csv"
    bad.write_text("timestamp,counter,in,out\n2026-11-25T10:00:00,A,1,1\n")
    result = invoke("analyze", "counts", str(bad), "--config", str(cfg), "--json")
    assert result.exit_code == 65 and "line 2" in result.output

    result = invoke(
        "analyze", "counts", str(data), "--config", str(cfg), "--now", "2026-11-25T10:00:00"
    )
    assert result.exit_code == 2 and "offset" in result.output
    result = invoke("analyze", "counts", str(data), "--config", str(cfg), "--site", "XX")
    assert result.exit_code == 2 and "XX" in result.output


def test_analyze_counts_of_a_file_without_rows_for_our_counters(tmp_path):
    # the table's title read the as-of time, which is None when no row is ours: a traceback
    cfg = tmp_path / "site.toml"
    cfg.write_text(ANALYZE_CONFIG)
    data = tmp_path / "counts.csv"
    data.write_text("timestamp,counter,in,out\n2026-11-25T10:00:00+00:00,STRANGER,1,1\n")
    human = invoke("analyze", "counts", str(data), "--config", str(cfg))
    assert human.exit_code == 0, human.output
    assert "no count rows for the configured counters" in human.output
    # nothing to show is one line, not an empty table
    assert "no count problems found as of no data" in human.stdout
    assert "┏" not in human.stdout and "Count problems as of" not in human.stdout


def test_analyze_image(tmp_path):
    from simulator import FakeClock, Fleet, SimCounter, SimSite
    from tests.agent.test_cycle import NOW, WEEK

    fleet = Fleet(
        [SimSite("S", "S", "Europe/London", WEEK)],
        [SimCounter("C1", "d", "S"), SimCounter("C2", "d", "S")],
        seed=2,
        clock=FakeClock(NOW),
    )
    fleet.set_fault("C2", "dark")
    ref = tmp_path / "ref.jpg"
    ref.write_bytes(fleet.reference("C1"))
    clear, dark = tmp_path / "clear.jpg", tmp_path / "dark.jpg"
    clear.write_bytes(fleet.snapshot("C1"))
    dark.write_bytes(fleet.snapshot("C2"))
    result = invoke("analyze", "image", str(clear), str(dark), "--reference", str(ref), "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert [d["snapshot"] for d in data] == [str(clear), str(dark)]
    assert [(d["verdict"], d["kind"]) for d in data] == [("clear", None), ("blocked", "dark")]
    assert all(0 <= d["blocked_fraction"] <= 1 and isinstance(d["metrics"], dict) for d in data)
    human = invoke("analyze", "image", str(clear), str(dark), "--reference", str(ref))
    assert human.exit_code == 0 and "blocked" in human.output

    # at 80 columns a long path folds onto the next lines: all of it is there, never an
    # ellipsis that leaves two snapshots reading as the same prefix
    deep = tmp_path / "snapshots-kept-for-the-site-survey" / "references-of-the-main-door"
    deep.mkdir(parents=True)
    paths = [deep / "clear.jpg", deep / "dark.jpg"]
    for path, src in zip(paths, (clear, dark), strict=True):
        path.write_bytes(src.read_bytes())
    human = CliRunner(env={"COLUMNS": "80"}).invoke(
        cli, ["analyze", "image", *map(str, paths), "--reference", str(ref)]
    )
    assert human.exit_code == 0, human.output
    assert "…" not in human.output
    assert max(len(line) for line in human.output.splitlines()) <= 80
    body = [line for line in human.output.splitlines() if line.startswith("│")]
    first_column = "".join(line.split("│")[1].strip() for line in body)
    assert first_column == "".join(map(str, paths)), human.output

    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image")
    result = invoke("analyze", "image", str(junk), "--reference", str(ref))
    assert result.exit_code == 2 and "junk.jpg" in result.output
    result = invoke("analyze", "image", str(tmp_path / "none.jpg"), "--reference", str(ref))
    assert result.exit_code == 2 and "none.jpg" in result.output


def test_assess_an_exported_csv(tmp_path):
    from datetime import timedelta

    from tests.diagnostics.helpers import NOW, history

    cfg = tmp_path / "site.toml"
    cfg.write_text(ANALYZE_CONFIG.replace('serial = "B"', 'serial = "B"\ntuned = false'))
    rows = ["timestamp,counter,in,out"]
    for serial, seed, zero in (("A", 1, NOW - timedelta(hours=5)), ("B", 2, None)):
        rows += [
            f"{s.start.isoformat()},{s.counter},{s.count_in},{s.count_out}"
            for s in history(serial, NOW, seed=seed, zero_from=zero)
        ]
    data = tmp_path / "counts.csv"
    data.write_text("\n".join(rows) + "\n")
    result = invoke(
        "assess",
        "--counts",
        str(data),
        "--config",
        str(cfg),
        "--from",
        (NOW - timedelta(days=1)).date().isoformat(),
        "--json",
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    [zero] = [p for p in report["problems"] if p["kind"] == "zero_run"]
    assert zero["counter"] == "A" and zero["real"] and zero["verdict"] == "genuine"
    questions = [p["question"] for p in zero["checklist"]]
    assert questions[:3] == [
        "Was the store open?",
        "Was the rest of the site online?",
        "Did its peers see the same?",
    ]
    live = [p for p in zero["checklist"] if p["question"] == "Is its live view clear?"]
    assert live[0]["points_to"] == "unknown"  # a CSV has no snapshots
    human = invoke("assess", "--counts", str(data), "--config", str(cfg))
    assert human.exit_code == 0 and "REAL" in human.output and "Was the store open?" in human.output
    bad = invoke("assess", "--counts", str(data), "--config", str(cfg), "--from", "2026-13-01")
    assert bad.exit_code == 2


def test_every_commented_example_in_the_example_config_is_valid(tmp_path):
    import re

    text = invoke("config", "example").output
    # uncomment the optional tables and keys (lines like "# [mqtt]" or "# host = ...")
    active = re.sub(r'(?m)^# (\[\[?[a-z."]+\]\]?|[a-z_]+ = .*)$', r"\1", text)
    assert active.count("[[sinks]]") == 4 and "\n[mqtt]" in active and "\n[checks." in active
    for name, value in (
        ("rt-token", "tok"),
        ("smtp-password", "pw"),
        ("webhook-secret", "hmac"),
        ("chat-webhook-url", "https://chat.example.com/hooks/abc"),
    ):
        (tmp_path / name).write_text(value)
    path = tmp_path / "full.toml"
    path.write_text(active)
    result = invoke("config", "check", str(path))
    assert result.exit_code == 0, result.output
    assert "4 sinks" in result.output


def _command_paths(group=cli, path=()):
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        command = group.get_command(ctx, name)
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _command_paths(command, (*path, name))


@pytest.mark.parametrize(
    "path",
    list(_command_paths()),
    ids=" ".join,
)
def test_every_help_fits_80_columns_and_names_its_arguments_as_its_text_does(path):
    shown = CliRunner().invoke(cli, [*path, "--help"], terminal_width=80)
    assert shown.exit_code == 0, (path, shown.output)
    text = shown.output
    assert max(len(line) for line in text.splitlines()) <= 80, (path, text)
    usage, _, body = text.partition("\n\n")
    # a choice of values in the usage line splits inside a word at 80 columns: a metavar
    # (STATE, STEP) stands there instead, and the help lists the values
    assert "{" not in usage, (path, usage)
    # the usage names a counter as the description does (COUNTER, not SERIAL)
    for name in ("COUNTER", "SERIAL"):
        if re.search(rf"\b{name}\b", usage):
            assert re.search(rf"\b{name}\b", body), (path, name, text)


HEAVY = ("numpy", "PIL", "pydantic", "paramiko", "holidays", "requests", "rich", "agent.probes")


def test_no_help_imports_what_only_the_work_needs() -> None:
    """Every command's --help, in a fresh interpreter, imports none of the heavy libraries
    (startup: bench/startup.py measures it; this says which command pulled what in)."""
    script = textwrap.dedent(
        f"""
        import sys
        import click
        from click.testing import CliRunner
        from agent.cli import cli

        heavy = {HEAVY!r}
        def paths(group, path=()):
            ctx = click.Context(group)
            for name in group.list_commands(ctx):
                command = group.get_command(ctx, name)
                yield (*path, name)
                if isinstance(command, click.Group):
                    yield from paths(command, (*path, name))
        for path in [(), *paths(cli)]:
            CliRunner().invoke(cli, [*path, "--help"])
            loaded = sorted(m for m in heavy if m in sys.modules)
            if loaded:
                print(" ".join(path) or "(root)", "imports", ", ".join(loaded))
                break
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "", done.stdout
