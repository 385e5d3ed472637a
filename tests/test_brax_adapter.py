"""The Brax adapter presents the same physics as the native interface, and Brax's
own wrappers accept it."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from brax.envs.wrappers import training as brax_training

import envs
from envs.brax_adapter import BraxEnv


def native_rollout(env, rng, actions):
    """What ``BraxEnv`` should produce, written with the native API and the same keys."""
    key_reset, key = jax.random.split(rng)
    s = env.reset(key_reset)
    states, rewards, dones = [], [], []
    step = jax.jit(env.step)
    for t, a in enumerate(actions):
        key_step, key = jax.random.split(key)
        s, r, done, _ = step(s, a, key_step, t)
        states.append(s), rewards.append(r), dones.append(done)
    return jnp.stack(states), jnp.stack(rewards), jnp.stack(dones)


SLOW = pytest.mark.slow  # compiling these two costs 35-50 s each


@pytest.mark.parametrize(
    "name",
    [
        "hand",
        pytest.param("reacher_moving", marks=SLOW),
        pytest.param("monoped", marks=SLOW),
        pytest.param("playground:ReacherEasy", marks=SLOW),  # Playground's task, adapted twice
        "lqg",
    ],
)
def test_adapter_matches_native_step_for_step(name):
    env = envs.make(name, horizon=6)
    brax_env = BraxEnv(env)
    actions = 0.5 * jnp.sin(jnp.arange(6 * env.action_size).reshape(6, env.action_size))
    state = jax.jit(brax_env.reset)(jax.random.key(3))
    step = jax.jit(brax_env.step)
    states, rewards, dones, successes = [], [], [], []
    for a in actions:
        state = step(state, a)
        states.append(state.pipeline_state), rewards.append(state.reward), dones.append(state.done)
        successes.append(state.metrics["success"])
    want_s, want_r, want_done = native_rollout(env, jax.random.key(3), actions)
    np.testing.assert_allclose(jnp.stack(states), want_s, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(jnp.stack(rewards), want_r, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(jnp.stack(dones), want_done.astype(jnp.float32))
    # Success is reported at an episode's last step only (Brax's evaluator sums it).
    want_success = jax.vmap(env.success)(want_s) & want_done
    np.testing.assert_array_equal(jnp.stack(successes), want_success.astype(jnp.float32))
    np.testing.assert_allclose(state.obs, env.observe(want_s[-1]), rtol=1e-5, atol=1e-5)
    assert brax_env.observation_size == env.observation_size
    assert brax_env.action_size == env.action_size


def test_brax_training_wrappers_run_the_adapter():
    """``brax.envs.wrappers.training.wrap`` (episodes, vmap, auto-reset) accepts it, and
    an auto-reset episode restarts the task's time index. (Brax's wrappers read batch
    shapes off raw ``uint32`` keys, so Brax users pass ``jax.random.PRNGKey``.)"""
    env = envs.make("hand", horizon=3)
    wrapped = brax_training.wrap(BraxEnv(env), episode_length=3, action_repeat=1)
    state = jax.jit(wrapped.reset)(jax.random.split(jax.random.PRNGKey(0), 4))
    step = jax.jit(wrapped.step)
    ts, dones = [], []
    for _ in range(7):
        state = step(state, jnp.zeros((4, env.action_size)))
        ts.append(state.info["t"]), dones.append(state.done)
    assert state.obs.shape == (4, env.observation_size)
    np.testing.assert_array_equal(jnp.stack(dones)[:, 0], [0, 0, 1, 0, 0, 1, 0])
    np.testing.assert_array_equal(jnp.stack(ts)[:, 0], [1, 2, 0, 1, 2, 0, 1])


@pytest.mark.parametrize("diverged", [jnp.inf, 1e20], ids=["non-finite", "beyond the bound"])
def test_a_diverged_step_ends_the_episode_as_in_svgx_training(monkeypatch, diverged):
    """As in :mod:`svgx.train`: a step to a non-finite state, or to one beyond the task's
    ``max_state_abs``, ends the episode with ``s' = s`` and reward 0, is no success, and
    is counted, so Brax's learners never observe it."""
    env = envs.make("lqg", horizon=6)
    env_class = type(env)
    monkeypatch.setattr(env_class, "max_state_abs", 1e6)
    brax_env = BraxEnv(env)
    state = brax_env.reset(jax.random.key(1))
    first = brax_env.step(state, jnp.ones(env.action_size))  # a normal step
    monkeypatch.setattr(
        env_class, "transition", lambda self, s, a, noise: jnp.full_like(s, diverged)
    )
    after = brax_env.step(first, jnp.ones(env.action_size))
    np.testing.assert_array_equal(after.pipeline_state, first.pipeline_state)
    np.testing.assert_array_equal(after.obs, env.observe(first.pipeline_state))
    assert (after.reward, after.done) == (0.0, 1.0)
    assert (after.metrics["diverged"], after.metrics["success"]) == (1.0, 0.0)
    assert after.info["t"] == 0  # Brax's auto-reset starts a new episode
    assert (first.metrics["diverged"], first.done) == (0.0, 0.0)
