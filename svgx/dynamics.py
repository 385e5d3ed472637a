"""The Jacobian source (paper §4.1; docs/design.md, "Jacobian sources"): one interface,
two implementations.

An estimator holds a :class:`Dynamics` and calls only

* ``infer_noise(s, a, s_next, env_noise) -> ξ``: the noise that explains a real
  transition (a pytree; its structure is the implementation's business), and
* ``dynamics(s, a, ξ) -> s'``: the differentiable step with that noise held fixed,

so it cannot tell whether the Jacobians it back-propagates through are MJX's
(:class:`SimulatorDynamics`) or a learned model's (:class:`LearnedDynamics`).
This is the ablation axis of svgx.
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
