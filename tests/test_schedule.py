import math

import numpy as np
import pytest

from gpt_mini.schedule import (RECIPE_SCHEDULE, check_schedule, explore_schedule, lr_after_step, lr_at, lr_curve,
                               lr_explorer, schedule_figure)

# The lr column the seed recipe printed (step: lr), copied from its training log.
RECIPE_LOG = {0: "1.200000e-06", 50: "3.120000e-05", 100: "6.120000e-05", 150: "9.120000e-05", 200: "1.212000e-04",
              450: "2.712000e-04", 500: "3.000000e-04", 550: "2.999049e-04", 600: "2.996273e-04", 1000: "2.909180e-04",
              2000: "2.249093e-04", 2500: "1.759441e-04", 3250: "9.859859e-05", 4000: "3.502605e-05",
              4500: "9.010325e-06", 4950: "8.775781e-08", 4999: "0.000000e+00"}


def test_reproduces_recipe_log_column():
    for step, printed in RECIPE_LOG.items():
        assert f"{lr_after_step(step, **RECIPE_SCHEDULE):.6e}" == printed, step


def test_recipe_log_line_format():
    from gpt_mini.run import format_log_line
    assert format_log_line(50, 5000, 8.3372, lr_after_step(50)) == "step 50/5000 | loss 8.3372 | lr 3.120000e-05"
    assert format_log_line(0, 5000, 10.9527, lr_after_step(0)) == "step 0/5000 | loss 10.9527 | lr 1.200000e-06"


def test_first_step_not_zero_and_peak():
    assert lr_at(0) == pytest.approx(3e-4 / 500, rel=1e-12) and lr_at(0) > 0
    assert lr_at(499) == pytest.approx(3e-4) and lr_at(500) == pytest.approx(3e-4)
    assert lr_at(2750) == pytest.approx(1.5e-4)


def test_warmup_zero():
    assert lr_at(0, 1e-3, 0, 10) == 1e-3
    assert lr_at(5, 1e-3, 0, 10) == pytest.approx(0.5e-3)
    assert lr_at(10, 1e-3, 0, 10) == 0.0


def test_warmup_equals_total():
    assert [lr_at(s, 1.0, 4, 4, 0.1) for s in range(7)] == [0.25, 0.5, 0.75, 1.0, 0.1, 0.1, 0.1]


def test_past_the_end_stays_at_floor():
    for s in [5000, 5001, 10**7]:
        assert lr_at(s, min_lr=3e-5) == 3e-5


def test_monotone_and_above_floor():
    lrs = [lr_at(s, 1e-3, 10, 100, 1e-4) for s in range(150)]
    assert all(a < b for a, b in zip(lrs[:9], lrs[1:10]))
    assert all(a >= b for a, b in zip(lrs[9:], lrs[10:]))
    assert min(lrs) >= 1e-4 and all(math.isfinite(x) for x in lrs)


def test_one_step_run():
    assert lr_at(0, 1e-3, 0, 1) == 1e-3
    assert lr_at(0, 1e-3, 1, 1) == 1e-3
    assert lr_at(1, 1e-3, 1, 1, 1e-5) == 1e-5


@pytest.mark.parametrize("args,fragment", [((0, 1e-3, 200, 100), "warmup_steps"), ((0, 1e-3, 0, 0), "total_steps"),
                                           ((0, 1e-3, 0, 10, 1e-2), "floor"), ((0, -1.0, 0, 10), "max_lr"),
                                           ((-1,), "step must be"), ((0, 1e-3, -1, 10), "warmup_steps")])
def test_bad_settings_are_refused(args, fragment):
    with pytest.raises(ValueError, match=fragment):
        lr_at(*args)


def test_curve_matches_lr_at():
    np.testing.assert_allclose(lr_curve(**RECIPE_SCHEDULE), [lr_at(s) for s in range(5000)], rtol=1e-12, atol=0)
    for args in [(1e-3, 0, 50, 0.0), (1e-3, 50, 50, 1e-4), (1e-3, 7, 50, 1e-4), (1e-3, 1, 1, 0.0)]:
        np.testing.assert_allclose(lr_curve(*args, n_steps=90), [lr_at(s, *args) for s in range(90)], rtol=1e-12, atol=0)


def test_figure_and_explorer_logic():
    fig = schedule_figure(1e-3, 0, 100, 1e-4)
    assert fig.axes and len(fig.axes[0].lines) >= 2
    for args in [(3e-4, 0, 5000, 0.0), (3e-4, 5000, 5000, 0.1), (3e-4, 9000, 5000, 0.0), (1e-3, 10, 100, 1.0),
                 (1e-3, 0, 1, 0.0), (1e-3, -5, 0, 2.0)]:
        fig, text = explore_schedule(*args)
        assert fig.axes and text.startswith("first step")
    _, text = explore_schedule(3e-4, 500, 5000, 0.0)
    assert "first step 6.000e-07" in text and "peak 3.000e-04 at step 499" in text


def test_explorer_widget_builds_and_redraws():
    w = lr_explorer(1e-3, 50, 100)
    lr_s, warm_s, total_s, floor_s, summary, out = w.children
    total_s.value = 40  # the warmup slider follows the total and the summary redraws
    assert warm_s.max == 40 and warm_s.value <= 40
    floor_s.value = 1.0
    assert "last step 1.000e-03" in summary.value


def test_check_schedule_ok():
    # settings that are allowed, edges included, pass without a word (it returns nothing and raises nothing)
    for args in [(3e-4, 500, 5000, 0.0), (3e-4, 0, 1, 3e-4), (1.0, 5000, 5000, 0.0)]:
        assert check_schedule(*args) is None, args
