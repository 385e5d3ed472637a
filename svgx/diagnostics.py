"""Gradient diagnostics: how close is an estimator to the true policy gradient?

For a policy, a task, an estimator, a Jacobian source, a depth and a model
capacity, :func:`diagnose` draws independent batches of on-policy episodes,
turns each into one estimate of ``∇θ J`` (``J = E Σ_t γ^t r_t``), and compares
them with a reference gradient:

* ``lqg``: the exact gradient (closed-form covariance propagation, no sampling);
* any other task: a Monte-Carlo mean over many fresh episodes, whose own standard
  error is reported: by default (``reference_estimator="pathwise"``) back-propagation
  through the true simulator (SVG(∞) with simulator Jacobians on new data); with
  ``"score"`` the likelihood-ratio estimator (REINFORCE with a leave-one-out baseline),
  which needs no Jacobian at all. Both are unbiased for ``∇θ J``; the score
  function's variance does not grow with the closed loop's sensitivity to its start,
  so where back-propagated episodes are heavy-tailed (a chaotic closed loop) it is
  the one whose mean can be read.

It reports the mean cosine similarity of a batch's estimate to the reference,
the relative bias ``|E ĝ − g| / |g|`` (with its Monte-Carlo standard error) and
the variance over batches (``Σ_i Var ĝ_i``, also relative to ``|g|²``).

A sampled reference's noise pulls every cosine towards zero: against a reference
of relative standard error ``ε`` even the true gradient has cosine about
``1 / √(1 + ε²)``. So the diagnosis also gives the noise-corrected cosine, the same
mean with ``|g|`` estimated without bias (``|ḡ|² − tr S / m`` over the reference's
``m`` chunks of episodes, sample covariance ``S``) in place of ``|ḡ|``, its bias
removed and its standard error estimated by a jackknife over the reference's chunks
and the batches (:func:`corrected_cosine`).

Each estimator is a training algorithm's (:data:`ESTIMATORS` says whose, and
:mod:`svgx.algorithms` whether it uses dynamics), applied to on-policy episodes
and put on the scale of ``∇θ J`` per episode: SVG(k) uses the
episode cut into consecutive, non-overlapping stretches of ``k`` steps (with an
exact value function their surrogate gradients sum to ``∇θ J``), SVG(1), SVG(0)
and the actor-critic sum their per-step terms with weights ``γ^t``, the planner
simulates whole episodes from the recorded start states.

The critic and the model are what the estimator is given: for ``lqg`` the exact
``V`` / ``Q`` of the policy (or, with ``critic="fitted"``, networks); for other
tasks networks fitted to Monte-Carlo returns-to-go of the current policy. With
``jacobians="learned"`` a dynamics model of width ``model_hidden`` is first fitted
to on-policy data.

Several seeds of one diagnosis run together (:func:`diagnose_seeds`): they share every
shape, so each stage is one program vmapped over them; :func:`diagnose` is one seed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Callable, Sequence
from typing import Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

import envs
from envs.tasks.lqg import QuadraticValue
from svgx import algorithms, critics, estimators, rollout
from svgx.critics import QFunction, ValueFunction
from svgx.dynamics import JACOBIAN_SOURCES, Dynamics, Jacobians, jacobian_errors, make_dynamics
from svgx.model import DynamicsModel, dynamics_model, one_step_errors
from svgx.policy import GaussianPolicy, linear_gaussian_params, linear_policy, mlp_policy
from svgx.replay import Transition

CRITICS = ("exact", "fitted")
REFERENCE_ESTIMATORS = ("pathwise", "score")


class Inputs(NamedTuple):
    """What an estimate is made from, besides the policy and the episodes."""

    env: envs.Env
    dynamics: Dynamics
    value: Callable | None
    q: Callable | None
    gamma: float
    depth: int | None
    key: PRNGKeyArray  # the planner's simulation noise


def _per_step_weights(batch: Transition, horizon: int, gamma) -> Float[Array, " batch"]:
    """``T γ^t``: a mean over the ``n T`` steps of ``n`` episodes, as a sum per episode."""
    return horizon * gamma ** batch.t.astype(batch.s.dtype)


def _svg_inf(policy, data: Transition, x: Inputs):
    return estimators.svg_loss(policy, x.dynamics, x.env.reward, None, data, gamma=x.gamma)


def _svgk(policy, data: Transition, x: Inputs):
    batch = rollout.stretches(data, x.depth)
    weights = (data.t.shape[1] // x.depth) * x.gamma ** batch.t[:, 0].astype(batch.s.dtype)
    return estimators.svg_loss(
        policy, x.dynamics, x.env.reward, x.value, batch, gamma=x.gamma, weights=weights
    )


def _svg0(policy, data: Transition, x: Inputs):
    batch = rollout.per_step(data)
    return estimators.svg0_loss(
        policy, x.q, batch, weights=_per_step_weights(batch, data.t.shape[1], x.gamma)
    )


def _planner(policy, data: Transition, x: Inputs):
    return estimators.planner_loss(
        policy,
        x.dynamics,
        x.env.reward,
        None,
        data.s[:, 0],
        data.t[:, 0],
        key=x.key,
        steps=data.t.shape[1],
        gamma=x.gamma,
    )


def _actor_critic(policy, data: Transition, x: Inputs):
    batch = rollout.per_step(data)
    weights = _per_step_weights(batch, data.t.shape[1], x.gamma)
    return estimators.actor_critic_loss(policy, x.value, batch, gamma=x.gamma, weights=weights)


def _reinforce(policy, data: Transition, x: Inputs):
    return estimators.reinforce_loss(policy, data, gamma=x.gamma, baseline=x.value)


class Estimator(NamedTuple):
    """An estimator to diagnose: the policy loss of a training algorithm on on-policy
    episodes, ``loss(policy, episodes, inputs) -> (loss, aux)``, per episode."""

    algorithm: str  # the training algorithm (svgx.algorithms) whose estimator it is
    loss: Callable
    reads_critic: bool  # given V or Q (the planner simulates whole episodes: no bootstrap)

    @property
    def uses_dynamics(self) -> bool:
        return algorithms.get(self.algorithm).uses_dynamics


ESTIMATORS = {
    "svg0": Estimator("svg0_er", _svg0, reads_critic=True),
    "svg1": Estimator("svg1", _svgk, reads_critic=True),
    "svgk": Estimator("svgk_er", _svgk, reads_critic=True),
    "svg_inf": Estimator("svg_inf", _svg_inf, reads_critic=False),
    "planner": Estimator("planner", _planner, reads_critic=False),
    "actor_critic": Estimator("actor_critic", _actor_critic, reads_critic=True),
    "reinforce": Estimator("reinforce", _reinforce, reads_critic=True),
}


@dataclasses.dataclass(frozen=True)
class DiagnoseConfig:
    """What to diagnose.

    Attributes:
      env: task name (``envs.names()``).
      env_options: overrides of the task's configuration (e.g. lqg's ``state_size``).
      estimator: the estimator to diagnose (a key of :data:`ESTIMATORS`).
      k: depth of ``svgk`` (must divide the horizon); ``svg1`` is ``k = 1``.
      jacobians: ``simulator`` or ``learned`` (for estimators that use dynamics).
      samples: episodes per batch (one estimate per batch).
      batches: independent batches (for the variance and the bias).
      reference_samples: episodes for the reference gradient (tasks other than lqg).
      reference_estimator: how a sampled reference is estimated: ``pathwise``
        (back-propagation through the simulator) or ``score`` (likelihood ratio).
      horizon: episode length (None: the task's own).
      gamma: discount.
      critic: ``exact`` (lqg only) or ``fitted``; ``None`` picks exact for lqg.
      critic_hidden: width of the fitted critic's two hidden layers.
      critic_samples, critic_steps: episodes and Adam steps to fit the critic.
      model_hidden: width of the learned model's sub-networks (paper: 5, 10, 20).
      model_samples, model_steps: episodes and Adam steps to fit the model.
      policy_std: the policy's standard deviation (pre-squash).
      seed: seeds the policy, the data and the fits.
    """

    env: str = "lqg"
    env_options: dict[str, int | float] = dataclasses.field(default_factory=dict)
    estimator: str = "svg1"
    k: int = 1
    jacobians: Jacobians = "simulator"
    samples: int = 64
    batches: int = 8
    reference_samples: int = 1024
    reference_estimator: Literal["pathwise", "score"] = "pathwise"
    horizon: int | None = None
    gamma: float = 1.0
    critic: Literal["exact", "fitted"] | None = None
    critic_hidden: int = 64
    critic_samples: int = 256
    critic_steps: int = 2000
    model_hidden: int = 20
    model_samples: int = 64
    model_steps: int = 10000
    policy_std: float = 0.3
    seed: int = 0

    def __post_init__(self):
        if self.env not in envs.names():
            raise ValueError(f"unknown env {self.env!r}; valid names: {', '.join(envs.names())}")
        if self.estimator not in ESTIMATORS:
            raise ValueError(
                f"unknown estimator {self.estimator!r}; valid: {', '.join(ESTIMATORS)}"
            )
        if self.jacobians not in JACOBIAN_SOURCES:
            raise ValueError(
                f"unknown Jacobian source {self.jacobians!r}; valid: {', '.join(JACOBIAN_SOURCES)}"
            )
        if self.jacobians == "learned" and not ESTIMATORS[self.estimator].uses_dynamics:
            with_dynamics = [name for name, e in ESTIMATORS.items() if e.uses_dynamics]
            raise ValueError(
                f"estimator {self.estimator!r} uses no dynamics, so jacobians='learned' "
                f"means nothing; estimators with a Jacobian source: {', '.join(with_dynamics)}"
            )
        if self.reference_estimator not in REFERENCE_ESTIMATORS:
            raise ValueError(
                f"unknown reference_estimator {self.reference_estimator!r}; valid: "
                f"{', '.join(REFERENCE_ESTIMATORS)}"
            )
        if self.critic is not None and self.critic not in CRITICS:
            raise ValueError(f"unknown critic {self.critic!r}; valid: {', '.join(CRITICS)}")
        if self.critic == "exact" and self.env != "lqg":
            raise ValueError(f"critic='exact' exists only for env 'lqg', not {self.env!r}")
        for name in (
            "k",
            "samples",
            "batches",
            "reference_samples",
            "critic_hidden",
            "critic_samples",
            "model_hidden",
            "model_samples",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= 1")
        for name in ("critic_steps", "model_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r}: must be >= 0")
        if self.batches < 2:
            raise ValueError(f"batches={self.batches!r}: the variance needs >= 2")
        if not 0 < self.gamma <= 1:
            raise ValueError(f"gamma={self.gamma!r}: must be in (0, 1]")
        if not 0 < self.policy_std < math.inf:
            raise ValueError(f"policy_std={self.policy_std!r}: must be a finite number > 0")

    @property
    def depth(self) -> int | None:
        """Stretch length of the value-expansion estimators (None: whole episodes)."""
        return {"svg1": 1, "svgk": self.k}.get(self.estimator)


@dataclasses.dataclass(frozen=True)
class Diagnosis:
    """Attributes:
    cosine: mean over batches of cos(batch estimate, reference).
    cosine_corrected: the same mean with the reference's noise taken out of ``|g|``
        (:func:`corrected_cosine`; NaN when the reference cannot tell ``g`` from zero).
    cosine_standard_error: its standard error, from the batches and the reference.
    cosine_of_mean: cos(mean estimate, reference).
    relative_bias: |mean estimate − reference| / |reference|.
    bias_standard_error: the Monte-Carlo standard error of relative_bias's numerator, over
        |reference|.
    variance: Σ_i Var(estimate_i) over batches.
    relative_variance: variance / |reference|².
    reference_norm: |reference|.
    reference_standard_error: relative standard error of a sampled reference (0 if exact).
    norm_ratio: ``|E ĝ| / |g|``, each norm without its sampling noise
        (:func:`squared_norm` of the batches and of the reference); NaN where either
        cannot be told from zero. Far above 1, the estimator is biased by at least
        ``norm_ratio − 1`` times ``|g|``, whatever the reference's direction.
    norm_ratio_lower: a lower bound on it that holds where the reference cannot give
        ``g``'s direction: ``|E ĝ|²`` two standard errors down over ``|g|²`` two up
        (0 where the first is not above zero).
    seconds: wall time of the whole diagnosis.
    """

    cosine: float
    cosine_corrected: float
    cosine_standard_error: float
    cosine_of_mean: float
    relative_bias: float
    bias_standard_error: float
    variance: float
    relative_variance: float
    reference_norm: float
    reference_standard_error: float
    norm_ratio: float
    norm_ratio_lower: float
    seconds: float

    def to_json(self, config: DiagnoseConfig) -> str:
        return json.dumps(
            {"config": dataclasses.asdict(config), **dataclasses.asdict(self)}, indent=2
        )

    def table(self, config: DiagnoseConfig) -> str:
        rows = [
            ("env", config.env),
            (
                "estimator",
                config.estimator + (f" (k={config.k})" if config.estimator == "svgk" else ""),
            ),
            ("jacobians", config.jacobians if ESTIMATORS[config.estimator].uses_dynamics else "-"),
            ("samples x batches", f"{config.samples} x {config.batches}"),
            *((f.name, f"{getattr(self, f.name):.4g}") for f in dataclasses.fields(self)),
        ]
        width = max(len(name) for name, _ in rows)
        return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def flatten(tree) -> Float[Array, " n"]:
    """The array leaves of a pytree as one vector."""
    return jnp.concatenate([jnp.ravel(x) for x in jax.tree.leaves(eqx.filter(tree, eqx.is_array))])


def make_policy(env, config: DiagnoseConfig, key: PRNGKeyArray) -> GaussianPolicy:
    """lqg: a linear policy at half the LQR gain (stable, not optimal); else the initial MLP."""
    if env.name == "lqg":
        return linear_policy(
            env.state_size,
            env.action_size,
            K=0.5 * env.lqr_gain(config.gamma),
            init_std=config.policy_std,
        )
    return mlp_policy(
        env.observe, env.observation_size, env.action_size, key=key, init_std=config.policy_std
    )


class Reference(NamedTuple):
    """A policy's true gradient ``∇θ J``: exact (lqg), or sampled in chunks of episodes."""

    gradient: Float[Array, " n"]  # exact, or the mean of the chunks
    standard_error: float  # relative standard error of the mean (0 if exact)
    chunks: Float[Array, "m n"] | None = None  # a sampled reference's per-chunk means


def reference_gradient(env, policy, config: DiagnoseConfig, key) -> Reference:
    """Exact for lqg, else :func:`sampled_reference` (:func:`reference_gradients` with
    one seed)."""
    return reference_gradients(env, stack([policy]), config, [key])[0]


def sampled_reference(env, policy, config: DiagnoseConfig, key) -> Reference:
    """``∇θ J`` estimated by ``config.reference_estimator`` on ``reference_samples`` fresh
    episodes, in chunks of ``samples`` (at least two, so that its error can be estimated):
    BPTT through the simulator (``pathwise``) or the likelihood ratio (``score``)."""
    return _sampled_references(env, stack([policy]), config, [key])[0]


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _exact_gradient(env, policy, gamma):
    """lqg's ``∇θ J`` in closed form (:meth:`envs.tasks.lqg.Lqg.exact_return`), flattened."""

    def exact(policy):
        return env.exact_return(*linear_gaussian_params(policy), gamma=gamma)

    return flatten(eqx.filter_grad(exact)(policy))


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _sampled_true_gradient(env, policy, dynamics, samples, gamma, key):
    """BPTT through the true simulator on ``samples`` fresh episodes, flattened."""
    data = rollout.episodes(env, policy, key, samples)
    g, _ = estimators.policy_gradient(
        estimators.svg_loss, policy, dynamics, env.reward, None, data, gamma=gamma
    )
    return flatten(g)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _sampled_score_gradient(env, policy, samples, gamma, key):
    """The likelihood-ratio estimate of ``∇θ J`` on ``samples`` fresh episodes (REINFORCE
    with the leave-one-out baseline: unbiased), flattened."""
    data = rollout.episodes(env, policy, key, samples)
    g, _ = estimators.policy_gradient(estimators.reinforce_loss, policy, data, gamma=gamma)
    return flatten(g)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _estimates(env, policy, keys, dynamics, value, q, *, estimator, samples, gamma, depth):
    """One estimate of ``∇θ J`` (per episode) by ``estimator`` per key of ``keys``
    (``[batches]``): each batch's episodes are drawn with its key, independently.

    The batches run one after another (``lax.map``: a batch's memory, not all of
    theirs). :func:`_estimates_over_seeds` compiles it once for every diagnosis of the
    same task, estimator, sizes and shapes: ``value`` and ``q`` are modules
    (:class:`ScaledCritic`, :class:`LqgQ`, :class:`~envs.tasks.lqg.QuadraticValue`), not
    new functions."""

    def one(key):
        key_data, key_plan = jax.random.split(key)
        data = rollout.episodes(env, policy, key_data, samples)
        inputs = Inputs(env, dynamics, value, q, gamma, depth, key_plan)
        g, _ = estimators.policy_gradient(ESTIMATORS[estimator].loss, policy, data, inputs)
        return flatten(g)

    return jax.lax.map(one, keys)


def fit(
    module,
    loss_fn,
    data,
    *,
    steps: int,
    key: PRNGKeyArray,
    batch_size: int = 256,
    learning_rate=1e-3,
):
    """Adam on ``mean(loss_fn(module, *example))`` over random mini-batches of ``data``
    (a tuple of arrays with a common leading axis). Returns the fitted module.

    Not compiled itself: :func:`_fit_model` and :func:`_fit_critics` call it inside their
    own compiled programs (called eagerly, its ``lax.scan`` would compile anew each time)."""
    optimizer = optax.adam(learning_rate)
    params, static = eqx.partition(module, eqx.is_inexact_array)
    n = data[0].shape[0]

    def loss(params, batch):
        return jnp.mean(jax.vmap(lambda *x: loss_fn(eqx.combine(params, static), *x))(*batch))

    def step(carry, key):
        params, opt_state = carry
        index = jax.random.randint(key, (min(batch_size, n),), 0, n)
        grads = jax.grad(loss)(params, tuple(x[index] for x in data))
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), None

    (params, _), _ = jax.lax.scan(
        step, (params, optimizer.init(params)), jax.random.split(key, steps)
    )
    return eqx.combine(params, static)


