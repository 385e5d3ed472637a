"""The ``lqg`` probe's closed forms against sampling, finite differences and the Riccati
optimum.

* ``exact_return`` agrees with Monte-Carlo returns of ``reset``/``step`` rollouts;
* the value coefficients: ``V_0`` averages to ``exact_return``, ``V_t(s)`` agrees with
  a Monte-Carlo return-to-go, and the Bellman equation holds in closed form;
* ``jax.grad(exact_return)`` agrees with central differences in float64;
* ``optimal_return >= J(LQR gain) >= J(K = 0)``, the LQR gain within 2 % of optimal.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from envs.tasks.lqg import Lqg, LqgConfig, QuadraticValue

NO_NOISE = -30.0  # log σ of a policy without noise (σ ≈ 1e-13)


def policy(env, *, noisy: bool, seed: int = 0):
    """A stable linear-Gaussian policy near the LQR gain, with an offset."""
    key_K, key_k = jax.random.split(jax.random.key(seed))
    n_a, n_s = env.action_size, env.state_size
    K = env.lqr_gain(1.0) + 0.1 * jax.random.normal(key_K, (n_a, n_s))
    k = 0.3 * jax.random.normal(key_k, (n_a,))
    log_std = jnp.full(n_a, jnp.log(0.4) if noisy else NO_NOISE)
    return K, k, log_std


def monte_carlo_returns(env, K, k, log_std, gamma, key, n, s0=None, t0=0):
    """``n`` discounted returns ``Σ_{t=t0}^{T-1} γ^{t-t0} r_t`` of the policy, from
    ``env.reset`` (or from the fixed state ``s0`` at time ``t0``), by ``env.step``."""

    def one(key):
        key_reset, key = jax.random.split(key)
        s = env.reset(key_reset) if s0 is None else s0

        def body(s, inputs):
            t, key = inputs
            key_a, key_step = jax.random.split(key)
            a = K @ s + k + jnp.exp(log_std) * jax.random.normal(key_a, (env.action_size,))
            s_next, r, _, _ = env.step(s, a, key_step, t)
            return s_next, gamma ** (t - t0) * r

        ts = jnp.arange(t0, env.horizon)
        return jax.lax.scan(body, s, (ts, jax.random.split(key, len(ts))))[1].sum()

    return jax.jit(jax.vmap(one))(jax.random.split(key, n))


def assert_within_standard_errors(samples, expected, n_se=4.0):
    samples = np.asarray(samples, np.float64)
    mean = samples.mean()
    se = samples.std(ddof=1) / np.sqrt(len(samples))
    assert abs(mean - float(expected)) <= n_se * se, (mean, float(expected), se)


@pytest.mark.parametrize(
    ("sizes", "noisy", "gamma"),
    [((2, 1), False, 1.0), ((2, 1), True, 0.9), ((4, 2), False, 0.95), ((4, 2), True, 1.0)],
)
def test_exact_return_matches_monte_carlo(sizes, noisy, gamma):
    env = envs.make("lqg", state_size=sizes[0], action_size=sizes[1])
    K, k, log_std = policy(env, noisy=noisy)
    returns = monte_carlo_returns(env, K, k, log_std, gamma, jax.random.key(1), 4000)
    assert_within_standard_errors(returns, env.exact_return(K, k, log_std, gamma))


def test_value_at_time_zero_averages_to_exact_return():
    """``E_{s_0} V_0(s_0) = initial_std² tr P_0 + c_0`` (``s_0`` has mean 0)."""
    with jax.enable_x64(True):
        env = envs.make("lqg", state_size=3, action_size=2, initial_std=0.7)
        K, k, log_std = (x.astype(jnp.float64) for x in policy(env, noisy=True))
        for gamma in (1.0, 0.9):
            value = env.exact_value_coefficients(K, k, log_std, gamma)
            assert value.P.shape == (env.horizon + 1, 3, 3) and value.c.dtype == jnp.float64
            expected = env.config.initial_std**2 * jnp.trace(value.P[0]) + value.c[0]
            np.testing.assert_allclose(expected, env.exact_return(K, k, log_std, gamma), rtol=1e-10)


@pytest.mark.parametrize("t", [0, 35])
def test_value_matches_monte_carlo_return_to_go(t):
    env = envs.make("lqg", state_size=3, action_size=2)
    K, k, log_std = policy(env, noisy=True, seed=1)
    gamma = 0.9
    value = env.exact_value_coefficients(K, k, log_std, gamma)
    s = jnp.array([1.0, -0.5, 0.8])
    returns = monte_carlo_returns(env, K, k, log_std, gamma, jax.random.key(2), 4000, s0=s, t0=t)
    assert_within_standard_errors(returns, value(s, t))


def test_bellman_consistency_and_q_value():
    """``V_t(s) = E_a Q_t(s, a)``: ``Q`` is quadratic in ``a``, so its mean over
    ``a ~ N(K s + k, diag σ²)`` is ``Q_t(s, K s + k) + Σ_i σ_i² (γ BᵀP_{t+1}B - R)_ii``;
    and ``Q_t(s, a)`` agrees with ``r + γ V_{t+1}(s')`` averaged over ``step``'s noise."""
    with jax.enable_x64(True):
        env = envs.make("lqg", state_size=3, action_size=2, noise_scale=0.3)
        K, k, log_std = (x.astype(jnp.float64) for x in policy(env, noisy=True, seed=2))
        gamma = 0.9
        value = env.exact_value_coefficients(K, k, log_std, gamma)
        B = env.B.astype(jnp.float64)
        var_a = jnp.exp(2 * log_std)
        states = jax.random.normal(jax.random.key(3), (6, 3), jnp.float64)
        for s, t in zip(states, [0, 1, 17, 48, 49, 30], strict=True):
            P1 = value.P[t + 1]
            curvature = jnp.diag(gamma * B.T @ P1 @ B) - env.config.control_cost
            expected = env.q_value(value, s, K @ s + k, t) + var_a @ curvature
            np.testing.assert_allclose(value(s, t), expected, rtol=1e-10)
            # The gradient in s is the one of the quadratic.
            grad = jax.grad(value)(s, t)
            np.testing.assert_allclose(grad, 2 * value.P[t] @ s + value.p[t], rtol=1e-10)
        assert value(states[0], env.horizon) == 0 and value(states[0], env.horizon + 3) == 0
        # jit and vmap over states and times.
        ts = jnp.array([0, 5, 49, 50, 60, 2])
        batched = jax.jit(jax.vmap(value))(states, ts)
        np.testing.assert_allclose(
            batched, [value(s, int(t)) for s, t in zip(states, ts, strict=True)]
        )

        # Q by Monte Carlo over the environment's own noise.
        s, a, t = states[1], jnp.array([0.5, -1.0], jnp.float64), 20
        keys = jax.random.split(jax.random.key(4), 4000)

        def sample(key):
            s_next, r, _, _ = env.step(s, a, key, t)
            return r + gamma * value(s_next, t + 1)

        assert_within_standard_errors(jax.jit(jax.vmap(sample))(keys), env.q_value(value, s, a, t))


def test_exact_gradient_matches_central_differences_float64():
    with jax.enable_x64(True):
        env = envs.make("lqg", state_size=3, action_size=2)
        K, k, log_std = (x.astype(jnp.float64) for x in policy(env, noisy=True, seed=3))
        gamma = 0.95
        f = jax.jit(lambda K, k, log_std: env.exact_return(K, k, log_std, gamma))
        assert f(K, k, log_std).dtype == jnp.float64
        grads = jax.jit(jax.grad(env.exact_return, argnums=(0, 1, 2)))(K, k, log_std, gamma)
        params = [K, k, log_std]
        eps = 1e-6
        for i, (param, grad) in enumerate(zip(params, grads, strict=True)):
            assert grad.dtype == jnp.float64 and grad.shape == param.shape
            assert jnp.abs(grad).max() > 1e-3
            fd = np.zeros(param.shape)
            for j in np.ndindex(param.shape):
                bump = jnp.zeros_like(param).at[j].set(eps)
                up = [*params[:i], param + bump, *params[i + 1 :]]
                down = [*params[:i], param - bump, *params[i + 1 :]]
                fd[j] = (f(*up) - f(*down)) / (2 * eps)
            np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-5 * np.abs(fd).max())


@pytest.mark.parametrize("gamma", [1.0, 0.95])
def test_optimal_return_bounds_the_lqr_gain_and_no_control(gamma):
    env = envs.make("lqg")
    n_a, n_s = env.action_size, env.state_size
    zero_k, no_noise = jnp.zeros(n_a), jnp.full(n_a, NO_NOISE)
    optimal = env.optimal_return(gamma)
    K = env.lqr_gain(gamma)
    lqr = float(env.exact_return(K, zero_k, no_noise, gamma))
    uncontrolled = float(env.exact_return(jnp.zeros((n_a, n_s)), zero_k, no_noise, gamma))
    assert optimal >= lqr * (1 + 1e-6) >= uncontrolled  # 1e-6: float32 rounding of lqr
    assert abs(optimal - lqr) <= 0.02 * abs(optimal), (optimal, lqr)
    assert uncontrolled < 10 * optimal  # control matters: A is unstable
    # No stationary policy beats the optimum: perturbed gains, offsets, policy noise.
    for seed in range(5):
        K_, k_, log_std_ = policy(env, noisy=seed % 2 == 1, seed=seed)
        assert float(env.exact_return(K_, k_, log_std_, gamma)) <= optimal * (1 - 1e-6)
    # Far from the horizon the time-varying optimum is the stationary gain.
    gains, _ = env.optimal_gains(gamma)
    np.testing.assert_allclose(gains[0], K, rtol=1e-5, atol=1e-6)


def test_transition_reproduces_step_in_both_precisions():
    env = envs.make("lqg", state_size=4, action_size=2)
    s = env.reset(jax.random.key(0))
    a = jnp.array([0.3, -0.7])
    s_next, r, done, info = env.step(s, a, jax.random.key(1), 3)
    np.testing.assert_allclose(env.transition(s, a, info["noise"]), s_next, rtol=1e-6)
    assert info["noise"].shape == (env.noise_size,) == (4,)
    expected = env.A @ s + env.B @ a + env.config.noise_scale * info["noise"]
    np.testing.assert_allclose(s_next, expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r, -(s @ s + env.config.control_cost * a @ a), rtol=1e-6)
    assert not done and env.step(s, a, jax.random.key(1), env.horizon - 1)[2]
    with jax.enable_x64(True):
        s64, a64 = s.astype(jnp.float64), a.astype(jnp.float64)
        s_next64 = env.transition(s64, a64, info["noise"].astype(jnp.float64))
        assert s_next64.dtype == jnp.float64 and env.reward(s64, a64, 0).dtype == jnp.float64
        np.testing.assert_allclose(s_next64, s_next, rtol=1e-5, atol=1e-6)


def test_a_config_fixes_the_system():
    a, b, c = envs.make("lqg"), envs.make("lqg"), envs.make("lqg", seed=1)
    np.testing.assert_array_equal(a.A, b.A)
    np.testing.assert_array_equal(a.B, b.B)
    assert not np.allclose(a.A, c.A)
    for env in (a, c, envs.make("lqg", state_size=5, action_size=3)):
        radius = np.abs(np.linalg.eigvals(np.asarray(env.A, np.float64))).max()
        np.testing.assert_allclose(radius, 1.05, rtol=1e-6)
        assert env.B.shape == (env.state_size, env.action_size)
    assert isinstance(a, Lqg) and not isinstance(a, envs.MjxEnv)
    assert np.all(a.action_high >= 1e3) and np.all(a.action_low <= -1e3)


def test_success_is_the_final_distance_to_the_origin():
    env = envs.make("lqg", success_radius=0.5)
    assert env.success(jnp.array([0.3, 0.3]))
    assert not env.success(jnp.array([0.4, 0.4]))


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(state_size=0), "state_size=0: must be an integer >= 1"),
        (dict(action_size=1.5), "action_size=1.5: must be an integer >= 1"),
        (dict(control_cost=0.0), "control_cost"),
        (dict(horizon=0), "horizon"),
    ],
)
def test_bad_config_is_rejected(overrides, match):
    with pytest.raises(ValueError, match=match):
        envs.make("lqg", **overrides)


def test_quadratic_value_is_a_pytree():
    env = Lqg(LqgConfig(horizon=5))
    value = env.exact_value_coefficients(*policy(env, noisy=True))
    assert isinstance(value, QuadraticValue) and value.horizon == 5
    leaves = jax.tree.leaves(value)
    assert len(leaves) == 4
    same = jax.jit(lambda v, s: v(s, 2))(value, jnp.ones(2))
    np.testing.assert_allclose(same, value(jnp.ones(2), 2), rtol=1e-6)
