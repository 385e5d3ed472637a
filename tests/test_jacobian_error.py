"""The learned model's Jacobian error against the simulator's
(:func:`svgx.dynamics.jacobian_errors`; README, "Metrics").

On ``lqg`` the simulator's Jacobians are the known matrices ``A`` and ``B``; a
model's are checked against central finite differences in float64, and the
errors and the cosine against numpy computations of their definitions.
"""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small import TINY_LQG

import envs
from envs.base import Env
from svgx import critics, rollout
from svgx.config import Config
from svgx.dynamics import Dynamics, LearnedDynamics, SimulatorDynamics, jacobian_errors, jacobians
from svgx.model import dynamics_model
from svgx.policy import linear_policy
from svgx.runner import run

NAMES = {
    "jacobian_error_s",
    "jacobian_error_a",
    "jacobian_error_s_median",
    "jacobian_error_a_median",
    "jacobian_cosine_value",
}


class SimulatorStep(Dynamics):
    """A "model" that is the simulator's step, ``f̂(s, a, ξ) = F(s, a, ξ)``, with the
    recorded environment noise as its own (a noise of another structure than
    :class:`SimulatorDynamics`'s)."""

    env: Env = eqx.field(static=True)

    def infer_noise(self, s, a, s_next, env_noise):
        return env_noise

    def __call__(self, s, a, xi):
        return self.env.transition(s, a, xi)

    def sample_noise(self, key):
        return self.env.sample_noise(key)


class Linear(Dynamics):
    """``f̂(s, a, ξ) = A s + B a + ξ``, the additive noise inferred exactly."""

    A: jax.Array
    B: jax.Array

    def infer_noise(self, s, a, s_next, env_noise):
        return s_next - self.A @ s - self.B @ a

    def __call__(self, s, a, xi):
        return self.A @ s + self.B @ a + xi

    def sample_noise(self, key):
        return jax.random.normal(key, (self.A.shape[0],))


def transitions(env, n_episodes=3):
    """Real transitions of ``env`` under a linear policy (leaves ``[n T, …]``)."""
    n_s, n_a = env.state_size, env.action_size
    key_policy, key_data = jax.random.split(jax.random.key(0))
    K = 0.3 * jax.random.normal(key_policy, (n_a, n_s))
    policy = linear_policy(n_s, n_a, K=K)
    return rollout.per_step(rollout.episodes(env, policy, key_data, n_episodes))


def central_differences(f, x, h=1e-6):
    """``∂f/∂x``: column ``j`` is ``(f(x + h e_j) − f(x − h e_j)) / 2h``."""
    x = np.asarray(x)
    columns = [np.asarray(f(x + h * e) - f(x - h * e)) / (2 * h) for e in np.eye(len(x))]
    return np.stack(columns, axis=1)


def errors(model, reference, batch, direction):
    return eqx.filter_jit(jacobian_errors)(
        model, reference, batch.s, batch.a, batch.s_next, batch.noise, direction
    )


def test_a_model_that_is_the_simulator_has_no_jacobian_error():
    env = envs.make("lqg", horizon=8, state_size=3, action_size=2)
    batch = transitions(env)
    value = critics.value_function(
        env.observe, env.observation_size, key=jax.random.key(1), hidden=(8,)
    )
    direction = jax.vmap(jax.grad(value))(batch.s_next, batch.t + 1)
    got = errors(SimulatorStep(env), SimulatorDynamics(env), batch, direction)
    assert set(got) == NAMES
    assert got["jacobian_error_s"] <= 1e-6 and got["jacobian_error_a"] <= 1e-6, got
    np.testing.assert_allclose(got["jacobian_cosine_value"], 1.0, atol=1e-6)


