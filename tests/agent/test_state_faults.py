"""The state database under the faults a gateway meets: a damaged file, a file of another
agent version, a full disk, years of cycles, and a shell's umask (docs/reliability.md, "State").

Real SQLite files throughout; the disk is really full (a 2 MB tmpfs mount, or a file-size
limit in a child process where mounting is not allowed); only the clock is fake.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import resource
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent.app import make_runner
from agent.cli import cli
from agent.config import parse_config
from agent.delivery.outbox import Outbox
from agent.delivery.sinks.local import LocalSink
from agent.runner import Runner
from agent.store import DB_NAME, EX_SCHEMA, MIGRATIONS, Store, StoreFull, StoreSchemaError
from diagnostics.model import Assessed, CountSlot, Decision, Finding, Observation, Status, Verdict
from tests.agent.test_outbox import ticket

ROOT = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
ALL_DAY = {d: "00:00-24:00" for d in ("mon", "tue", "wed", "thu", "fri", "sat", "sun")}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fill(store: Store, at: datetime, counters: int = 2, findings: int = 11) -> None:
    """One cycle's rows, as the runner writes them."""
    cycle = store.begin_cycle(at)
    for c in range(counters):
        store.add_observation(Observation(f"C{c}", "api", at, ok=True, data={"n": 1}))
        store.add_slots([CountSlot(f"C{c}", at, 15, 10, 9)], at)
    store.add_findings(
        cycle,
        [
            Assessed(
                Finding("counter.offline", Status.OK, "up", "counter up", at, "S1", f"C{i}"),
                None,
            )
            for i in range(findings)
        ],
    )
    store.end_cycle(cycle, at, {})


def config_toml(state: Path, **agent: object) -> str:
    extra = "".join(f"{k} = {v}\n" for k, v in agent.items())
    hours = "\n".join(f'{d} = "{h}"' for d, h in ALL_DAY.items())
    return (
        f'[agent]\nstate_dir = "{state}"\n{extra}\n'
        '[[sites]]\ncode = "S1"\nname = "Shop"\ntimezone = "Europe/London"\n'
        f"[sites.opening_hours]\n{hours}\n"
    )


# -- a damaged file ------------------------------------------------------------------------------