def fit_model(env, policy, config: DiagnoseConfig, key) -> DynamicsModel:
    """A learned model of width ``model_hidden``, fitted by maximum likelihood to on-policy
    data (:func:`fit_models` with one seed's ``key``)."""
    return unstack(fit_models(env, stack([policy]), config, [key]), 1)[0]


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _fit_model(env, policy, key, *, samples, hidden, steps):
    key_data, key_init, key_fit = jax.random.split(key, 3)
    data = rollout.per_step(rollout.episodes(env, policy, key_data, samples))
    model = dynamics_model(
        env.observe,
        env.observation_size,
        env.state_size,
        env.action_size,
        key=key_init,
        hidden=hidden,
    ).with_statistics(data.s, data.a, data.s_next)
    return fit(
        model,
        lambda m, s, a, s_next: m.nll(s, a, s_next),
        (data.s, data.a, data.s_next),
        steps=steps,
        key=key_fit,
    )


class ScaledCritic(eqx.Module):
    """``scale · critic(…)``: a fitted :class:`~svgx.critics.ValueFunction` or
    :class:`~svgx.critics.QFunction` (trained in units of the returns' spread ``scale``)
    on the returns' own scale."""

    critic: ValueFunction | QFunction
    scale: Float[Array, ""]

    def __call__(self, *args) -> Float[Array, ""]:
        return self.scale * self.critic(*args)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _fit_critics(env, policy, key, *, samples, hidden, steps, gamma):
    key_data, key_v, key_q, key_fit_v, key_fit_q = jax.random.split(key, 5)
    data = rollout.episodes(env, policy, key_data, samples)
    g = jax.vmap(lambda r: estimators.returns_to_go(r, gamma))(data.r)
    flat = rollout.per_step(data)
    g = g.reshape(-1)
    hidden = (hidden, hidden)
    horizon = data.t.shape[1]
    v = critics.value_function(
        env.observe, env.observation_size, key=key_v, hidden=hidden, horizon=horizon
    )
    q = critics.q_function(
        env.observe,
        env.observation_size,
        env.action_size,
        key=key_q,
        hidden=hidden,
        horizon=horizon,
    )
    # Returns can be large: fit in units of their spread, then scale back.
    scale = jnp.maximum(g.std(), 1e-6)
    v = fit(
        v,
        lambda v, s, t, y: (v(s, t) - y / scale) ** 2,
        (flat.s, flat.t, g),
        steps=steps,
        key=key_fit_v,
    )
    q = fit(
        q,
        lambda q, s, a, t, y: (q(s, a, t) - y / scale) ** 2,
        (flat.s, flat.a, flat.t, g),
        steps=steps,
        key=key_fit_q,
    )
    return ScaledCritic(v, scale), ScaledCritic(q, scale)


