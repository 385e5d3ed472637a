"""experiments/final_success.py: a run's final policies on many fresh episodes."""

import numpy as np
from small import TINY_LQG

from experiments import final_success
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
