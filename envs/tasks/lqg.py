"""The ``lqg`` probe: a linear-quadratic-Gaussian system whose answers are known exactly.

Not one of the paper's tasks: a probe for the gradient estimators. For a
linear-Gaussian policy ``a = K s + k + diag(exp(log_std)) η``, ``η ~ N(0, I)``, the
expected return, the value function, the Q-function and the policy gradient are
available in closed form (no sampling), and the optimal return follows from the
Riccati recursion.

Dynamics ``s' = A s + B a + noise_scale · ξ`` with ``ξ ~ N(0, I_{n_s})``;
reward ``r(s, a) = -(sᵀ Q s + aᵀ R a)`` with ``Q = I``, ``R = control_cost · I``
(time-invariant); ``s_0 ~ N(0, initial_std² I)``; ``observe`` is the identity;
an episode succeeds when its final state has ``|s| < success_radius``.

``A`` and ``B`` are drawn from ``numpy.random.default_rng(seed)``, so a config
fixes the system: ``A`` is a standard normal matrix rescaled to spectral radius
1.05 (mildly unstable, so control matters) and ``B`` is standard normal divided
by ``sqrt(n_s)``.

The task is unbounded in effect: ``action_low``/``action_high`` are ``∓1e3``, far
outside what any sensible policy does, and the policies for ``lqg`` are linear
and unsquashed (:func:`svgx.policy.linear_policy`). No clipping happens anywhere,
so the closed forms are exact for the environment as simulated.

The closed-form methods take the policy as arrays ``K [n_a, n_s]``, ``k [n_a]``,
``log_std [n_a]`` and compute in their dtype (float64 under ``jax_enable_x64``):

* :meth:`Lqg.exact_return` -- ``J = E Σ_{t<T} γ^t r_t`` (the exact policy gradient
  is ``jax.grad(env.exact_return, argnums=(0, 1, 2))``);
* :meth:`Lqg.exact_value_coefficients` -- ``V_t(s) = sᵀ P_t s + p_tᵀ s + c_t`` as a
  :class:`QuadraticValue`, callable as ``value(s, t)``;
* :meth:`Lqg.q_value` -- ``Q_t(s, a) = r(s, a) + γ E V_{t+1}(s')`` from those;
* :meth:`Lqg.optimal_return` -- the best expected return of any policy;
* :meth:`Lqg.lqr_gain` -- the stationary infinite-horizon (discounted) LQR gain.
"""

from __future__ import annotations

import dataclasses

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int

from envs.base import Env, EnvConfig

SPECTRAL_RADIUS = 1.05
ACTION_BOUND = 1e3


@dataclasses.dataclass(frozen=True)
class LqgConfig(EnvConfig):
    """Attributes:
    horizon: episode length.
    noise_scale: std of the additive state noise.
    state_size: ``n_s``.
    action_size: ``n_a``.
    seed: draws ``A`` and ``B`` (a config fixes the system).
    control_cost: ``R = control_cost · I`` (``Q = I``).
    initial_std: ``s_0 ~ N(0, initial_std² I)``.
    success_radius: an episode succeeds if its final state has ``|s| <`` this.
    """

    horizon: int = 50
    noise_scale: float = 0.1
    state_size: int = 2
    action_size: int = 1
    seed: int = 0
    control_cost: float = 0.1
    initial_std: float = 1.0
    success_radius: float = 0.5

    def __post_init__(self):
        super().__post_init__()
        for field in ("state_size", "action_size"):
            value = getattr(self, field)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{field}={value!r}: must be an integer >= 1")
        if not self.control_cost > 0:
            raise ValueError(f"control_cost={self.control_cost!r}: must be > 0")
        if not self.initial_std >= 0:
            raise ValueError(f"initial_std={self.initial_std!r}: must be >= 0")
        if not self.success_radius > 0:
            raise ValueError(f"success_radius={self.success_radius!r}: must be > 0")