class LqgQ(eqx.Module):
    """lqg's exact ``Q(s, a, t)`` of a linear policy, from its exact ``V``
    (:meth:`envs.tasks.lqg.Lqg.q_value`)."""

    env: envs.Env = eqx.field(static=True)
    value: QuadraticValue
    gamma: float = eqx.field(static=True)

    def __call__(self, s, a, t) -> Float[Array, ""]:
        return self.env.q_value(self.value, s, a, t, gamma=self.gamma)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _exact_value(env, policy, gamma) -> QuadraticValue:
    return env.exact_value_coefficients(*linear_gaussian_params(policy), gamma=gamma)


# Tasks by name and options: one object each, so that the compiled programs, which hold
# the task as a static argument (compared by identity), serve every diagnosis of it.
_ENVS: dict[str, envs.Env] = {}


def make_env(config: DiagnoseConfig):
    """The task to diagnose on (built once per process for each name and options);
    checks what needs the task (the depth divides the horizon)."""
    overrides = dict(config.env_options)
    if config.horizon is not None:
        overrides["horizon"] = config.horizon
    key = json.dumps([config.env, overrides], sort_keys=True)  # 1 and 1.0 apart
    if key not in _ENVS:
        _ENVS[key] = envs.make(config.env, **overrides)
    env = _ENVS[key]
    if config.depth is not None and env.horizon % config.depth:
        raise ValueError(
            f"k={config.depth} must divide the horizon ({env.horizon}) of env {config.env!r}: "
            "the diagnosis cuts episodes into stretches of k steps"
        )
    return env