def damage_second_half(path: Path) -> None:
    """Overwrite pages in the second half of a real store file with garbage."""
    size = path.stat().st_size
    page = 4096
    with path.open("r+b") as f:
        for offset in range(size // 2 // page * page, size - page, page * 3):
            f.seek(offset)
            f.write(b"\xa5" * page)


def test_a_damaged_file_is_moved_aside_untouched_and_a_fresh_store_starts(tmp_path, caplog):
    with Store.open(tmp_path) as store:
        for i in range(300):
            fill(store, T0 + timedelta(minutes=5 * i))
        store.create_incident(
            check_id="counter.offline",
            site="S1",
            subject="C0",
            state="open",
            code="down",
            summary="down",
            at=T0,
            finding={},
            reason="test",
        )
    db = tmp_path / DB_NAME
    assert not (tmp_path / f"{DB_NAME}-wal").exists()  # a clean close folded the WAL back
    assert db.stat().st_size > 200_000
    damage_second_half(db)
    damaged = digest(db)

    with caplog.at_level(logging.ERROR, logger="agent.store"), Store.open(tmp_path) as store:
        assert store.moved_aside is not None
        assert store.incidents() == []  # a fresh store
        fill(store, T0)  # and a working one
    aside = store.moved_aside
    assert aside.parent == tmp_path and aside.name.startswith(f"{DB_NAME}.damaged-")
    assert digest(aside) == damaged  # never written into
    [line] = [r.getMessage() for r in caplog.records]
    assert "damaged" in line and aside.name in line and "\n" not in line
    with Store.open(tmp_path) as again:  # the fresh file is healthy: nothing moves twice
        assert again.moved_aside is None
    assert len(list(tmp_path.glob(f"{DB_NAME}.damaged-*"))) == 1


def damaged_while_open(tmp_path: Path) -> tuple[Store, Path]:
    """A filled store, open, whose file is then damaged under it. Its page cache is shrunk
    first, as on a gateway whose file outgrew the cache: the broken pages are read from disk."""
    with Store.open(tmp_path) as store:
        for i in range(300):
            fill(store, T0 + timedelta(minutes=5 * i))
    store = Store.open(tmp_path)
    store._db.execute("PRAGMA cache_size = 10")
    damage_second_half(tmp_path / DB_NAME)
    return store, tmp_path / DB_NAME


def test_damage_found_while_open_is_remembered_and_the_file_is_kept_aside(tmp_path, caplog):
    store, db = damaged_while_open(tmp_path)
    try:
        assert store.damage is None  # nothing has read a broken page yet
        with pytest.raises(sqlite3.DatabaseError):
            store._db.execute("SELECT COUNT(*), SUM(LENGTH(payload)) FROM findings").fetchall()
        why = store.check_integrity()
        assert why and store.damage == why
        with caplog.at_level(logging.ERROR, logger="agent.store"):
            store.recover(why)
        [line] = [r.getMessage() for r in caplog.records]
        assert "damaged" in line and "\n" not in line
        [aside] = tmp_path.glob(f"{DB_NAME}.damaged-*")
        assert aside.name in line
        raw = sqlite3.connect(aside)
        try:
            with contextlib.suppress(sqlite3.DatabaseError):
                assert raw.execute("PRAGMA quick_check").fetchall() != [("ok",)]
        finally:
            raw.close()
        assert store.damage is None and store.incidents() == []  # the fresh file, in place
        fill(store, T0)
        assert store.check_integrity() is None
    finally:
        store.close()
    assert sqlite3.connect(db).execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_the_daily_check_finds_damage_and_never_prunes_a_damaged_file(tmp_path):
    store, _ = damaged_while_open(tmp_path)
    try:
        removed = store.maintain(
            T0 + timedelta(days=400), findings_days=30, observations_days=30, slots_days=365
        )
        assert removed is None and store.damage  # found, and nothing rewritten
        assert store.last_pruned() is None
    finally:
        store.close()


def test_the_service_notices_damage_while_running_and_goes_on_with_a_fresh_file(tmp_path):
    from agent.config import load_config
    from agent.service.daemon import Daemon

    state = tmp_path / "state"
    config_path = tmp_path / "ffc-agent.toml"
    config_path.write_text(config_toml(state))
    store, _ = damaged_while_open(state)
    daemon = Daemon(config_path)
    try:
        config = load_config(config_path)
        runner = daemon._runner(config, store)
        assert daemon._cycle(runner, config, store)  # the cycle's daily check met the damage
        runner = daemon._fresh_store(config, runner, store)
        [aside] = state.glob(f"{DB_NAME}.damaged-*")
        assert not daemon._cycle(runner, config, store)  # and cycles on the fresh file
        assert store.damage is None and store.last_pruned() is not None
        assert list(state.glob(f"{DB_NAME}.damaged-*")) == [aside]
    finally:
        daemon.close()
        store.close()


def test_a_file_that_is_not_a_database_is_moved_aside(tmp_path):
    (tmp_path / DB_NAME).write_bytes(b"not SQLite at all\n" * 500)
    with Store.open(tmp_path) as store:
        assert store.moved_aside is not None
        assert store.schema_version == len(MIGRATIONS)


# -- another agent version's file ----------------------------------------------------------------


@pytest.mark.parametrize("version", [len(MIGRATIONS) - 1, 0, len(MIGRATIONS) + 1])
def test_a_schema_this_agent_does_not_know_is_refused_and_left_untouched(tmp_path, version):
    with Store.open(tmp_path) as store:
        fill(store, T0)
    db = tmp_path / DB_NAME
    raw = sqlite3.connect(db)
    raw.execute(f"PRAGMA user_version = {version}")
    raw.close()
    before = digest(db)
    with pytest.raises(StoreSchemaError) as caught:
        Store.open(tmp_path)
    assert caught.value.exit_code == EX_SCHEMA
    assert "untouched" in str(caught.value)
    assert digest(db) == before
    assert list(tmp_path.glob(f"{DB_NAME}.damaged-*")) == []


def test_every_command_says_one_line_for_a_store_it_cannot_use(tmp_path):
    state = tmp_path / "state"
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_toml(state))
    with Store.open(state) as store:
        fill(store, T0)
    raw = sqlite3.connect(state / DB_NAME)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS) - 1}")  # "table outbox already exists"
    raw.close()
    for args in (["status"], ["silence", "list"], ["shadow", "report"]):
        result = CliRunner().invoke(cli, [*args, "--config", str(config)])
        assert result.exit_code == EX_SCHEMA, (args, result.output)
        lines = result.output.strip().splitlines()
        assert len(lines) == 1 and "schema" in lines[0], (args, result.output)
        assert "Traceback" not in result.output
    check = CliRunner().invoke(cli, ["check", "--config", str(config)])
    assert check.exit_code == 3  # the Nagios plugin answers UNKNOWN
    assert check.output.startswith("FFC-AGENT UNKNOWN") and "Traceback" not in check.output


