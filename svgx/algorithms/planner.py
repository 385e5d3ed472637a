"""The planner baseline (paper §6.1): the SVG recursion along simulated trajectories."""

from __future__ import annotations

import dataclasses

import jax

from svgx import estimators, replay
from svgx.algorithms.base import Algorithm, PolicyInputs, check_int


@dataclasses.dataclass(frozen=True)
class Planner(Algorithm):
    """Back-propagation along ``planner_horizon``-step trajectories simulated by the
    dynamics from replayed start states with freshly sampled noise, bootstrapped with
    ``V`` (:func:`svgx.estimators.planner_loss`). With a time-aware critic (``V = 0``
    at the horizon), rewards past the horizon are not counted.

    Attributes:
      planner_horizon: length of the planner's simulated trajectories (>= 1).
    """

    data, critic, uses_dynamics = "replay", "v", True
    planner_horizon: int = 10

    def __post_init__(self):
        check_int("planner_horizon", self.planner_horizon, 1)

    def policy_loss(self, inputs: PolicyInputs, *, key):
        batch = replay.sample(inputs.buffer, key, inputs.batch_size)
        key_plan = jax.random.fold_in(key, 1)

        def loss(policy):
            return estimators.planner_loss(
                policy,
                inputs.dynamics,
                inputs.reward,
                inputs.critic,
                batch.s,
                batch.t,
                key=key_plan,
                steps=self.planner_horizon,
                gamma=inputs.hp.gamma,
                horizon=getattr(inputs.critic, "horizon", None),
            )

        return loss, True
