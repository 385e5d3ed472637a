"""The networks of svgx: tanh MLPs with any hidden widths (paper §6), and the soft
clamp that bounds the log-standard-deviations the policy and the model output."""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray


class MLP(eqx.Module):
    """``x -> W_L tanh(… tanh(W_1 x + b_1) …) + b_L`` on one example.

    Unlike ``eqx.nn.MLP`` the hidden layers may differ in width (the value
    capacity study of the paper uses 200, 100 or 50 units in the first layer).
    """

    layers: tuple[eqx.nn.Linear, ...]

    def __init__(
        self,
        in_size: int,
        out_size: int,
        hidden: tuple[int, ...],
        *,
        key: PRNGKeyArray,
        final_scale: float = 1.0,
    ):
        """``final_scale`` multiplies the last layer's initial weights (and zeroes
        its bias): a small value starts the network near a constant output."""
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden={hidden!r}: needs one or more positive layer widths")
        sizes = (in_size, *hidden, out_size)
        keys = jax.random.split(key, len(sizes) - 1)
        layers = [
            eqx.nn.Linear(i, o, key=k) for i, o, k in zip(sizes[:-1], sizes[1:], keys, strict=True)
        ]
        last = layers[-1]
        layers[-1] = eqx.tree_at(
            lambda layer: (layer.weight, layer.bias),
            last,
            (final_scale * last.weight, jnp.zeros_like(last.bias)),
        )
        self.layers = tuple(layers)

    def __call__(self, x: Float[Array, " n_in"]) -> Float[Array, " n_out"]:
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)


def soft_clamp(x: Float[Array, "*n"], low: float, high: float) -> Float[Array, "*n"]:
    """``low + (high − low) (1 + tanh x) / 2``: maps ℝ smoothly onto ``(low, high)``.

    Used on log-σ, so that σ stays away from 0 and ∞ while its gradient stays alive
    (a hard clip would stop it at the bounds).
    """
    return low + 0.5 * (high - low) * (1 + jnp.tanh(x))


def inverse_soft_clamp(y: Float[Array, "*n"], low: float, high: float) -> Float[Array, "*n"]:
    """The ``x`` with ``soft_clamp(x, low, high) = y``, ``y`` first clipped to the middle
    99.9% of ``(low, high)`` so that ``x`` is finite."""
    z = 2 * (y - low) / (high - low) - 1
    return jnp.arctanh(jnp.clip(z, -0.999, 0.999))
