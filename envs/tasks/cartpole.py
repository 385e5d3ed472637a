"""Cart-pole swing-up: the pole starts hanging down and must be swung up and balanced."""

import dataclasses

import jax
import jax.numpy as jnp

from envs.base import EnvConfig, MjxEnv


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
    noise_size = 1

    def reset(self, key):
        # Hanging down (θ = π) with a small perturbation.
        noise = 0.01 * jax.random.normal(key, (4,))
        return noise + jnp.array([0.0, jnp.pi, 0.0, 0.0])

    def _applied_force(self, s, noise):
        return jnp.array([self.config.noise_scale * noise[0], 0.0], s.dtype)

    def reward(self, s, a, t):
        del t
        x, theta = s[0], s[1]
        upright = (1.0 + jnp.cos(theta)) / 2.0
        centred = jnp.exp(-0.5 * x**2)
        return upright * centred - self.config.control_cost * jnp.sum(a**2)

    def success(self, s):
        return (jnp.cos(s[1]) > jnp.cos(self.config.success_angle)) & (jnp.abs(s[0]) < 1.0)
