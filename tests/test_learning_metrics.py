"""The per-chunk learning diagnostics (README, "Metrics"): the critic's explained
variance, the split of the SVG gradient into its reward and value parts, the model's
one-step error, and ``svgx plot --metrics``.

Expected values are worked out by hand or with numpy beside each test, from the
definitions the docstrings state; none is read back from the code under test.
"""

import json
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small import TINY_LQG_FLAGS

import envs
from svgx import cli, critics, estimators, rollout, rundir
from svgx.dynamics import make_dynamics
from svgx.model import dynamics_model, one_step_errors
from svgx.nets import soft_clamp
from svgx.policy import linear_policy
from svgx.replay import Transition

# --- explained variance ---------------------------------------------------------------


def test_explained_variance_matches_numpy_on_hand_made_numbers():
    returns = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    # G − V = (0, 0, 1, −1): Var = 0.5; Var(G) = 1.25; 1 − 0.5 / 1.25 = 0.6.
    values = np.array([1.0, 2.0, 2.0, 5.0], np.float32)
    np.testing.assert_allclose(critics.explained_variance(returns, values), 0.6, rtol=1e-6)
    rng = np.random.default_rng(0)
    g, v = rng.normal(size=50), rng.normal(size=50)
    numpy = 1 - np.var(g - v) / np.var(g)
    np.testing.assert_allclose(critics.explained_variance(g, v), numpy, rtol=1e-5)
    # Exact predictions explain everything, and so does any constant offset of them;
    # the mean return explains nothing; a worse guess is negative.
    np.testing.assert_allclose(critics.explained_variance(returns, returns + 7.0), 1.0)
    np.testing.assert_allclose(critics.explained_variance(returns, np.full(4, 2.5)), 0.0)
    assert critics.explained_variance(returns, -returns) < 0
    # Var(G) = 0: undefined, NaN (as Stable-Baselines3's explained_variance).
    assert np.isnan(critics.explained_variance(np.full(4, 3.0), values))


# --- the two parts of the SVG gradient ------------------------------------------------


def test_svg1_gradient_splits_into_the_hand_derived_reward_and_value_parts():
    """SVG(1) on a 1-D lqg with ``a = K s + m + σ η`` and ``V(s) = −p s²``:
    ``L = r(s0, a0) + γ V(s1)``, ``r = −(s² + ρ a²)``, ``s1 = A s0 + B a0 + ν ξ``."""
    with jax.enable_x64(True):
        rho, nu, gamma, p = 0.1, 0.1, 0.9, 1.5
        env = envs.make("lqg", state_size=1, action_size=1, noise_scale=nu, control_cost=rho)
        A, B = float(env.A[0, 0]), float(env.B[0, 0])
        gain, m, sigma = -0.4, 0.1, 0.5
        policy = linear_policy(
            1, 1, K=jnp.array([[gain]]), k=jnp.array([m], jnp.float64), init_std=sigma
        )
        s0, eta0, xi0 = 0.8, 0.5, 0.3
        a0 = gain * s0 + m + sigma * eta0
        s1 = A * s0 + B * a0 + nu * xi0
        f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
        stretch = Transition(
            s=f64([[[s0]]]),
            a=f64([[[a0]]]),
            r=f64([[-(s0**2 + rho * a0**2)]]),
            s_next=f64([[[s1]]]),
            t=np.zeros((1, 1), np.int32),
            done=np.zeros((1, 1), bool),
            log_prob=np.zeros((1, 1)),
            noise=f64([[[xi0]]]),
        )
        # Derivatives of a0 in (K, m, x), x the unclamped log-σ parameter:
        # log σ = −5 + 3.5 (1 + tanh x), so ∂σ/∂x = σ · 3.5 (1 − tanh² x).
        tanh_x = (math.log(sigma) + 5) / 3.5 - 1
        da0 = np.array([s0, 1.0, eta0 * sigma * 3.5 * (1 - tanh_x**2)])
        # The loss is −L: reward part −∂r/∂a0 · da0, value part −γ ∂V/∂s1 · B da0.
        reward_part = 2 * rho * a0 * da0
        value_part = gamma * 2 * p * s1 * B * da0

        def loss(policy):
            value = lambda s, t: -p * (s @ s)  # noqa: E731
            return estimators.svg_loss(
                policy, make_dynamics("simulator", env), env.reward, value, stretch, gamma=gamma
            )

        through_reward, through_value = eqx.filter_jit(estimators.svg_gradient_terms)(loss, policy)
        full, _ = eqx.filter_grad(loss, has_aux=True)(policy)
        for part, expected in ((through_reward, reward_part), (through_value, value_part)):
            got = [part.net.K[0, 0], part.net.k[0], part.log_std[0]]
            np.testing.assert_allclose(got, expected, rtol=1e-10)
        got_full = [full.net.K[0, 0], full.net.k[0], full.log_std[0]]
        np.testing.assert_allclose(got_full, reward_part + value_part, rtol=1e-10)


def leaves(tree):
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))])


