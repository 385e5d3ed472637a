"""Episodes in the real environment, recorded as :class:`~svgx.replay.Transition` s."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from envs.base import Env
from svgx.policy import GaussianPolicy
from svgx.replay import Transition


def episode(
    env: Env,
    policy: GaussianPolicy,
    key: PRNGKeyArray,
    *,
    steps: int | None = None,
    s_0: Float[Array, " n_s"] | None = None,
    t_0: int = 0,
    deterministic: bool = False,
) -> Transition:
    """One episode (or its first ``steps`` steps) under ``policy``; leaves ``[steps, …]``.

    Records ``s, a, r, s', t, done``, the behaviour log-probability of ``a`` and the
    environment noise each step reported. ``deterministic`` takes the mean action
    (its log-probability is still recorded, for completeness).
    """
    steps = env.horizon if steps is None else steps
    key_reset, key_steps = jax.random.split(key)
    s_0 = env.reset(key_reset) if s_0 is None else s_0

    def body(s, inputs):
        t, key_t = inputs
        key_action, key_env = jax.random.split(key_t)
        if deterministic:
            a = policy.mean_action(s)
        else:
            a, _ = policy.sample(s, key=key_action)
        log_prob = policy.log_prob(s, a)
        s_next, r, done, info = env.step(s, a, key_env, t)
        return s_next, Transition(
            s=s, a=a, r=r, s_next=s_next, t=t, done=done, log_prob=log_prob, noise=info["noise"]
        )

    ts = t_0 + jnp.arange(steps, dtype=jnp.int32)
    return jax.lax.scan(body, s_0, (ts, jax.random.split(key_steps, steps)))[1]


def episodes(env: Env, policy: GaussianPolicy, key: PRNGKeyArray, n: int, **kwargs) -> Transition:
    """``n`` independent episodes; leaves ``[n, steps, …]``."""
    return jax.vmap(lambda k: episode(env, policy, k, **kwargs))(jax.random.split(key, n))


def per_step(episodes: Transition) -> Transition:
    """Episodes (leaves ``[n, T, …]``) as one batch of transitions (leaves ``[n T, …]``)."""
    # Sizes, not -1: a task without noise has leaves [n, T, 0], whose -1 is undefined.
    return jax.tree.map(lambda x: x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]), episodes)


def stretches(episodes: Transition, k: int) -> Transition:
    """Episodes (leaves ``[n, T, …]``) cut into consecutive, non-overlapping stretches of
    ``k`` steps (leaves ``[n T/k, k, …]``); ``k`` must divide ``T``."""
    n, horizon = episodes.t.shape
    if horizon % k:
        raise ValueError(f"k={k} must divide the episode length {horizon}")
    return jax.tree.map(lambda x: x.reshape(n * (horizon // k), k, *x.shape[2:]), episodes)
