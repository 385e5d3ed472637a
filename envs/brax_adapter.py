"""Any svgx task as a ``brax.envs.Env``, so Brax's wrappers and trainers run on it.

The Brax ``State`` carries the flat svgx state as ``pipeline_state`` (a plain array,
which Brax's wrappers only ever tree-map over), ``obs = env.observe(s)``, and in
``info`` the step index ``t`` and the key for the next step's noise. The physics is
the svgx task's own ``step``, so the two interfaces agree step for step. ``t``
returns to 0 after the last step, so Brax's ``AutoResetWrapper`` starts each new
episode at the start of the task's time index (the hand task's reward needs it).
``metrics["success"]`` is the task's success measure at an episode's last step
(0 before), so its sum over an episode is that episode's success.

A step whose simulation diverges (:meth:`envs.base.Env.diverged`: a non-finite state
or reward, or a state beyond the task's ``max_state_abs``) is treated as svgx's own
training loop treats it (:mod:`svgx.train`): it ends the episode with ``s' = s`` and
reward 0, is not a success, and ``metrics["diverged"]`` is 1 at that step, so Brax's
learners never see a non-finite observation from the task and both sides of a
benchmark follow the same rule.
"""

import jax
import jax.numpy as jnp
from brax.envs.base import Env as BraxEnvBase
from brax.envs.base import State

from envs.base import Env


class BraxEnv(BraxEnvBase):
    """Presents ``env`` through Brax's ``Env`` interface."""

    def __init__(self, env: Env):
        self.env = env

    def reset(self, rng: jax.Array) -> State:
        key_reset, key_next = jax.random.split(rng)
        s = self.env.reset(key_reset)
        zero = jnp.zeros(())
        return State(
            pipeline_state=s,
            obs=self.env.observe(s),
            reward=zero,
            done=zero,
            metrics={"success": zero, "diverged": zero},
            info={"rng": key_next, "t": jnp.zeros((), jnp.int32)},
        )

    def step(self, state: State, action: jax.Array) -> State:
        key_step, key_next = jax.random.split(state.info["rng"])
        t = state.info["t"]
        s_next, r, done, info = self.env.step(state.pipeline_state, action, key_step, t)
        bad = self.env.diverged(s_next, r)
        s_next = jnp.where(bad, state.pipeline_state, s_next)
        r = jnp.where(bad, 0.0, r)
        success = info["success"] & done & ~bad
        done = done | bad
        dtype = state.reward.dtype
        return state.replace(
            pipeline_state=s_next,
            obs=self.env.observe(s_next),
            reward=r.astype(dtype),
            done=done.astype(state.done.dtype),
            # At the episode's last step only, so that Brax's evaluator (which sums
            # metrics over an episode) reports the success rate and the fraction of
            # episodes that diverged.
            metrics={
                **state.metrics,
                "success": success.astype(dtype),
                "diverged": bad.astype(dtype),
            },
            info={**state.info, "rng": key_next, "t": jnp.where(done, 0, t + 1)},
        )

    @property
    def observation_size(self) -> int:
        return self.env.observation_size

    @property
    def action_size(self) -> int:
        return self.env.action_size

    @property
    def backend(self) -> str:
        return "mjx"
