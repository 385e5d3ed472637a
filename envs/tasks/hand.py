"""The paper's hand task (§6.1): a velocity-controlled hand on a spring, a ball on its end.

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

HAND = ("hand_x", "hand_z")
BALL = ("ball_x", "ball_z")
# The ball's z joint coordinate minus the hand's, at the start and in the targets:
# the ball hangs at rest under the hand. Joint coordinates count from the bodies'
# reference positions, and hand.xml puts the ball's 0.4 m below the hand: the
# spring's rest length 0.3 m plus its static stretch under gravity, 0.25 * 9.81 / 25
# ≈ 0.1 m. So at rest the two z coordinates are equal (measured: the ball settles
# 0.003 m above, tests/test_envs.py). (Until 2026-11-28 this was 0.4, which put the
# ball 0.8 m below the hand in the targets: a configuration it cannot hold at rest.)
HANG = 0.0
# Two target configurations in the layout of the state's task part (hand x, hand z,
# ball x, ball z, joint coordinates): the hand to the left or to the right, the
# ball hanging under it.
TARGETS = jnp.array([[-0.4, 0.2, -0.4, 0.2 - HANG], [0.4, 0.2, 0.4, 0.2 - HANG]])
TARGET_HAND, TARGET_BALL = slice(0, 2), slice(2, 4)


@dataclasses.dataclass(frozen=True)
class HandConfig(EnvConfig):
    """Attributes:
    horizon: 1000 control steps of 0.01 s (paper §6.1).
    noise_scale: std of the random force on the ball, in N.
    terminal_weight: scale of the terminal reward.
    success_distance: the episode succeeds if hand and ball both end within this distance (m)
        of their targets.
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
    time_dependent = True

    def __init__(self, config):
        super().__init__(config)
        self._hand_qpos = self.qpos_address(HAND)
        self._ball_qpos = self.qpos_address(BALL)
        self._hand_and_ball_qpos = self.qpos_address(HAND + BALL)  # as in TARGETS
        self._ball_dofs = self.dof_address(BALL)

    @property
    def noise_size(self):
        return len(BALL)  # a force on the ball along x and z

    def reset(self, key):
        key_target, key_hand = jax.random.split(key)
        target = TARGETS[jax.random.bernoulli(key_target).astype(jnp.int32)]
        hand = 0.05 * jax.random.normal(key_hand, (2,))
        ball = hand - jnp.array([0.0, HANG])  # straight below the hand, as in TARGETS
        qpos = jnp.zeros(self.nq).at[self._hand_qpos].set(hand).at[self._ball_qpos].set(ball)
        return self.join(qpos, jnp.zeros(self.nv), target)

    def _applied_force(self, s, noise):
        force = self.config.noise_scale * noise.astype(s.dtype)
        return jnp.zeros(self.nv, s.dtype).at[self._ball_dofs].set(force)

    def _terminal_error(self, s):
        qpos, _, target = self.split(s)
        return jnp.sum((qpos[self._hand_and_ball_qpos] - target) ** 2)

    def reward(self, s, a, t):
        del a
        is_last = jnp.asarray(t) == self.horizon - 1
        return jnp.where(is_last, -self.config.terminal_weight * self._terminal_error(s), 0.0)

    def success(self, s):
        qpos, _, target = self.split(s)
        hand_error = jnp.linalg.norm(qpos[self._hand_qpos] - target[TARGET_HAND])
        ball_error = jnp.linalg.norm(qpos[self._ball_qpos] - target[TARGET_BALL])
        return (hand_error < self.config.success_distance) & (
            ball_error < self.config.success_distance
        )
