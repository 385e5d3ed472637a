"""Unit tests against values worked out by hand (as Brax's ``losses_test.py`` and rlax do).

Every expected number is derived in the comment beside it, from the formula the
docstring of the function under test states; none is read back from the code.
The inputs are small dyadic numbers where possible, so most results are exact in
float32; the policy-gradient and SVG(2) tests run in float64 to pin derivatives
to 1e-10.

Everything runs under strict dtype promotion. One exception, confined to the
``safe_step`` tests: optax's ``scale_by_adam`` promotes ``float ** int32`` in its
bias correction (``optax/tree_utils/_tree_math.py:449``, ``1 - decay**count``),
reached from ``svgx.train.safe_step`` through ``_optimizer(...).update``; svgx's
own code promotes nowhere these tests reach.
"""

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import envs
from svgx import critics, estimators
from svgx.dynamics import SimulatorDynamics
from svgx.policy import Linear, linear_policy
from svgx.replay import Transition

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)  # 0.9189385332...

# One compiled program per call instead of dozens of eagerly dispatched ops: the file
# must run in seconds on two cores.
policy_gradient = eqx.filter_jit(estimators.policy_gradient)


@pytest.fixture(autouse=True)
def strict_promotion():
    with jax.numpy_dtype_promotion("strict"):
        yield


def test_strict_promotion_is_on():
    # The fixture is what makes every other test strict: float32 + int32 must not promote.
    with pytest.raises(ValueError, match="jax_numpy_dtype_promotion=strict"):  # TypePromotionError
        jnp.ones(1, jnp.float32) + jnp.ones(1, jnp.int32)


def identity(x):
    return x


def linear_value(weights, bias, horizon=None):
    """``V(s, t) = w · [s, t/T] + b`` (``[s]`` when ``horizon`` is None): a critic whose
    output is computable by hand, through the real ``ValueFunction`` (time features,
    ``V = 0`` at the horizon)."""
    net = Linear(np.array([weights], np.float32), np.array([bias], np.float32))
    return critics.ValueFunction(net, identity, horizon)


def linear_q(weights, bias, horizon=None):
    """``Q(s, a, t) = w · [s, a, t/T] + b`` through the real ``QFunction``."""
    net = Linear(np.array([weights], np.float32), np.array([bias], np.float32))
    return critics.QFunction(net, identity, horizon)


def column(*values):
    return np.array(values, np.float32)[:, None]


def floats(*values):
    return np.array(values, np.float32)


def ints(*values):
    return np.array(values, np.int32)


@eqx.filter_jit
def td_loss_and_grads(loss_fn, critic, target, *args):
    """``loss_fn(critic, target, *data, weights)`` and its gradients w.r.t. the critic, the
    target and the weights (the last argument), as one compiled program."""
    *data, weights = args
    loss = lambda ctw: loss_fn(ctw[0], ctw[1], *data, ctw[2])  # noqa: E731
    return eqx.filter_value_and_grad(loss)((critic, target, weights))


# --- 1. returns-to-go ------------------------------------------------------------------


def test_returns_to_go_discounted():
    # r = (1, 2, 3), γ = 1/2, G_t = r_t + γ G_{t+1}, G_3 = 0:
    #   G_2 = 3,  G_1 = 2 + 3/2 = 3.5,  G_0 = 1 + 3.5/2 = 2.75   (exact in binary)
    g = estimators.returns_to_go(floats(1.0, 2.0, 3.0), 0.5)
    np.testing.assert_array_equal(g, [2.75, 3.5, 3.0])
    # A traced γ = 0.9 and r = (1, 0, −1): G_2 = −1, G_1 = −0.9, G_0 = 1 − 0.81 = 0.19.
    g = jax.jit(estimators.returns_to_go)(floats(1.0, 0.0, -1.0), np.float32(0.9))
    np.testing.assert_allclose(g, [0.19, -0.9, -1.0], rtol=1e-6)


def test_returns_to_go_undiscounted_is_the_reverse_cumulative_sum():
    # γ = 1: G = (1 + 2 + 3, 2 + 3, 3) = (6, 5, 3).
    np.testing.assert_array_equal(estimators.returns_to_go(floats(1.0, 2.0, 3.0), 1.0), [6, 5, 3])


# --- 2. TD losses of the critics ------------------------------------------------------


