"""Critics (paper §5, Alg. 4): ``V(s, t)`` and ``Q(s, a, t)`` by fitted policy evaluation.

TD(0) regression towards a target copy of the parameters (Polyak averaging or a
periodic copy), on replayed mini-batches, weighted by truncated importance
weights. Finite-horizon tasks whose value depends on time give the critic the
normalised time ``t / T`` and define it as 0 at the horizon; no task terminates
early, so the last step of an episode is a truncation and the target of a
time-blind critic bootstraps through it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray

from svgx.nets import MLP

if TYPE_CHECKING:
    from svgx.replay import Transition


def _time_features(x, t, horizon):
    if horizon is None:
        return x
    return jnp.concatenate([x, jnp.asarray(t, x.dtype)[None] / horizon])


def _zero_at_horizon(v, t, horizon):
    return v if horizon is None else jnp.where(jnp.asarray(t) >= horizon, 0.0, v)


class ValueFunction(eqx.Module):
    """``V(s, t)``: a tanh MLP on ``φ(s)`` (and ``t / T`` when ``horizon`` is set)."""

    net: MLP
    observe: Callable[[Array], Array] = eqx.field(static=True)
    horizon: int | None = eqx.field(static=True)

    def __call__(self, s: Float[Array, " n_s"], t: Int[Array, ""] | int) -> Float[Array, ""]:
        v = self.net(_time_features(self.observe(s), t, self.horizon))[0]
        return _zero_at_horizon(v, t, self.horizon)


class QFunction(eqx.Module):
    """``Q(s, a, t)``: a tanh MLP on ``(φ(s), a)`` (and ``t / T`` when ``horizon`` is set)."""

    net: MLP
    observe: Callable[[Array], Array] = eqx.field(static=True)
    horizon: int | None = eqx.field(static=True)

    def __call__(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"], t: Int[Array, ""] | int
    ) -> Float[Array, ""]:
        x = jnp.concatenate([self.observe(s), a])
        q = self.net(_time_features(x, t, self.horizon))[0]
        return _zero_at_horizon(q, t, self.horizon)


def value_function(
    observe,
    observation_size: int,
    *,
    key: PRNGKeyArray,
    hidden=(100, 100),
    horizon: int | None = None,
) -> ValueFunction:
    """A value function; ``horizon`` switches on the time input (and ``V = 0`` at ``T``)."""
    in_size = observation_size + (horizon is not None)
    return ValueFunction(MLP(in_size, 1, tuple(hidden), key=key), observe, horizon)


def q_function(
    observe,
    observation_size: int,
    action_size: int,
    *,
    key: PRNGKeyArray,
    hidden=(100, 100),
    horizon: int | None = None,
) -> QFunction:
    """A Q function; ``horizon`` switches on the time input (and ``Q = 0`` at ``T``)."""
    in_size = observation_size + action_size + (horizon is not None)
    return QFunction(MLP(in_size, 1, tuple(hidden), key=key), observe, horizon)


def value_td_loss(
    value: ValueFunction,
    target: ValueFunction,
    s_t: Float[Array, "batch n_s"],
    t: Int[Array, " batch"],
    r_t: Float[Array, " batch"],
    s_tp1: Float[Array, "batch n_s"],
    gamma: float | Float[Array, ""] | Float[Array, " batch"],
    weights: Float[Array, " batch"],
    t_tp1: Int[Array, " batch"] | None = None,
) -> Float[Array, ""]:
    """Importance-weighted TD(0): ``mean(w (V(s_t) − r_t − γ V'(s_{t+1}))²) / 2``.

    An n-step target passes the discounted reward sum as ``r_t``, the bootstrap
    state and its time as ``s_tp1`` and ``t_tp1`` (default ``t + 1``), and the
    per-example discount ``γ^n`` as ``gamma``.
    """
    y = value_td_target(target, t, r_t, s_tp1, gamma, t_tp1)
    return td_regression_loss(jax.vmap(value)(s_t, t), y, weights)


def td_regression_loss(
    predictions: Float[Array, " batch"], y: Float[Array, " batch"], weights: Float[Array, " batch"]
) -> Float[Array, ""]:
    """``mean(w (prediction − y)²) / 2``, the weights held out of the gradient."""
    return 0.5 * jnp.mean(jax.lax.stop_gradient(weights) * (predictions - y) ** 2)


def value_td_target(
    target: ValueFunction,
    t: Int[Array, " batch"],
    r_t: Float[Array, " batch"],
    s_tp1: Float[Array, "batch n_s"],
    gamma: float | Float[Array, ""] | Float[Array, " batch"],
    t_tp1: Int[Array, " batch"] | None = None,
) -> Float[Array, " batch"]:
    """``V``'s TD target ``y = r_t + γ V'(s_{t+1}, t_{t+1})`` (default ``t_{t+1} = t + 1``;
    n-step targets as in :func:`value_td_loss`), held out of the gradient."""
    v_tp1 = jax.vmap(target)(s_tp1, t + 1 if t_tp1 is None else t_tp1)
    return jax.lax.stop_gradient(r_t + gamma * v_tp1)


def n_step_target(
    runs: Transition, inside: Bool[Array, "batch n"], gamma: float | Float[Array, ""]
) -> tuple[
    Float[Array, " batch"], Float[Array, "batch n_s"], Int[Array, " batch"], Float[Array, " batch"]
]:
    """What :func:`value_td_loss` needs for n-step targets ``Σ_{i<k} γ^i r_i + γ^k V'(s_k, t_k)``
    of runs of ``n`` consecutive replayed steps (leaves ``[batch, n, …]``), of which the
    first ``k`` are ``inside`` the run (:func:`svgx.replay.sample_n_step`):
    ``(Σ_{i<k} γ^i r_i, s_k, t_k, γ^k)``."""
    n = inside.shape[1]
    powers = gamma ** jnp.arange(n, dtype=runs.r.dtype)
    reward_sum = jnp.sum(jnp.where(inside, powers * runs.r, 0.0), axis=1)
    k = inside.sum(axis=1)
    last = jnp.arange(k.shape[0]), k - 1
    return reward_sum, runs.s_next[last], runs.t[last] + 1, gamma ** k.astype(runs.r.dtype)


def q_td_loss(
    q: QFunction,
    target: QFunction,
    a_tp1: Float[Array, "batch n_a"],
    s_t: Float[Array, "batch n_s"],
    a_t: Float[Array, "batch n_a"],
    t: Int[Array, " batch"],
    r_t: Float[Array, " batch"],
    s_tp1: Float[Array, "batch n_s"],
    gamma: float | Float[Array, ""],
    weights: Float[Array, " batch"],
) -> Float[Array, ""]:
    """TD(0) for ``Q`` with ``y = r + γ Q'(s', a')``; ``a' = π(s', η')`` is the caller's."""
    y = q_td_target(target, a_tp1, t, r_t, s_tp1, gamma)
    return td_regression_loss(jax.vmap(q)(s_t, a_t, t), y, weights)


def q_td_target(
    target: QFunction,
    a_tp1: Float[Array, "batch n_a"],
    t: Int[Array, " batch"],
    r_t: Float[Array, " batch"],
    s_tp1: Float[Array, "batch n_s"],
    gamma: float | Float[Array, ""],
) -> Float[Array, " batch"]:
    """``Q``'s TD target ``y = r_t + γ Q'(s_{t+1}, a_{t+1}, t + 1)``, held out of the
    gradient."""
    q_tp1 = jax.vmap(target)(s_tp1, a_tp1, t + 1)
    return jax.lax.stop_gradient(r_t + gamma * q_tp1)


def explained_variance(
    returns: Float[Array, " batch"], predictions: Float[Array, " batch"]
) -> Float[Array, ""]:
    """``1 − Var(G − V) / Var(G)`` (population variances) of a critic's predictions ``V``
    of returns ``G``: 1 for exact predictions, 0 for predictions no better than a
    constant, negative for worse ones. NaN when ``Var(G) = 0``, where it is undefined
    (as Stable-Baselines3's ``explained_variance``)."""
    var_returns = jnp.var(returns)
    ratio = jnp.var(returns - predictions) / jnp.where(var_returns == 0, 1, var_returns)
    return jnp.where(var_returns == 0, jnp.nan, 1 - ratio)


def polyak_update(target, online, tau: float | Float[Array, ""]):
    """``target ← (1 − τ) target + τ online`` on the array leaves of an Equinox module."""
    online_params, static = eqx.partition(online, eqx.is_array)
    target_params, _ = eqx.partition(target, eqx.is_array)
    return eqx.combine(optax.incremental_update(online_params, target_params, tau), static)


def periodic_copy(target, online, step: Int[Array, ""], period: int):
    """``target ← online`` every ``period`` steps (``optax.periodic_update``)."""
    online_params, static = eqx.partition(online, eqx.is_array)
    target_params, _ = eqx.partition(target, eqx.is_array)
    return eqx.combine(optax.periodic_update(online_params, target_params, step, period), static)


def truncated_importance_weights(
    log_prob_now: Float[Array, " batch *k"],
    log_prob_behaviour: Float[Array, " batch *k"],
    truncation: float | Float[Array, ""],
) -> Float[Array, " batch"]:
    """``w = min(c, Π_t p(a_t|s_t; θ) / p(a_t|s_t; θ_k))`` (paper eq. 13, truncated; see
    docs/design.md, "Replay and importance weights"), held out of the gradient.

    With a trailing sequence axis the per-step ratios are multiplied first.
    """
    log_ratio = log_prob_now - log_prob_behaviour
    if log_ratio.ndim > 1:
        log_ratio = log_ratio.reshape(log_ratio.shape[0], -1).sum(-1)
    log_c = jnp.log(truncation)
    return jax.lax.stop_gradient(jnp.exp(jnp.minimum(log_ratio, log_c)))
