"""Re-parameterised Gaussian policies (paper §4.1).

``u = μ_θ(φ(s)) + σ_θ(φ(s)) ⊙ η``, ``η ~ N(0, I)``, then ``a = scale · tanh(u)``
(or ``a = u`` with the squash off). The policy can sample ``(a, η)``, rebuild ``a``
from a given ``η`` (the estimators hold ``η`` fixed and differentiate in ``θ``),
infer ``η`` from an observed ``(s, a)``, and give ``log p(a | s)``.

Two heads: :func:`mlp_policy` (the paper's 2-hidden-layer tanh network) and
:func:`linear_policy` (``μ = K s + k``, for the ``lqg`` probe task, whose exact
gradient is known for it). Both act on one example; batch with ``jax.vmap``.
"""

from __future__ import annotations

from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from svgx.nets import MLP, inverse_soft_clamp, soft_clamp

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
# Pre-squash values are recovered with atanh(a / scale); keep |a / scale| < 1.
_SQUASH_EDGE = 1.0 - 1e-6


class Linear(eqx.Module):
    """``x -> K x + k``: the mean of a linear-Gaussian policy."""

    K: Float[Array, "n_a n_s"]
    k: Float[Array, " n_a"]

    def __call__(self, x: Float[Array, " n_s"]) -> Float[Array, " n_a"]:
        return self.K @ x + self.k


class GaussianPolicy(eqx.Module):
    """A diagonal Gaussian in pre-squash space: ``a = π(s, η; θ)`` (paper §4.1).

    Attributes:
      net: features -> mean (``n_a``), or mean and log-std (``2 n_a``) when the
        standard deviation is state-dependent.
      log_std: the free log-std vector (``n_a``); ``None`` when ``net`` outputs it.
      observe: ``s -> φ(s)``, the features the network sees (static).
      scale: ``a = scale · tanh(u)``; ``None`` switches the squash off.
      learn_std: whether gradients reach the free ``log_std`` (off: σ stays at its
        initial value, a fixed exploration noise).
    """

    net: Callable[[Array], Array]
    log_std: Float[Array, " n_a"] | None
    observe: Callable[[Array], Array] = eqx.field(static=True)
    scale: float | None = eqx.field(static=True)
    learn_std: bool = eqx.field(static=True, default=True)

    @property
    def state_dependent_std(self) -> bool:
        return self.log_std is None

    def distribution(self, s: Float[Array, " n_s"]) -> tuple[Array, Array]:
        """``(μ, σ)`` of the pre-squash Gaussian at state ``s``; each ``[n_a]``."""
        out = self.net(self.observe(s))
        if self.state_dependent_std:
            mean, log_std = jnp.split(out, 2)
        else:
            mean = out
            log_std = self.log_std if self.learn_std else jax.lax.stop_gradient(self.log_std)
        return mean, jnp.exp(soft_clamp(log_std, LOG_STD_MIN, LOG_STD_MAX))

    def squash(self, u: Array) -> Array:
        """``a = scale · tanh(u)`` (the identity with the squash off)."""
        return u if self.scale is None else self.scale * jnp.tanh(u)

    def _unsquash(self, a: Array) -> Array:
        if self.scale is None:
            return a
        return jnp.arctanh(jnp.clip(a / self.scale, -_SQUASH_EDGE, _SQUASH_EDGE))

    def action(self, s: Float[Array, " n_s"], eta: Float[Array, " n_a"]) -> Float[Array, " n_a"]:
        """``a = π(s, η; θ)``: the re-parameterised action for a given noise."""
        mean, std = self.distribution(s)
        return self.squash(mean + std * eta)

    def mean_action(self, s: Float[Array, " n_s"]) -> Float[Array, " n_a"]:
        """The action for ``η = 0`` (used to evaluate the learned policy)."""
        return self.squash(self.distribution(s)[0])

    def sample(
        self, s: Float[Array, " n_s"], *, key: PRNGKeyArray
    ) -> tuple[Float[Array, " n_a"], Float[Array, " n_a"]]:
        """``(a, η)`` with ``η ~ N(0, I)``."""
        mean, _ = self.distribution(s)
        eta = jax.random.normal(key, mean.shape, mean.dtype)
        return self.action(s, eta), eta

    def infer_noise(self, s: Float[Array, " n_s"], a: Float[Array, " n_a"]) -> Float[Array, " n_a"]:
        """``η = (atanh(a / scale) − μ(s)) / σ(s)``: the noise that gives ``a`` in ``s``."""
        mean, std = self.distribution(s)
        return (self._unsquash(a) - mean) / std

    def log_prob(self, s: Float[Array, " n_s"], a: Float[Array, " n_a"]) -> Float[Array, ""]:
        """``log p(a | s; θ)``, with the change of variables of the squash."""
        mean, std = self.distribution(s)
        u = self._unsquash(a)
        return self._log_density(u, (u - mean) / std, std)

    def entropy_sample(
        self, s: Float[Array, " n_s"], eta: Float[Array, " n_a"]
    ) -> Float[Array, ""]:
        """``−log p(a | s)`` at ``a = π(s, η)``: a one-sample, re-parameterised estimate
        of the entropy of the (squashed) action, differentiable in θ (as SAC's).

        Unlike ``Σ log σ`` it is bounded under the squash: a σ so wide that ``tanh``
        saturates puts ``a`` at the bounds and lowers it."""
        mean, std = self.distribution(s)
        return -self._log_density(mean + std * eta, eta, std)

    def _log_density(self, u, z, std) -> Float[Array, ""]:
        """``log p(a)`` of ``a = squash(u)``, ``u = μ + σ z``."""
        log_p = jnp.sum(-0.5 * z**2 - jnp.log(std) - 0.5 * jnp.log(2 * jnp.pi))
        if self.scale is not None:
            # da/du = scale (1 − tanh² u); log(1 − tanh² u) = 2 (log 2 − u − softplus(−2u)).
            log_det = jnp.log(self.scale) + 2 * (jnp.log(2.0) - u - jax.nn.softplus(-2 * u))
            log_p = log_p - jnp.sum(log_det)
        return log_p

    def entropy_proxy(self, s: Float[Array, " n_s"]) -> Float[Array, ""]:
        """``Σ log σ(s)``: the pre-squash entropy up to a constant (a diagnostic)."""
        return jnp.sum(jnp.log(self.distribution(s)[1]))