def test_critic_factories_add_the_time_input_and_zero_the_value_at_the_horizon():
    # Only the structure of the factories' critics is needed (eval_shape: no random
    # initialisation is run); every weight is then set to 0 and the last bias to 0.75, so
    # the critic outputs 0.75 wherever it is defined and 0 at and past its horizon.
    key = jax.random.key(0)
    shapes = eqx.filter_eval_shape(
        lambda: (
            critics.value_function(identity, 2, key=key, hidden=(3,), horizon=4),
            critics.value_function(identity, 2, key=key, hidden=(3,)),
            critics.q_function(identity, 2, 1, key=key, hidden=(3,), horizon=4),
        )
    )
    v_timed, v_blind, q_timed = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes)
    assert v_timed.net.layers[0].weight.shape == (3, 2 + 1)  # φ(s) and t/T
    assert v_blind.net.layers[0].weight.shape == (3, 2)  # no time input
    assert q_timed.net.layers[0].weight.shape == (3, 2 + 1 + 1)  # φ(s), a and t/T
    v_timed, v_blind, q_timed = (
        eqx.tree_at(lambda c: c.net.layers[-1].bias, c, floats(0.75))
        for c in (v_timed, v_blind, q_timed)
    )
    s, a, t = floats(0.3, -0.2), floats(0.5), ints(0, 3, 4, 5, 1000)
    values = eqx.filter_jit(
        lambda v_timed, v_blind, q_timed, s, a, t: (
            jax.vmap(v_timed, (None, 0))(s, t),
            jax.vmap(v_blind, (None, 0))(s, t),
            jax.vmap(q_timed, (None, None, 0))(s, a, t),
        )
    )(v_timed, v_blind, q_timed, s, a, t)
    # T = 4: V(s, t) = b = 0.75 for t < 4, 0 for t >= 4; time-blind: never zeroed.
    np.testing.assert_array_equal(values[0], [0.75, 0.75, 0.0, 0.0, 0.0])
    np.testing.assert_array_equal(values[1], [0.75] * 5)
    np.testing.assert_array_equal(values[2], [0.75, 0.75, 0.0, 0.0, 0.0])


def test_value_td_loss_without_time_input():
    value = linear_value([2.0], 1.0)  # V(s) = 2 s + 1
    target = linear_value([1.0], 0.5)  # V'(s) = s + 0.5
    s_t, s_tp1 = column(1.0, -1.0), column(2.0, 0.0)
    # t is ignored by a time-blind critic (t = 49 would be a truncation: it still bootstraps).
    t = ints(0, 49)
    r_t, weights, gamma = floats(1.0, 2.0), floats(1.0, 3.0), 0.5
    # V(s_t) = (3, −1); V'(s_tp1) = (2.5, 0.5); y = r + γ V' = (1 + 1.25, 2 + 0.25) = (2.25, 2.25)
    # δ = V − y = (0.75, −3.25); loss = ½ mean(w δ²) = ½ (0.5625 + 3·10.5625) / 2 = 8.0625
    loss, (grads, target_grads, weight_grads) = td_loss_and_grads(
        critics.value_td_loss, value, target, s_t, t, r_t, s_tp1, gamma, weights
    )
    np.testing.assert_allclose(loss, 8.0625, rtol=1e-6)
    # ∂/∂w_s = mean(w δ s) = (0.75 + 3·(−3.25)(−1)) / 2 = 5.25
    # ∂/∂b = mean(w δ) = (0.75 − 9.75) / 2 = −4.5
    np.testing.assert_allclose(grads.net.K, [[5.25]], rtol=1e-6)
    np.testing.assert_allclose(grads.net.k, [-4.5], rtol=1e-6)
    # The target and the weights are held out of the gradient.
    np.testing.assert_array_equal(target_grads.net.K, [[0.0]])
    np.testing.assert_array_equal(target_grads.net.k, [0.0])
    np.testing.assert_array_equal(weight_grads, [0.0, 0.0])


def test_value_td_loss_with_time_input_is_zero_at_the_horizon():
    horizon = 4
    value = linear_value([2.0, 4.0], 1.0, horizon)  # V(s, t) = 2 s + 4 t/4 + 1
    target = linear_value([1.0, 8.0], 0.5, horizon)  # V'(s, t) = s + 8 t/4 + 0.5, 0 at t = 4
    s_t, s_tp1 = column(1.0, -1.0), column(2.0, 0.0)
    t = ints(1, 3)  # the second transition is the last step of its episode
    r_t, weights, gamma = floats(1.0, 1.0), floats(1.0, 3.0), 0.5
    # V(1, 1) = 2 + 1 + 1 = 4;  V(−1, 3) = −2 + 3 + 1 = 2
    # V'(2, 2) = 2 + 4 + 0.5 = 6.5;  V'(0, 4) = 0 (the horizon; it would be 8.5 without the zeroing)
    # y = (1 + 0.5·6.5, 1 + 0) = (4.25, 1);  δ = (−0.25, 1)
    # loss = ½ (1·0.0625 + 3·1) / 2 = 0.765625
    loss, (grads, target_grads, _) = td_loss_and_grads(
        critics.value_td_loss, value, target, s_t, t, r_t, s_tp1, gamma, weights
    )
    np.testing.assert_allclose(loss, 0.765625, rtol=1e-6)
    # ∂/∂(w_s, w_t) = mean(w δ (s, t/T)) = ((−0.25·1 + 3·1·(−1)) / 2, (−0.25·0.25 + 3·0.75) / 2)
    #              = (−1.625, 1.09375);   ∂/∂b = (−0.25 + 3) / 2 = 1.375
    np.testing.assert_allclose(grads.net.K, [[-1.625, 1.09375]], rtol=1e-6)
    np.testing.assert_allclose(grads.net.k, [1.375], rtol=1e-6)
    np.testing.assert_array_equal(target_grads.net.K, [[0.0, 0.0]])


