"""experiments/gradient_tails.py: per-transition policy gradients of a run and how a
batch of them points, plain and with each transition's gradient clipped."""

import numpy as np
import pytest
from small import TINY_LQG

from experiments import gradient_tails
from svgx import rundir, runner
from svgx.config import Config, Hyperparams


def test_clipping_rows_keeps_directions_and_short_rows():
    g = np.array([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    clipped = gradient_tails.clip_rows(g, 1.0)
    np.testing.assert_allclose(clipped, [[0.6, 0.8], [0.3, 0.4], [0.0, 0.0]])


def test_the_top_share_of_one_long_row_among_short_ones():
    """One norm of 10 among 99 of 1: the top 1% (one row) holds 100 / (100 + 99)."""
    norms = np.array([10.0] + [1.0] * 99)
    assert gradient_tails.top_share(norms) == pytest.approx(100 / 199)


def test_rare_long_rows_turn_a_batch_and_clipping_each_row_turns_it_back():
    """Rows are a common direction plus noise, and 1 in 100 is 1000 times longer in a
    random direction: a batch of 64 that draws one points along it, not along the mean
    of all rows. Clipped rows do not; identical rows agree exactly either way."""
    rng = np.random.default_rng(0)
    n, dim = 4000, 50
    direction = np.eye(dim)[0]
    g = direction + 0.5 * rng.normal(size=(n, dim))
    stiff = rng.random(n) < 0.01
    g[stiff] = 1000.0 * rng.normal(size=(stiff.sum(), dim))
    g = np.vstack([g, 1000.0 * direction])  # keep the mean of all along the common direction
    cos = gradient_tails.batch_agreement(g, 64, 400, multiples=(3.0,))
    assert np.median(cos["plain"]) < 0.5
    assert np.median(cos["clip 3, own"]) > 0.9
    same = gradient_tails.batch_agreement(np.tile(direction, (100, 1)), 8, 10, multiples=(1.0,))
    for values in same.values():
        np.testing.assert_allclose(values, 1.0)


def test_a_runs_per_transition_gradients_have_the_policys_size(tmp_path):
    """On a small lqg run: one finite gradient per drawn transition, as many entries as
    the policy has parameters, for both Jacobian sources; the paper's weighted actions
    and fresh ones differ."""
    import equinox as eqx
    import jax

    config = Config(algo="svg1_er", jacobians="learned", iterations=6, chunks=2, **TINY_LQG)
    spec = rundir.RunSpec(config, Hyperparams(), seeds=2, seed=0)
    run = runner.run_in_dir(tmp_path / "run", spec, progress=lambda line: None)
    size = sum(x.size for x in jax.tree.leaves(eqx.filter(run.state.policy, eqx.is_array))) // 2
    out = str(tmp_path / "run")
    sim = gradient_tails.per_transition_gradients(out, "simulator", 16, member=1)
    learned = gradient_tails.per_transition_gradients(out, "learned", 16, member=1)
    fresh = gradient_tails.per_transition_gradients(out, "simulator", 16, member=1, actions="fresh")
    for g in (sim, learned, fresh):
        assert g.shape == (16, size) and np.isfinite(g).all()
    assert not np.allclose(sim, learned) and not np.allclose(sim, fresh)
    with pytest.raises(ValueError, match=r"member=2: the run has members 0\.\.1"):
        gradient_tails.per_transition_gradients(out, "simulator", 4, member=2)
