"""Likelihood-ratio baselines on the latest episodes, with the same ``V`` learner as SVG(1)."""

from __future__ import annotations

import dataclasses

from svgx import estimators, rollout
from svgx.algorithms.base import Algorithm, PolicyInputs


@dataclasses.dataclass(frozen=True)
class ActorCritic(Algorithm):
    """Actor-critic (the paper's [30], its §6.1 baseline): ``∇θ = mean(δ ∇θ log π(a|s))``
    with the TD error ``δ = r + γ V(s', t+1) − V(s, t)``."""

    data, critic, uses_dynamics = "episodes", "v", False

    def policy_loss(self, inputs: PolicyInputs, *, key):
        transitions = rollout.per_step(inputs.episodes)

        def loss(policy):
            return estimators.actor_critic_loss(
                policy, inputs.critic, transitions, gamma=inputs.hp.gamma
            )

        return loss, True


@dataclasses.dataclass(frozen=True)
class Reinforce(Algorithm):
    """REINFORCE (paper footnote 5): returns-to-go minus the baseline ``V(s_t, t)``."""

    data, critic, uses_dynamics = "episodes", "v", False

    def policy_loss(self, inputs: PolicyInputs, *, key):
        def loss(policy):
            return estimators.reinforce_loss(
                policy, inputs.episodes, gamma=inputs.hp.gamma, baseline=inputs.critic
            )

        return loss, True
