"""The learned dynamics model (paper §5): ``s' = s + μ_ψ(s, a) + σ_ψ(s, a) ⊙ ξ``.

One sub-network per state dimension (paper §6: each a 2-hidden-layer tanh MLP
with ``H`` units), stored as one stack of networks with a leading axis of size
``n_s`` and applied with ``eqx.filter_vmap``: one batched matrix product per
layer, not a Python loop. Each sub-network outputs the mean and log-std of its
dimension's change, in units normalised by statistics of the data.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from svgx.nets import MLP, soft_clamp

LOG_STD_MIN, LOG_STD_MAX = -8.0, 1.0  # in normalised units of each Δs dimension
# The smallest spread the input normaliser divides by, in the units of the observation
# and action. An input that barely varies in the data (hand's target height is the
# same in every episode) would otherwise get a gain of 1/std (1e6) in the model's
# Jacobians, in a direction no data constrains: hand's planner then diverged (its
# model's ∂f̂/∂s was 4,500-39,000 times too large; experiments/results/learning.md).
INPUT_MIN_STD = 1e-2


class Normaliser(eqx.Module):
    """Per-dimension ``mean`` and ``std`` (held out of the gradient)."""

    mean: Float[Array, " n"]
    std: Float[Array, " n"]

    @staticmethod
    def identity(n: int) -> Normaliser:
        return Normaliser(jnp.zeros(n), jnp.ones(n))

    @staticmethod
    def fit(x: Float[Array, "batch n"], min_std: float = 1e-6) -> Normaliser:
        return Normaliser(x.mean(0), jnp.maximum(x.std(0), min_std))

    def normalise(self, x):
        return (x - jax.lax.stop_gradient(self.mean)) / jax.lax.stop_gradient(self.std)


class DynamicsModel(eqx.Module):
    """A diagonal-Gaussian model of the state change ``Δs = s' − s``.

    Attributes:
      nets: the per-dimension sub-networks as one stack (leading axis ``n_s``);
        each maps the normalised ``(φ(s), a)`` to ``(mean, log-std)`` of its
        dimension, in normalised units.
      inputs: normalisation of ``(φ(s), a)``.
      deltas: normalisation of ``Δs``.
      observe: ``s -> φ(s)`` (static).
    """

    nets: MLP
    inputs: Normaliser
    deltas: Normaliser
    observe: Callable[[Array], Array] = eqx.field(static=True)

    @property
    def state_size(self) -> int:
        return self.deltas.mean.shape[-1]

    def predict(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"]
    ) -> tuple[Float[Array, " n_s"], Float[Array, " n_s"]]:
        """``(μ, σ)`` of ``Δs`` at ``(s, a)``, in the units of the state."""
        x = self.inputs.normalise(jnp.concatenate([self.observe(s), a]))
        out = eqx.filter_vmap(lambda net: net(x))(self.nets)  # [n_s, 2]
        mean, log_std = out[:, 0], soft_clamp(out[:, 1], LOG_STD_MIN, LOG_STD_MAX)
        scale = jax.lax.stop_gradient(self.deltas.std)
        return jax.lax.stop_gradient(self.deltas.mean) + scale * mean, scale * jnp.exp(log_std)

    def __call__(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"], xi: Float[Array, " n_s"]
    ) -> Float[Array, " n_s"]:
        """``s' = s + μ(s, a) + σ(s, a) ⊙ ξ``."""
        mean, std = self.predict(s, a)
        return s + mean + std * xi

    def infer_noise(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"], s_next: Float[Array, " n_s"]
    ) -> Float[Array, " n_s"]:
        """``ξ = (s' − s − μ(s, a)) / σ(s, a)``: the noise that explains a real transition."""
        mean, std = self.predict(s, a)
        return (s_next - s - mean) / std

    def nll(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"], s_next: Float[Array, " n_s"]
    ) -> Float[Array, ""]:
        """Gaussian negative log-likelihood of ``s'``, summed over dimensions."""
        mean, std = self.predict(s, a)
        z = (s_next - s - mean) / std
        return jnp.sum(0.5 * z**2 + jnp.log(std) + 0.5 * jnp.log(2 * jnp.pi))

    def with_statistics(
        self,
        s: Float[Array, "batch n_s"],
        a: Float[Array, "batch n_a"],
        s_next: Float[Array, "batch n_s"],
    ) -> DynamicsModel:
        """The model with its normalisers fitted to a batch of transitions."""
        x = jnp.concatenate([jax.vmap(self.observe)(s), a], axis=-1)
        return eqx.tree_at(
            lambda m: (m.inputs, m.deltas),
            self,
            (Normaliser.fit(x, INPUT_MIN_STD), Normaliser.fit(s_next - s)),
        )


def one_step_errors(
    model: DynamicsModel,
    s: Float[Array, "batch n_s"],
    a: Float[Array, "batch n_a"],
    s_next: Float[Array, "batch n_s"],
) -> dict[str, Float[Array, ""]]:
    """How well the model predicts a batch of real transitions one step ahead.

    ``model_one_step_mse``: ``mean((s + μ(s, a) − s')²)`` over the batch and the state
    dimensions, in the state's units (the error of the mean prediction ``E[s']``);
    ``model_one_step_nll``: the mean over the batch of :meth:`DynamicsModel.nll`.
    """
    mean, _ = jax.vmap(model.predict)(s, a)
    return {
        "model_one_step_mse": jnp.mean((s + mean - s_next) ** 2),
        "model_one_step_nll": jnp.mean(jax.vmap(model.nll)(s, a, s_next)),
    }


def dynamics_model(
    observe: Callable[[Array], Array],
    observation_size: int,
    state_size: int,
    action_size: int,
    *,
    key: PRNGKeyArray,
    hidden: int = 20,
) -> DynamicsModel:
    """A model with ``state_size`` sub-networks of two tanh layers of ``hidden`` units."""
    if hidden < 1:
        raise ValueError(f"hidden={hidden!r}: the model's layer width must be >= 1")
    in_size = observation_size + action_size
    keys = jax.random.split(key, state_size)
    nets = eqx.filter_vmap(lambda k: MLP(in_size, 2, (hidden, hidden), key=k, final_scale=0.1))(
        keys
    )
    return DynamicsModel(
        nets, Normaliser.identity(in_size), Normaliser.identity(state_size), observe
    )
