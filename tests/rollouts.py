"""Rollouts the per-task tests share (``test_envs``, ``test_gradients``, ``test_playground``)."""

import jax
import jax.numpy as jnp


def random_rollout(env, key, steps, batch):
    """``batch`` rollouts of uniformly random actions; returns states, rewards, infos."""

    def one(key):
        s = env.reset(key)

        def body(s, inputs):
            t, key = inputs
            key_a, key_step = jax.random.split(key)
            a = jax.random.uniform(key_a, (env.action_size,), minval=-1.0, maxval=1.0)
            s_next, r, done, info = env.step(s, a, key_step, t)
            return s_next, (s, a, s_next, r, done, info["noise"])

        ts = jnp.arange(steps)
        return jax.lax.scan(body, s, (ts, jax.random.split(key, steps)))[1]

    return jax.jit(jax.vmap(one))(jax.random.split(key, batch))


def rollout_return(env, s0, actions, noise):
    """The return of an open-loop action sequence through ``env.transition``."""

    def body(s, inputs):
        t, a, xi = inputs
        return env.transition(s, a, xi), env.reward(s, a, t)

    ts = jnp.arange(actions.shape[0])
    return jax.lax.scan(body, s0, (ts, actions, noise))[1].sum()


def check_central_differences(f, x, key, directions=3, eps=1e-6, rtol=1e-4):
    """Reverse-mode directional derivatives of ``f`` at ``x`` (float64) against central
    differences with step ``eps`` along ``directions`` random unit directions; a
    derivative near 0 is compared absolutely, against the gradient's norm."""
    grad = jax.jit(jax.grad(f))(x)
    assert grad.dtype == jnp.float64 and jnp.isfinite(grad).all()
    assert jnp.abs(grad).max() > 0
    f = jax.jit(f)
    for direction in jax.random.normal(key, (directions, *x.shape)):
        direction = direction / jnp.linalg.norm(direction)
        fd = (f(x + eps * direction) - f(x - eps * direction)) / (2 * eps)
        ad = jnp.vdot(grad, direction)
        assert abs(fd - ad) <= rtol * max(abs(fd), jnp.linalg.norm(grad)), (float(fd), float(ad))
