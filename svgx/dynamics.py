"""The Jacobian source (paper §4.1; docs/design.md, "Jacobian sources"): one interface,
two implementations.

An estimator holds a :class:`Dynamics` and calls only

* ``infer_noise(s, a, s_next, env_noise) -> ξ``: the noise that explains a real
  transition (a pytree; its structure is the implementation's business), and
* ``dynamics(s, a, ξ) -> s'``: the differentiable step with that noise held fixed,

so it cannot tell whether the Jacobians it back-propagates through are MJX's
(:class:`SimulatorDynamics`) or a learned model's (:class:`LearnedDynamics`).
This is the ablation axis of svgx; :func:`jacobian_errors` measures how far apart
the two sources' Jacobians are on real transitions.
"""

from __future__ import annotations

import abc
from typing import Literal, get_args

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from envs.base import Env
from svgx.model import DynamicsModel


class Dynamics(eqx.Module):
    """``f̂(s, a, ξ)`` and the inference of ``ξ`` from real transitions."""

    @abc.abstractmethod
    def infer_noise(
        self,
        s: Float[Array, " n_s"],
        a: Float[Array, " n_a"],
        s_next: Float[Array, " n_s"],
        env_noise: Float[Array, " n_xi"],
    ) -> PyTree:
        """The noise under which ``f̂(s, a, ξ)`` reproduces ``s_next``."""

    @abc.abstractmethod
    def __call__(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"], xi: PyTree
    ) -> Float[Array, " n_s"]:
        """``s' = f̂(s, a, ξ)``, differentiable in ``s`` and ``a``."""

    @abc.abstractmethod
    def sample_noise(self, key: PRNGKeyArray) -> PyTree:
        """Fresh noise ``ξ ~ ρ(ξ)`` (for simulated rollouts: the planner, diagnostics)."""


class SimulatorDynamics(Dynamics):
    """The environment's own simulator: ``f̂(s, a, ξ) = F(s, a, ξ_env) + ξ_res``.

    ``ξ_env`` is the noise the environment reported; ``ξ_res = s' − F(s, a, ξ_env)``
    is the additive residual. With exactly reported noise the residual is only
    rounding (a constant, so it does not change any Jacobian) and makes the rebuilt
    stretch coincide with the recorded one; where no noise was reported
    (``env_noise`` of size 0, or a task that hides its noise) it is the additive
    residual of the paper's additive-noise case (§4.1).
    """

    env: Env = eqx.field(static=True)

    def infer_noise(self, s, a, s_next, env_noise):
        return env_noise, s_next - self.env.transition(s, a, env_noise)

    def __call__(self, s, a, xi):
        env_noise, residual = xi
        return self.env.transition(s, a, env_noise) + residual

    def sample_noise(self, key):
        return self.env.sample_noise(key), jnp.zeros(self.env.state_size)


class LearnedDynamics(Dynamics):
    """A learned :class:`~svgx.model.DynamicsModel`: ``f̂(s, a, ξ) = s + μ + σ ⊙ ξ``."""

    model: DynamicsModel

    def infer_noise(self, s, a, s_next, env_noise):
        del env_noise  # the model explains the transition with its own noise
        return self.model.infer_noise(s, a, s_next)

    def __call__(self, s, a, xi):
        return self.model(s, a, xi)

    def sample_noise(self, key):
        return jax.random.normal(key, (self.model.state_size,))


Jacobians = Literal["simulator", "learned"]
JACOBIAN_SOURCES: tuple[str, ...] = get_args(Jacobians)


def make_dynamics(source: str, env: Env, model: DynamicsModel | None = None) -> Dynamics:
    """The Jacobian source named ``source``: ``"simulator"`` (the task's own
    :meth:`~envs.base.Env.transition`) or ``"learned"`` (``model``, which it needs)."""
    if source == "simulator":
        return SimulatorDynamics(env)
    if source == "learned":
        if model is None:
            raise ValueError("jacobians='learned' needs a dynamics model")
        return LearnedDynamics(model)
    raise ValueError(f"unknown Jacobian source {source!r}; valid: {', '.join(JACOBIAN_SOURCES)}")