def test_q_td_loss_without_time_input():
    q = linear_q([1.0, 2.0], 0.0)  # Q(s, a) = s + 2a
    target = linear_q([1.0, 1.0], 1.0)  # Q'(s, a) = s + a + 1
    s_t, a_t = column(1.0, 2.0), column(1.0, -1.0)
    s_tp1, a_tp1 = column(0.0, 1.0), column(2.0, 1.0)
    t = ints(0, 1)
    r_t, weights, gamma = floats(0.0, 1.0), floats(2.0, 1.0), 0.5
    # Q = (1 + 2, 2 − 2) = (3, 0);  Q' = (0 + 2 + 1, 1 + 1 + 1) = (3, 3)
    # y = (0 + 1.5, 1 + 1.5) = (1.5, 2.5);  δ = (1.5, −2.5)
    # loss = ½ (2·2.25 + 1·6.25) / 2 = 2.6875
    loss, (grads, target_grads, weight_grads) = td_loss_and_grads(
        critics.q_td_loss, q, target, a_tp1, s_t, a_t, t, r_t, s_tp1, gamma, weights
    )
    np.testing.assert_allclose(loss, 2.6875, rtol=1e-6)
    # w δ = (3, −2.5);  ∂/∂(w_s, w_a) = mean(w δ (s, a)) = ((3 − 5) / 2, (3 + 2.5) / 2) = (−1, 2.75)
    # ∂/∂b = (3 − 2.5) / 2 = 0.25
    np.testing.assert_allclose(grads.net.K, [[-1.0, 2.75]], rtol=1e-6)
    np.testing.assert_allclose(grads.net.k, [0.25], rtol=1e-6)
    np.testing.assert_array_equal(target_grads.net.K, [[0.0, 0.0]])
    np.testing.assert_array_equal(weight_grads, [0.0, 0.0])


def test_q_td_loss_with_time_input_is_zero_at_the_horizon():
    horizon = 2
    q = linear_q([1.0, 2.0, 2.0], 0.0, horizon)  # Q = s + 2a + 2 t/2
    target = linear_q([1.0, 1.0, 2.0], 1.0, horizon)  # Q' = s + a + 2 t/2 + 1, 0 at t = 2
    s_t, a_t = column(1.0, 2.0), column(1.0, -1.0)
    s_tp1, a_tp1 = column(0.0, 1.0), column(2.0, 1.0)
    t = ints(0, 1)
    r_t, weights, gamma = floats(0.0, 0.5), floats(2.0, 1.0), 0.5
    # Q(1, 1, 0) = 3;  Q(2, −1, 1) = 2 − 2 + 1 = 1
    # Q'(0, 2, 1) = 0 + 2 + 1 + 1 = 4;  Q'(1, 1, 2) = 0 (the horizon; 5 without the zeroing)
    # y = (0 + 2, 0.5 + 0) = (2, 0.5);  δ = (1, 0.5)
    # loss = ½ (2·1 + 1·0.25) / 2 = 0.5625
    loss, (grads, _, _) = td_loss_and_grads(
        critics.q_td_loss, q, target, a_tp1, s_t, a_t, t, r_t, s_tp1, gamma, weights
    )
    np.testing.assert_allclose(loss, 0.5625, rtol=1e-6)
    # w δ = (2, 0.5);  ∂/∂(w_s, w_a, w_t) = mean(w δ (s, a, t/T))
    #   = ((2 + 1) / 2, (2 − 0.5) / 2, (0 + 0.25) / 2) = (1.5, 0.75, 0.125)
    # ∂/∂b = (2 + 0.5) / 2 = 1.25
    np.testing.assert_allclose(grads.net.K, [[1.5, 0.75, 0.125]], rtol=1e-6)
    np.testing.assert_allclose(grads.net.k, [1.25], rtol=1e-6)


# --- 3. target networks ----------------------------------------------------------------


def test_polyak_update():
    target, online = linear_value([1.0], 0.0, 4), linear_value([3.0], 4.0, 4)
    polyak_update = eqx.filter_jit(critics.polyak_update)
    # τ = 1/4: (1 − τ) target + τ online = (0.75 + 0.75, 0 + 1) = (1.5, 1.0)
    new = polyak_update(target, online, np.float32(0.25))
    np.testing.assert_array_equal(new.net.K, [[1.5]])
    np.testing.assert_array_equal(new.net.k, [1.0])
    assert new.observe is identity and new.horizon == 4  # static fields kept
    # τ = 0 keeps the target, τ = 1 copies the online network.
    np.testing.assert_array_equal(polyak_update(target, online, np.float32(0.0)).net.K, [[1.0]])
    np.testing.assert_array_equal(polyak_update(target, online, np.float32(1.0)).net.K, [[3.0]])


