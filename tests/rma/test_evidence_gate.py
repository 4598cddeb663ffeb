"""rma.gate: hardware-fault signatures, each cross-checked with the rest of the evidence."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from diagnostics.model import Finding, Status
from rma.gate import Evidence, counts_normal_in, is_hardware, judge

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)


def f(check: str, status: Status, code: str, **evidence: Any) -> Finding:
    return Finding(check, status, code, code.replace("_", " "), NOW, "S1", "C1", evidence)


CAMERA_GONE = f(
    "counter.device.health",
    Status.FAIL,
    "hardware_fault",
    camera_present=False,
    temperature_c=55.0,
    reboots_24h=1,
    kernel_errors=[],
)
CLEAR = f("counter.liveview.blocked", Status.OK, "clear")
COUNTING = f("counter.counts.stopped", Status.OK, "counting")
ZEROS = f("counter.counts.stopped", Status.WARN, "zero_run")


def test_camera_missing_confirmed_without_a_clear_view() -> None:
    v = judge(Evidence((CAMERA_GONE, ZEROS)))
    assert v.rma and [s.code for s in v.held] == ["camera_missing"]


def test_camera_missing_contradicted_by_clear_view_and_normal_counts() -> None:
    v = judge(Evidence((CAMERA_GONE, CLEAR, COUNTING)))
    assert not v.rma
    assert "probe problem" in v.reason
    assert v.signatures[0].contradicted_by


def test_no_signature_is_a_technical_issue() -> None:
    down = f("counter.device.health", Status.FAIL, "counting_service_down", camera_present=True)
    v = judge(Evidence((down,)))
    assert not v.rma and not v.signatures


def test_storage_errors_and_reboot_loop() -> None:
    sick = f(
        "counter.device.health",
        Status.WARN,
        "kernel_errors",
        camera_present=True,
        reboots_24h=9,
        kernel_errors=[
            "mmc0: Timeout waiting for hardware interrupt, error -110",
            "EXT4-fs error (device mmcblk0p2): bad block",
        ],
    )
    v = judge(Evidence((sick,)))
    assert v.rma and {s.code for s in v.held} == {"storage_errors", "reboot_loop"}


def test_overheating_needs_the_ladder_tried_first() -> None:
    hot = f("counter.device.health", Status.FAIL, "overheating", temperature_c=88.0)
    assert not judge(Evidence((hot,))).rma
    assert judge(Evidence((hot,), ladder_exhausted=True)).rma


def test_unreachable_with_link_and_power_after_every_fix() -> None:
    off = f("counter.offline", Status.FAIL, "refused")
    port = {"link": True, "power": True}
    assert not judge(Evidence((off,))).rma  # no port facts: could be a cable
    assert not judge(Evidence((off,), port=port)).rma  # not yet power-cycled
    assert judge(Evidence((off,), port=port, ladder_exhausted=True)).rma
    assert not judge(
        Evidence((off,), port={"link": False, "power": True}, ladder_exhausted=True)
    ).rma


def test_red_led_and_counts_wrong_after_fixes_and_repeat_offender() -> None:
    alone = judge(Evidence((), reports={"led": "Red"}))
    assert not alone.rma and "needs corroboration" in alone.reason
    assert not judge(Evidence((ZEROS,))).rma
    assert judge(Evidence((ZEROS,), ladder_exhausted=True)).rma
    v = judge(Evidence((), repeat_offender=True, heals=3))
    assert v.rma and "3 times" in v.reason


def test_hardware_is_what_the_check_registry_files_as_hardware() -> None:
    assert is_hardware(CAMERA_GONE)
    assert not is_hardware(ZEROS)
    assert not is_hardware(f("counter.liveview.blocked", Status.FAIL, "covered"))
    assert not is_hardware(f("counter.device.health", Status.FAIL, "hardware_unconfirmed"))
    # the gate's own code, once it confirmed a fault behind any check's finding, is filed as
    # an RMA request whichever check found it (an unreachable unit with link and power)
    assert is_hardware(f("counter.offline", Status.FAIL, "hardware_fault"))


def test_a_frozen_live_view_is_not_a_count_fault() -> None:
    frozen = f("counter.liveview.blocked", Status.FAIL, "frozen")
    v = judge(Evidence((frozen, COUNTING), ladder_exhausted=True))
    assert not v.rma and not v.signatures
    assert counts_normal_in((frozen, COUNTING))


def test_a_count_finding_that_stays_wrong_after_every_fix_is_a_count_fault() -> None:
    under = f("counter.counts.level", Status.WARN, "under_count")
    v = judge(Evidence((under, CLEAR), ladder_exhausted=True))
    assert v.rma and [s.code for s in v.held] == ["counts_wrong_after_fixes"]
    assert "under count" in v.reason
    assert not counts_normal_in((under, COUNTING))


def test_unreachable_means_the_liveness_check_not_a_code_elsewhere() -> None:
    # counts.stopped says "offline" when it cannot judge: that is not the counter unreachable
    skipped = f("counter.counts.stopped", Status.SKIP, "offline")
    port = {"link": True, "power": True}
    assert not judge(Evidence((skipped,), port=port, ladder_exhausted=True)).signatures


def test_the_rma_request_answers_support_before_it_asks() -> None:
    from rma.ladder import Attempt, Outcome, Step
    from rma.request import RequestFacts, compose_request

    verdict = judge(Evidence((CAMERA_GONE, ZEROS)))
    text = compose_request(
        RequestFacts(
            serial="C1",
            name="Main door",
            site="S1 (Store)",
            first_seen=NOW,
            verdict=verdict,
            device={"model": "FC3D", "firmware": "4.2.1"},
            readings={"temperature_c": 55.0, "uptime_s": 20},
            attempts=(Attempt("C1", Step.REBOOT, NOW, Outcome.NOT_HEALED, "agent"),),
            last_good=(NOW, 12, 10),
        )
    )
    for part in (
        "model: FC3D",
        "firmware: 4.2.1",
        "camera not present",
        "reboot the counter",
        "not healed",
        "in 12, out 10",
        "SoC temperature: 55.0 °C",
        "physical damage",
    ):
        assert part in text, part


def test_the_switch_ports_answer_is_read_as_key_values_or_json() -> None:
    import pytest

    from rma.gate import parse_port_status

    assert parse_port_status("link=up power=on\n") == {"link": True, "power": True}
    assert parse_port_status("port 7: link=down power=on") == {"link": False, "power": True}
    assert parse_port_status('{"link": true, "power": "off", "speed": 100}') == {
        "link": True,
        "power": False,
    }
    for garbled in ("", "all good", "link=maybe power=on", "[1, 2]", "{not json"):
        with pytest.raises(ValueError):
            parse_port_status(garbled)


def test_unreachable_with_link_down_is_the_stores_cabling_not_an_rma() -> None:
    off = f("counter.offline", Status.FAIL, "timeout")
    v = judge(Evidence((off,), port={"link": False, "power": True}, ladder_exhausted=True))
    assert not v.rma and "cabling or switch problem for the store" in v.reason
    v = judge(Evidence((off,), port={"link": True, "power": False}, ladder_exhausted=True))
    assert not v.rma and "delivers no power" in v.reason
    v = judge(Evidence((off,), port={"link": True, "power": True}, ladder_exhausted=True))
    assert v.rma and "switch port: link up, power on" in v.reason


def test_a_red_led_is_corroborated_by_a_failed_ladder_or_another_signature() -> None:
    red = {"led": "red"}
    doubtful = f("counter.device.health", Status.FAIL, "counting_service_down")
    assert not judge(Evidence((doubtful,), reports=red)).rma
    v = judge(Evidence((doubtful,), reports=red, ladder_exhausted=True))
    assert v.rma and [s.code for s in v.held] == ["red_led"]
    v = judge(Evidence((CAMERA_GONE, ZEROS), reports=red))
    assert v.rma and [s.code for s in v.held] == ["camera_missing", "red_led"]
    # a contradicted signature is no corroboration
    v = judge(Evidence((CAMERA_GONE, CLEAR, COUNTING), reports=red))
    assert not v.rma and all(not s.holds for s in v.signatures)