class Keys(NamedTuple):
    """The PRNG keys of one diagnosis, split from its ``seed``."""

    policy: PRNGKeyArray  # make_policy (the initial MLP of tasks other than lqg)
    reference: PRNGKeyArray  # reference_gradient (sampled tasks)
    model: PRNGKeyArray  # fit_model
    critic: PRNGKeyArray  # the fitted critics (_fit_critics)
    batches: PRNGKeyArray  # the independent batches of estimates

    @staticmethod
    def of(seed: int) -> Keys:
        return Keys(*jax.random.split(jax.random.key(seed), 5))


def diagnose(
    config: DiagnoseConfig,
    *,
    policy: GaussianPolicy | None = None,
    reference: Reference | None = None,
    model: DynamicsModel | None = None,
) -> Diagnosis:
    """Runs the diagnosis described in the module docstring for ``config.seed``
    (:func:`diagnose_seeds` with one seed).

    The keyword arguments let a caller diagnose another policy than
    :func:`make_policy`'s (a trained one), or reuse the parts that several diagnoses
    share (``svgx ablate``); each must be what this function would compute from
    ``Keys.of(config.seed)``:

    * ``policy``: the policy to diagnose (default: :func:`make_policy` with ``Keys.policy``);
    * ``reference``: that policy's :class:`Reference`, from :func:`reference_gradient`
      with ``Keys.reference``;
    * ``model``: with ``jacobians="learned"``, the model :func:`fit_model` fits with
      ``Keys.model``.
    """

    def one(x):
        return None if x is None else [x]

    (diagnosis,) = diagnose_seeds(
        config, [config.seed], policies=one(policy), references=one(reference), models=one(model)
    )
    return diagnosis