# -- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_disk(tmp_path) -> Iterator[Path]:
    """A real 2 MB file system (tmpfs). Mounting needs root: elsewhere the test is skipped,
    except under CI=true, where the RLIMIT_FSIZE test below covers the same path anyway."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs under CI=true: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (not root?): {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill_disk(folder: Path) -> Path:
    """Take every free byte of the file system ``folder`` is on."""
    filler = folder / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, b"\0" * 4096)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_a_store_full_error_and_loses_nothing_once_space_returns(small_disk):
    with Store.open(small_disk / "state") as store:
        fill(store, T0)
        filler = fill_disk(small_disk)
        with pytest.raises(StoreFull):
            for i in range(1, 200):  # until the WAL cannot grow
                fill(store, T0 + timedelta(minutes=5 * i), findings=200)
        filler.unlink()
        fill(store, T0 + timedelta(days=1))  # the same connection works again
        assert store.last_success("C0", "api") == T0 + timedelta(days=1)
    with Store.open(small_disk / "state") as store:
        assert store.schema_version == len(MIGRATIONS)


def runner_for(state: Path) -> Runner:
    config = parse_config(
        {
            "agent": {"state_dir": str(state)},
            "sites": [
                {
                    "code": "S1",
                    "name": "Shop",
                    "timezone": "Europe/London",
                    "opening_hours": ALL_DAY,
                }
            ],
        }
    )
    return make_runner(config, Store.open(state))


def test_a_cycle_on_a_full_disk_reports_disk_full_and_the_next_one_records_everything(
    small_disk, caplog
):
    state = small_disk / "state"
    runner = runner_for(state)
    try:
        runner.run_cycle()
        filler = fill_disk(small_disk)
        with caplog.at_level(logging.WARNING):
            full = [runner.run_cycle() for _ in range(3)]  # no exception, no traceback
        for result in full:
            [finding] = [a.finding for a in result.problems]
            assert (finding.check_id, finding.code) == ("gateway.health", "disk_full")
        assert not [r for r in caplog.records if r.exc_info]
        assert sum("disk is full" in r.getMessage() for r in caplog.records) == 1  # once
        held = runner.run_cycle  # the gateway's observations of those cycles, in memory
        filler.unlink()
        caplog.clear()
        with caplog.at_level(logging.WARNING):
            after = held()
        # (the gateway check may still find 2 MB too little; the agent's own writes work)
        assert not [a for a in after.problems if "held" in a.finding.evidence]
        assert any("space again" in r.getMessage() for r in caplog.records)
        # nothing lost: one gateway observation per cycle, the three full ones included
        assert len(runner.store.observations("gateway", "gateway", limit=100)) == 5
    finally:
        runner.store.close()


CHILD = textwrap.dedent(
    """
    import resource, signal, sys
    from datetime import UTC, datetime, timedelta
    from pathlib import Path
    from agent.store import Store, StoreFull
    from tests.agent.test_state_faults import fill, T0
    state = Path(sys.argv[1])
    with Store.open(state) as store:
        fill(store, T0)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG instead of being killed
        size = max(p.stat().st_size for p in state.iterdir())
        hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
        resource.setrlimit(resource.RLIMIT_FSIZE, (size + 8192, hard))
        try:
            for i in range(1, 500):
                fill(store, T0 + timedelta(minutes=5 * i), findings=200)
        except StoreFull as exc:
            print("full:", exc)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        fill(store, T0 + timedelta(days=1))
        print("recorded:", store.last_success("C0", "api") == T0 + timedelta(days=1))
    """
)


def test_a_write_beyond_the_file_size_limit_is_store_full_too(tmp_path):
    """The same path without a mount: RLIMIT_FSIZE makes writes fail with EFBIG."""
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(tmp_path / "state")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert done.returncode == 0, done.stderr
    assert "full: " in done.stdout and "recorded: True" in done.stdout, done.stdout
    assert "Traceback" not in done.stderr


# -- retention ------------------------------------------------------------------------------------


def test_pruning_keeps_what_matters_and_drops_old_raw_history(tmp_path):
    with Store.open(tmp_path) as store:
        for day in range(60):
            fill(store, T0 + timedelta(days=day))
        store.add_observation(Observation("OLD", "api", T0, ok=True))  # last seen long ago
        store.add_observation(Observation("OLD", "api", T0 + timedelta(hours=1), ok=False))
        incident = store.create_incident(
            check_id="counter.offline",
            site="S1",
            subject="C0",
            state="open",
            code="down",
            summary="down",
            at=T0,
            finding={},
            reason="test",
        )
        store.audit(T0, "person", "silence.add")
        failed = Observation("C0", "api", T0 + timedelta(days=55, hours=1), ok=False)
        store.add_observation(failed)
        day40 = T0 + timedelta(days=40, hours=1)
        problem = Finding("counter.offline", Status.FAIL, "down", "down", day40, "S1", "C0")
        verdict = Verdict(Decision.GENUINE, ("no rule explains it",))
        store.add_findings(store.begin_cycle(day40), [Assessed(problem, verdict)])
        now = T0 + timedelta(days=60)
        removed = store.prune(now, findings_days=30, observations_days=10, slots_days=45)
        assert removed == {
            "findings": 30 * 11,
            "quiet_findings": 28 * 11,  # ok findings past two days, but the newest of each
            "cycles": 30,
            "observations": 50 * 2,
            "quiet_observations": 8 * 2,  # successes past two days, but the newest of each
            "slots": 30,
        }
        assert store.findings_between(T0, now - timedelta(days=30)) == []
        kept = store.findings_between(now - timedelta(days=30), now)
        assert len(kept) == 2 * 11 + 1 and kept[-1]["status"] == "fail"  # problems: 30 days
        assert [o.ok for o in store.observations("C0", "api", limit=1000)] == [
            True,
            True,
            False,  # a failure stays keep_observations_days
        ]
        assert store.last_success("OLD", "api") == T0  # the newest and the newest good stay
        assert len(store.observations("OLD", "api")) == 2
        assert store.slots("C0", T0)[0].start == T0 + timedelta(days=15)
        assert store.incident(incident.id) is not None and store.transitions(incident.id)
        # auto_vacuum: the freed pages went back to the file system
        assert store._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
        assert store._db.execute("PRAGMA freelist_count").fetchone()[0] == 0


def test_pruning_runs_at_most_once_a_day_in_small_batches(tmp_path):
    with Store.open(tmp_path) as store:
        for i in range(50):
            fill(store, T0 + timedelta(hours=i))
        beats = []
        keep = {"findings_days": 1, "observations_days": 1, "slots_days": 30}
        now = T0 + timedelta(days=3)
        first = store.maintain(now, heartbeat=lambda: beats.append(1), **keep)
        assert first is not None and first["findings"] == 48 * 11  # those over a day old
        assert store.maintain(now + timedelta(hours=23), **keep) is None
        assert store.maintain(now + timedelta(hours=25), **keep) is not None
        assert len(beats) >= 3
        removed = store.prune(now, batch=7, findings_days=0, observations_days=0, slots_days=30)
        assert removed["findings"] == 0  # nothing was left to remove by batch


def test_an_older_file_without_auto_vacuum_is_switched_to_it(tmp_path):
    raw = sqlite3.connect(tmp_path / DB_NAME)
    for script in MIGRATIONS:
        raw.executescript(script)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    raw.close()
    with Store.open(tmp_path) as store:
        assert store._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


def test_an_older_file_in_use_by_another_process_opens_and_switches_later(tmp_path):
    # the switch is a VACUUM, which cannot run while another process writes (the service,
    # while ``check`` opens the file; or two processes opening a new state directory at
    # once): the store opens without it, and switches at a later opening
    raw = sqlite3.connect(tmp_path / DB_NAME, isolation_level=None)
    for script in MIGRATIONS:
        raw.executescript(script)
    raw.execute(f"PRAGMA user_version = {len(MIGRATIONS)}")
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("BEGIN IMMEDIATE")  # another process, mid-write
    try:
        with Store.open(tmp_path) as store:  # waits its busy timeout for the VACUUM, then on
            assert store._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 0
            assert store.schema_version == len(MIGRATIONS)
    finally:
        raw.execute("COMMIT")
        raw.close()
    with Store.open(tmp_path) as store:
        assert store._db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2


# -- permissions ----------------------------------------------------------------------------------


def modes(root: Path) -> dict[str, int]:
    return {
        str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in [root, *root.rglob("*")]
    }


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_state_made_by_hand_is_private_whatever_the_umask(tmp_path, umask):
    state = tmp_path / "deep" / "state"
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_toml(state))
    config.chmod(0o600)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent",
            "silence",
            "add",
            "S1",
            "--for",
            "1h",
            "--reason",
            "test",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: os.umask(umask),
    )
    assert done.returncode == 0, done.stderr
    found = modes(tmp_path / "deep")
    assert found.pop(".") == 0o700 and found.pop("state") == 0o700
    assert f"state/{DB_NAME}" in found
    assert all(mode == 0o600 for mode in found.values()), found


def test_an_older_world_readable_database_is_tightened(tmp_path):
    with Store.open(tmp_path):
        pass
    (tmp_path / DB_NAME).chmod(0o644)
    with Store.open(tmp_path) as store:
        assert stat.S_IMODE(store.path.stat().st_mode) == 0o600


def test_the_cli_leaves_the_umask_as_it_found_it(tmp_path):
    previous = os.umask(0o022)
    try:
        CliRunner().invoke(cli, ["config", "example"])
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(previous)


_ = (resource, signal)  # CHILD imports them itself; kept here for a reader of CHILD


def test_a_snapshot_that_does_not_fit_leaves_no_half_file(small_disk):
    from agent.views import LiveViews

    views = LiveViews(small_disk / "state")
    views.record("C1", T0, b"\xff\xd8small\xff\xd9")
    with pytest.raises(OSError):
        views.record("C1", T0 + timedelta(minutes=15), b"\xff" * (4 * 1024 * 1024))
    names = sorted(p.name for p in (small_disk / "state" / "snapshots" / "C1").iterdir())
    assert names == [f"{int(T0.timestamp())}.jpg"]


def test_a_database_locked_by_another_process_is_one_line_too(tmp_path):
    state = tmp_path / "state"
    config = tmp_path / "ffc-agent.toml"
    config.write_text(config_toml(state))
    with Store.open(state):
        pass
    holder = sqlite3.connect(state / DB_NAME, timeout=0)
    holder.execute("BEGIN EXCLUSIVE")  # another process holds the write lock for too long
    try:
        result = CliRunner().invoke(
            cli, ["silence", "add", "S1", "--for", "1h", "--reason", "x", "--config", str(config)]
        )
    finally:
        holder.rollback()
        holder.close()
    assert result.exit_code == 1, result.output
    assert result.output.strip().count("\n") == 0 and "Traceback" not in result.output
    assert "state database" in result.output


@pytest.mark.parametrize("umask", [0o022, 0o000])
def test_local_tickets_and_their_attachments_are_private_whatever_the_umask(tmp_path, umask):
    from agent.delivery.sinks.local import LocalSink
    from tests.agent.test_local_sink import make_ticket

    previous = os.umask(umask)
    try:
        LocalSink(tmp_path / "tickets").file(make_ticket(), {"snapshot.jpg": b"\xff\xd8people"})
    finally:
        os.umask(previous)
    found = modes(tmp_path / "tickets")
    assert found.pop(".") == 0o700
    dirs = {k for k in found if (tmp_path / "tickets" / k).is_dir()}
    assert all(found[d] == 0o700 for d in dirs), found
    files = {k: v for k, v in found.items() if k not in dirs}
    assert any(k.endswith(".json") for k in files) and any("snapshot" in k for k in files)
    assert all(mode == 0o600 for mode in files.values()), found


# -- the outbox's files under the same faults ------------------------------------------------------


def _sent_files(sink: LocalSink, number: str) -> dict[str, bytes]:
    """The files a local ticket carries, less the sink's own record of the ticket."""
    folder = sink.directory / number
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.name.startswith("site-")}


