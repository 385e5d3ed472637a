"""Configuration of a training run: what fixes shapes, and what can be swept.

:class:`Config` holds everything that fixes array shapes or program structure
(task, algorithm, sizes, horizons, batch sizes, step counts); it is frozen and
closed over by :func:`svgx.train.make_train`. :class:`Hyperparams` holds what
can be swept without recompiling (learning rates, γ, τ, noise scales, the
importance-weight cap); it is a pytree that ``vmap`` s like a seed.

Checks run when the object is built, so a combination that makes no sense fails
before anything is compiled, with a message naming the field, the value and what
is allowed. Building a :class:`Config` does not build the task: the checks that
need it (an option against the horizon, the action bounds against ``squash``) run
in :meth:`Config.make_env`, which :func:`svgx.train.make_train` calls.
"""

from __future__ import annotations

import dataclasses
import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import envs
from svgx import algorithms
from svgx.dynamics import JACOBIAN_SOURCES, Jacobians


@dataclasses.dataclass(frozen=True)
class Config:
    """What fixes shapes (closed over; changing it recompiles).

    Attributes:
      env: task name (``envs.names()``).
      env_options: overrides of the task's configuration (e.g. ``{"horizon": 100}``).
      algo: the algorithm, a name of ``svgx.algorithms.names()`` (paper §4, §6).
      algo_options: the algorithm's own options (e.g. ``{"k": 5}`` for ``svgk_er``;
        ``svgx.algorithms.options(algo)``).
      jacobians: ``simulator`` (autodiff through MJX) or ``learned`` (the model's);
        only for algorithms that back-propagate through dynamics.
      n_envs: parallel environments per seed.
      iterations: training iterations per seed (each collects, then updates).
      chunks: the run is split into this many jitted chunks (metrics, evaluation
        and checkpoints happen between chunks); must divide ``iterations``.
      steps_per_iteration: environment steps per environment per iteration, for
        replay algorithms (on-policy algorithms collect one episode each).
      updates_per_step: model and critic updates per environment step (per
        parallel environment step), and policy updates for replay algorithms.
      random_steps: initial steps per environment with uniformly random actions.
      batch_size: mini-batch size (transitions or stretches) of every update.
      replay_capacity: transitions the replay database holds (per seed).
      policy_hidden: widths of the policy's hidden tanh layers.
      critic_hidden: widths of the critic's hidden tanh layers.
      model_hidden: width of each per-dimension model sub-network (paper: 5–20).
      state_dependent_std: the policy's σ depends on the state (else a free vector).
      learn_std: learn the free σ (off: it stays at ``init_std``, a fixed exploration
        noise; SVG(0) and DPG-like critics lose their action signal when σ collapses).
      squash: ``a = scale · tanh(u)`` (off: ``a = u``, e.g. for ``lqg``).
      linear_policy: a linear-Gaussian policy (``lqg`` probes) instead of the MLP.
      time_input: give critics ``t / T`` (and V = 0 at the horizon); None: the task decides.
      target_period: 0 for Polyak targets (rate ``tau``), else copy every this many updates.
      critic_n_step: ``V``'s target looks this many replayed steps ahead,
        ``Σ_{i<n} γ^i r_i + γ^n V'(s_n)`` (stopping at the episode's end), weighted by
        the truncated product of the n importance ratios; 1 is the paper's TD(0).
        Replay algorithms with ``V`` only. With an algorithm's ``targets="dynamics"``
        the n steps are simulated with the current policy instead (unweighted).
      eval_episodes: episodes with the mean action per evaluation.
      float64: run in double precision.
    """

    env: str = "cartpole"
    env_options: dict[str, int | float | bool | str] = dataclasses.field(default_factory=dict)
    algo: str = "svg1_er"
    algo_options: dict[str, int | float | bool | str] = dataclasses.field(default_factory=dict)
    jacobians: Jacobians = "simulator"
    n_envs: int = 4
    iterations: int = 1000
    chunks: int = 10
    steps_per_iteration: int = 1
    updates_per_step: int = 1
    random_steps: int = 0
    batch_size: int = 64
    replay_capacity: int = 100_000
    policy_hidden: tuple[int, ...] = (100, 100)
    critic_hidden: tuple[int, ...] = (100, 100)
    model_hidden: int = 20
    state_dependent_std: bool = False
    learn_std: bool = True
    squash: bool = True
    linear_policy: bool = False
    time_input: bool | None = None
    target_period: int = 0
    critic_n_step: int = 1
    eval_episodes: int = 8
    float64: bool = False

    def __post_init__(self):
        if self.env not in envs.names():
            raise ValueError(f"env={self.env!r}: unknown task; valid: {', '.join(envs.names())}")
        algorithm = self.algorithm  # checks the name and the options
        if self.jacobians not in JACOBIAN_SOURCES:
            raise ValueError(
                f"jacobians={self.jacobians!r}: unknown source; "
                f"valid: {', '.join(JACOBIAN_SOURCES)}"
            )
        if self.jacobians == "learned" and not algorithm.uses_dynamics:
            with_dynamics = [
                name for name in algorithms.names() if algorithms.get(name).uses_dynamics
            ]
            raise ValueError(
                f"jacobians='learned' with algo={self.algo!r}: {self.algo} back-propagates through "
                f"no dynamics; algorithms with a Jacobian source: {', '.join(with_dynamics)}"
            )
        for name in (
            "n_envs",
            "iterations",
            "chunks",
            "steps_per_iteration",
            "updates_per_step",
            "batch_size",
            "replay_capacity",
            "model_hidden",
            "eval_episodes",
            "critic_n_step",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")
        for name in ("random_steps", "target_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"{name}={value!r}: must be an integer >= 0")
        for name in ("policy_hidden", "critic_hidden"):
            value = getattr(self, name)
            if not value or any(not isinstance(w, int) or w < 1 for w in value):
                raise ValueError(f"{name}={value!r}: must be one or more positive widths")
        if self.iterations % self.chunks:
            raise ValueError(
                f"chunks={self.chunks} must divide iterations={self.iterations} "
                "(equal-sized chunks compile once)"
            )
        if self.linear_policy and self.squash:
            raise ValueError(
                "linear_policy=True needs squash=False (a linear-Gaussian policy is unsquashed)"
            )
        if self.state_dependent_std and not self.learn_std:
            raise ValueError("learn_std=False needs state_dependent_std=False (a free σ)")
        if self.linear_policy and self.state_dependent_std:
            raise ValueError("linear_policy=True needs state_dependent_std=False")
        if self.critic_n_step > 1 and (algorithm.critic != "v" or algorithm.data != "replay"):
            with_v = [
                name
                for name in algorithms.names()
                if algorithms.get(name).critic == "v" and algorithms.get(name).data == "replay"
            ]
            raise ValueError(
                f"critic_n_step={self.critic_n_step} with algo={self.algo!r}: n-step targets are "
                f"for replay algorithms with V: {', '.join(with_v)}"
            )
        length = max(algorithm.sequence_length, self.critic_n_step)
        if self.replay_capacity < self.n_envs * length:
            raise ValueError(
                f"replay_capacity={self.replay_capacity}: "
                f"must hold at least n_envs × {self.algo}'s "
                f"stretch length (or critic_n_step) = {self.n_envs * length} transitions"
            )

    @property
    def algorithm(self) -> algorithms.Algorithm:
        """The algorithm object (``algo`` with ``algo_options``)."""
        return algorithms.make(self.algo, self.algo_options)

    @property
    def on_policy(self) -> bool:
        """Learns from the latest episodes (one per environment per iteration), not from replay."""
        return self.algorithm.data == "episodes"

    def make_env(self):
        """The task, after the checks that need it: the algorithm's options against the
        task (e.g. ``k`` against the horizon), an on-policy algorithm's ``random_steps``
        against the horizon, and ``squash`` against the action bounds."""
        env = envs.make(self.env, **self.env_options)
        self.algorithm.check(env)
        if self.on_policy and self.random_steps % env.horizon:
            whole = -(-self.random_steps // env.horizon) * env.horizon
            raise ValueError(
                f"random_steps={self.random_steps}: algo={self.algo!r} learns from whole "
                f"episodes, so it must be a multiple of the horizon ({env.horizon}) of env "
                f"{env.name!r}, e.g. {whole}; otherwise an episode it learns from is "
                "partly random"
            )
        low, high = np.asarray(env.action_low), np.asarray(env.action_high)
        if self.squash and not (np.allclose(low, -high) and np.allclose(high, high[0])):
            raise ValueError(f"env {env.name!r}: squash=True needs symmetric, equal action bounds")
        return env


class Hyperparams(eqx.Module):
    """What can be swept (a pytree; stack several along a leading axis to vmap them).

    Attributes:
      policy_lr, critic_lr, model_lr: Adam step sizes.
      gamma: discount, in (0, 1].
      tau: Polyak rate of the critics' targets (when ``target_period == 0``).
      truncation: cap ``c`` of the importance weights of replayed data,
        ``w = min(c, p(a|s; θ) / p(a|s; θ_k))`` (paper eq. 13, truncated).
      init_std: the policy's initial σ (pre-squash).
      max_grad_norm: global-norm gradient clipping of every update.
      entropy_coef: weight ``α`` of an entropy bonus in the policy loss,
        ``α · E_s E_η[−log π(a(s, η) | s)]`` (the entropy of the squashed action,
        re-parameterised, as in SAC) over the states of the policy step's data.
        0 is the paper's SVG; > 0 keeps σ from collapsing under a control cost.
      reward_scale: multiplies the reward in every learning signal (critics and
        surrogates; it does not change the optimal policy). Critics learn best
        when returns are O(1); evaluation reports unscaled returns.
    """

    policy_lr: float | jnp.ndarray = 3e-4
    critic_lr: float | jnp.ndarray = 1e-3
    model_lr: float | jnp.ndarray = 1e-3
    gamma: float | jnp.ndarray = 0.99
    tau: float | jnp.ndarray = 0.005
    truncation: float | jnp.ndarray = 5.0
    init_std: float | jnp.ndarray = 0.5
    max_grad_norm: float | jnp.ndarray = 10.0
    reward_scale: float | jnp.ndarray = 1.0
    entropy_coef: float | jnp.ndarray = 0.0

    def check(self) -> Hyperparams:
        """Raises for values out of range (on concrete values); returns self."""

        def bad(name, condition, allowed):
            value = np.asarray(getattr(self, name))
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name}={value.tolist()!r}: must be a finite number, {allowed}")
            if not np.all(condition(value)):
                raise ValueError(f"{name}={value.tolist()!r}: must be {allowed}")

        for name in (
            "policy_lr",
            "critic_lr",
            "model_lr",
            "init_std",
            "max_grad_norm",
            "reward_scale",
        ):
            bad(name, lambda v: v > 0, "> 0")
        bad("gamma", lambda v: (v > 0) & (v <= 1), "in (0, 1]")
        bad("tau", lambda v: (v > 0) & (v <= 1), "in (0, 1]")
        bad("truncation", lambda v: v >= 1, ">= 1")
        bad("entropy_coef", lambda v: v >= 0, ">= 0")
        return self

    def as_arrays(self, dtype=jnp.float32) -> Hyperparams:
        """Every field as a ``dtype`` array (so runs differing only in values share a program)."""
        return jax.tree.map(lambda x: jnp.asarray(x, dtype), self)


def config_for_steps(fields: dict, steps: int | None) -> Config:
    """``Config(**fields)``; with ``steps``, its ``iterations`` collect at least that many
    environment steps per seed (:func:`iterations_for_steps`), whatever ``chunks`` is."""
    if steps is None:
        return Config(**fields)
    if "iterations" in fields:
        raise ValueError(
            f"steps={steps!r} and iterations={fields['iterations']!r}: give one of them"
        )
    # Any multiple of chunks passes the checks; the real count needs the built config.
    config = Config(**fields, iterations=fields.get("chunks", Config.chunks))
    return dataclasses.replace(config, iterations=iterations_for_steps(config, steps))


def iterations_for_steps(config: Config, steps: int) -> int:
    """Iterations that collect at least ``steps`` environment steps per seed (a multiple of
    chunks)."""
    if steps < 1:
        raise ValueError(f"steps={steps!r}: must be an integer >= 1")
    iterations = math.ceil(steps / env_steps_per_iteration(config))
    return math.ceil(iterations / config.chunks) * config.chunks


def env_steps_per_iteration(config: Config) -> int:
    """Environment steps per seed that one iteration collects: whole episodes of every
    environment for the on-policy algorithms, ``steps_per_iteration`` of each otherwise."""
    per_env = config.make_env().horizon if config.on_policy else config.steps_per_iteration
    return config.n_envs * per_env