def test_periodic_copy_copies_exactly_when_step_is_a_multiple_of_the_period():
    target, online = linear_value([1.0], 0.0), linear_value([3.0], 4.0)
    copy = jax.jit(critics.periodic_copy, static_argnums=3)
    # period 3: steps 0, 3, 6 copy (step % 3 == 0); 1, 2, 4, 5 keep the target.
    for step in range(7):
        new = copy(target, online, jnp.int32(step), 3)
        expected = online if step % 3 == 0 else target
        np.testing.assert_array_equal(new.net.K, expected.net.K, err_msg=f"step {step}")
        np.testing.assert_array_equal(new.net.k, expected.net.k, err_msg=f"step {step}")


# --- 4. truncated importance weights --------------------------------------------------


truncated_importance_weights = jax.jit(critics.truncated_importance_weights)


def test_truncated_importance_weights():
    log_now = np.log(floats(0.5, 0.2, 0.3))
    log_old = np.log(floats(1.0, 0.1, 0.3))
    # ratios p / p_old = (0.5, 2, 1); truncated at c = 1.5: (0.5, 1.5, 1)
    w = truncated_importance_weights(log_now, log_old, np.float32(1.5))
    np.testing.assert_allclose(w, [0.5, 1.5, 1.0], rtol=1e-6)
    # c = 1: min(ratio, 1) = (0.5, 1, 1)
    w = truncated_importance_weights(log_now, log_old, np.float32(1.0))
    np.testing.assert_allclose(w, [0.5, 1.0, 1.0], rtol=1e-6)


def test_truncated_importance_weights_multiply_along_a_sequence():
    # Per-step ratios (2, 1/4) and (2, 2): products 0.5 and 4; truncated at c = 3: (0.5, 3).
    log_now = np.log(np.array([[0.4, 0.1], [0.6, 0.8]], np.float32))
    log_old = np.log(np.array([[0.2, 0.4], [0.3, 0.4]], np.float32))
    w = truncated_importance_weights(log_now, log_old, np.float32(3.0))
    np.testing.assert_allclose(w, [0.5, 3.0], rtol=1e-6)


def test_truncated_importance_weights_are_held_out_of_the_gradient():
    log_now, log_old = floats(-0.7, 0.1), floats(0.0, -0.2)

    # Untruncated (c = 10) the ratio exp(log p − log p_old) would have gradient w itself.
    def total(now, old):
        return jnp.sum(critics.truncated_importance_weights(now, old, 10.0))

    g_now, g_old = jax.jit(jax.grad(total, argnums=(0, 1)))(log_now, log_old)
    np.testing.assert_array_equal(g_now, [0.0, 0.0])
    np.testing.assert_array_equal(g_old, [0.0, 0.0])


# --- 5. the safeguarded optimiser step ------------------------------------------------


def _safe_step():
    # Imported here, not at the top: svgx/train.py is being refactored, and a broken
    # import should fail these tests only.
    from svgx.train import safe_step

    return eqx.filter_jit(safe_step)


def _adam(max_grad_norm):
    # The convention safe_step documents: clip the global norm, then Adam (b1 0.9,
    # b2 0.999, eps 1e-8), then step by −learning_rate.
    return optax.chain(optax.clip_by_global_norm(max_grad_norm), optax.scale_by_adam())


def _half_square(m):
    return 0.5 * jnp.sum(m["w"] ** 2), None  # ∇ = w


# The safe_step tests relax strict promotion to "standard": optax's scale_by_adam raises
# a float to an int32 power in its bias correction (optax/tree_utils/_tree_math.py:449,
# `1 - decay**count`), reached from svgx.train.safe_step through `_optimizer(...).update`.
# They run in float64 because in float32 the bias correction 1 − 0.999 is off by 1.3e-5.


