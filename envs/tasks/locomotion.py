"""Planar bodies with ground contact: ``monoped``, ``cheetah``, ``cheetah_springs``, ``walker``.

All share the root layout of dm_control's planar bodies: ``qpos = (x, z, pitch,
joints...)`` with ``x = z = 0`` at the model's initial pose. Their torque noise
(``noise_scale``) is a fraction of each actuator's maximum torque.
"""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv


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

    @property
    def noise_size(self):
        return self.action_size

    def _applied_force(self, s, noise):
        torque = self.config.noise_scale * self._max_torque * noise
        return jnp.zeros(self.nv, s.dtype).at[self._actuated_dofs].set(torque.astype(s.dtype))

    def _reset_joints(self, key, scale=0.1):
        key_q, key_v = jax.random.split(key)
        qpos = jnp.zeros(self.nq).at[3:].set(scale * jax.random.normal(key_q, (self.nq - 3,)))
        qvel = jnp.zeros(self.nv).at[3:].set(scale * jax.random.normal(key_v, (self.nv - 3,)))
        return qpos, qvel

    def mean_speed(self, s):
        """Mean forward speed over an episode that ends in ``s`` (it starts at x = 0)."""
        return s[0] / (self.horizon * self.dt)

    def success(self, s):
        return self.mean_speed(s) >= self.config.target_speed


class Monoped(_Planar):
    """One-legged body dropped from a height; it must land and stay upright."""

    name = "monoped"
    asset = "monoped.xml"

    def reset(self, key):
        key_joints, key_drop = jax.random.split(key)
        qpos, qvel = self._reset_joints(key_joints)
        qpos = qpos.at[1].set(jax.random.uniform(key_drop, maxval=self.config.drop_height))
        return self.join(qpos, qvel)

    def torso_height(self, s):
        return self.site_pos(s, "torso")[2]

    def reward(self, s, a, t):
        del t
        upright = jnp.cos(s[2])
        return self.torso_height(s) + 0.5 * upright - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        return (self.torso_height(s) >= self.config.success_height) & (jnp.cos(s[2]) > 0.8)


class Cheetah(_Planar):
    """Half-cheetah; reward: forward speed."""

    name = "cheetah"
    asset = "cheetah.xml"
    n_substeps = 4

    def reset(self, key):
        return self.join(*self._reset_joints(key))

    def reward(self, s, a, t):
        del t
        forward_speed = s[self.nq]
        return forward_speed - self.config.control_cost * jnp.sum(a**2)


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

    def reset(self, key):
        return self.join(*self._reset_joints(key))

    def torso_height(self, s):
        return 1.3 + s[1]

    def reward(self, s, a, t):
        del t
        standing = jax.nn.sigmoid(10.0 * (self.torso_height(s) - self.config.stand_height))
        upright = (1.0 + jnp.cos(s[2])) / 2.0
        forward_speed = s[self.nq]
        move = jnp.tanh(forward_speed / self.config.target_speed)
        return standing * upright * (1.0 + move) - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        standing = self.torso_height(s) >= self.config.stand_height
        return standing & (self.mean_speed(s) >= self.config.target_speed)
