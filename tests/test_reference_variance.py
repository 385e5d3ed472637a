"""experiments/reference_variance.py: the law-of-total-variance split of the reference
gradient's per-episode variance, and the swimmers' rotations about the goal."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from experiments import reference_variance


def test_the_split_recovers_a_known_start_share():
    """g = m(s_0) + e with Var(m) = 4 and Var(e) = 1 per coordinate: the start's share
    of the total variance is 4 / 5."""
    rng = np.random.default_rng(0)
    dim, n, starts, per_start = 20, 20000, 400, 50
    independent = 2.0 * rng.normal(size=(n, dim)) + rng.normal(size=(n, dim))
    means = 2.0 * rng.normal(size=(starts, 1, dim))
    by_start = means + rng.normal(size=(starts, per_start, dim))
    split = reference_variance.variance_split(independent, by_start)
    assert split["total"] == pytest.approx(5.0 * dim, rel=0.03)
    assert split["within"] == pytest.approx(1.0 * dim, rel=0.03)
    assert split["start_share"] == pytest.approx(0.8, abs=0.01)


def test_group_ratio_of_independent_opposite_and_equal_rows():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(2, 20000, 10))
    assert reference_variance.group_variance_ratio([a, b]) == pytest.approx(1.0, abs=0.03)
    assert reference_variance.group_variance_ratio([a, a]) == pytest.approx(2.0)
    assert reference_variance.group_variance_ratio([a, -a + 0.1 * b]) < 0.01


def test_a_rotation_about_the_goal_commutes_with_the_swimmers_step():
    """The fluid is isotropic and the goal is the origin: stepping a rotated state is
    rotating the stepped state, and the reward is the same, so rotated starts are a
    symmetry of the task (what makes the antithetic design unbiased)."""
    env = envs.make("swimmer3")
    s = env.reset(jax.random.key(0))
    s = env.join(*env.split(s)[:1], 0.3 * jnp.ones(env.nv), env.split(s)[2])  # moving
    a = jnp.array([0.7, -0.4])
    angle = 2.1

    @jax.jit
    def both(s):
        rotated = reference_variance.rotate_about_goal(env, s, angle)
        step = lambda s: env.step(s, a, jax.random.key(1), 0)[:2]  # noqa: E731
        (s_next, r), (rotated_next, rotated_r) = step(s), step(rotated)
        return reference_variance.rotate_about_goal(env, s_next, angle), r, rotated_next, rotated_r

    expected, r, rotated_next, rotated_r = both(s)
    assert float(jnp.abs(rotated_next - expected).max()) < 1e-4
    assert float(rotated_r) == pytest.approx(float(r), abs=1e-5)


def test_measure_on_a_short_lqg(tmp_path):
    args = reference_variance.Args("lqg", horizon=5, episodes=4, starts=2, out=tmp_path / "r.md")
    result = reference_variance.measure(args)
    assert 0 < result["within"] and np.isfinite(result["start_share"])
    assert "antithetic_ratio" not in result  # rotations are the swimmers'
    assert "start state's share" in reference_variance.markdown(result, args, "cmd")
    with pytest.raises(ValueError, match="episodes=5: must be a multiple of starts=2"):
        reference_variance.measure(reference_variance.Args("lqg", episodes=5, starts=2))