def diagnose_seeds(
    config: DiagnoseConfig,
    seeds: Sequence[int],
    *,
    policies: Sequence[GaussianPolicy] | None = None,
    references: Sequence[Reference] | None = None,
    models: Sequence[DynamicsModel] | None = None,
    nonfinite: Literal["raise", "return"] = "raise",
) -> list:
    """:func:`diagnose` for each of ``seeds`` (``config.seed`` is not read), the seeds
    vmapped: each stage (reference chunks, model fits, critic fits, the batches of
    estimates) is one compiled program over all seeds, which share every shape. The
    keyword arguments are per seed, as :func:`diagnose`'s; ``seconds`` is the wall time
    over the seeds' number. A seed whose estimate is not finite raises
    ``FloatingPointError``, or with ``nonfinite="return"`` has that error in its place."""
    start = time.perf_counter()
    seeds = list(seeds)
    if not seeds:
        raise ValueError("diagnose_seeds needs at least one seed")
    env = make_env(config)
    keys = [Keys.of(seed) for seed in seeds]
    if models is not None and config.jacobians != "learned":
        raise ValueError(f"a model was given, but jacobians={config.jacobians!r}")
    for name, given in (("policies", policies), ("references", references), ("models", models)):
        if given is not None and len(given) != len(seeds):
            raise ValueError(f"{len(given)} {name} for {len(seeds)} seeds")
    if policies is None:
        policies = [make_policy(env, config, k.policy) for k in keys]
    policy = stack(policies)
    if references is None:
        references = reference_gradients(env, policy, config, [k.reference for k in keys])
    model = None
    if config.jacobians == "learned":
        if models is not None:
            model = stack(models)
        else:
            model = fit_models(env, policy, config, [k.model for k in keys])
    value = q = None
    if ESTIMATORS[config.estimator].reads_critic:
        critic = config.critic or ("exact" if env.name == "lqg" else "fitted")
        if critic == "exact":
            value = _exact_values(env, policy, config.gamma)
            q = LqgQ(env, value, config.gamma)
        else:
            value, q = _fit_critics_over_seeds(
                env,
                policy,
                _stack_keys([k.critic for k in keys]),
                samples=config.critic_samples,
                hidden=config.critic_hidden,
                steps=config.critic_steps,
                gamma=config.gamma,
            )
    batch_keys = _stack_keys([jax.random.split(k.batches, config.batches) for k in keys])
    grads = np.asarray(
        _estimates_over_seeds(
            env,
            policy,
            batch_keys,
            model,
            value,
            q,
            jacobians=config.jacobians,
            estimator=config.estimator,
            samples=config.samples,
            gamma=config.gamma,
            depth=config.depth,
        )
    )
    seconds = (time.perf_counter() - start) / len(seeds)
    results = []
    for seed, g, reference in zip(seeds, grads, references, strict=True):
        try:
            results.append(summarise(g, reference, seconds))
        except FloatingPointError as error:
            if nonfinite == "raise":
                raise FloatingPointError(f"seed {seed}: {error}") from None
            results.append(error)
    return results


