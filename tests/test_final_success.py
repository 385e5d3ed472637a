"""experiments/final_success.py: a run's final policies on many fresh episodes."""

import types

import jax.numpy as jnp
import numpy as np
from small import TINY_LQG

import envs
from envs.tasks.reacher import CORNER
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
    # final_episodes gives the same episodes back: their returns are the evaluation's.
    env, episodes = final_success.final_episodes(str(run), 32)
    assert episodes.r.shape == (2, 32, env.horizon)
    np.testing.assert_allclose(episodes.r.sum(-1).mean(-1), fresh["eval_return"], rtol=1e-5)


def test_reacher_misses_split_episodes_by_corner(monkeypatch):
    """experiments/reacher_misses.py on final states whose corners and distances are
    known: two members, one episode at each corner per member, the arm placed so that
    member 0 succeeds at the first two corners only and member 1 at none."""
    env = envs.make("reacher4")
    corners = CORNER * np.array(reacher_misses.CORNERS, float)

    def final_state(target, angles):
        return env.join(jnp.array(angles), jnp.zeros(env.nv), jnp.asarray(target))

    # Member 0: at corners 0 and 1 the arm points along the corner's bearing and the
    # target sits 2 cm beyond its fingertip (0.55 m out, still nearest that corner); at
    # corners 2 and 3 it is folded (fingertip at (-0.15, 0)), the target on the corner.
    # Member 1: folded at every corner.
    def near_fingertip(corner):
        angles = [float(np.arctan2(corner[1], corner[0])), 0.0, 0.0]
        tip = env.fingertip(final_state(corner, angles))
        return final_state(tip + 0.02 * corner / np.linalg.norm(corner), angles)

    folded = [0.0, np.pi, 0.0]
    states = [
        [near_fingertip(c) if i < 2 else final_state(c, folded) for i, c in enumerate(corners)],
        [final_state(c, folded) for c in corners],
    ]
    s_next = jnp.stack([jnp.stack(member) for member in states])[:, :, None]  # one step
    data = types.SimpleNamespace(s_next=s_next)
    monkeypatch.setattr(reacher_misses, "final_episodes", lambda *args: (env, data))
    result = reacher_misses.misses("unused", 4)
    distances = np.array(
        [[np.linalg.norm(env.fingertip(s) - env.target(s)) for s in member] for member in states]
    )
    np.testing.assert_allclose(result["distance"], distances, rtol=1e-5)
    np.testing.assert_array_equal(result["corner"], [[0, 1, 2, 3], [0, 1, 2, 3]])
    np.testing.assert_array_equal(result["episodes"], np.ones((2, 4)))
    expected = distances < env.config.success_distance
    np.testing.assert_array_equal(result["success"], expected.astype(float))
    np.testing.assert_array_equal(result["succeeded"], expected)
    assert expected.sum() == 2 and expected[0, :2].all()  # the arrangement is as described
    np.testing.assert_allclose(result["median_distance"], distances, rtol=1e-5)
