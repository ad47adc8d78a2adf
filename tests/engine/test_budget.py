import time

import pytest

from semisup.config import build_config
from semisup.engine.budget import RunClock, fit_to_budget, format_duration, parse_duration
from semisup.errors import UserError


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90s", 90), ("20m", 1200), ("1.5h", 5400), ("1h30m", 5400), ("45", 45), (7.5, 7.5)],
)
def test_durations_read_with_units(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10x", "-5m", "0", "1h-2m", "nan"])
def test_unreadable_or_non_positive_durations_are_errors(text):
    with pytest.raises(UserError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize("key", ["train.time_budget", "train.checkpoint_every"])
def test_a_bad_duration_in_the_config_names_its_key(key):
    with pytest.raises(UserError, match=f"^{key}: cannot read the duration 'soon': write"):
        build_config(None, {key: "soon"})
    with pytest.raises(UserError, match=f"^{key}: a duration must be positive, got '0s'"):
        build_config(None, {key: "0s"})


def test_durations_are_printed_as_people_write_them():
    assert [format_duration(s) for s in (12.4, 600, 3900)] == ["12s", "10m", "1h05m"]


def test_budget_becomes_steps_and_twenty_evaluations():
    # 600 s, 0.1 s per step, 1 s per evaluation: 20 evaluations (19 before the budget's end,
    # 15 % of it at most: 91 would be affordable), (600 - 19) / 0.1 = 5810 steps.
    schedule = fit_to_budget(600, 0.1, 1.0)
    assert (schedule.steps, schedule.eval_every) == (5810, 290)
    assert schedule.steps // schedule.eval_every >= 20


def test_costly_evaluations_are_fewer_but_at_least_ten():
    # 15 % of 100 s buys int(15 / 4) + 1 = 4 evaluations of 4 s: raised to the minimum of 10.
    schedule = fit_to_budget(100, 0.05, 4.0)
    assert schedule.steps == int((100 - 9 * 4.0) / 0.05) == 1280
    assert schedule.steps // schedule.eval_every == 10


def test_a_budget_too_small_for_the_model_says_what_to_do():
    with pytest.raises(UserError, match="give more time \\(--time\\), a smaller model"):
        fit_to_budget(10, 2.0, 1.0)


def test_clock_deadline_and_checkpoint_interval():
    clock = RunClock(deadline=time.monotonic() + 60, checkpoint_every=0.05)
    assert not clock.expired() and not clock.checkpoint_due()
    time.sleep(0.06)
    assert clock.checkpoint_due()
    clock.checkpointed()
    assert not clock.checkpoint_due()
    assert RunClock(time.monotonic() - 1, 60).expired()
    assert not RunClock(None, 60).expired()
