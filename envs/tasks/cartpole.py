"""Cart-pole swing-up: the pole starts hanging down and must be swung up and balanced."""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv

RESET_STD = 0.01  # std of the perturbation of the initial state
CENTRED = 1.0  # m: a success ends with the cart this close to the middle of the rail


@dataclasses.dataclass(frozen=True)
class CartpoleConfig(EnvConfig):
    """Attributes:
    horizon: 250 control steps of 0.02 s (5 s).
    noise_scale: std of a Gaussian force on the cart, in N per unit noise (0 by default).
    control_cost: weight of ``|a|²`` in the reward.
    success_angle: the pole counts as up within this angle (rad) at the end.
    """

    horizon: int = 250
    noise_scale: float = 0.0
    control_cost: float = 0.01
    success_angle: float = 0.25


class Cartpole(MjxEnv):
    """State ``(x, θ, ẋ, θ̇)`` with ``θ = 0`` upright; action: cart force in [-1, 1]."""

    name = "cartpole"
    asset = "cartpole.xml"
    n_substeps = 2

    def __init__(self, config):
        super().__init__(config)
        self._cart_qpos = self.qpos_address("slider")
        self._pole_qpos = self.qpos_address("hinge")
        self._cart_dof = self.dof_address("slider")

    @property
    def noise_size(self):
        return 1  # a force on the cart

    def reset(self, key):
        # Hanging down (θ = π) with a small perturbation.
        hanging = jnp.zeros(self.nq).at[self._pole_qpos].set(jnp.pi)
        noise = RESET_STD * jax.random.normal(key, (self.state_size,))
        return noise + self.join(hanging, jnp.zeros(self.nv))

    def _applied_force(self, s, noise):
        force = self.config.noise_scale * noise[0]
        return jnp.zeros(self.nv, s.dtype).at[self._cart_dof].set(force)

    def _cart_and_pole(self, s):
        qpos, _, _ = self.split(s)
        return qpos[self._cart_qpos], qpos[self._pole_qpos]

    def reward(self, s, a, t):
        del t
        x, theta = self._cart_and_pole(s)
        upright = (1.0 + jnp.cos(theta)) / 2.0
        centred = jnp.exp(-0.5 * x**2)
        return upright * centred - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        x, theta = self._cart_and_pole(s)
        return (jnp.cos(theta) > jnp.cos(self.config.success_angle)) & (jnp.abs(x) < CENTRED)
