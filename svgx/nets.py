"""The networks of svgx: tanh MLPs with any hidden widths (paper §6)."""

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
        layers = [eqx.nn.Linear(i, o, key=k) for i, o, k in zip(sizes[:-1], sizes[1:], keys)]
        last = layers[-1]
        layers[-1] = eqx.tree_at(
            lambda l: (l.weight, l.bias), last, (final_scale * last.weight, jnp.zeros_like(last.bias))
        )
        self.layers = tuple(layers)

    def __call__(self, x: Float[Array, " n_in"]) -> Float[Array, " n_out"]:
        for layer in self.layers[:-1]:
            x = jnp.tanh(layer(x))
        return self.layers[-1](x)
