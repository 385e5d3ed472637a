"""The SVG family: :func:`svgx.estimators.svg_loss` at a depth, and SVG(0).

Each value-expansion algorithm is the one estimator with a depth (the stretch
length, ``None``: whole episodes without a critic) and a data source; the
Jacobian source is the loop's (``Config.jacobians``).

===========  =================================  ========  ====================
name         estimator                          data      paper
===========  =================================  ========  ====================
``svg_inf``  SVG(∞): whole episodes, no critic  episodes  §4.2, Alg. 1
``svg1``     SVG(1): one step + ``V``           episodes  §4.3
``svg1_er``  SVG(1), importance-weighted        replay    §4.3, Alg. 2, eq. 13
``svgk_er``  SVG(k): ``k`` steps + ``V``        replay    §8 (an extension)
``svg0_er``  SVG(0): ``Q(s, π(s, η))``          replay    §4.3, Alg. 3
===========  =================================  ========  ====================

The replayed ones take ``actions``: ``"replayed"`` (the paper's: the stretch is
rebuilt around the recorded actions, whose policy noises are inferred, and weighted
by truncated importance weights) or ``"fresh"`` (the current policy's actions with
fresh noise from the replayed start state, no importance weights; the replayed
states stand for the state distribution, as in DDPG and SAC. With ``k`` steps this
is the model-based actor of SAC-SVG(H), Amos et al. 2021), and ``targets``:
``"replayed"`` (``V``'s TD targets from recorded steps, importance-weighted, as the
paper) or ``"dynamics"`` (``critic_n_step`` steps of the current policy's own actions
through the Jacobian source's dynamics from the replayed state, then ``V'``: the
model-based value expansion of Feinberg et al. 2018, unweighted; with the simulator
on a deterministic task, a sample of the current policy's own return).
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import optax

from svgx import estimators, replay, rollout
from svgx.algorithms.base import (
    Algorithm,
    PolicyInputs,
    check_float,
    check_int,
    importance_weight_metrics,
)


@dataclasses.dataclass(frozen=True)
class ValueExpansion(Algorithm):
    """SVG(k): ``svg_loss`` on stretches of ``depth`` steps, bootstrapped with ``V``
    (``depth=None``: whole episodes, no bootstrap). Replayed stretches are weighted by
    truncated importance weights (paper eq. 13).

    Attributes:
      transition_clip: clip each stretch's policy gradient at this multiple of the
        batch's median norm before averaging (estimators.svg_loss's clip; 0: off, the
        paper's). For the heavy tails of exact Jacobians through contact.
    """

    uses_dynamics = True
    depth: ClassVar[int | None]
    """Stretch length (None: the whole episode); a subclass may make it an option."""
    transition_clip: float = 0.0

    def __post_init__(self):
        check_float("transition_clip", self.transition_clip, 0.0)

    @property
    def sequence_length(self) -> int:
        return self.depth if self.data == "replay" else 1

    def policy_loss(self, inputs: PolicyInputs, *, key):
        return self.estimator_loss(inputs, key=key, clip=self.transition_clip or None)

    def estimator_loss(self, inputs: PolicyInputs, *, key, clip: float | None = None):
        """``(loss, ready)`` of :meth:`policy_loss`, with per-stretch clipping at ``clip``
        times the median (None: none)."""
        hp = inputs.hp
        if self.data == "episodes":
            batch = (
                inputs.episodes
                if self.depth is None
                else rollout.stretches(inputs.episodes, self.depth)
            )
            ready, truncation = True, None
        else:
            ready = replay.count_sequence_starts(inputs.buffer, self.depth) > 0
            batch = replay.sample_sequences(inputs.buffer, key, inputs.batch_size, self.depth)
            truncation = hp.truncation
        eta = None
        if self.fresh_actions:
            eta = jax.random.normal(jax.random.fold_in(key, 1), batch.a.shape, batch.a.dtype)
            truncation = None

        def loss(policy):
            return estimators.svg_loss(
                policy,
                inputs.dynamics,
                inputs.reward,
                inputs.critic,
                batch,
                gamma=hp.gamma,
                truncation=truncation,
                eta=eta,
                clip=clip,
            )

        return loss, ready

    @property
    def fresh_actions(self) -> bool:
        """Whether replayed stretches are rebuilt with fresh policy noise (no weights)."""
        return False

    def policy_metrics(self, aux):
        weighted = self.data == "replay" and not self.fresh_actions
        metrics = importance_weight_metrics(aux) if weighted else {}
        if "clip_scale" in aux:  # the fraction of the batch's stretches clipped
            metrics["transition_clip_fraction"] = jnp.mean(aux["clip_scale"] < 1)
        return metrics

    def learning_metrics(self, policy, inputs, *, key):
        """The norms of the two parts of the SVG gradient on one batch
        (:func:`estimators.svg_gradient_terms`; importance-weighted, without the entropy
        bonus, before any clipping): ``policy_grad_norm_reward``, through the rewards of
        the stretch, and ``policy_grad_norm_value``, through its bootstrap ``γ^k V`` (a flat
        ``V`` shows as a value part near 0). SVG(∞) has no ``V`` and reports only the
        reward part, which is its whole gradient. NaN while the policy step is not ready."""
        loss, ready = self.estimator_loss(inputs, key=key)
        through_reward, through_value = estimators.svg_gradient_terms(loss, policy)
        norm = lambda grads: jnp.where(ready, optax.tree.norm(grads), jnp.nan)  # noqa: E731
        metrics = {"policy_grad_norm_reward": norm(through_reward)}
        if self.critic is not None:
            metrics["policy_grad_norm_value"] = norm(through_value)
        return metrics


@dataclasses.dataclass(frozen=True)
class SVGInf(ValueExpansion):
    """SVG(∞) (paper §4.2, Alg. 1): back-propagation through whole latest episodes, no critic."""

    data, critic, depth = "episodes", None, None


@dataclasses.dataclass(frozen=True)
class SVG1(ValueExpansion):
    """SVG(1) (paper §4.3): every step of the latest episodes, bootstrapped with ``V``."""

    data, critic, depth = "episodes", "v", 1


ACTIONS = ("replayed", "fresh")
TARGETS = ("replayed", "dynamics")


@dataclasses.dataclass(frozen=True)
class _Replayed(ValueExpansion):
    """A value expansion on replayed stretches (module docstring).

    Attributes:
      actions: "replayed" (the paper's: recorded actions, importance-weighted) or
        "fresh" (the current policy's, unweighted) in the replayed stretches.
      targets: V's TD targets: "replayed" (the paper's: recorded steps,
        importance-weighted) or "dynamics" (critic_n_step steps of the current policy
        through the dynamics, unweighted).
    """

    data, critic = "replay", "v"
    actions: str = "replayed"
    targets: str = "replayed"

    def __post_init__(self):
        super().__post_init__()
        for name, allowed in (("actions", ACTIONS), ("targets", TARGETS)):
            if getattr(self, name) not in allowed:
                raise ValueError(
                    f"{name}={getattr(self, name)!r}: must be one of {', '.join(allowed)}"
                )

    @property
    def fresh_actions(self) -> bool:
        return self.actions == "fresh"

    @property
    def dynamics_targets(self) -> bool:
        return self.targets == "dynamics"


@dataclasses.dataclass(frozen=True)
class SVG1Replay(_Replayed):
    """SVG(1) with experience replay (paper §4.3, Alg. 2): replayed transitions."""

    depth = 1


@dataclasses.dataclass(frozen=True)
class SVGKReplay(_Replayed):
    """SVG(k) with experience replay (paper §8): replayed stretches of ``k`` steps.

    Attributes:
      k: stretch length of svgk_er, 1 <= k <= the task's horizon.
    """

    k: int = 5

    def __post_init__(self):
        super().__post_init__()
        check_int("k", self.k, 1)

    @property
    def depth(self):
        return self.k

    def check(self, env):
        if self.k > env.horizon:
            raise ValueError(
                f"k={self.k}: must be <= the horizon ({env.horizon}) of env {env.name!r}"
            )


@dataclasses.dataclass(frozen=True)
class SVG0Replay(Algorithm):
    """SVG(0) with experience replay (paper §4.3, Alg. 3): ``Q(s, π(s, η; θ), t)`` on
    replayed states.

    Attributes:
      actions: "replayed" (the paper's: ``η`` inferred from the replayed ``(s, a)``, the
        policy step and ``Q``'s TD regression weighted by truncated importance weights)
        or "fresh" (fresh ``η`` at the replayed ``s`` and no weights in either: ``Q`` is
        learned off-policy through its target's ``a' ~ π(·|s')``; with the entropy bonus
        this is SAC's actor and a single critic at a fixed temperature).
    """

    data, critic, uses_dynamics = "replay", "q", False
    actions: str = "replayed"

    def __post_init__(self):
        if self.actions not in ACTIONS:
            raise ValueError(f"actions={self.actions!r}: must be one of {', '.join(ACTIONS)}")

    def critic_weights(self, policy, batch, hp):
        if self.actions == "fresh":
            return jnp.ones(batch.t.shape[0], batch.s.dtype)
        return super().critic_weights(policy, batch, hp)

    def policy_loss(self, inputs: PolicyInputs, *, key):
        batch = replay.sample(inputs.buffer, key, inputs.batch_size)
        truncation, eta = inputs.hp.truncation, None
        if self.actions == "fresh":
            eta = jax.random.normal(jax.random.fold_in(key, 1), batch.a.shape, batch.a.dtype)
            truncation = None

        def loss(policy):
            return estimators.svg0_loss(
                policy, inputs.critic, batch, truncation=truncation, eta=eta
            )

        return loss, True

    def policy_metrics(self, aux):
        return importance_weight_metrics(aux) if self.actions == "replayed" else {}