def test_safe_step_is_one_clipped_adam_step():
    safe_step = _safe_step()
    with jax.numpy_dtype_promotion("standard"), jax.enable_x64(True):
        params = {"w": jnp.array([3.0, 4.0], jnp.float64)}
        opt_state = _adam(1.0).init(params)
        # Step 1 from w = (3, 4), loss ½|w|², lr = 0.5, clip at 1:
        #   g = (3, 4), |g| = 5 -> ĝ = (0.6, 0.8)
        #   μ = 0.1 ĝ = (0.06, 0.08);  ν = 0.001 ĝ² = (3.6e-4, 6.4e-4);  count = 1
        #   update = (μ / 0.1) / (sqrt(ν / 0.001) + 1e-8) = ĝ / (ĝ + 1e-8)
        #          = (1 − 1.67e-8, 1 − 1.25e-8)
        #   w ← w − 0.5 update = (2.5 + 8.3e-9, 3.5 + 6.3e-9)
        params, opt_state, loss, aux, grad_norm, bad = safe_step(
            params, opt_state, _half_square, 0.5, 1.0
        )
        assert aux is None
        np.testing.assert_allclose(loss, 12.5, rtol=1e-12)  # ½ (9 + 16), before the step
        np.testing.assert_allclose(grad_norm, 5.0, rtol=1e-12)  # the unclipped norm
        assert not bool(bad)
        adam_state = opt_state[1]
        assert int(adam_state.count) == 1
        # Clipped: unclipped, μ would be (0.3, 0.4).
        np.testing.assert_allclose(adam_state.mu["w"], [0.06, 0.08], rtol=1e-12)
        np.testing.assert_allclose(adam_state.nu["w"], [3.6e-4, 6.4e-4], rtol=1e-12)
        update = np.array([0.6 / (0.6 + 1e-8), 0.8 / (0.8 + 1e-8)])
        np.testing.assert_allclose(params["w"], np.array([3.0, 4.0]) - 0.5 * update, rtol=1e-12)

        # Step 2: g = w ≈ (2.5, 3.5), |g| = sqrt(18.5) = 4.30116
        #   ĝ = g / 4.30116 = (0.58124, 0.81373)
        #   μ = 0.9 (0.06, 0.08) + 0.1 ĝ = (0.112124, 0.153373)
        #   ν = 0.999 (3.6e-4, 6.4e-4) + 0.001 ĝ² = (6.9748e-4, 1.30152e-3)
        #   update = (μ / (1 − 0.9²)) / (sqrt(ν / (1 − 0.999²)) + 1e-8) = (0.999046, 1.000407)
        #   w ← g − 0.5 update = (2.000477, 2.999796)
        g = np.asarray(params["w"])
        params, opt_state, loss, _, grad_norm, bad = safe_step(
            params, opt_state, _half_square, 0.5, 1.0
        )
        g_clipped = g / np.linalg.norm(g)
        mu = 0.9 * np.array([0.06, 0.08]) + 0.1 * g_clipped
        nu = 0.999 * np.array([3.6e-4, 6.4e-4]) + 0.001 * g_clipped**2
        update = (mu / (1 - 0.9**2)) / (np.sqrt(nu / (1 - 0.999**2)) + 1e-8)
        np.testing.assert_allclose(mu, [0.112124, 0.153373], rtol=1e-5)  # the comment's numbers
        np.testing.assert_allclose(update, [0.999046, 1.000407], rtol=1e-5)
        np.testing.assert_allclose(grad_norm, np.sqrt(18.5), rtol=1e-8)
        assert int(opt_state[1].count) == 2
        np.testing.assert_allclose(opt_state[1].mu["w"], mu, rtol=1e-12)
        np.testing.assert_allclose(opt_state[1].nu["w"], nu, rtol=1e-12)
        np.testing.assert_allclose(params["w"], g - 0.5 * update, rtol=1e-12)
        np.testing.assert_allclose(params["w"], [2.000477, 2.999796], rtol=1e-6)
        assert not bool(bad)


def _one_good_step(safe_step):
    """A module and a non-trivial optimiser state (after one step), so "unchanged" is not
    "still at initialisation"."""
    params = {"w": jnp.array([3.0, 4.0], jnp.float64)}
    params, opt_state, *_ = safe_step(params, _adam(1.0).init(params), _half_square, 0.5, 1.0)
    return params, opt_state


def _assert_trees_equal(x, y):
    for a, b in zip(jax.tree.leaves(x), jax.tree.leaves(y), strict=True):
        np.testing.assert_array_equal(a, b)


def _nan_loss(m):
    return jnp.sum(m["w"]) * jnp.nan, None


@pytest.mark.parametrize("case", ["infinite_gradient", "nan_loss"])
def test_safe_step_skips_a_nonfinite_update(case):
    safe_step = _safe_step()
    with jax.numpy_dtype_promotion("standard"), jax.enable_x64(True):
        params, opt_state = _one_good_step(safe_step)
        if case == "infinite_gradient":
            w_now = params["w"]
            # loss = Σ sqrt(w − w_now) = 0 is finite; its gradient ½ / sqrt(0) = +inf is not
            # (IEEE: 1/0 = inf on every machine).
            loss_fn = lambda m: (jnp.sum(jnp.sqrt(m["w"] - w_now)), None)  # noqa: E731
        else:
            loss_fn = _nan_loss
        new_params, new_opt_state, loss, _, grad_norm, bad = safe_step(
            params, opt_state, loss_fn, 0.5, 1.0
        )
        assert bool(bad)
        assert np.isnan(grad_norm)
        assert bool(np.isfinite(loss)) == (case == "infinite_gradient")
        _assert_trees_equal(new_params, params)
        _assert_trees_equal(new_opt_state, opt_state)  # count stays 1, μ and ν unchanged
        assert int(new_opt_state[1].count) == 1