def _site_files(serial: str) -> dict[str, bytes]:
    return {f"site-{serial}.bin": serial.encode() * 40_000}  # 160-240 KB, whose every byte says


def test_a_full_disk_while_queueing_keeps_each_ticket_to_its_own_files(small_disk, tmp_path):
    state = small_disk / "state"
    sink = LocalSink(tmp_path / "tickets")  # the helpdesk is elsewhere, with room
    with Store.open(state) as store:
        outbox = Outbox(store, state)
        filler = fill_disk(small_disk)
        with pytest.raises(StoreFull), store.transaction():
            outbox.enqueue_ticket(
                [sink], ticket("A1"), incident_id=None, attachments=_site_files("A1"), now=T0
            )
        assert outbox.items() == []  # the ticket is not queued: the next cycle queues it
        assert [p.name for p in (state / "outbox").iterdir() if p.is_dir()] == []  # nor its files
        filler.unlink()
        for serial in ("B2", "A1"):  # another site's ticket first, then the one that failed
            with store.transaction():
                outbox.enqueue_ticket(
                    [sink],
                    ticket(serial),
                    incident_id=None,
                    attachments=_site_files(serial),
                    now=T0,
                )
        done = outbox.deliver([sink], T0)
    assert [d.outcome for d in done] == ["delivered", "delivered"]
    for d, serial in zip(done, ("B2", "A1"), strict=True):
        assert _sent_files(sink, str(d.number)) == _site_files(serial)


