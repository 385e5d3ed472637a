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

ARM = ("shoulder", "elbow", "wrist")
BALL = ("ball_x", "ball_y")
NEAR = 0.05  # m: closing the fingers pays within about this distance of the ball


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

    def __init__(self, config):
        super().__init__(config)
        self._target = jnp.asarray(self.mj_model.site("target").pos[:2])
        self._grip_site = self.mj_model.site("grip").id
        self._arm_qpos = self.qpos_address(ARM)
        self._left_finger_qpos = self.qpos_address("finger_left")
        self._right_finger_qpos = self.qpos_address("finger_right")
        self._ball_qpos = self.qpos_address(BALL)
        self._ball_dofs = self.dof_address(BALL)

    @property
    def noise_size(self):
        return len(BALL)  # a force on the ball along x and y

    def reset(self, key):
        key_arm, key_radius, key_angle = jax.random.split(key, 3)
        arm = jax.random.uniform(key_arm, (len(ARM),), minval=-0.5, maxval=0.5)
        radius = jax.random.uniform(key_radius, minval=0.2, maxval=0.4)
        angle = jax.random.uniform(key_angle, minval=-jnp.pi, maxval=jnp.pi)
        ball = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        # The fingers start open (at 0).
        qpos = jnp.zeros(self.nq).at[self._arm_qpos].set(arm).at[self._ball_qpos].set(ball)
        return self.join(qpos, jnp.zeros(self.nv))

    def _applied_force(self, s, noise):
        force = self.config.noise_scale * noise.astype(s.dtype)
        return jnp.zeros(self.nv, s.dtype).at[self._ball_dofs].set(force)

    def ball(self, s):
        return self.split(s)[0][self._ball_qpos]

    def reward(self, s, a, t):
        del t
        reach = smooth_norm(self.site_pos(s, self._grip_site)[:2] - self.ball(s))
        # Closing the fingers pays only near the ball (a smooth gate).
        near = jnp.exp(-((reach / NEAR) ** 2))
        qpos = self.split(s)[0]
        # Finger displacement inwards, in m.
        closure = -(qpos[self._left_finger_qpos] + qpos[self._right_finger_qpos])
        deliver = smooth_norm(self.ball(s) - self._target)
        control = self.config.control_cost * jnp.sum(a**2)
        return -reach + 10.0 * near * closure - 2.0 * deliver - control

    def success(self, s):
        return jnp.linalg.norm(self.ball(s) - self._target) < self.config.success_distance
