"""Planar bodies with ground contact: ``monoped``, ``cheetah``, ``cheetah_springs``, ``walker``.

All share the root of dm_control's planar bodies: slide joints ``root_x``,
``root_z`` and a hinge ``root_pitch``, with ``x = z = 0`` at the model's initial
pose; the other joints are the limbs'. Their torque noise (``noise_scale``) is a
fraction of each actuator's maximum torque.
"""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv

ROOT = ("root_x", "root_z", "root_pitch")
UPRIGHT = 0.8  # cos of the largest pitch (about 37°) at which the monoped counts as upright


@dataclasses.dataclass(frozen=True)
class LocomotionConfig(EnvConfig):
    """Attributes:
    horizon: control steps of 0.02 s.
    noise_scale: std of Gaussian torque noise, as a fraction of each actuator's maximum torque.
    control_cost: weight of ``|a|²`` in the reward.
    target_speed: locomotion tasks succeed if their mean forward speed (m/s) reaches this.
    """

    horizon: int = 500
    noise_scale: float = 0.0
    control_cost: float = 0.1
    target_speed: float = 1.0


@dataclasses.dataclass(frozen=True)
class MonopedConfig(LocomotionConfig):
    """Attributes:
    horizon: 200 control steps (paper §6).
    noise_scale: torque noise std, 5% of maximum torque (paper §6).
    drop_height: the body starts up to this far (m) above its initial pose and falls.
    success_height: the episode succeeds if the torso ends at least this high (m), upright.
    """

    horizon: int = 200
    noise_scale: float = 0.05
    control_cost: float = 0.01
    drop_height: float = 0.3
    success_height: float = 0.8


class _Planar(MjxEnv):
    # 8 substeps of 2.5 ms: a single Newton iteration per substep (needed for
    # reverse mode) diverges on deep multi-geom contact at 5 ms, in MuJoCo C too.
    n_substeps = 8

    def __init__(self, config):
        super().__init__(config)
        self._max_torque = jnp.asarray(self.mj_model.actuator_gear[:, 0])
        self._actuated_dofs = jnp.asarray(
            self.mj_model.jnt_dofadr[self.mj_model.actuator_trnid[:, 0]]
        )
        self._x_qpos = self.qpos_address("root_x")
        self._z_qpos = self.qpos_address("root_z")
        self._pitch_qpos = self.qpos_address("root_pitch")
        self._x_dof = self.dof_address("root_x")
        joints = [self.mj_model.joint(i).name for i in range(self.mj_model.njnt)]
        self._limbs = [name for name in joints if name not in ROOT]  # hinges
        self._limb_qpos = self.qpos_address(self._limbs)
        self._limb_dofs = self.dof_address(self._limbs)

    @property
    def noise_size(self):
        return self.action_size  # a torque on every actuated joint

    def _applied_force(self, s, noise):
        torque = self.config.noise_scale * self._max_torque * noise
        return jnp.zeros(self.nv, s.dtype).at[self._actuated_dofs].set(torque.astype(s.dtype))

    def _reset_joints(self, key, scale=0.1):
        """The initial pose with the limbs' angles and velocities perturbed."""
        key_q, key_v = jax.random.split(key)
        q_limbs = scale * jax.random.normal(key_q, (len(self._limbs),))
        v_limbs = scale * jax.random.normal(key_v, (len(self._limbs),))
        qpos = jnp.zeros(self.nq).at[self._limb_qpos].set(q_limbs)
        qvel = jnp.zeros(self.nv).at[self._limb_dofs].set(v_limbs)
        return qpos, qvel

    def _forward_position(self, s):
        return self.split(s)[0][self._x_qpos]

    def _pitch(self, s):
        return self.split(s)[0][self._pitch_qpos]

    def _forward_speed(self, s):
        return self.split(s)[1][self._x_dof]

    def mean_speed(self, s):
        """Mean forward speed over an episode that ends in ``s`` (it starts at x = 0)."""
        return self._forward_position(s) / (self.horizon * self.dt)

    def success(self, s):
        return self.mean_speed(s) >= self.config.target_speed


class Monoped(_Planar):
    """One-legged body dropped from a height; it must land and stay upright."""

    name = "monoped"
    asset = "monoped.xml"
    # 16 substeps of 1.25 ms: at 2.5 ms (8 substeps) 1 of the 256 random-action rollouts
    # of tests/test_envs.py's divergence test diverged (|s| past 7e4 first).
    n_substeps = 16

    def __init__(self, config):
        super().__init__(config)
        self._torso_site = self.mj_model.site("torso").id

    def reset(self, key):
        key_joints, key_drop = jax.random.split(key)
        qpos, qvel = self._reset_joints(key_joints)
        drop = jax.random.uniform(key_drop, maxval=self.config.drop_height)
        qpos = qpos.at[self._z_qpos].set(drop)
        return self.join(qpos, qvel)

    def torso_height(self, s):
        return self.site_pos(s, self._torso_site)[2]

    def reward(self, s, a, t):
        del t
        upright = jnp.cos(self._pitch(s))
        return self.torso_height(s) + 0.5 * upright - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        upright = jnp.cos(self._pitch(s)) > UPRIGHT
        return (self.torso_height(s) >= self.config.success_height) & upright


class Cheetah(_Planar):
    """Half-cheetah; reward: forward speed."""

    name = "cheetah"
    asset = "cheetah.xml"
    # 8 substeps of 2.5 ms: at 5 ms (4 substeps) 4 of 256 random-action rollouts of 200
    # steps diverged (7 in MuJoCo C), with |s| up to 1e21 before they did; at 2.5 ms none.

    def reset(self, key):
        return self.join(*self._reset_joints(key))

    def reward(self, s, a, t):
        del t
        return self._forward_speed(s) - self.config.control_cost * jnp.sum(a**2)


class CheetahSprings(Cheetah):
    """Half-cheetah with stiff joint springs that aid standing."""

    name = "cheetah_springs"
    asset = "cheetah_springs.xml"


@dataclasses.dataclass(frozen=True)
class WalkerConfig(LocomotionConfig):
    """Attributes:
    target_speed: mean forward speed (m/s) for success.
    stand_height: torso height (m) above which the walker counts as standing.
    """

    target_speed: float = 0.5
    stand_height: float = 1.0
    control_cost: float = 0.01


class Walker(_Planar):
    """Planar biped; reward: stand upright and walk forward."""

    name = "walker"
    asset = "walker.xml"
    # 16 substeps of 1.25 ms: at 2.5 ms (8 substeps) 2 of 256 random-action rollouts of
    # 200 steps diverged (4 in MuJoCo C); at 1.25 ms none.
    n_substeps = 16

    def __init__(self, config):
        super().__init__(config)
        # The torso's height at the initial pose (its body's position in walker.xml).
        self._torso_height_0 = float(self.mj_model.body("torso").pos[2])

    def reset(self, key):
        return self.join(*self._reset_joints(key))

    def torso_height(self, s):
        return self._torso_height_0 + self.split(s)[0][self._z_qpos]

    def reward(self, s, a, t):
        del t
        standing = jax.nn.sigmoid(10.0 * (self.torso_height(s) - self.config.stand_height))
        upright = (1.0 + jnp.cos(self._pitch(s))) / 2.0
        move = jnp.tanh(self._forward_speed(s) / self.config.target_speed)
        return standing * upright * (1.0 + move) - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        standing = self.torso_height(s) >= self.config.stand_height
        return standing & (self.mean_speed(s) >= self.config.target_speed)
