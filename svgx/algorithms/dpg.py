"""Deterministic policy gradients (Silver et al. 2014, the paper's [23]; its §6.1 baseline)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from svgx import critics, replay
from svgx.algorithms.base import Algorithm, PolicyInputs, check_float


@dataclasses.dataclass(frozen=True)
class DPG(Algorithm):
    """``∇θ Q(s, μθ(s), t)`` on replayed states, with Gaussian exploration noise around the
    mean action and a Polyak-averaged target policy (its own state) for ``Q``'s targets.

    Attributes:
      exploration_std: dpg's Gaussian exploration noise (pre-squash), >= 0.
    """

    data, critic, uses_dynamics = "replay", "q", False
    exploration_std: float = 0.3

    def __post_init__(self):
        check_float("exploration_std", self.exploration_std, 0.0)

    def init_state(self, policy):
        return policy  # the target policy

    def act(self, policy, extra, s, *, key):
        mean, _ = policy.distribution(s)
        return policy.squash(
            mean + self.exploration_std * jax.random.normal(key, mean.shape, mean.dtype)
        )

    def next_actions(self, policy, extra, s_next, *, key):
        return jax.vmap(extra.mean_action)(s_next)

    def critic_weights(self, policy, batch, hp):
        return jnp.ones(
            batch.t.shape[0], batch.s.dtype
        )  # a deterministic target policy: no density ratio

    def policy_loss(self, inputs: PolicyInputs, *, key):
        batch = replay.sample(inputs.buffer, key, inputs.batch_size)

        def loss(policy):
            q = jax.vmap(lambda s, t: inputs.critic(s, policy.mean_action(s), t))(batch.s, batch.t)
            return -jnp.mean(q), {}

        return loss, True

    def update_state(self, extra, policy, hp):
        return critics.polyak_update(extra, policy, hp.tau)