def test_safe_step_disabled_changes_nothing():
    safe_step = _safe_step()
    with jax.numpy_dtype_promotion("standard"), jax.enable_x64(True):
        params, opt_state = _one_good_step(safe_step)
        for loss_fn in (_half_square, _nan_loss):
            new_params, new_opt_state, _, _, _, bad = safe_step(
                params, opt_state, loss_fn, 0.5, 1.0, enabled=jnp.bool_(False)
            )
            assert not bool(bad)  # a skipped step is not counted as a non-finite one
            _assert_trees_equal(new_params, params)
            _assert_trees_equal(new_opt_state, opt_state)


# --- 6. likelihood-ratio estimators ---------------------------------------------------

# d log σ / d(policy.log_std) at σ = 1: the soft clamp of svgx.policy is
# log σ = −5 + 3.5 (1 + tanh x) (LOG_STD_MIN = −5, LOG_STD_MAX = 2), so at log σ = 0
# tanh x = 5 / 3.5 − 1 = 3/7 and the derivative is 3.5 (1 − 9/49) = 20/7.
DLOGSTD_AT_SIGMA_1 = 20 / 7


def _policy_1d(gain, offset, std):
    """``a = gain · s + offset + std · η`` in float64 (call inside ``enable_x64``)."""
    return linear_policy(
        1, 1, K=jnp.array([[gain]], jnp.float64), k=jnp.array([offset], jnp.float64), init_std=std
    )


def _transitions(s, a, r, s_next, t, noise=None):
    """A Transition of 1-D states and actions from nested lists (numpy: nothing to compile)."""
    f64 = lambda x: np.asarray(x, np.float64)  # noqa: E731
    t = np.asarray(t, np.int32)
    noise = np.zeros(t.shape) if noise is None else noise
    return Transition(
        s=f64(s)[..., None],
        a=f64(a)[..., None],
        r=f64(r),
        s_next=f64(s_next)[..., None],
        t=t,
        done=np.zeros(t.shape, bool),
        log_prob=np.zeros(t.shape),
        noise=f64(noise)[..., None],
    )


def test_reinforce_loss_with_a_value_baseline():
    with jax.enable_x64(True):
        # π: a = 0.5 s + 0.25 + 1·η.  One episode, γ = 1/2:
        #   s = (1, 2), a = (1, 0), r = (1, 2);  μ = (0.75, 1.25), a − μ = (0.25, −1.25)
        #   G = (1 + 2/2, 2) = (2, 2);  baseline b(s, t) = s/2 = (0.5, 1);  A = G − b = (1.5, 1)
        #   γ^t = (1, 0.5), so the per-step weights γ^t A_t are (1.5, 0.5)
        policy = _policy_1d(0.5, 0.25, 1.0)
        episodes = _transitions([[1.0, 2.0]], [[1.0, 0.0]], [[1.0, 2.0]], [[2.0, 0.0]], [[0, 1]])
        baseline = lambda s, t: 0.5 * s[0]  # noqa: E731
        estimate, aux = policy_gradient(
            estimators.reinforce_loss, policy, episodes, gamma=0.5, baseline=baseline
        )
        # ∇ log π = ((a − μ) s, a − μ, ((a − μ)² − 1) dlogσ) with σ = 1:
        #   ∇K = 1.5·0.25·1 + 0.5·(−1.25)·2 = −0.875
        #   ∇k = 1.5·0.25 + 0.5·(−1.25) = −0.25
        #   ∇log σ = 1.5·(0.0625 − 1) + 0.5·(1.5625 − 1) = −1.125, times 20/7
        np.testing.assert_allclose(estimate.net.K, [[-0.875]], rtol=1e-10)
        np.testing.assert_allclose(estimate.net.k, [-0.25], rtol=1e-10)
        np.testing.assert_allclose(estimate.log_std, [-1.125 * DLOGSTD_AT_SIGMA_1], rtol=1e-10)
        np.testing.assert_allclose(aux["return"], [2.0], rtol=1e-12)
        # loss = −Σ γ^t A_t log π_t, log π_t = −(a − μ)²/2 − ½ log 2π
        #      = 1.5 (0.03125 + 0.91894) + 0.5 (0.78125 + 0.91894) = 2.275377
        loss, _ = eqx.filter_jit(estimators.reinforce_loss)(
            policy, episodes, gamma=0.5, baseline=baseline
        )
        expected = 1.5 * (0.03125 + HALF_LOG_2PI) + 0.5 * (0.78125 + HALF_LOG_2PI)
        np.testing.assert_allclose(loss, expected, rtol=1e-10)


