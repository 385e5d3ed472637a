"""experiments/final_success.py: a run's final policies on many fresh episodes."""

import numpy as np
from small import TINY_LQG

from experiments import final_success, reacher_misses
from svgx import rundir, runner
from svgx.config import Config, Hyperparams


def test_the_runs_own_keys_give_its_last_evaluation_back_and_fresh_ones_differ(tmp_path):
    """With the run's evaluation keys and episode count, the checkpoint's policies give
    the last chunk's recorded evaluation; the default keys draw other episodes."""
    config = Config(algo="svg1_er", iterations=6, chunks=3, **TINY_LQG)
    spec = rundir.RunSpec(config, Hyperparams(), seeds=2, seed=0)
    run = tmp_path / "run"
    runner.run_in_dir(run, spec, progress=lambda line: None)
    last = rundir.read_metrics(run)[-1]
    keys = runner.evaluation_keys(spec.seed, spec.seeds)
    again = final_success.final_success(str(run), config.eval_episodes, keys)
    for name in ("eval_return", "eval_success", "eval_diverged"):
        np.testing.assert_allclose(again[name], last[name], rtol=1e-6, err_msg=name)
    fresh = final_success.final_success(str(run), 32)
    assert fresh["eval_return"].shape == (2,)
    assert not np.allclose(fresh["eval_return"], last["eval_return"])


def test_reacher_misses_score_the_same_episodes_by_corner(tmp_path):
    """experiments/reacher_misses.py splits final_success's episodes by target corner:
    every episode has one corner, the corners' successes add up to final_success's rate,
    and an episode succeeds exactly when its final distance is under the task's."""
    config = Config(
        algo="svg0_er",
        env="reacher4",
        # A loose success distance, so that some episodes of a barely trained policy
        # succeed and some fail.
        env_options=dict(horizon=5, success_distance=0.3),
        n_envs=2,
        batch_size=16,
        critic_hidden=(16, 16),
        eval_episodes=2,
        iterations=2,
        chunks=1,
    )
    spec = rundir.RunSpec(config, Hyperparams(), seeds=2, seed=0)
    run = tmp_path / "run"
    runner.run_in_dir(run, spec, progress=lambda line: None)
    result = reacher_misses.misses(str(run), 64)
    assert result["episodes"].sum(1).tolist() == [64, 64]
    assert (result["episodes"] > 0).all()  # 64 draws of 4 corners
    assert 0 < result["succeeded"].mean() < 1
    np.testing.assert_array_equal(
        result["succeeded"], result["distance"] < result["success_distance"]
    )
    by_corner = (result["success"] * result["episodes"]).sum(1) / 64
    scored = final_success.final_success(str(run), 64)["eval_success"]
    np.testing.assert_allclose(by_corner, scored, atol=1e-6)
    np.testing.assert_allclose(result["succeeded"].mean(1), scored, atol=1e-6)
