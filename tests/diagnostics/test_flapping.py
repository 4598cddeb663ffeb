import pytest

from diagnostics.flapping import is_flapping, state_change_percent


def test_a_short_history_counts_the_unknown_past_as_steady():
    assert state_change_percent([True, False, False]) < 20
    assert state_change_percent([True, False] * 3) > 20  # five changes in six checks
    assert state_change_percent([]) == 0.0


def test_steady_states_do_not_flap():
    assert state_change_percent([True] * 21) == 0.0
    assert state_change_percent([False] * 10 + [True] * 11) == pytest.approx(
        100 * (0.8 + 0.4 * 9 / 19) / 20
    )


def test_alternating_states_flap_fully():
    assert state_change_percent([i % 2 == 0 for i in range(21)]) == pytest.approx(100.0)


def test_recent_changes_weigh_more():
    old = [True, False] + [False] * 19
    new = [False] * 19 + [True, False]
    assert state_change_percent(new) > state_change_percent(old)


def test_hysteresis_between_start_and_stop():
    states = [False] * 17 + [True, False, True, False]  # 4 recent changes: about 23 %
    assert 20 <= state_change_percent(states) < 30
    assert is_flapping(states, was_flapping=False)
    calmer = [False] * 18 + [True, True, True]  # one change: about 5.8 %
    assert 5 <= state_change_percent(calmer) < 20
    assert not is_flapping(calmer, was_flapping=False)
    assert is_flapping(calmer, was_flapping=True)  # keeps flapping until below 5 %
    assert not is_flapping([True] * 21, was_flapping=True)
