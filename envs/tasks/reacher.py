"""Three-joint reacher in a walled box: ``reacher4`` (a target at one of four corners)
and ``reacher_moving`` (a target that moves and reflects off the walls).

State: 3 joint angles, 3 joint velocities, then the target: its position (x, y) for
``reacher4`` (8 numbers, as in the paper), position and velocity for
``reacher_moving`` (10: the velocity is part of the Markov state of a moving target).
Action: 3 joint torques.
"""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv, smooth_norm

CORNER = 0.3  # targets sit at (±CORNER, ±CORNER)
WALL = 0.4  # the moving target stays within |x|, |y| <= WALL
# The layout of the state's task part: the target's position (x, y), then, for
# reacher_moving, its velocity.
TARGET_POSITION, TARGET_VELOCITY = slice(0, 2), slice(2, 4)


@dataclasses.dataclass(frozen=True)
class ReacherConfig(EnvConfig):
    """Attributes:
    horizon: 150 control steps of 0.02 s (3 s).
    noise_scale: reacher4: std of random joint torques (N·m, 0 by default);
      reacher_moving: std of the per-step change of the target's heading (rad).
    control_cost: weight of ``|a|²`` in the reward.
    success_distance: the episode succeeds if the fingertip ends this close (m) to the target.
    min_speed, max_speed: reacher_moving's target speed range (m/s).
    observe_to_target: the observation also gives the target's offset from the fingertip
        (x, y), as Gym's and DM Control's reachers observe it; without it the policy and
        the critic get the joint angles and the target's position and must compute the
        fingertip's position (the arm's forward kinematics) themselves.
    """

    horizon: int = 150
    noise_scale: float = 0.0
    control_cost: float = 0.01
    success_distance: float = 0.05
    min_speed: float = 0.05
    max_speed: float = 0.2
    observe_to_target: bool = False


class _Reacher(MjxEnv):
    """The arm: every joint is a hinge with a motor (``qpos`` is the 3 joint angles)."""

    asset = "reacher.xml"
    n_substeps = 2

    def __init__(self, config):
        super().__init__(config)
        self._fingertip_site = self.mj_model.site("fingertip").id

    def _reset_arm(self, key):
        return jax.random.uniform(key, (self.nq,), minval=-jnp.pi, maxval=jnp.pi)

    def fingertip(self, s):
        return self.site_pos(s, self._fingertip_site)[:2]

    def target(self, s):
        return self.split(s)[2][TARGET_POSITION]

    def reward(self, s, a, t):
        del t
        distance = smooth_norm(self.fingertip(s) - self.target(s))
        return -distance - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        return jnp.linalg.norm(self.fingertip(s) - self.target(s)) < self.config.success_distance

    def observe(self, s):
        obs = super().observe(s)
        if not self.config.observe_to_target:
            return obs
        return jnp.concatenate([obs, self.target(s) - self.fingertip(s)])


class Reacher4(_Reacher):
    name = "reacher4"
    task_size = 2

    @property
    def noise_size(self):
        # A torque on every joint, or none when switched off.
        return self.nv if self.config.noise_scale > 0 else 0

    def reset(self, key):
        key_arm, key_corner = jax.random.split(key)
        corners = CORNER * jnp.array([[1, 1], [-1, 1], [-1, -1], [1, -1]], dtype=float)
        target = corners[jax.random.randint(key_corner, (), 0, 4)]
        return self.join(self._reset_arm(key_arm), jnp.zeros(self.nv), target)

    def _applied_force(self, s, noise):
        if self.noise_size == 0:
            return jnp.zeros(self.nv, s.dtype)
        return self.config.noise_scale * noise.astype(s.dtype)


class ReacherMoving(_Reacher):
    name = "reacher_moving"
    task_size = 4

    @property
    def noise_size(self):
        return 1  # the turn of the target's heading

    def reset(self, key):
        key_arm, key_pos, key_speed, key_heading = jax.random.split(key, 4)
        position = jax.random.uniform(key_pos, (2,), minval=-CORNER, maxval=CORNER)
        speed = jax.random.uniform(
            key_speed, minval=self.config.min_speed, maxval=self.config.max_speed
        )
        heading = jax.random.uniform(key_heading, minval=-jnp.pi, maxval=jnp.pi)
        velocity = speed * jnp.array([jnp.cos(heading), jnp.sin(heading)])
        task = jnp.concatenate([position, velocity])
        return self.join(self._reset_arm(key_arm), jnp.zeros(self.nv), task)

    def _task_transition(self, task, noise):
        position, velocity = task[TARGET_POSITION], task[TARGET_VELOCITY]
        # Turn the heading by a random angle, then move and reflect off the walls.
        turn = self.config.noise_scale * noise[0]
        cos, sin = jnp.cos(turn), jnp.sin(turn)
        velocity = jnp.array(
            [cos * velocity[0] - sin * velocity[1], sin * velocity[0] + cos * velocity[1]]
        )
        position = position + self.dt * velocity
        over = jnp.abs(position) > WALL
        position = jnp.where(over, jnp.sign(position) * (2 * WALL - jnp.abs(position)), position)
        velocity = jnp.where(over, -velocity, velocity)
        return jnp.concatenate([position, velocity])