def stack(modules: Sequence):
    """Modules of one structure as one module whose arrays have a new leading axis (the
    seeds'); the non-array parts are the first module's."""
    arrays, static = zip(*(eqx.partition(m, eqx.is_array) for m in modules), strict=True)
    return eqx.combine(jax.tree.map(lambda *x: jnp.stack(x), *arrays), static[0])


def unstack(module, n: int) -> list:
    """The ``n`` modules :func:`stack` made ``module`` of."""
    arrays, static = eqx.partition(module, eqx.is_array)
    return [eqx.combine(jax.tree.map(lambda x, i=i: x[i], arrays), static) for i in range(n)]


def _stack_keys(keys: Sequence[PRNGKeyArray]) -> PRNGKeyArray:
    return jnp.stack(list(keys))


def reference_gradients(env, policies, config: DiagnoseConfig, keys) -> list[Reference]:
    """:func:`reference_gradient` of each seed's policy (``policies`` stacked, one
    ``keys`` entry per seed), the seeds vmapped: each chunk of episodes is one program
    over all seeds."""
    if env.name == "lqg":
        grads = np.asarray(_exact_gradients(env, policies, config.gamma))
        return [Reference(jnp.asarray(g), 0.0) for g in grads]
    return _sampled_references(env, policies, config, keys)


