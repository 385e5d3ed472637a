"""Policy-gradient estimators (paper §4): one value-expansion mechanism, and baselines.

docs/design.md, "Value expansion", explains the mechanism at length.

**Value expansion.** Take a stretch of a real trajectory ``(s_j, a_j, …, s_{j+k})``,
infer its policy noises ``η_t`` and dynamics noises ``ξ_t`` at the current
parameters, hold them fixed, and rebuild the stretch as a function of ``θ``::

    ŝ_j = s_j,   â_t = π(ŝ_t, η_t; θ),   ŝ_{t+1} = f̂(ŝ_t, â_t, ξ_t)
    L_k(θ) = Σ_{t=j}^{j+k−1} γ^{t−j} r(ŝ_t, â_t, t) + γ^k V(ŝ_{j+k}, j+k)

Reverse-mode autodiff of this ``lax.scan`` is the paper's backward recursion
(eq. 11–12 / Alg. 1–2); no Jacobian matrix is formed. The depth and the
bootstrap pick the estimator:

=========  ======================================  ====================  ==========
estimator  stretch                                 bootstrap             paper
=========  ======================================  ====================  ==========
SVG(∞)     the whole episode                       none                  Alg. 1
SVG(1)     one step                                ``V(s')``             §4.3
SVG(k)     ``k`` steps                             ``V(s_{j+k})``        §8
SVG(0)     none                                    ``Q(s, π(s, η))``     Alg. 3
=========  ======================================  ====================  ==========

and the :class:`~svgx.dynamics.Dynamics` held picks the Jacobian source.
Replayed stretches are weighted by truncated importance weights (paper eq. 13,
truncated; docs/design.md, "Replay and importance weights").

**Baselines.** The planner (the same recursion along trajectories simulated with
fresh noise), the likelihood-ratio actor-critic (TD error) and REINFORCE.

Every ``*_loss`` returns ``(loss, aux)`` with ``loss = −mean(w · L)`` over the
batch, so ``-jax.grad`` of it is the estimate (up to the batch's scale).
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, Int, PRNGKeyArray, PyTree

from svgx.critics import truncated_importance_weights
from svgx.dynamics import Dynamics
from svgx.policy import GaussianPolicy
from svgx.replay import Transition

Reward = Callable[[Array, Array, Array], Array]  # r(s, a, t)
Value = Callable[[Array, Array], Array]  # V(s, t)
QValue = Callable[[Array, Array, Array], Array]  # Q(s, a, t)


def infer_noises(
    policy: GaussianPolicy, dynamics: Dynamics, stretch: Transition
) -> tuple[Float[Array, "k n_a"], PyTree]:
    """``(η_t, ξ_t)`` of one recorded stretch (leaves ``[k, …]``), out of the gradient."""
    eta = jax.vmap(policy.infer_noise)(stretch.s, stretch.a)
    xi = jax.vmap(dynamics.infer_noise)(stretch.s, stretch.a, stretch.s_next, stretch.noise)
    return jax.lax.stop_gradient((eta, xi))


def rebuild(
    policy: GaussianPolicy,
    dynamics: Dynamics,
    reward: Reward,
    s_j: Float[Array, " n_s"],
    t: Int[Array, " k"],
    eta: Float[Array, "k n_a"],
    xi: PyTree,
    gamma: float | Float[Array, ""],
) -> tuple[Float[Array, "k+1 n_s"], Float[Array, "k n_a"], Float[Array, ""]]:
    """Rebuilds a stretch from ``s_j`` with the noises held fixed.

    Returns the states ``ŝ_j … ŝ_{j+k}``, the actions ``â_j … â_{j+k−1}`` and the
    discounted reward sum ``Σ γ^{t−j} r(ŝ_t, â_t, t)``.
    """

    def body(carry, inputs):
        s, discount, total = carry
        t_i, eta_i, xi_i = inputs
        a = policy.action(s, eta_i)
        total = total + discount * reward(s, a, t_i)
        s_next = dynamics(s, a, xi_i)
        return (s_next, discount * gamma, total), (s, a)

    zero = jnp.zeros((), s_j.dtype)
    (s_last, _, total), (states, actions) = jax.lax.scan(
        body, (s_j, jnp.ones((), s_j.dtype), zero), (t, eta, xi)
    )
    return jnp.concatenate([states, s_last[None]]), actions, total


def value_expansion_terms(
    policy: GaussianPolicy,
    dynamics: Dynamics,
    reward: Reward,
    value: Value | None,
    stretch: Transition,
    gamma: float | Float[Array, ""],
    eta: Float[Array, "k n_a"] | None = None,
) -> tuple[Float[Array, ""], Float[Array, ""]]:
    """The two terms of ``L_k(θ)`` of one stretch (leaves ``[k, …]``): the reward sum
    ``Σ_{t=j}^{j+k−1} γ^{t−j} r(ŝ_t, â_t, t)`` and the bootstrap ``γ^k V(ŝ_{j+k}, j+k)``
    (0 for ``value=None``, SVG(∞)).

    ``eta`` replaces the inferred policy noises: fresh ``η ~ N(0, I)`` rebuild the
    stretch with the current policy's own actions from the replayed ``s_j`` (the
    dynamics noises ``ξ`` are still inferred from the recorded transitions)."""
    inferred, xi = infer_noises(policy, dynamics, stretch)
    eta = inferred if eta is None else jax.lax.stop_gradient(eta)
    states, _, total = rebuild(policy, dynamics, reward, stretch.s[0], stretch.t, eta, xi, gamma)
    if value is None:
        return total, jnp.zeros_like(total)
    k = stretch.t.shape[0]
    return total, gamma**k * value(states[-1], stretch.t[-1] + 1)


def value_expansion(
    policy: GaussianPolicy,
    dynamics: Dynamics,
    reward: Reward,
    value: Value | None,
    stretch: Transition,
    gamma: float | Float[Array, ""],
) -> Float[Array, ""]:
    """``L_k(θ)`` of one stretch (leaves ``[k, …]``); ``value=None`` bootstraps with 0 (SVG(∞))."""
    reward_sum, bootstrap = value_expansion_terms(policy, dynamics, reward, value, stretch, gamma)
    return reward_sum if value is None else reward_sum + bootstrap


def _weights(policy, batch, truncation, extra):
    """Truncated importance weights of a batch (1 when ``truncation`` is None: on-policy)."""
    n = batch.t.shape[0]
    if truncation is None:
        w = jnp.ones(n, batch.s.dtype)
    else:
        log_p = (
            jax.vmap(jax.vmap(policy.log_prob))(batch.s, batch.a)
            if batch.a.ndim == 3
            else (jax.vmap(policy.log_prob)(batch.s, batch.a))
        )
        w = truncated_importance_weights(log_p, batch.log_prob, truncation)
    if extra is not None:
        w = w * jax.lax.stop_gradient(extra)
    return w


def svg_loss(
    policy: GaussianPolicy,
    dynamics: Dynamics,
    reward: Reward,
    value: Value | None,
    batch: Transition,
    *,
    gamma: float | Float[Array, ""],
    truncation: float | Float[Array, ""] | None = None,
    weights: Float[Array, " batch"] | None = None,
    eta: Float[Array, "batch k n_a"] | None = None,
    clip: float | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """SVG(k) for a batch of stretches (leaves ``[batch, k, …]``): ``−mean(w L_k)``.

    ``value=None`` is SVG(∞) (stretches are whole episodes). ``truncation`` is the
    importance-weight cap ``c`` for replayed data (None: on-policy, ``w = 1``);
    ``weights`` multiplies further per-stretch weights (e.g. ``γ^{t_j}``). ``eta``,
    fresh policy noises, replaces the inferred ones (:func:`value_expansion_terms`):
    the actions are then the current policy's and need no importance weight.

    ``clip`` clips each stretch's own gradient ``∇θ (−w_i L_i)`` to at most ``clip``
    times the batch's median norm before the mean is taken, so that one transition
    through a stiff contact cannot outweigh the batch. The per-stretch norms take one
    more forward and reverse pass, vmapped over the stretches; the loss is then
    ``−mean(c_i w_i L_i)`` with ``c_i = min(1, clip · median(n) / n_i)`` held out of the
    gradient (its value is not the plain loss's).

    ``aux`` holds ``importance_weight`` (``w``), ``surrogate`` (``L_k``) and its two
    terms (:func:`value_expansion_terms`), ``reward_sum`` and ``bootstrap``, per stretch,
    and with ``clip`` the factors ``clip_scale`` (``c``).
    """
    w = _weights(policy, batch, truncation, weights)

    def terms(policy, stretch, eta):
        return value_expansion_terms(policy, dynamics, reward, value, stretch, gamma, eta)

    reward_sum, bootstrap = jax.vmap(lambda stretch, eta: terms(policy, stretch, eta))(batch, eta)
    surrogate = reward_sum if value is None else reward_sum + bootstrap
    aux = {
        "importance_weight": w,
        "surrogate": surrogate,
        "reward_sum": reward_sum,
        "bootstrap": bootstrap,
    }
    if clip is None:
        return -jnp.mean(w * surrogate), aux

    def norm(stretch, eta):  # ‖∇θ L_i‖ of one stretch alone
        grads = eqx.filter_grad(lambda policy: sum(terms(policy, stretch, eta)))(policy)
        return optax.tree.norm(eqx.filter(grads, eqx.is_inexact_array))

    norms = w * jax.vmap(norm)(batch, eta)  # w_i >= 0 is held out of the gradient
    limit = clip * jnp.median(norms)
    scale = jnp.where(norms > limit, limit / jnp.where(norms > 0, norms, 1), 1)
    scale = jax.lax.stop_gradient(scale)
    return -jnp.mean(scale * w * surrogate), {**aux, "clip_scale": scale}


def svg_gradient_terms(
    loss_fn: Callable[[GaussianPolicy], tuple[Float[Array, ""], dict[str, Array]]],
    policy: GaussianPolicy,
) -> tuple[GaussianPolicy, GaussianPolicy]:
    """``(∇θ −mean(w Σ γ^{t−j} r), ∇θ −mean(w γ^k V(ŝ_{j+k})))``: the gradient of an
    :func:`svg_loss` (``loss_fn(policy)``, which returns its ``aux``) split into the part
    through the rewards of the stretch and the part through its bootstrap ``V``. The
    two sum to ``∇θ loss_fn``; the second is zero for SVG(∞) and for a constant ``V``.
    One forward pass and two backward passes."""

    def terms(policy):
        _, aux = loss_fn(policy)
        w = aux["importance_weight"]  # held out of the gradient by svg_loss
        return -jnp.mean(w * aux["reward_sum"]), -jnp.mean(w * aux["bootstrap"])

    (reward_term, value_term), vjp = eqx.filter_vjp(terms, policy)
    one, zero = jnp.ones_like(reward_term), jnp.zeros_like(value_term)
    (through_reward,) = vjp((one, zero))
    (through_value,) = vjp((zero, one))
    return through_reward, through_value


def svg0_loss(
    policy: GaussianPolicy,
    q: QValue,
    batch: Transition,
    *,
    truncation: float | Float[Array, ""] | None = None,
    weights: Float[Array, " batch"] | None = None,
    eta: Float[Array, "batch n_a"] | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """SVG(0) (Alg. 3) for a batch of transitions: ``−mean(w Q(s, π(s, η; θ), t))``, ``η``
    inferred from the recorded actions, or ``eta`` given (fresh noises: pass no
    ``truncation``, as the actions are then the current policy's)."""
    w = _weights(policy, batch, truncation, weights)
    if eta is None:
        eta = jax.vmap(policy.infer_noise)(batch.s, batch.a)
    eta = jax.lax.stop_gradient(eta)
    a = jax.vmap(policy.action)(batch.s, eta)
    surrogate = jax.vmap(q)(batch.s, a, batch.t)
    return -jnp.mean(w * surrogate), {"importance_weight": w, "surrogate": surrogate}


def planner_loss(
    policy: GaussianPolicy,
    dynamics: Dynamics,
    reward: Reward,
    value: Value | None,
    s_0: Float[Array, "batch n_s"],
    t_0: Int[Array, " batch"],
    *,
    key: PRNGKeyArray,
    steps: int,
    gamma: float | Float[Array, ""],
    horizon: int | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """The planner baseline (§6.1): the same recursion along ``steps``-step trajectories
    simulated by ``dynamics`` from real start states with freshly sampled noise.

    ``horizon``: the episode's length ``T`` when the critic knows time (``V = 0`` at
    ``T``); a trajectory that reaches ``T`` then earns no reward beyond it, as the
    episode does. None: a time-invariant task's discounted sum of all ``steps``."""
    if horizon is not None:
        reward = _within_horizon(reward, horizon)
    batch = s_0.shape[0]
    key_eta, key_xi = jax.random.split(key)
    eta = jax.random.normal(key_eta, (batch, steps, policy_action_size(policy, s_0[0])), s_0.dtype)
    xi = jax.vmap(jax.vmap(dynamics.sample_noise))(jax.random.split(key_xi, (batch, steps)))
    t = t_0[:, None] + jnp.arange(steps)

    def one(s, t_i, eta_i, xi_i):
        states, _, total = rebuild(policy, dynamics, reward, s, t_i, eta_i, xi_i, gamma)
        if value is None:
            return total
        return total + gamma**steps * value(states[-1], t_i[-1] + 1)

    surrogate = jax.vmap(one)(s_0, t, eta, xi)
    return -jnp.mean(surrogate), {"surrogate": surrogate}


def _within_horizon(reward: Reward, horizon: int) -> Reward:
    """``r(s, a, t)`` for ``t < horizon`` and 0 after: the episode has ended."""

    def masked(s, a, t):
        return jnp.where(jnp.asarray(t) < horizon, reward(s, a, t), 0.0)

    return masked


def simulated_return(
    policy: GaussianPolicy,
    dynamics: Dynamics,
    reward: Reward,
    s: Float[Array, " n_s"],
    t: Int[Array, ""],
    *,
    key: PRNGKeyArray,
    steps: int,
    gamma: float | Float[Array, ""],
    horizon: int,
) -> tuple[Float[Array, ""], Float[Array, " n_s"], Int[Array, ""], Float[Array, ""]]:
    """``(Σ_{i<k} γ^i r_i, s_k, t_k, γ^k)`` of ``k = min(steps, horizon − t)`` steps of the
    policy's own actions (fresh noise) through ``dynamics`` (fresh noise) from ``(s, t)``:
    what an n-step target ``Σ_{i<k} γ^i r_i + γ^k V'(s_k, t_k)`` of the current policy
    needs, with no importance weight. Held out of the gradient."""

    def body(carry, key_step):
        s, t, discount, total = carry
        key_action, key_noise = jax.random.split(key_step)
        a, _ = policy.sample(s, key=key_action)
        inside = t < horizon
        s_next = dynamics(s, a, dynamics.sample_noise(key_noise))
        total = total + jnp.where(inside, discount * reward(s, a, t), 0.0)
        carry = (
            jnp.where(inside, s_next, s),
            jnp.where(inside, t + 1, t),
            jnp.where(inside, discount * gamma, discount),
            total,
        )
        return carry, None

    start = (s, jnp.asarray(t), jnp.ones((), s.dtype), jnp.zeros((), s.dtype))
    s_k, t_k, discount, total = jax.lax.scan(body, start, jax.random.split(key, steps))[0]
    return jax.lax.stop_gradient((total, s_k, t_k, discount))


def policy_action_size(policy: GaussianPolicy, s: Float[Array, " n_s"]) -> int:
    return jax.eval_shape(policy.mean_action, s).shape[0]


def actor_critic_loss(
    policy: GaussianPolicy,
    value: Value,
    batch: Transition,
    *,
    gamma: float | Float[Array, ""],
    weights: Float[Array, " batch"] | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """Likelihood-ratio actor-critic: ``∇θ = mean(δ ∇θ log π(a|s))``,
    ``δ = r + γ V(s', t+1) − V(s, t)`` (on-policy transitions)."""
    delta = (
        batch.r
        + gamma * jax.vmap(value)(batch.s_next, batch.t + 1)
        - jax.vmap(value)(batch.s, batch.t)
    )
    delta = jax.lax.stop_gradient(delta)
    if weights is not None:
        delta = delta * jax.lax.stop_gradient(weights)
    log_p = jax.vmap(policy.log_prob)(batch.s, batch.a)
    return -jnp.mean(delta * log_p), {"td_error": delta}


def returns_to_go(r: Float[Array, " T"], gamma: float | Float[Array, ""]) -> Float[Array, " T"]:
    """``G_t = Σ_{t' ≥ t} γ^{t'−t} r_{t'}`` by a reverse scan."""

    def body(g, r_t):
        g = r_t + gamma * g
        return g, g

    return jax.lax.scan(body, jnp.zeros((), r.dtype), r, reverse=True)[1]


def reinforce_loss(
    policy: GaussianPolicy,
    episodes: Transition,
    *,
    gamma: float | Float[Array, ""],
    baseline: Value | None = None,
) -> tuple[Float[Array, ""], dict[str, Array]]:
    """REINFORCE with a baseline over whole episodes (leaves ``[batch, T, …]``):
    ``∇θ = mean_episodes Σ_t γ^t (G_t − b_t) ∇θ log π(a_t|s_t)``.

    The baseline is ``V(s_t, t)`` when given, else the mean return-to-go at ``t`` of the
    batch's other episodes (leave-one-out: a baseline that does not depend on the
    episode's own actions keeps the estimate unbiased; the plain batch mean would scale
    it by ``1 − 1/n``), or none for a batch of one episode.
    """
    g = jax.vmap(lambda r: returns_to_go(r, gamma))(episodes.r)
    n = g.shape[0]
    if baseline is None:
        b = (jnp.sum(g, axis=0, keepdims=True) - g) / (n - 1) if n > 1 else jnp.zeros_like(g)
    else:
        b = jax.vmap(jax.vmap(baseline))(episodes.s, episodes.t)
    advantage = jax.lax.stop_gradient(g - b)
    discount = gamma ** episodes.t.astype(episodes.s.dtype)
    log_p = jax.vmap(jax.vmap(policy.log_prob))(episodes.s, episodes.a)
    return -jnp.mean(jnp.sum(discount * advantage * log_p, axis=1)), {"return": g[:, 0]}


def policy_gradient(loss_fn, policy: GaussianPolicy, *args, **kwargs):
    """``(estimate, aux)``: the ascent direction ``−∇θ loss`` as a policy-shaped pytree."""
    grads, aux = eqx.filter_grad(loss_fn, has_aux=True)(policy, *args, **kwargs)
    return jax.tree.map(jnp.negative, grads), aux
