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
