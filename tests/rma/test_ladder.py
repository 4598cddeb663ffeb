"""rma.ladder: the next safe fix, the budget, repeat offenders."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from rma.ladder import (
    Attempt,
    Budget,
    Capabilities,
    Outcome,
    Step,
    next_step,
    repeat_offender,
)

NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
SINCE = NOW - timedelta(minutes=30)
FULL = Capabilities(ssh=True, poe=True)


def attempt(step: Step, ago_min: float, outcome: Outcome = Outcome.NOT_HEALED) -> Attempt:
    return Attempt("C1", step, NOW - timedelta(minutes=ago_min), outcome)


def plan(
    code: str, history: list[Attempt], caps: Capabilities = FULL, budget: Budget | None = None
):
    return next_step(
        code, caps=caps, history=history, since=SINCE, budget=budget or Budget(), now=NOW
    )


def test_gentlest_rung_first_and_walks_in_order() -> None:
    assert plan("http_error", []).step is Step.RENEW_TOKEN
    assert plan("http_error", [attempt(Step.RENEW_TOKEN, 5)]).step is Step.RESTART_SERVICE
    tried = [attempt(Step.RENEW_TOKEN, 9), attempt(Step.RESTART_SERVICE, 5)]
    assert plan("http_error", tried).step is Step.REBOOT
    tried.append(attempt(Step.REBOOT, 3))
    assert plan("http_error", tried).step is Step.POE_CYCLE
    tried.append(attempt(Step.POE_CYCLE, 1))
    last = plan("http_error", tried)
    assert last.exhausted and "none healed" in last.reason


def test_rungs_fit_the_fault() -> None:
    assert plan("counting_service_down", []).step is Step.RESTART_SERVICE
    assert plan("hardware_fault", []).step is Step.REBOOT
    only_token = plan("auth_failed", [attempt(Step.RENEW_TOKEN, 1)])
    assert only_token.exhausted
    assert plan("disk_full", []).exhausted  # no remote fix frees a disk safely


def test_heal_stops_the_ladder() -> None:
    done = plan("refused", [attempt(Step.RESTART_SERVICE, 5, Outcome.HEALED)])
    assert done.exhausted and "healed" in done.reason


def test_attempts_before_this_incident_do_not_count_as_tried() -> None:
    old = attempt(Step.RESTART_SERVICE, 60 * 5)
    assert plan("refused", [old]).step is Step.RESTART_SERVICE


def test_dry_runs_are_not_tries_and_cost_no_budget() -> None:
    assert plan("refused", [attempt(Step.RESTART_SERVICE, 1, Outcome.DRY_RUN)]).step is (
        Step.RESTART_SERVICE
    )


def test_without_ssh_only_poe_is_left() -> None:
    p = plan("refused", [], Capabilities(ssh=False, poe=True))
    assert p.step is Step.POE_CYCLE
    assert set(p.unavailable) == {Step.RESTART_SERVICE, Step.REBOOT}
    nothing = plan("refused", [], Capabilities())
    assert nothing.exhausted and "no SSH or PoE" in nothing.reason


def test_reboot_budget_is_spent_after_two_a_day() -> None:
    earlier = [attempt(Step.REBOOT, 60 * 3), attempt(Step.REBOOT, 60 * 6)]  # earlier incidents
    history = [*earlier, attempt(Step.RESTART_SERVICE, 5)]
    p = plan("counting_service_down", history, Capabilities(ssh=True))
    assert p.exhausted and p.over_budget == (Step.REBOOT,)
    assert "budget" in p.reason and "2 a day" in p.reason
    # a day later the budget is back
    later = [attempt(Step.REBOOT, 60 * 25), attempt(Step.REBOOT, 60 * 26)]
    assert plan("counting_service_down", [*later, attempt(Step.RESTART_SERVICE, 5)]).step is (
        Step.REBOOT
    )


def test_configurable_budget() -> None:
    budget = Budget(per_day={Step.REBOOT: 0, Step.POE_CYCLE: 1})
    p = plan("hardware_fault", [], budget=budget)
    assert p.step is Step.POE_CYCLE and p.over_budget == (Step.REBOOT,)


def test_repeat_offender_three_heals_in_fourteen_days() -> None:
    day = 60 * 24
    heals = [attempt(Step.REBOOT, d * day, Outcome.HEALED) for d in (1, 5, 13)]
    assert repeat_offender(heals, Budget(), NOW)
    assert not repeat_offender(heals[:2], Budget(), NOW)
    old = [attempt(Step.REBOOT, d * day, Outcome.HEALED) for d in (1, 5, 15)]
    assert not repeat_offender(old, Budget(), NOW)
    assert repeat_offender(old, Budget(repeat_window_days=16), NOW)


def test_a_reboot_awaiting_its_recheck_holds_the_ladder_and_costs_budget() -> None:
    sent = [attempt(Step.RESTART_SERVICE, 9), attempt(Step.REBOOT, 1, Outcome.PENDING)]
    p = plan("counting_service_down", sent)
    assert p.step is None and p.waiting is Step.REBOOT and not p.exhausted
    assert "waiting to see whether reboot the counter" in p.reason
    assert p.to_json()["waiting"] == "reboot"
    # a pending reboot ran: with a budget of one a day, the next incident may not reboot again
    later = [attempt(Step.REBOOT, 40, Outcome.PENDING)]
    one = Budget(per_day={Step.RESTART_SERVICE: 3, Step.REBOOT: 1, Step.POE_CYCLE: 1})
    assert plan("counting_service_down", later, budget=one).step is Step.RESTART_SERVICE
    later.append(attempt(Step.RESTART_SERVICE, 5))
    assert plan("counting_service_down", later, budget=one).over_budget == (Step.REBOOT,)