def _sampled_references(env, policies, config: DiagnoseConfig, keys) -> list[Reference]:
    """:func:`sampled_reference` of each seed's policy (stacked), the seeds vmapped."""
    chunks = max(2, config.reference_samples // config.samples)
    chunk_keys = _stack_keys([jax.random.split(k, chunks) for k in keys])  # [seeds, chunks]
    grads = jnp.stack(
        [
            _reference_chunks_over_seeds(
                env,
                policies,
                chunk_keys[:, j],
                estimator=config.reference_estimator,
                samples=config.samples,
                gamma=config.gamma,
            )
            for j in range(chunks)
        ],
        axis=1,
    )  # [seeds, chunks, n]
    return [_reference_of_chunks(g) for g in grads]


def _reference_of_chunks(grads) -> Reference:
    mean = grads.mean(0)
    stderr = jnp.sqrt(grads.var(0, ddof=1).sum() / len(grads)) / jnp.linalg.norm(mean)
    return Reference(mean, float(stderr), grads)


def fit_models(env, policies, config: DiagnoseConfig, keys: Sequence[PRNGKeyArray]):
    """:func:`fit_model` for each seed's policy (stacked) and key, the seeds vmapped; the
    models stacked."""
    return _fit_models_over_seeds(
        env,
        policies,
        _stack_keys(keys),
        samples=config.model_samples,
        hidden=config.model_hidden,
        steps=config.model_steps,
    )


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _exact_gradients(env, policies, gamma):
    return eqx.filter_vmap(lambda p: _exact_gradient(env, p, gamma))(policies)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _exact_values(env, policies, gamma):
    return eqx.filter_vmap(lambda p: _exact_value(env, p, gamma))(policies)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _reference_chunks_over_seeds(env, policies, keys, *, estimator, samples, gamma):
    def one(policy, key):
        if estimator == "score":
            return _sampled_score_gradient(env, policy, samples, gamma, key)
        dynamics = make_dynamics("simulator", env)
        return _sampled_true_gradient(env, policy, dynamics, samples, gamma, key)

    return eqx.filter_vmap(one)(policies, keys)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _fit_models_over_seeds(env, policies, keys, *, samples, hidden, steps):
    return eqx.filter_vmap(
        lambda p, k: _fit_model(env, p, k, samples=samples, hidden=hidden, steps=steps)
    )(policies, keys)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _fit_critics_over_seeds(env, policies, keys, *, samples, hidden, steps, gamma):
    return eqx.filter_vmap(
        lambda p, k: _fit_critics(
            env, p, k, samples=samples, hidden=hidden, steps=steps, gamma=gamma
        )
    )(policies, keys)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _estimates_over_seeds(
    env, policies, keys, models, values, qs, *, jacobians, estimator, samples, gamma, depth
):
    def one(policy, keys, model, value, q):
        dynamics = make_dynamics(jacobians, env, model)
        return _estimates(
            env,
            policy,
            keys,
            dynamics,
            value,
            q,
            estimator=estimator,
            samples=samples,
            gamma=gamma,
            depth=depth,
        )

    return eqx.filter_vmap(one)(policies, keys, models, values, qs)


def model_errors(
    env, model: DynamicsModel, data: Transition, key: PRNGKeyArray
) -> dict[str, float]:
    """How far a learned model is from the simulator on held-out real transitions
    ``data`` (leaves ``[batch, …]``): its one-step error ``model_one_step_mse`` and
    ``model_one_step_nll`` (:func:`svgx.model.one_step_errors`) and its Jacobian errors
    ``jacobian_error_s``, ``jacobian_error_a`` and ``jacobian_cosine``
    (:func:`svgx.dynamics.jacobian_errors`' ``jacobian_cosine_value``), the last along a
    random unit direction ``u`` per transition (drawn from ``key``) rather than along
    ``∇V``: a model's error must not depend on which estimator, with or without a
    critic, uses it."""
    errors = _model_errors(env, model, data, key)
    values = {name: float(value) for name, value in errors.items()}
    values["jacobian_cosine"] = values.pop("jacobian_cosine_value")  # not along ∇V here
    return values


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _model_errors(env, model, data, key):
    direction = jax.random.normal(key, data.s_next.shape, data.s_next.dtype)
    direction /= jnp.linalg.norm(direction, axis=-1, keepdims=True)
    return one_step_errors(model, data.s, data.a, data.s_next) | jacobian_errors(
        make_dynamics("learned", env, model),
        make_dynamics("simulator", env),
        data.s,
        data.a,
        data.s_next,
        data.noise,
        direction,
    )


# The compiled programs of a diagnosis. Their static arguments (the task, sizes, names)
# are equal between diagnoses of the same shapes, so that a second one (another seed,
# cell or policy) reuses them; each counts its traces (``eqx.debug.get_num_traces``),
# which the tests read.
PROGRAMS = (
    _exact_gradient,
    _sampled_true_gradient,
    _sampled_score_gradient,
    _estimates,
    _fit_model,
    _fit_critics,
    _exact_value,
    _model_errors,
    _exact_gradients,
    _exact_values,
    _reference_chunks_over_seeds,
    _fit_models_over_seeds,
    _fit_critics_over_seeds,
    _estimates_over_seeds,
)


def summarise(grads: np.ndarray, reference: Reference, seconds: float) -> Diagnosis:
    """The statistics of :class:`Diagnosis` from per-batch estimates ``[batches, n_θ]``."""
    if not np.isfinite(grads).all():
        raise FloatingPointError("a gradient estimate is not finite")
    reference_se = reference.standard_error
    chunks = None if reference.chunks is None else np.asarray(reference.chunks, np.float64)
    reference = np.asarray(reference.gradient)
    ref_norm = float(np.linalg.norm(reference))
    mean = grads.mean(0)

    def cos(x):
        return float(x @ reference / (np.linalg.norm(x) * ref_norm + 1e-30))

    variance = float(grads.var(0, ddof=1).sum())
    corrected, corrected_se = corrected_cosine(grads, reference if chunks is None else chunks)
    ratio, ratio_lower = _norm_ratio(
        Reference(mean, 0.0, grads), Reference(reference, reference_se, chunks)
    )
    return Diagnosis(
        cosine=float(np.mean([cos(g) for g in grads])),
        cosine_corrected=corrected,
        cosine_standard_error=corrected_se,
        cosine_of_mean=cos(mean),
        relative_bias=float(np.linalg.norm(mean - reference)) / ref_norm,
        bias_standard_error=math.sqrt(variance / len(grads)) / ref_norm,
        variance=variance,
        relative_variance=variance / ref_norm**2,
        reference_norm=ref_norm,
        reference_standard_error=reference_se,
        norm_ratio=ratio,
        norm_ratio_lower=ratio_lower,
        seconds=seconds,
    )


def _norm_ratio(estimates: Reference, reference: Reference) -> tuple[float, float]:
    """:class:`Diagnosis`' ``norm_ratio`` and ``norm_ratio_lower`` (NaN, NaN with fewer
    than 3 batches or reference chunks: no standard error)."""
    if len(estimates.chunks) < 3 or (reference.chunks is not None and len(reference.chunks) < 3):
        return math.nan, math.nan
    (e, e_error), (g, g_error) = squared_norm(estimates), squared_norm(reference)
    ratio = math.sqrt(e / g) if e > 0 and g > 0 else math.nan
    low, high = max(e - 2 * e_error, 0.0), g + 2 * g_error
    if high <= 0:  # the reference reads |g|² < 0 even two errors up: no finite bound
        return ratio, math.inf if low > 0 else 0.0
    return ratio, math.sqrt(low / high)


def corrected_cosine(grads: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    """The mean cosine between the batches' estimates ``grads [B, n]`` and the true
    gradient ``g``, with its standard error.

    ``reference`` is ``g`` itself (``[n]``, exact) or ``m ≥ 2`` independent, equally
    sized chunk means of a sampled reference (``[m, n]``). Then the mean of the unit
    estimates ``ū`` is projected on the chunks' mean ``ḡ``, which is unbiased for
    ``ū·g``, and divided by ``√(|ḡ|² − tr S / m)``, which estimates ``|g|`` without the
    reference noise's ``tr Σ / m`` (``S``: the chunks' sample covariance). A jackknife
    over the chunks removes that ratio's bias (of order ``1/m``) and gives the
    reference's share of the standard error; the batches' share is their corrected
    cosines' standard deviation over ``√B``. NaN when ``|ḡ|² ≤ tr S / m``: the
    reference cannot tell ``g`` from zero (and a NaN error when a chunk left out makes
    it so, or with 2 chunks).
    """
    grads = np.asarray(grads, np.float64)
    units = grads / (np.linalg.norm(grads, axis=1, keepdims=True) + 1e-300)
    if reference.ndim == 1:
        per_batch = units @ (reference / np.linalg.norm(reference))
        return float(per_batch.mean()), float(per_batch.std(ddof=1) / math.sqrt(len(units)))

    reference = np.asarray(reference, np.float64)
    m, mean = len(reference), reference.mean(0)
    squared = mean @ mean - reference.var(0, ddof=1).sum() / m
    if squared <= 0:
        return math.nan, math.nan
    per_batch = units @ mean / math.sqrt(squared)
    if m < 3:  # a chunk left out leaves no covariance to estimate
        return float(per_batch.mean()), math.nan
    loo_means, loo_norms = _leave_one_out(_chunk_sums(Reference(mean, 0.0, reference)))
    if (loo_norms <= 0).any():
        return float(per_batch.mean()), math.nan
    jackknife = (units @ loo_means.T / np.sqrt(loo_norms)).mean(0)  # [m]: each chunk out
    reference_variance = (m - 1) / m * ((jackknife - jackknife.mean()) ** 2).sum()
    batch_variance = per_batch.var(ddof=1) / len(units)
    value = m * per_batch.mean() - (m - 1) * jackknife.mean()  # bias-corrected
    return float(value), float(math.sqrt(reference_variance + batch_variance))


def reference_agreement(a: Reference, b: Reference) -> tuple[float, float]:
    """The cosine between the expectations of two references of the same policy's
    gradient (two estimators of it, or one against the exact gradient), with its
    standard error: two unbiased references agree at 1.

    Each sampled reference's noise is taken out of its norm as in
    :func:`corrected_cosine` (``|ḡ|² − tr S / m``); the product of two independent means
    is unbiased for ``g_a · g_b`` as it is. A jackknife over each reference's chunks
    removes the ratio's bias and gives the standard error. NaN when a reference does not
    resolve its gradient's norm (:func:`squared_norm` not two standard errors above
    zero): there the ratio's jackknife is not to be trusted, and
    :func:`inner_product` is the comparison to make."""
    if any(value <= 2 * error for value, error in map(squared_norm, (a, b))):
        return math.nan, math.nan
    parts = [(np.asarray(r.gradient, np.float64), _chunk_sums(r)) for r in (a, b)]

    def cosine(means, squared_norms):
        if min(squared_norms) <= 0:
            return math.nan
        return float(means[0] @ means[1] / math.sqrt(squared_norms[0] * squared_norms[1]))

    means = [mean for mean, _ in parts]
    norms = [_squared_norm(mean, sums) for mean, sums in parts]
    value = cosine(means, norms)
    if math.isnan(value):
        return math.nan, math.nan
    variance, corrected = 0.0, value
    for i, (_, sums) in enumerate(parts):
        if sums is None:
            continue
        m = len(sums["chunks"])
        loo_means, loo_norms = _leave_one_out(sums)
        other = means[1 - i]
        if (loo_norms <= 0).any():
            return value, math.nan
        jackknife = loo_means @ other / np.sqrt(loo_norms * norms[1 - i])
        variance += (m - 1) / m * ((jackknife - jackknife.mean()) ** 2).sum()
        corrected -= (m - 1) * (jackknife.mean() - value)
    return float(corrected), float(math.sqrt(variance))


def inner_product(a: Reference, b: Reference) -> tuple[float, float]:
    """``ḡ_a · ḡ_b``, unbiased for ``g_a · g_b`` (the references are independent), and
    its standard error (the delta method over each reference's chunks). Two unbiased
    references of one gradient read ``|g|²`` here, as each one's :func:`squared_norm`
    does, even where none of them resolves ``g``'s direction."""
    means = [np.asarray(r.gradient, np.float64) for r in (a, b)]
    variance = 0.0
    for reference, other in ((a, means[1]), (b, means[0])):
        if reference.chunks is not None:
            projections = np.asarray(reference.chunks, np.float64) @ other
            variance += projections.var(ddof=1) / len(projections)
    return float(means[0] @ means[1]), math.sqrt(variance)


def squared_norm(reference: Reference) -> tuple[float, float]:
    """``|g|²`` estimated without the reference's noise (``|ḡ|² − tr S / m``, unbiased),
    and its jackknife standard error over the chunks (0 for an exact reference). A
    reference whose estimate is not clearly above zero cannot give ``g``'s direction;
    ``estimate + 2 · error`` still bounds ``|g|²`` from above."""
    sums = _chunk_sums(reference)
    mean = np.asarray(reference.gradient, np.float64)
    estimate = _squared_norm(mean, sums)
    if sums is None:
        return estimate, 0.0
    m = len(sums["chunks"])
    _, loo_norms = _leave_one_out(sums)
    return estimate, float(math.sqrt((m - 1) / m * ((loo_norms - loo_norms.mean()) ** 2).sum()))


def _leave_one_out(sums: dict) -> tuple[np.ndarray, np.ndarray]:
    """Each chunk left out in turn: the other chunks' means ``[m, n]`` and their
    ``|ḡ|² − tr S / (m − 1)`` ``[m]``."""
    chunks, m = sums["chunks"], len(sums["chunks"])
    mean = chunks.mean(0)
    loo_means = (m * mean - chunks) / (m - 1)
    loo_squares = sums["squares"] - (chunks**2).sum(1)  # Σ|x|² without chunk j
    loo_trace = (loo_squares - (m - 1) * (loo_means**2).sum(1)) / (m - 2)
    return loo_means, (loo_means**2).sum(1) - loo_trace / (m - 1)


def _chunk_sums(reference: Reference) -> dict | None:
    if reference.chunks is None:
        return None
    chunks = np.asarray(reference.chunks, np.float64)
    if len(chunks) < 3:
        raise ValueError(f"a sampled reference needs >= 3 chunks here, not {len(chunks)}")
    return dict(chunks=chunks, squares=float((chunks**2).sum()))


def _squared_norm(mean: np.ndarray, sums: dict | None) -> float:
    """``|g|²`` without the reference noise's share (``|ḡ|² − tr S / m``), or ``|g|²``."""
    if sums is None:
        return float(mean @ mean)
    m = len(sums["chunks"])
    trace = (sums["squares"] - m * float(mean @ mean)) / (m - 1)
    return float(mean @ mean) - trace / m