def test_on_lqg_the_simulator_jacobians_are_a_and_b():
    env = envs.make("lqg", state_size=3, action_size=2)
    batch = transitions(env, n_episodes=1)
    simulator = SimulatorDynamics(env)
    for i in (0, 7):
        s, a, s_next, noise = batch.s[i], batch.a[i], batch.s_next[i], batch.noise[i]
        d_s, d_a = jacobians(simulator, s, a, simulator.infer_noise(s, a, s_next, noise))
        np.testing.assert_allclose(d_s, env.A, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(d_a, env.B, rtol=1e-6, atol=1e-7)


def test_the_errors_of_a_hand_perturbed_linear_model_match_numpy():
    env = envs.make("lqg", horizon=8, state_size=3, action_size=2)
    batch = transitions(env)
    rng = np.random.default_rng(0)
    A, B = np.asarray(env.A, np.float64), np.asarray(env.B, np.float64)
    A_hat, B_hat = A + 0.1 * rng.normal(size=A.shape), B + 0.3 * rng.normal(size=B.shape)
    u = rng.normal(size=batch.s.shape)
    got = errors(
        Linear(jnp.asarray(A_hat, jnp.float32), jnp.asarray(B_hat, jnp.float32)),
        SimulatorDynamics(env),
        batch,
        jnp.asarray(u, jnp.float32),
    )
    # The Jacobians are the same at every sample, so the ratio of sums is one ratio.
    np.testing.assert_allclose(
        got["jacobian_error_s"], np.linalg.norm(A_hat - A) / np.linalg.norm(A), rtol=1e-4
    )
    np.testing.assert_allclose(
        got["jacobian_error_a"], np.linalg.norm(B_hat - B) / np.linalg.norm(B), rtol=1e-4
    )
    g, g_hat = u @ B, u @ B_hat  # rows: (∂f/∂a)ᵀ u_i
    cosine = np.sum(g * g_hat) / (np.linalg.norm(g) * np.linalg.norm(g_hat))
    np.testing.assert_allclose(got["jacobian_cosine_value"], cosine, rtol=1e-4)


class Stiff(Linear):
    """``Linear`` whose action Jacobian is ``(1 + k) B`` where ``s_0 > 1/2``: a stiff state,
    as a contact makes one."""

    k: float = 99.0

    def __call__(self, s, a, xi):
        scale = jnp.where(s[0] > 0.5, 1.0 + self.k, 1.0)
        return self.A @ s + scale * (self.B @ a) + xi


def test_the_median_error_is_the_typical_samples_where_a_stiff_one_carries_the_ratio():
    """One stiff sample of 32, where the model misses a factor 1 + k = 100: the ratio of
    sums is ``k / sqrt(31 + (1 + k)²)`` = 0.988 although the model is exact on the other 31
    samples; each sample's own error is 0 there and k / (1 + k) on the stiff one, so the
    median is 0."""
    n, n_s, n_a = 32, 2, 1
    rng = np.random.default_rng(0)
    A = jnp.asarray(rng.normal(size=(n_s, n_s)), jnp.float32)
    B = jnp.asarray(rng.normal(size=(n_s, n_a)), jnp.float32)
    s = jnp.zeros((n, n_s)).at[5, 0].set(1.0)
    a = jnp.asarray(rng.normal(size=(n, n_a)), jnp.float32)
    reference = Stiff(A, B)
    s_next = jax.vmap(lambda s, a: reference(s, a, jnp.zeros(n_s)))(s, a)
    got = eqx.filter_jit(jacobian_errors)(
        Linear(A, B), reference, s, a, s_next, jnp.zeros((n, 0)), jnp.ones((n, n_s))
    )
    assert set(got) == NAMES
    np.testing.assert_allclose(got["jacobian_error_a"], 99 / np.sqrt(31 + 100**2), rtol=1e-5)
    assert got["jacobian_error_a_median"] == 0.0
    assert got["jacobian_error_s"] == 0.0 and got["jacobian_error_s_median"] == 0.0
    # With the model wrong on every sample, each sample's error is the same: median = ratio.
    off = eqx.filter_jit(jacobian_errors)(
        Linear(A, 2 * B), Linear(A, B), s, a, s_next, jnp.zeros((n, 0)), jnp.ones((n, n_s))
    )
    np.testing.assert_allclose(off["jacobian_error_a_median"], 1.0, rtol=1e-6)
    np.testing.assert_allclose(off["jacobian_error_a"], 1.0, rtol=1e-6)


def test_a_zero_reference_jacobian_gives_zero_or_infinite_error_and_no_cosine():
    n_s, n_a = 2, 1
    batch = transitions(envs.make("lqg", horizon=4, state_size=n_s, action_size=n_a))
    u = jnp.ones_like(batch.s)
    A = jnp.eye(n_s)
    unactuated = Linear(A, jnp.zeros((n_s, n_a)))
    exact = errors(unactuated, unactuated, batch, u)
    assert exact["jacobian_error_s"] == 0.0 and exact["jacobian_error_a"] == 0.0
    assert np.isnan(exact["jacobian_cosine_value"])  # no action gradient to compare
    wrong = errors(Linear(A, jnp.ones((n_s, n_a))), unactuated, batch, u)
    assert wrong["jacobian_error_s"] == 0.0 and wrong["jacobian_error_a"] == np.inf


def test_a_learned_models_jacobians_are_its_finite_differences_at_its_inferred_noise():
    """The learned model is used at the noise it infers for the real transition,
    ``ξ̂ = (s' − s − μ) / σ``, whose ``σ(s, a) ⊙ ξ̂`` term moves its Jacobians."""
    with jax.enable_x64(True):
        env = envs.make("lqg", horizon=4, state_size=3, action_size=2)
        n_s, n_a = env.state_size, env.action_size
        batch = transitions(env, n_episodes=2)
        model = dynamics_model(env.observe, n_s, n_s, n_a, key=jax.random.key(2), hidden=5)
        model = model.with_statistics(batch.s, batch.a, batch.s_next)
        rng = np.random.default_rng(1)
        u = rng.normal(size=batch.s.shape)
        got = errors(LearnedDynamics(model), SimulatorDynamics(env), batch, jnp.asarray(u))

        step = jax.jit(lambda s, a, xi: model(s, a, xi))
        j_s, j_a = [], []
        for s, a, s_next in zip(batch.s, batch.a, batch.s_next, strict=True):
            xi = model.infer_noise(s, a, s_next)  # held fixed, as SVG holds it
            j_s.append(central_differences(lambda s_, a=a, xi=xi: step(s_, a, xi), s))
            j_a.append(central_differences(lambda a_, s=s, xi=xi: step(s, a_, xi), a))
            d_s, d_a = jacobians(LearnedDynamics(model), s, a, xi)
            np.testing.assert_allclose(d_s, j_s[-1], rtol=1e-6, atol=1e-8)
            np.testing.assert_allclose(d_a, j_a[-1], rtol=1e-6, atol=1e-8)
            zero_noise, _ = jacobians(LearnedDynamics(model), s, a, jnp.zeros(n_s))
            assert np.abs(zero_noise - d_s).max() > 1e-3  # ξ̂ matters: the test can tell
        j_s, j_a = np.stack(j_s), np.stack(j_a)
        A, B = np.asarray(env.A), np.asarray(env.B)
        error_s = np.sqrt(np.sum((j_s - A) ** 2) / (len(j_s) * np.sum(A**2)))
        error_a = np.sqrt(np.sum((j_a - B) ** 2) / (len(j_a) * np.sum(B**2)))
        g, g_hat = u @ B, np.einsum("isa,is->ia", j_a, u)
        cosine = np.sum(g * g_hat) / (np.linalg.norm(g) * np.linalg.norm(g_hat))
        np.testing.assert_allclose(got["jacobian_error_s"], error_s, rtol=1e-6)
        np.testing.assert_allclose(got["jacobian_error_a"], error_a, rtol=1e-6)
        np.testing.assert_allclose(got["jacobian_cosine_value"], cosine, rtol=1e-6)


@pytest.mark.parametrize("algo", ["svg1_er", "svg_inf"])  # along ∇V; without V, at random
def test_a_run_with_learned_jacobians_records_the_jacobian_errors_in_every_chunk(algo):
    config = Config(**TINY_LQG, algo=algo, jacobians="learned", iterations=6, chunks=3)
    result = run(config, seeds=2, progress=lambda line: None)
    assert len(result.metrics) == 3
    for metrics in result.metrics:
        assert NAMES <= set(metrics)
        for name in NAMES:
            assert metrics[name].shape == (2,) and np.isfinite(metrics[name]).all(), name
        assert (metrics["jacobian_error_s"] > 0).all() and (metrics["jacobian_error_a"] > 0).all()
        assert (np.abs(metrics["jacobian_cosine_value"]) <= 1 + 1e-6).all()


def test_an_input_that_does_not_vary_gets_a_bounded_gain():
    """The input normaliser divides by at least INPUT_MIN_STD: a state dimension that is the
    same in every transition (hand's target height) must not get a gain of 1e6 in the
    model's Jacobian; the other dimensions are normalised by their spread (numpy)."""
    from svgx.model import INPUT_MIN_STD

    model = dynamics_model(lambda s: s, 3, 3, 1, key=jax.random.key(0))
    s = jax.random.normal(jax.random.key(1), (256, 3)).at[:, 1].set(0.2)
    a = jax.random.normal(jax.random.key(2), (256, 1))
    s_next = s + 0.1 * jax.random.normal(jax.random.key(3), s.shape)
    fitted = model.with_statistics(s, a, s_next)
    x = np.concatenate([np.asarray(s), np.asarray(a)], axis=1)
    expected = np.maximum(x.std(0), INPUT_MIN_STD)
    assert expected[1] == INPUT_MIN_STD
    np.testing.assert_allclose(fitted.inputs.std, expected, rtol=1e-5)
    ds = jax.jacfwd(lambda s: fitted.predict(s, a[0])[0])(s[0])  # [n_s, n_s]
    assert np.abs(ds[:, 1]).max() < 1.0  # 0.13 here; 1,281 with a floor of 1e-6
