"""Swimmers with 3, 5 and 7 links in a viscous fluid; the head must reach the goal.

The goal is fixed at the origin and the swimmer starts at a random position and
heading around it (paper §6), so the state is the body alone: head (x, y), heading,
joint angles and all velocities (10 / 14 / 18 numbers); actions are the joint
torques (2 / 4 / 6).
"""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv, smooth_norm

HEAD = ("root_x", "root_y")  # the head's position in the plane; the goal is at (0, 0)


@dataclasses.dataclass(frozen=True)
class SwimmerConfig(EnvConfig):
    """Attributes:
    horizon: 500 control steps of 0.02 s (10 s).
    noise_scale: std of random joint torques, in N·m (0 by default).
    start_radius: the head starts uniformly within this distance (m) of the goal, at least
        half as far.
    control_cost: weight of ``|a|²`` in the reward.
    success_distance: the episode succeeds if the head ends within this distance (m) of the goal.
    goal_in_head_frame: the observation also gives the goal's offset from the head in
        the head's own frame (forward, left), as DM Control's swimmer observes its
        target; without it the policy gets the head's world position and heading and
        must rotate one by the other itself.
    """

    horizon: int = 500
    noise_scale: float = 0.0
    start_radius: float = 1.0
    control_cost: float = 0.01
    success_distance: float = 0.1
    goal_in_head_frame: bool = False


class Swimmer(MjxEnv):
    """Base for ``swimmer3/5/7``; subclasses set ``links``."""

    links: int
    n_substeps = 2

    def __init__(self, config):
        super().__init__(config)
        joints = [f"joint{i}" for i in range(1, self.links)]  # between the links
        self._head_qpos = self.qpos_address(HEAD)
        self._heading_qpos = self.qpos_address("root_yaw")
        self._joint_qpos = self.qpos_address(joints)
        self._joint_dofs = self.dof_address(joints)

    @property
    def noise_size(self):
        return self.links - 1  # a torque on every joint

    def reset(self, key):
        key_radius, key_angle, key_heading, key_joints = jax.random.split(key, 4)
        radius = self.config.start_radius * jax.random.uniform(key_radius, minval=0.5, maxval=1.0)
        angle = jax.random.uniform(key_angle, minval=-jnp.pi, maxval=jnp.pi)
        heading = jax.random.uniform(key_heading, minval=-jnp.pi, maxval=jnp.pi)
        joints = jax.random.uniform(key_joints, (self.links - 1,), minval=-0.5, maxval=0.5)
        head = radius * jnp.array([jnp.cos(angle), jnp.sin(angle)])
        qpos = jnp.zeros(self.nq).at[self._head_qpos].set(head).at[self._heading_qpos].set(heading)
        qpos = qpos.at[self._joint_qpos].set(joints)
        return self.join(qpos, jnp.zeros(self.nv))

    def _applied_force(self, s, noise):
        # Torque noise on the joints, none on the free root.
        torque = self.config.noise_scale * noise.astype(s.dtype)
        return jnp.zeros(self.nv, s.dtype).at[self._joint_dofs].set(torque)

    def head(self, s):
        """The head's position; the goal is at the origin."""
        return self.split(s)[0][self._head_qpos]

    def head_distance(self, s):
        return smooth_norm(self.head(s))

    def observe(self, s):
        obs = super().observe(s)
        if not self.config.goal_in_head_frame:
            return obs
        heading = self.split(s)[0][self._heading_qpos]
        c, si = jnp.cos(heading), jnp.sin(heading)
        to_goal = -self.head(s)  # the goal is at the origin
        forward = c * to_goal[0] + si * to_goal[1]
        left = -si * to_goal[0] + c * to_goal[1]
        return jnp.concatenate([obs, jnp.stack([forward, left])])

    def reward(self, s, a, t):
        del t
        return -self.head_distance(s) - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        return jnp.linalg.norm(self.head(s)) < self.config.success_distance


class Swimmer3(Swimmer):
    name = "swimmer3"
    asset = "swimmer3.xml"
    links = 3


class Swimmer5(Swimmer):
    name = "swimmer5"
    asset = "swimmer5.xml"
    links = 5


class Swimmer7(Swimmer):
    name = "swimmer7"
    asset = "swimmer7.xml"
    links = 7