def test_a_damaged_store_keeps_its_outbox_and_the_fresh_one_sends_only_its_own_files(tmp_path):
    sink = LocalSink(tmp_path / "tickets")
    with Store.open(tmp_path) as store:
        Outbox(store, tmp_path).enqueue_ticket(
            [sink], ticket("A1"), incident_id=None, attachments=_site_files("A1"), now=T0
        )
    (tmp_path / DB_NAME).write_bytes(b"\xa5" * 8192)  # no longer a database
    with Store.open(tmp_path) as store:
        aside = store.moved_aside
        assert aside is not None
        outbox = Outbox(store, tmp_path)
        kept = aside.with_name(f"{aside.name}-outbox")
        [folder] = [p for p in kept.iterdir() if p.is_dir()]  # the old item's, beside its file
        assert {p.name: p.read_bytes() for p in folder.iterdir()} == _site_files("A1")
        # the fresh store's first item (id 1 again) carries its own files, not the old item 1's
        [item_id] = outbox.enqueue_ticket(
            [sink], ticket("B2"), incident_id=None, attachments=_site_files("B2"), now=T0
        )
        assert item_id == 1
        [d] = outbox.deliver([sink], T0)
    assert _sent_files(sink, str(d.number)) == _site_files("B2")


def test_a_store_recovered_while_running_keeps_its_outbox_beside_it(tmp_path):
    sink = LocalSink(tmp_path / "tickets")
    with Store.open(tmp_path) as store:
        outbox = Outbox(store, tmp_path)  # the service's, held across the recovery
        outbox.enqueue_ticket(
            [sink], ticket("A1"), incident_id=None, attachments=_site_files("A1"), now=T0
        )
        store.recover("a statement found the file damaged")
        aside = store.moved_aside
        assert aside is not None
        [item_id] = outbox.enqueue_ticket(
            [sink], ticket("B2"), incident_id=None, attachments=_site_files("B2"), now=T0
        )
        [d] = outbox.deliver([sink], T0)
        [kept] = (aside.with_name(f"{aside.name}-outbox")).iterdir()
        assert {p.name: p.read_bytes() for p in kept.iterdir()} == _site_files("A1")
    assert (d.item.id, _sent_files(sink, str(d.number))) == (item_id, _site_files("B2"))