@pytest.mark.parametrize("jacobians", ["simulator", "learned"])
def test_the_parts_sum_to_the_gradient_and_a_constant_critic_has_no_value_part(jacobians):
    env = envs.make("lqg", horizon=6)
    key_policy, key_model, key_data = jax.random.split(jax.random.key(0), 3)
    n_s, n_a = env.state_size, env.action_size
    policy = linear_policy(n_s, n_a, K=0.3 * jax.random.normal(key_policy, (n_a, n_s)))
    model = dynamics_model(env.observe, env.observation_size, n_s, n_a, key=key_model, hidden=4)
    dynamics = make_dynamics(jacobians, env, model)
    batch = rollout.stretches(rollout.episodes(env, policy, key_data, 4), 3)  # [8, 3, …]
    critic = critics.value_function(
        env.observe, env.observation_size, key=jax.random.key(1), hidden=(8,)
    )
    constant = lambda s, t: jnp.asarray(2.5, s.dtype)  # noqa: E731

    @eqx.filter_jit
    def split(value):
        def loss(policy):
            return estimators.svg_loss(
                policy, dynamics, env.reward, value, batch, gamma=0.9, truncation=5.0
            )

        through_reward, through_value = estimators.svg_gradient_terms(loss, policy)
        full, _ = eqx.filter_grad(loss, has_aux=True)(policy)
        return leaves(through_reward), leaves(through_value), leaves(full)

    through_reward, through_value, full = split(critic)
    assert jnp.linalg.norm(through_value) > 1e-3 * jnp.linalg.norm(through_reward)
    np.testing.assert_allclose(through_reward + through_value, full, rtol=1e-4, atol=1e-6)
    through_reward_c, through_value_c, full_c = split(constant)
    np.testing.assert_array_equal(through_value_c, 0.0)  # V is flat: nothing flows through it
    np.testing.assert_allclose(through_reward_c, full_c, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(through_reward_c, through_reward, rtol=1e-5, atol=1e-7)
    through_reward_0, through_value_0, full_0 = split(None)  # SVG(∞): no bootstrap at all
    np.testing.assert_allclose(through_reward_0, full_0, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(through_value_0, 0.0)
    np.testing.assert_allclose(through_reward_0, through_reward, rtol=1e-5, atol=1e-7)


# --- the model's one-step error -------------------------------------------------------


def constant_change_model(change, log_std_output=0.0):
    """A 2-D model whose every sub-network outputs ``(0, log_std_output)``: it predicts
    ``Δs = change`` with ``σ = exp(soft_clamp(log_std_output, −8, 1))``."""
    model = dynamics_model(lambda s: s, 2, 2, 1, key=jax.random.key(0), hidden=3)
    last = model.nets.layers[-1]
    bias = jnp.broadcast_to(jnp.array([0.0, log_std_output]), last.bias.shape)
    model = eqx.tree_at(
        lambda m: (m.nets.layers[-1].weight, m.nets.layers[-1].bias, m.deltas.mean),
        model,
        (jnp.zeros_like(last.weight), bias, jnp.asarray(change, jnp.float32)),
    )
    return model


def test_the_one_step_error_of_a_model_is_zero_when_it_predicts_exactly_and_numpy_otherwise():
    change = np.array([0.5, -0.25], np.float32)
    s = np.array([[1.0, 2.0], [0.0, -1.0], [3.0, 0.5]], np.float32)
    a = np.array([[0.1], [-0.2], [0.3]], np.float32)
    model = constant_change_model(change)
    exact = one_step_errors(model, s, a, s + change)
    assert exact["model_one_step_mse"] == 0.0
    # σ = exp(soft_clamp(0, −8, 1)) = exp(−3.5) in both dimensions, and z = 0:
    # NLL = 2 (log σ + ½ log 2π) = 2 (−3.5 + 0.918939).
    np.testing.assert_allclose(exact["model_one_step_nll"], 2 * (-3.5 + 0.9189385), rtol=1e-5)

    error = np.array([[0.1, 0.0], [-0.2, 0.3], [0.0, 0.05]], np.float32)
    model = constant_change_model(change, log_std_output=0.4)
    got = one_step_errors(model, s, a, s + change + error)
    std = np.exp(float(soft_clamp(jnp.asarray(0.4), -8.0, 1.0)))
    nll = np.sum(0.5 * (error / std) ** 2 + np.log(std) + 0.5 * np.log(2 * np.pi), axis=1)
    np.testing.assert_allclose(got["model_one_step_mse"], np.mean(error**2), rtol=1e-5)
    np.testing.assert_allclose(got["model_one_step_nll"], np.mean(nll), rtol=1e-5)


# --- in a run, and in svgx plot -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """svg1_er with a learned model: every diagnostic is recorded."""
    out = tmp_path_factory.mktemp("learning_metrics") / "run"
    flags = [*TINY_LQG_FLAGS, "--algo", "svg1_er", "--jacobians", "learned", "--seeds", "2"]
    cli.main(["train", "--out", str(out), *flags, "--iterations", "6", "--chunks", "2"])
    return out


def test_a_run_records_the_diagnostics_once_per_chunk(tiny_run):
    rows = [json.loads(line) for line in (tiny_run / rundir.METRICS).read_text().splitlines()]
    assert len(rows) == 4  # 2 chunks × 2 seeds
    for row in rows:
        assert row["critic_explained_variance"] <= 1.0
        assert row["policy_grad_norm_reward"] > 0 and row["policy_grad_norm_value"] >= 0
        assert row["model_one_step_mse"] >= 0 and math.isfinite(row["model_one_step_nll"])


def test_plot_draws_one_panel_per_metric_and_refuses_an_unknown_one(tiny_run, tmp_path, capsys):
    png = tmp_path / "metrics.png"
    metrics = "eval_return,critic_explained_variance,policy_grad_norm_value,model_one_step_mse"
    assert cli.main(["plot", "--metrics", metrics, str(tiny_run), "--out", str(png)]) is None
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["plot", "--metrics", "eval_return,flatness", str(tiny_run), "--out", str(png)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "'flatness'" in err, err
    assert "critic_explained_variance" in err and "policy_grad_norm_reward" in err, err