def mlp_policy(
    observe: Callable[[Array], Array],
    observation_size: int,
    action_size: int,
    *,
    key: PRNGKeyArray,
    hidden: tuple[int, int] = (100, 100),
    state_dependent_std: bool = False,
    init_std: float = 0.5,
    scale: float | None = 1.0,
    learn_std: bool = True,
) -> GaussianPolicy:
    """The paper's policy: a 2-hidden-layer tanh MLP on the features ``observe(s)``.

    The last layer starts small, so the initial mean action is near 0.
    """
    if (
        isinstance(init_std, int | float) and not init_std > 0
    ):  # (a traced value is checked by its owner)
        raise ValueError(f"init_std={init_std!r}: must be > 0")
    out = 2 * action_size if state_dependent_std else action_size
    net = MLP(observation_size, out, hidden, key=key, final_scale=0.01)
    log_std0 = inverse_soft_clamp(jnp.log(init_std), LOG_STD_MIN, LOG_STD_MAX)
    if state_dependent_std:
        bias = net.layers[-1].bias.at[action_size:].set(log_std0)
        net = eqx.tree_at(lambda n: n.layers[-1].bias, net, bias)
        log_std = None
    else:
        log_std = jnp.full(action_size, log_std0)
    if state_dependent_std and not learn_std:
        raise ValueError("learn_std=False needs a free σ (state_dependent_std=False)")
    return GaussianPolicy(net, log_std, observe, scale, learn_std)


def linear_policy(
    state_size: int,
    action_size: int,
    *,
    K: Array | None = None,
    k: Array | None = None,
    init_std: float = 0.5,
    learn_std: bool = True,
) -> GaussianPolicy:
    """``a = K s + k + σ η`` with a free ``σ`` and no squash (the ``lqg`` probe's family).

    ``policy.log_std`` holds the *unclamped* parameter; :func:`linear_gaussian_params`
    gives ``(K, k, log σ)`` as the closed-form ``lqg`` functions take them.
    """
    K = jnp.zeros((action_size, state_size)) if K is None else jnp.asarray(K)
    k = jnp.zeros(action_size) if k is None else jnp.asarray(k)
    log_std0 = inverse_soft_clamp(jnp.log(init_std), LOG_STD_MIN, LOG_STD_MAX)
    log_std = jnp.full(action_size, log_std0, K.dtype)
    return GaussianPolicy(Linear(K, k), log_std, _identity, None, learn_std)


def linear_gaussian_params(policy: GaussianPolicy) -> tuple[Array, Array, Array]:
    """``(K, k, log σ)`` of a :func:`linear_policy`, differentiable in the policy."""
    if not isinstance(policy.net, Linear) or policy.state_dependent_std:
        raise ValueError("linear_gaussian_params needs a policy made by linear_policy")
    _, std = policy.distribution(jnp.zeros(policy.net.K.shape[1], policy.net.K.dtype))
    return policy.net.K, policy.net.k, jnp.log(std)


def _identity(x):
    return x