def jacobians(
    dynamics: Dynamics, s: Float[Array, " n_s"], a: Float[Array, " n_a"], xi: PyTree
) -> tuple[Float[Array, "n_s n_s"], Float[Array, "n_s n_a"]]:
    """``(∂f̂/∂s, ∂f̂/∂a)`` at ``(s, a)`` with the noise ``ξ`` held fixed: the Jacobians
    that SVG back-propagates through (forward mode, ``n_s + n_a`` tangents)."""
    return jax.jacfwd(lambda s, a: dynamics(s, a, xi), argnums=(0, 1))(s, a)


def _relative_error(estimate, reference):
    """``‖estimate − reference‖_F / ‖reference‖_F`` over all entries: 0 when both are
    zero, ``inf`` when only the reference is."""
    error = jnp.linalg.norm((estimate - reference).ravel())
    norm = jnp.linalg.norm(reference.ravel())
    ratio = error / jnp.where(norm > 0, norm, 1.0)
    return jnp.where(norm > 0, ratio, jnp.where(error > 0, jnp.inf, 0.0))


def jacobian_errors(
    model: Dynamics,
    reference: Dynamics,
    s: Float[Array, "batch n_s"],
    a: Float[Array, "batch n_a"],
    s_next: Float[Array, "batch n_s"],
    env_noise: Float[Array, "batch n_xi"],
    direction: Float[Array, "batch n_s"],
) -> dict[str, Float[Array, ""]]:
    """How far ``model``'s Jacobians are from ``reference``'s (the simulator's) on a batch
    of real transitions, each source at the noise it infers for the transition (its
    ``infer_noise``), so at the Jacobians an estimator would use there.

    With ``J_i = ∂f/∂s`` (reference) and ``Ĵ_i = ∂f̂/∂s`` (model) at sample ``i``:

    * ``jacobian_error_s``: ``‖Ĵ − J‖_F / ‖J‖_F`` of the batch's Jacobians stacked into
      one matrix, ``sqrt(Σ_i ‖Ĵ_i − J_i‖²_F / Σ_i ‖J_i‖²_F)`` (a ratio of sums, so no
      sample with a small Jacobian dominates); 0 when both are zero, ``inf`` when only
      the reference is;
    * ``jacobian_error_a``: the same for ``∂f/∂a``;
    * ``jacobian_error_s_median``, ``jacobian_error_a_median``: the median over the batch
      of each sample's own ``‖Ĵ_i − J_i‖_F / ‖J_i‖_F``. The ratio of sums weighs samples
      by ``‖J_i‖²``, so on contact tasks a few stiff contact states carry it (on the
      cheetah under random actions the top 1% of states hold 91% of ``Σ_i ‖∂f/∂a‖²``)
      and it reads near 1 for any model that misses those; the median says how the
      model does on a typical state;
    * ``jacobian_cosine_value``: the cosine between ``g_i = (∂f/∂a)ᵀ u_i`` and
      ``ĝ_i = (∂f̂/∂a)ᵀ u_i`` concatenated over the batch,
      ``Σ_i ĝ_i·g_i / (‖ĝ‖ ‖g‖)`` (samples weigh as much as their ``u_i`` does in the
      gradient); NaN when either is zero. With ``u_i = ∇_{s'} V(s'_i)`` these are the
      action gradients through the dynamics that SVG(1) takes (paper eq. 12).

    ``direction``: the ``u_i``. Returns batch scalars.
    """

    def one(s, a, s_next, env_noise, u):
        j_s, j_a = jacobians(reference, s, a, reference.infer_noise(s, a, s_next, env_noise))
        k_s, k_a = jacobians(model, s, a, model.infer_noise(s, a, s_next, env_noise))
        return j_s, j_a, k_s, k_a, j_a.T @ u, k_a.T @ u

    j_s, j_a, k_s, k_a, g, g_model = jax.vmap(one)(s, a, s_next, env_noise, direction)
    norms = jnp.linalg.norm(g.ravel()) * jnp.linalg.norm(g_model.ravel())
    cosine = jnp.sum(g * g_model) / jnp.where(norms > 0, norms, 1.0)
    per_sample = jax.vmap(_relative_error)
    return {
        "jacobian_error_s": _relative_error(k_s, j_s),
        "jacobian_error_a": _relative_error(k_a, j_a),
        "jacobian_error_s_median": jnp.median(per_sample(k_s, j_s)),
        "jacobian_error_a_median": jnp.median(per_sample(k_a, j_a)),
        "jacobian_cosine_value": jnp.where(norms > 0, cosine, jnp.nan),
    }