class QuadraticValue(eqx.Module):
    """``V_t(s) = sᵀ P[t] s + p[t]ᵀ s + c[t]`` for ``t = 0..T`` (``V_T = 0``).

    ``value(s, t)`` works under ``jit``/``vmap`` with ``t`` an int or int array, is 0
    for ``t >= T``, and is differentiable in ``s``. ``gamma`` is the discount the
    coefficients were computed with (:meth:`Lqg.q_value` uses it by default).
    """

    P: Float[Array, "T+1 n_s n_s"]
    p: Float[Array, "T+1 n_s"]
    c: Float[Array, " T+1"]
    gamma: Float[Array, ""]

    @property
    def horizon(self) -> int:
        return self.c.shape[0] - 1

    def coefficients(self, t):
        """``(P_t, p_t, c_t)``, the zero coefficients for ``t >= T``."""
        i = jnp.clip(jnp.asarray(t), 0, self.horizon)
        return self.P[i], self.p[i], self.c[i]

    def __call__(self, s: Float[Array, " n_s"], t: Int[Array, ""] | int) -> Float[Array, ""]:
        P, p, c = self.coefficients(t)
        s = s.astype(P.dtype)
        return s @ P @ s + p @ s + c


def _riccati_step(S, A, B, Q, R, gamma):
    """One backward step of the (discounted) Riccati recursion on cost-to-go ``sᵀ S s``.

    Returns ``(S_prev, K)`` with ``K`` the optimal feedback ``a = K s``.
    """
    G = R + gamma * B.T @ S @ B
    K = -gamma * np.linalg.solve(G, B.T @ S @ A)
    S_prev = Q + gamma * A.T @ S @ A + gamma * A.T @ S @ B @ K
    return 0.5 * (S_prev + S_prev.T), K