def test_reinforce_loss_with_the_leave_one_out_baseline():
    with jax.enable_x64(True):
        # π: a = 0·s + 0 + η (so a − μ = a).  Two episodes, γ = 1:
        #   ep 1: s = (1, 1),  a = (1, 1), r = (1, 1) -> G = (2, 1)
        #   ep 2: s = (2, −1), a = (1, 2), r = (0, 3) -> G = (3, 3)
        #   b_t = the other episode's G (leave-one-out): (3, 3) and (2, 1)
        #   A = (−1, −2) and (1, 2)   (the batch mean (2.5, 2) would halve them: bias 1 − 1/n)
        policy = _policy_1d(0.0, 0.0, 1.0)
        episodes = _transitions(
            [[1.0, 1.0], [2.0, -1.0]],
            [[1.0, 1.0], [1.0, 2.0]],
            [[1.0, 1.0], [0.0, 3.0]],
            [[1.0, 2.0], [-1.0, 0.0]],
            [[0, 1], [0, 1]],
        )
        estimate, aux = policy_gradient(estimators.reinforce_loss, policy, episodes, gamma=1.0)
        # ∇k = mean_ep Σ_t A_t a_t = ((−1 − 2) + (1 + 4)) / 2 = 1   (6 with no baseline)
        # ∇K = mean_ep Σ_t A_t a_t s_t = ((−1 − 2) + (2 − 4)) / 2 = −2.5
        np.testing.assert_allclose(estimate.net.k, [1.0], rtol=1e-10)
        np.testing.assert_allclose(estimate.net.K, [[-2.5]], rtol=1e-10)
        np.testing.assert_allclose(aux["return"], [2.0, 3.0], rtol=1e-12)


def test_actor_critic_loss():
    with jax.enable_x64(True):
        # π: a = 0.5 s + 0.25 + 1·η;  V(s, t) = s with horizon T = 2 (V = 0 at t = 2); γ = 1/2.
        #   (s, a, r, s', t) = (1, 1, 1, 2, 0) and (2, 0, 2.5, 3, 1)
        #   δ_0 = 1 + 0.5 V(2, 1) − V(1, 0) = 1 + 1 − 1 = 1
        #   δ_1 = 2.5 + 0.5 V(3, 2) − V(2, 1) = 2.5 + 0 − 2 = 0.5   (2 without the zeroing)
        #   a − μ = (1 − 0.75, 0 − 1.25) = (0.25, −1.25)
        policy = _policy_1d(0.5, 0.25, 1.0)
        value = critics.ValueFunction(Linear(np.array([[1.0, 0.0]]), np.array([0.0])), identity, 2)
        batch = _transitions([1.0, 2.0], [1.0, 0.0], [1.0, 2.5], [2.0, 3.0], [0, 1])
        estimate, aux = policy_gradient(
            estimators.actor_critic_loss, policy, value, batch, gamma=0.5
        )
        np.testing.assert_allclose(aux["td_error"], [1.0, 0.5], rtol=1e-12)
        # ∇K = mean(δ (a − μ) s) = (0.25 − 0.5·1.25·2) / 2 = −0.5
        # ∇k = mean(δ (a − μ)) = (0.25 − 0.625) / 2 = −0.1875
        # ∇log σ = mean(δ ((a − μ)² − 1)) dlogσ = (−0.9375 + 0.5·0.5625) / 2 · 20/7
        #        = −0.328125 · 20/7
        np.testing.assert_allclose(estimate.net.K, [[-0.5]], rtol=1e-10)
        np.testing.assert_allclose(estimate.net.k, [-0.1875], rtol=1e-10)
        np.testing.assert_allclose(estimate.log_std, [-0.328125 * DLOGSTD_AT_SIGMA_1], rtol=1e-10)
        # weights (2, 1) scale δ to (2, 0.5): ∇k = (0.5 − 0.625) / 2 = −0.0625
        weighted, aux = policy_gradient(
            estimators.actor_critic_loss,
            policy,
            value,
            batch,
            gamma=0.5,
            weights=np.array([2.0, 1.0]),
        )
        np.testing.assert_allclose(weighted.net.k, [-0.0625], rtol=1e-10)
        # The critic gets no gradient from the actor's loss.
        critic_grads = eqx.filter_jit(
            eqx.filter_grad(lambda v: estimators.actor_critic_loss(policy, v, batch, gamma=0.5)[0])
        )(value)
        np.testing.assert_array_equal(critic_grads.net.K, [[0.0, 0.0]])


# --- 7. SVG(2) on a 1-D linear system -------------------------------------------------


