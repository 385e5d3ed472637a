"""Gripper: the reacher arm with two fingers must grab a ball and bring it to a site.

The ball starts at a random position within the arm's reach; the delivery site
is fixed. The reward is staged and smooth: reach the ball, close the fingers when
near it, bring it to the site.

State: shoulder, elbow, wrist, left and right finger, ball (x, y), and their
velocities: 14 numbers. Action: 3 joint torques and the grip (positive closes).
"""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv, smooth_norm


@dataclasses.dataclass(frozen=True)
class GripperConfig(EnvConfig):
    """Attributes:
    horizon: 250 control steps of 0.02 s (5 s).
    noise_scale: std of random forces on the ball, in N (0 by default).
    control_cost: weight of ``|a|²`` in the reward.
    success_distance: the episode succeeds if the ball ends this close (m) to the site.
    """

    horizon: int = 250
    noise_scale: float = 0.0
    control_cost: float = 0.01
    success_distance: float = 0.05


class Gripper(MjxEnv):
    name = "gripper"
    asset = "gripper.xml"
    n_substeps = 2
    noise_size = 2

    def __init__(self, config):
        super().__init__(config)
        self._target = jnp.asarray(self.mj_model.site("target").pos[:2])

    def reset(self, key):
        key_arm, key_radius, key_angle = jax.random.split(key, 3)
        arm = jax.random.uniform(key_arm, (3,), minval=-0.5, maxval=0.5)
        radius = jax.random.uniform(key_radius, minval=0.2, maxval=0.4)
        angle = jax.random.uniform(key_angle, minval=-jnp.pi, maxval=jnp.pi)
        ball = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        qpos = jnp.concatenate([arm, jnp.zeros(2), ball])
        return self.join(qpos, jnp.zeros(self.nv))

    def _applied_force(self, s, noise):
        arm_and_fingers = jnp.zeros(5, s.dtype)
        return jnp.concatenate([arm_and_fingers, self.config.noise_scale * noise.astype(s.dtype)])

    def ball(self, s):
        return s[5:7]

    def reward(self, s, a, t):
        del t
        reach = smooth_norm(self.site_pos(s, "grip")[:2] - self.ball(s))
        # Closing the fingers pays only near the ball (a smooth gate).
        near = jnp.exp(-((reach / 0.05) ** 2))
        closure = -(s[3] + s[4])  # finger displacement inwards, in m
        deliver = smooth_norm(self.ball(s) - self._target)
        control = self.config.control_cost * jnp.sum(a**2)
        return -reach + 10.0 * near * closure - 2.0 * deliver - control

    def success(self, s):
        return jnp.linalg.norm(self.ball(s) - self._target) < self.config.success_distance