class Lqg(Env):
    """The linear-quadratic-Gaussian probe (see the module docstring)."""

    name = "lqg"
    time_dependent = False

    def __init__(self, config: LqgConfig):
        self.config = config
        n_s, n_a = config.state_size, config.action_size
        self.state_size = n_s
        self.action_size = n_a
        self.dt = 1.0
        rng = np.random.default_rng(config.seed)
        A = rng.standard_normal((n_s, n_s))
        A *= SPECTRAL_RADIUS / np.max(np.abs(np.linalg.eigvals(A)))
        B = rng.standard_normal((n_s, n_a)) / np.sqrt(n_s)
        # float64 originals; every computation casts them to the dtype it works in.
        self._A, self._B = A, B
        self._Q = np.eye(n_s)
        self._R = config.control_cost * np.eye(n_a)
        self.A, self.B = jnp.asarray(A), jnp.asarray(B)
        self.Q, self.R = jnp.asarray(self._Q), jnp.asarray(self._R)

    @property
    def noise_size(self):
        return self.state_size  # additive noise on every state component

    @property
    def action_low(self):
        return -ACTION_BOUND * jnp.ones(self.action_size)

    @property
    def action_high(self):
        return ACTION_BOUND * jnp.ones(self.action_size)

    def _matrices(self, dtype):
        return jnp.asarray(self._A, dtype), jnp.asarray(self._B, dtype)

    # --- the environment ----------------------------------------------------
    def reset(self, key):
        return self.config.initial_std * jax.random.normal(key, (self.state_size,))

    def transition(self, s, a, noise):
        self.check_shapes(s, a, noise)
        A, B = self._matrices(s.dtype)
        return A @ s + B @ a.astype(s.dtype) + self.config.noise_scale * noise.astype(s.dtype)

    def reward(self, s, a, t):
        del t
        a = a.astype(s.dtype)
        return -(s @ s + self.config.control_cost * (a @ a))

    def success(self, s):
        return jnp.linalg.norm(s) < self.config.success_radius

    # --- closed forms for linear-Gaussian policies ----------------------------
    def _policy_terms(self, K, k, log_std):
        dtype = jnp.result_type(K, k, log_std, jnp.float32)
        K, k, log_std = (jnp.asarray(x, dtype) for x in (K, k, log_std))
        A, B = self._matrices(dtype)
        var_a = jnp.exp(2 * log_std)
        F = A + B @ K
        # Covariance of the next state's noise: policy noise through B, plus ξ.
        W = (B * var_a) @ B.T + self.config.noise_scale**2 * jnp.eye(self.state_size, dtype=dtype)
        return dtype, K, k, var_a, A, B, F, W

    def exact_return(self, K, k, log_std, gamma=1.0) -> Float[Array, ""]:
        """``J = E Σ_{t=0}^{T-1} γ^t r_t`` under ``a = K s + k + diag(exp(log_std)) η``.

        Propagates the state's mean ``m_t`` and covariance ``P_t`` exactly
        (``m_0 = 0``, ``P_0 = initial_std² I``; ``m' = (A+BK) m + B k``,
        ``P' = (A+BK) P (A+BK)ᵀ + B diag(σ²) Bᵀ + noise_scale² I``) and sums the
        expected rewards. Pure and differentiable: the exact policy gradient is
        ``jax.grad(env.exact_return, argnums=(0, 1, 2))(K, k, log_std, gamma)``.
        """
        dtype, K, k, var_a, _, B, F, W = self._policy_terms(K, k, log_std)
        c = self.config.control_cost
        n_s = self.state_size

        def body(carry, _):
            m, P, discount = carry
            mean_a = K @ m + k
            cost = (
                jnp.trace(P) + m @ m + c * (mean_a @ mean_a + jnp.trace(K @ P @ K.T) + var_a.sum())
            )
            next_carry = (F @ m + B @ k, F @ P @ F.T + W, discount * gamma)
            return next_carry, -discount * cost

        P0 = self.config.initial_std**2 * jnp.eye(n_s, dtype=dtype)
        init = (jnp.zeros(n_s, dtype), P0, jnp.ones((), dtype))
        _, rewards = jax.lax.scan(body, init, None, length=self.horizon)
        return rewards.sum()

    def exact_value_coefficients(self, K, k, log_std, gamma=1.0) -> QuadraticValue:
        """The policy's value ``V_t(s) = E[Σ_{u=t}^{T-1} γ^{u-t} r_u | s_t = s]``.

        Backward policy evaluation from ``V_T = 0``: with ``F = A + B K`` and ``W`` the
        next state's noise covariance (``B diag(σ²) Bᵀ + noise_scale² I``),

            P_t = -(Q + Kᵀ R K) + γ Fᵀ P_{t+1} F
            p_t = -2 Kᵀ R k + γ Fᵀ (2 P_{t+1} B k + p_{t+1})
            c_t = -(kᵀ R k + tr(R diag σ²)) + γ ((Bk)ᵀ P_{t+1} B k + p_{t+1}ᵀ B k
                  + tr(P_{t+1} W) + c_{t+1})
        """
        dtype, K, k, var_a, _, B, F, W = self._policy_terms(K, k, log_std)
        c_R = self.config.control_cost
        n_s = self.state_size
        Bk = B @ k

        def body(carry, _):
            P1, p1, c1 = carry
            P = -(jnp.eye(n_s, dtype=dtype) + c_R * K.T @ K) + gamma * F.T @ P1 @ F
            P = 0.5 * (P + P.T)
            p = -2 * c_R * K.T @ k + gamma * F.T @ (2 * P1 @ Bk + p1)
            c = -c_R * (k @ k + var_a.sum()) + gamma * (
                Bk @ P1 @ Bk + p1 @ Bk + jnp.sum(P1 * W) + c1
            )
            return (P, p, c), (P, p, c)

        zero = (jnp.zeros((n_s, n_s), dtype), jnp.zeros(n_s, dtype), jnp.zeros((), dtype))
        _, (P, p, c) = jax.lax.scan(body, zero, None, length=self.horizon, reverse=True)
        return QuadraticValue(
            P=jnp.concatenate([P, zero[0][None]]),
            p=jnp.concatenate([p, zero[1][None]]),
            c=jnp.concatenate([c, zero[2][None]]),
            gamma=jnp.asarray(gamma, dtype),
        )

    def q_value(self, value: QuadraticValue, s, a, t, gamma=None) -> Float[Array, ""]:
        """``Q_t(s, a) = r(s, a) + γ E_ξ V_{t+1}(A s + B a + noise_scale ξ)``, in closed form.

        The expectation of the quadratic ``V_{t+1}`` adds ``γ noise_scale² tr(P_{t+1})``
        to its value at the mean. ``gamma`` defaults to the one ``value`` was
        computed with; ``Q_t = r`` at ``t = T - 1`` (and beyond).
        """
        gamma = value.gamma if gamma is None else gamma
        P1, p1, c1 = value.coefficients(jnp.asarray(t) + 1)
        s = s.astype(P1.dtype)
        A, B = self._matrices(P1.dtype)
        mean = A @ s + B @ a.astype(P1.dtype)
        noise_term = self.config.noise_scale**2 * jnp.trace(P1)
        expected_next = mean @ P1 @ mean + p1 @ mean + c1 + noise_term
        return self.reward(s, a, t) + gamma * expected_next

    # --- the optimum ------------------------------------------------------------
    def optimal_gains(self, gamma: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
        """The finite-horizon optimum: time-varying gains ``K_t [T, n_a, n_s]`` and the
        cost-to-go matrices ``S_t [T+1, n_s, n_s]`` (optimal cost ``sᵀ S_t s + const``).

        With linear dynamics, quadratic cost and additive Gaussian noise the optimal
        policy is the deterministic linear time-varying feedback ``a = K_t s``
        (certainty equivalence): policy noise and offsets only add cost.
        """
        A, B, Q, R = self._A, self._B, self._Q, self._R
        S = np.zeros_like(Q)
        Ss, Ks = [S], []
        for _ in range(self.horizon):
            S, K = _riccati_step(S, A, B, Q, R, gamma)
            Ss.append(S), Ks.append(K)
        return np.stack(Ks[::-1]), np.stack(Ss[::-1])

    def optimal_return(self, gamma: float = 1.0) -> float:
        """The best expected return ``E Σ_{t<T} γ^t r_t`` over all policies.

        From the finite-horizon time-varying Riccati recursion (see
        :meth:`optimal_gains`):
        ``-(initial_std² tr S_0 + Σ_{t<T} γ^{t+1} noise_scale² tr S_{t+1})``.
        A stationary linear policy (e.g. :meth:`lqr_gain`) gets close to this but in
        general not exactly to it: the optimal gains change near the horizon.
        """
        _, S = self.optimal_gains(gamma)
        noise_var = self.config.noise_scale**2
        noise_cost = sum(
            gamma ** (t + 1) * noise_var * np.trace(S[t + 1]) for t in range(self.horizon)
        )
        return float(-(self.config.initial_std**2 * np.trace(S[0]) + noise_cost))

    def lqr_gain(self, gamma: float = 1.0, tol: float = 1e-12, max_iter: int = 100_000) -> Array:
        """The stationary infinite-horizon discounted LQR gain ``K_∞`` (``a = K_∞ s``).

        Iterates the Riccati equation from ``S = 0`` to convergence (relative change
        below ``tol``), in float64 numpy; returned as a jnp array of the default
        float dtype. The policy it gives is stationary, so on the finite horizon it
        is close to, but not always exactly, optimal (:meth:`optimal_return`).

        Raises:
          RuntimeError: if the iteration does not converge within ``max_iter`` steps.
        """
        A, B, Q, R = self._A, self._B, self._Q, self._R
        S = np.zeros_like(Q)
        for _ in range(max_iter):
            S_next, K = _riccati_step(S, A, B, Q, R, gamma)
            if np.max(np.abs(S_next - S)) <= tol * max(1.0, np.max(np.abs(S_next))):
                return jnp.asarray(K)
            S = S_next
        raise RuntimeError(
            f"the Riccati iteration for gamma={gamma} did not converge in {max_iter} steps"
        )
