"""What an algorithm tells the shared training loop (:func:`svgx.train.make_train`).

An algorithm is a frozen dataclass, a subclass of :class:`Algorithm`. Its fields
are its own options (each with a default; ``int``, ``float``, ``bool`` or
``str``), which become ``Config.algo_options`` and flags of ``svgx train``. Its
class declares what the loop must provide:

* ``data``: ``"episodes"`` (one fresh episode per environment every iteration,
  one policy step on them) or ``"replay"`` (the replay database, a policy step
  at every update);
* ``critic``: ``"v"``, ``"q"`` or ``None``; the loop learns it by importance-weighted
  TD(0) towards a target copy (paper §5 and Appendix C, Alg. 4);
* ``uses_dynamics``: whether the policy loss back-propagates through dynamics,
  and so takes a Jacobian source (``Config.jacobians``);

and its methods say how it acts, what its ``Q`` critic's targets are, its own
state, its policy loss and the metrics it adds (at every policy step, and once per
chunk). Only :meth:`Algorithm.policy_loss` must be written; the rest default to a
stochastic policy learning from its own samples.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar, Literal, NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, PRNGKeyArray, PyTree

from svgx import critics
from svgx.policy import GaussianPolicy
from svgx.replay import ReplayBuffer, Transition

if TYPE_CHECKING:
    from envs.base import Env
    from svgx.config import Hyperparams
    from svgx.dynamics import Dynamics

LossFn = Callable[[GaussianPolicy], tuple[Float[Array, ""], dict[str, Array]]]


class PolicyInputs(NamedTuple):
    """What the loop hands to :meth:`Algorithm.policy_loss` (one seed).

    Attributes:
      critic: the online critic (``V(s, t)`` or ``Q(s, a, t)``), or None.
      dynamics: the Jacobian source (``uses_dynamics`` algorithms), or None.
      reward: ``r(s, a, t)`` times ``hp.reward_scale``.
      episodes: ``data == "episodes"``: the latest episode of every environment
        (leaves ``[n_envs, T, …]``, rewards scaled); else None.
      buffer: the replay database (``data == "replay"`` samples from it).
      batch_size: transitions or stretches per replayed mini-batch.
      hp: the hyperparameters.
      extra: the algorithm's own state (:meth:`Algorithm.init_state`).
    """

    critic: Callable | None
    dynamics: Dynamics | None
    reward: Callable[[Array, Array, Array], Array]
    episodes: Transition | None
    buffer: ReplayBuffer
    batch_size: int
    hp: Hyperparams
    extra: PyTree


@dataclasses.dataclass(frozen=True)
class Algorithm(abc.ABC):
    """An algorithm of the shared training loop (see the module docstring)."""

    data: ClassVar[Literal["episodes", "replay"]]
    critic: ClassVar[Literal["v", "q"] | None]
    uses_dynamics: ClassVar[bool]

    @property
    def dynamics_targets(self) -> bool:
        """Whether ``V``'s targets are simulated from replayed states with the current
        policy's own actions through the Jacobian source's dynamics, unweighted (default:
        False: recorded steps, importance-weighted)."""
        return False

    @property
    def sequence_length(self) -> int:
        """Longest replayed stretch the policy loss samples (the buffer holds at least this
        many rows)."""
        return 1

    def check(self, env: Env) -> None:
        """Raises ValueError for options that do not fit the task (run when the task is made;
        default: nothing to check)."""
        return None

    def init_state(self, policy: GaussianPolicy) -> PyTree:
        """The algorithm's own state, carried in ``TrainState.extra`` (default: none)."""
        return None

    def act(
        self, policy: GaussianPolicy, extra: PyTree, s: Float[Array, " n_s"], *, key: PRNGKeyArray
    ):
        """The behaviour action in state ``s`` (default: a sample of the policy); ``[n_a]``."""
        a, _ = policy.sample(s, key=key)
        return a

    def next_actions(
        self,
        policy: GaussianPolicy,
        extra: PyTree,
        s_next: Float[Array, "batch n_s"],
        *,
        key: PRNGKeyArray,
    ) -> Float[Array, "batch n_a"]:
        """``a'`` of the ``Q`` critic's TD target ``r + γ Q'(s', a')``
        (default: ``a' ~ π(·|s')``)."""
        keys = jax.random.split(key, s_next.shape[0])
        a_next, _ = jax.vmap(lambda s, k: policy.sample(s, key=k))(s_next, keys)
        return a_next

    def critic_weights(
        self, policy: GaussianPolicy, batch: Transition, hp: Hyperparams
    ) -> Float[Array, " batch"]:
        """Weights of replayed transitions in the critic's TD loss (default: the truncated
        importance weights ``min(c, π(a|s) / q(a|s))`` of paper eq. 13)."""
        log_p = jax.vmap(policy.log_prob)(batch.s, batch.a)
        return critics.truncated_importance_weights(log_p, batch.log_prob, hp.truncation)

    @abc.abstractmethod
    def policy_loss(
        self, inputs: PolicyInputs, *, key: PRNGKeyArray
    ) -> tuple[LossFn, Bool[Array, ""] | bool]:
        """``(loss, ready)``: ``loss(policy) -> (scalar, aux)`` is minimised by the policy
        step; the step is skipped while ``ready`` is false (e.g. too little replay)."""

    def update_state(self, extra: PyTree, policy: GaussianPolicy, hp: Hyperparams) -> PyTree:
        """The algorithm's own state after a policy step (default: unchanged)."""
        return extra

    def policy_metrics(self, aux: dict[str, Array]) -> dict[str, Float[Array, ""]]:
        """Metrics the algorithm adds, from its policy loss's ``aux`` (default: none)."""
        return {}

    def learning_metrics(
        self, policy: GaussianPolicy, inputs: PolicyInputs, *, key: PRNGKeyArray
    ) -> dict[str, Float[Array, ""]]:
        """Diagnostics the algorithm adds once per chunk, at its end, on one fresh batch of
        its data (``inputs`` as for :meth:`policy_loss`); nothing is updated
        (default: none)."""
        return {}


def importance_weight_metrics(aux: dict[str, Array]) -> dict[str, Float[Array, ""]]:
    """Mean and maximum of the batch's truncated importance weights
    (``aux["importance_weight"]``)."""
    w = aux["importance_weight"]
    return {"importance_weight_mean": jnp.mean(w), "importance_weight_max": jnp.max(w)}


def check_int(name: str, value, minimum: int) -> None:
    """Raises ValueError unless ``value`` is an integer ``>= minimum`` (options' checks)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f"{name}={value!r}: must be an integer >= {minimum}")


def check_float(name: str, value, minimum: float) -> None:
    """Raises ValueError unless ``value`` is a finite number ``>= minimum`` (options' checks)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not minimum <= value < math.inf
    ):
        raise ValueError(f"{name}={value!r}: must be a finite number >= {minimum}")
