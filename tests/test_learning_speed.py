"""experiments/learning_speed.py: each seed's mean over a run's evaluations, and
Welch's test between runs."""

import numpy as np
import pytest
from scipy import stats

from experiments import learning_speed
from svgx import rundir


def _run(path, returns):
    """A run directory whose metrics have ``returns[chunk][seed]``."""
    path.mkdir()
    history = [{"eval_return": np.asarray(row, float)} for row in returns]
    rundir.write_metrics(path, history)
    return str(path)


def test_mean_over_the_run_and_welchs_test_by_hand(tmp_path):
    slow = _run(tmp_path / "slow", [[0, 2, 1], [2, 4, 3], [4, 6, 8]])
    fast = _run(tmp_path / "fast", [[5, 7, 6], [9, 9, 9]])
    np.testing.assert_allclose(learning_speed.mean_over_run(slow), [2, 4, 4])
    np.testing.assert_allclose(learning_speed.mean_over_run(fast), [7, 8, 7.5])
    first, second = learning_speed.compare([slow, fast])
    assert first["t"] is None and first["p"] is None
    assert np.isclose(first["mean"], 10 / 3)
    # Welch's t by hand: means 10/3 and 7.5, sample variances 4/3 and 1/4, n = 3 each.
    t = (10 / 3 - 7.5) / np.sqrt((4 / 3) / 3 + 0.25 / 3)
    assert np.isclose(second["t"], t)
    df = ((4 / 3 + 0.25) / 3) ** 2 / (((4 / 3) / 3) ** 2 / 2 + (0.25 / 3) ** 2 / 2)
    assert np.isclose(second["p"], 2 * stats.t.sf(abs(t), df))
    half = stats.t.ppf(0.975, 2) * np.sqrt(0.25 / 3)
    assert np.isclose(second["low"], 7.5 - half) and np.isclose(second["high"], 7.5 + half)


def test_a_baselines_initial_evaluation_and_a_non_finite_seed_are_left_out(tmp_path):
    """Brax records its initial policy at 0 steps (svgx's first chunk ends after
    training): the mean over the run skips it. A NaN seed drops out of the test."""
    path = tmp_path / "brax"
    path.mkdir()
    steps = [0, 100, 200]
    returns = [[-50, -50, -50], [1, 2, 3], [3, np.nan, 5]]
    rundir.write_metrics(
        path,
        [
            {"env_steps": np.full(3, s), "eval_return": np.asarray(r, float)}
            for s, r in zip(steps, returns, strict=True)
        ],
    )
    values = learning_speed.mean_over_run(str(path))
    np.testing.assert_allclose(values[[0, 2]], [2, 4])
    assert np.isnan(values[1])
    other = _run(tmp_path / "other", [[0, 0], [2, 4]])  # per seed: 1, 2
    _, row = learning_speed.compare([other, str(path)])
    test = stats.ttest_ind([1, 2], [2, 4], equal_var=False)
    assert np.isclose(row["t"], test.statistic) and np.isclose(row["p"], test.pvalue)
    assert np.isclose(row["mean"], 3)


def test_up_to_compares_runs_of_unequal_length_at_equal_steps(tmp_path):
    """A run still going (2 evaluations) against a finished one (3): up to 200 steps
    both average their first two evaluations only; past every evaluation is refused."""

    def run(name, returns):
        path = tmp_path / name
        path.mkdir()
        rows = [
            {"env_steps": np.full(2, 100 * (i + 1)), "eval_return": np.asarray(r, float)}
            for i, r in enumerate(returns)
        ]
        rundir.write_metrics(path, rows)
        return str(path)

    going = run("going", [[1, 3], [3, 5]])
    done = run("done", [[0, 2], [2, 2], [10, 20]])
    np.testing.assert_allclose(learning_speed.mean_over_run(done), [4, 8])
    np.testing.assert_allclose(learning_speed.mean_over_run(done, up_to=200), [1, 2])
    np.testing.assert_allclose(learning_speed.mean_over_run(done, up_to=299), [1, 2])
    first, second = learning_speed.compare([going, done], up_to=200)
    assert np.isclose(first["mean"], 3) and np.isclose(second["mean"], 1.5)
    test = stats.ttest_ind([2, 4], [1, 2], equal_var=False)
    assert np.isclose(second["t"], test.statistic)
    with pytest.raises(ValueError, match="up_to=50: the run has no evaluation"):
        learning_speed.mean_over_run(done, up_to=50)
    no_steps = _run(tmp_path / "plain", [[1, 2]])
    with pytest.raises(ValueError, match="do not record env_steps"):
        learning_speed.mean_over_run(no_steps, up_to=100)
