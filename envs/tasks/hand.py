"""The paper's hand task (§6): a velocity-controlled hand on a spring, a ball on its end.

The hand moves in a vertical plane; a spring couples it to a ball that hangs under
gravity and is pushed by a Gaussian random force every step. At the last step of the
episode the hand and the ball must be close to one of two target configurations,
chosen at random per episode. The reward is zero before that step.

State: hand (x, z), ball (x, z), their velocities, and the episode's target
configuration (hand x, z, ball x, z): 12 numbers. Action: hand velocity (2).
"""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv

# Two target configurations (hand x, hand z, ball x, ball z): the hand to the left
# or to the right, with the ball hanging at rest below it (spring rest length
# 0.3 m plus its static stretch under gravity, 0.25 * 9.81 / 25 ≈ 0.1 m).
TARGETS = jnp.array([[-0.4, 0.2, -0.4, -0.2], [0.4, 0.2, 0.4, -0.2]])


@dataclasses.dataclass(frozen=True)
class HandConfig(EnvConfig):
    """Attributes:
    horizon: 1000 control steps of 0.01 s (paper §6).
    noise_scale: std of the random force on the ball, in N.
    terminal_weight: scale of the terminal reward.
    success_distance: the episode succeeds if hand and ball both end within this distance (m) of their targets.
    """

    horizon: int = 1000
    noise_scale: float = 0.5
    terminal_weight: float = 10.0
    success_distance: float = 0.1


class Hand(MjxEnv):
    name = "hand"
    asset = "hand.xml"
    n_substeps = 1
    task_size = 4
    noise_size = 2
    time_dependent = True

    def reset(self, key):
        key_target, key_hand = jax.random.split(key)
        target = TARGETS[jax.random.bernoulli(key_target).astype(jnp.int32)]
        hand = 0.05 * jax.random.normal(key_hand, (2,))
        # The ball starts hanging at rest below the hand, as in TARGETS.
        qpos = jnp.array([hand[0], hand[1], hand[0], hand[1] - 0.4])
        return self.join(qpos, jnp.zeros(4), target)

    def _applied_force(self, s, noise):
        zero = jnp.zeros(2, s.dtype)
        return jnp.concatenate([zero, self.config.noise_scale * noise.astype(s.dtype)])

    def _terminal_error(self, s):
        qpos, _, target = self.split(s)
        return jnp.sum((qpos - target) ** 2)

    def reward(self, s, a, t):
        del a
        is_last = jnp.asarray(t) == self.horizon - 1
        return jnp.where(is_last, -self.config.terminal_weight * self._terminal_error(s), 0.0)

    def success(self, s):
        qpos, _, target = self.split(s)
        hand_error = jnp.linalg.norm(qpos[:2] - target[:2])
        ball_error = jnp.linalg.norm(qpos[2:] - target[2:])
        return (hand_error < self.config.success_distance) & (
            ball_error < self.config.success_distance
        )