def test_svg2_on_a_one_dimensional_linear_system_matches_the_hand_derivative():
    """``L_2 = r(s0, a0) + γ r(s1, a1) + γ² V(s2)``, noises held fixed, differentiated by hand.

    System (``lqg`` with one state and one action): ``s' = A s + B a + n ξ``,
    ``r(s, a) = −(s² + ρ a²)``; policy ``a = k s + m + σ η``; value ``V(s) = −p s²``.
    Forward-mode chain rule for a parameter θ (``s0`` is data, so ``ds0 = 0``)::

        da0 = ∂μ/∂θ(s0) + η0 ∂σ/∂θ
        ds1 = B da0
        da1 = ∂μ/∂θ(s1) + k ds1 + η1 ∂σ/∂θ
        ds2 = A ds1 + B da1
        dL  = −2ρ a0 da0 + γ (−2 s1 ds1 − 2ρ a1 da1) − 2 γ² p s2 ds2

    with ``∂μ/∂k = s``, ``∂μ/∂m = 1`` and, for the free ``log_std`` parameter x of the
    soft clamp ``log σ = −5 + 3.5 (1 + tanh x)``, ``∂σ/∂x = σ · 3.5 (1 − tanh² x)``.
    """
    with jax.enable_x64(True):
        rho, noise, gamma, p = 0.1, 0.1, 0.9, 1.5
        env = envs.make("lqg", state_size=1, action_size=1, noise_scale=noise, control_cost=rho)
        A, B = float(env.A[0, 0]), float(env.B[0, 0])
        assert abs(abs(A) - 1.05) < 1e-12  # a 1×1 A is rescaled to spectral radius 1.05
        k, m, sigma = -0.4, 0.1, 0.5
        policy = _policy_1d(k, m, sigma)
        value = lambda s, t: -p * (s @ s)  # noqa: E731

        # The recorded stretch, from s0 with noises η, ξ.
        s0, (eta0, eta1), (xi0, xi1) = 0.8, (0.5, -1.0), (0.3, -0.7)
        a0 = k * s0 + m + sigma * eta0
        s1 = A * s0 + B * a0 + noise * xi0
        a1 = k * s1 + m + sigma * eta1
        s2 = A * s1 + B * a1 + noise * xi1
        r0, r1 = -(s0**2 + rho * a0**2), -(s1**2 + rho * a1**2)
        stretch = _transitions(
            [[s0, s1]], [[a0, a1]], [[r0, r1]], [[s1, s2]], [[0, 1]], noise=[[xi0, xi1]]
        )

        # log σ = −5 + 3.5 (1 + tanh x): tanh x = (log 0.5 + 5) / 3.5 − 1 = 0.230529,
        # ∂σ/∂x = σ · 3.5 (1 − tanh² x) = 1.656998
        tanh_x = (math.log(sigma) + 5) / 3.5 - 1
        dsigma_dx = sigma * 3.5 * (1 - tanh_x**2)

        def hand_derivative(dmu0, dmu1_fixed_s, dsigma):
            da0 = dmu0 + eta0 * dsigma
            ds1 = B * da0
            da1 = dmu1_fixed_s + k * ds1 + eta1 * dsigma
            ds2 = A * ds1 + B * da1
            return (
                -2 * rho * a0 * da0
                + gamma * (-2 * s1 * ds1 - 2 * rho * a1 * da1)
                - 2 * gamma**2 * p * s2 * ds2
            )

        # With lqg's seed-0 system (A = 1.05, B = −0.132105) these give a0 = 0.03,
        # s1 = 0.866037, a1 = −0.746415, s2 = 0.937944, L_2 = −2.434132 and
        # dL/dk = 0.808388, dL/dm = 0.974541, dL/dx = −0.274900.
        dL_dk = hand_derivative(s0, s1, 0.0)
        dL_dm = hand_derivative(1.0, 1.0, 0.0)
        dL_dx = hand_derivative(0.0, 0.0, dsigma_dx)

        dynamics = SimulatorDynamics(env)
        estimate, aux = policy_gradient(
            estimators.svg_loss, policy, dynamics, env.reward, value, stretch, gamma=gamma
        )
        surrogate = r0 + gamma * r1 + gamma**2 * (-p * s2**2)
        np.testing.assert_allclose(aux["surrogate"], [surrogate], rtol=1e-12)
        np.testing.assert_allclose(aux["importance_weight"], [1.0])
        np.testing.assert_allclose(estimate.net.K, [[dL_dk]], rtol=1e-10)
        np.testing.assert_allclose(estimate.net.k, [dL_dm], rtol=1e-10)
        np.testing.assert_allclose(estimate.log_std, [dL_dx], rtol=1e-10)


def test_per_step_flattens_episodes_of_a_task_without_noise():
    """reacher4 and the swimmers draw no noise: the noise leaf is [n, T, 0]."""
    from svgx import rollout

    episodes = dict(s=jnp.arange(24.0).reshape(2, 3, 4), noise=jnp.zeros((2, 3, 0)))
    flat = rollout.per_step(episodes)
    assert flat["noise"].shape == (6, 0)
    np.testing.assert_array_equal(flat["s"], np.arange(24.0).reshape(6, 4))
