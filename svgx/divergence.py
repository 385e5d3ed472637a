"""Runs that go non-finite: what counts, the limits, and the error that says so.

Inside a run, numerical accidents are contained and counted (:mod:`svgx.train`):
an update whose loss or gradient is not finite is skipped (``nonfinite_updates``),
and an environment step whose state or reward is not finite ends its episode
(``nonfinite_env_steps``). A few of either are harmless (a contact simulation
that blew up once). Many of them, or parameters that are no longer finite, mean
the run has stopped learning and only burns time, so after every chunk the
runner checks each seed:

* its learned parameters (policy, critic, model) are all finite;
* the diverged environment steps are at most ``max_diverged_env_steps`` of the
  chunk's environment steps;
* the skipped updates are at most ``max_skipped_updates`` per update step of the
  chunk (an update step updates the model, the critic and the policy once each,
  so a step whose every update fails counts up to 3).

The first failure stops the run at the end of that chunk with
:class:`NonFiniteError`, which names the seed, the chunk, the environment step
and the quantity. The metrics of every seed up to and including that chunk are
kept; its state is not checkpointed, so the run directory keeps the last
finite checkpoint. The command line exits with :data:`EXIT_STATUS`.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

if TYPE_CHECKING:
    from svgx.runner import Run

EXIT_STATUS = 3  # bad input is 2


@dataclasses.dataclass(frozen=True)
class NonFiniteLimits:
    """When a run that counts non-finite events stops (checked per seed and chunk)."""

    max_diverged_env_steps: float = 0.05
    """largest fraction of a chunk's environment steps that may diverge (non-finite
    state or reward) before the run stops, in [0, 1]."""
    max_skipped_updates: float = 0.25
    """most skipped updates (non-finite loss or gradient) per update step of a chunk
    before the run stops, >= 0 (a step updates model, critic and policy: at most 3)."""

    def __post_init__(self):
        for name, high in (("max_diverged_env_steps", 1.0), ("max_skipped_updates", 3.0)):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0 <= value <= high:
                raise ValueError(f"{name}={value!r}: must be a number in [0, {high:g}]")


@dataclasses.dataclass(frozen=True)
class Divergence:
    """Where a run went non-finite: the first seed found, 0-based; ``chunk`` counts from 1."""

    seed: int
    chunk: int
    chunks: int
    env_steps: int
    quantity: str

    def __str__(self) -> str:
        return (
            f"seed {self.seed} went non-finite in chunk {self.chunk}/{self.chunks} "
            f"(env step {self.env_steps:,}): {self.quantity}"
        )


class NonFiniteError(RuntimeError):
    """A run stopped because a seed went non-finite.

    Attributes:
      divergence: the seed, chunk, environment step and quantity (:class:`Divergence`).
      run: the :class:`~svgx.runner.Run` so far: ``metrics`` of every seed up to
        and including the chunk where it happened, and the state after it (None
        when read back from a run directory's ``stopped.json``).
      checkpoint: the run directory whose last finite checkpoint was kept, if any.
      others: further runs (sweep groups) that stopped too.
    """

    def __init__(
        self,
        divergence: Divergence,
        run: Run | None,
        checkpoint: str | None = None,
        others: int = 0,
    ):
        self.divergence, self.run, self.checkpoint, self.others = (
            divergence,
            run,
            checkpoint,
            others,
        )
        message = f"run stopped: {divergence}"
        if checkpoint is not None:
            kept = divergence.chunk - 1
            message += (
                f"; {checkpoint} keeps the checkpoint after chunk {kept} "
                "and the metrics of every chunk"
                if kept
                else f"; {checkpoint} keeps the metrics (no chunk finished before it)"
            )
        if others:
            message += f" ({others} more sweep group(s) stopped too; see the lines above)"
        super().__init__(message)


def all_finite(tree) -> jax.Array:
    """Whether every inexact array leaf of ``tree`` is finite (True for no leaves)."""
    leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
    return (
        jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        if leaves
        else jnp.array(True)
    )


def first_divergence(
    finite_parts: dict[str, np.ndarray],
    metrics: dict[str, np.ndarray],
    previous: dict[str, np.ndarray] | None,
    limits: NonFiniteLimits,
    chunk: int,
    chunks: int,
) -> Divergence | None:
    """The first seed (and quantity) that breaks ``limits`` in this chunk, or None.

    ``finite_parts``: ``part -> [n_seeds]`` booleans (parameters all finite);
    ``metrics``/``previous``: this chunk's and the previous chunk's metrics, whose
    counters (``env_steps``, ``updates``, ``nonfinite_*``) are cumulative.
    """

    def delta(name):
        before = 0 if previous is None else previous[name]
        return np.asarray(metrics[name], np.float64) - before

    diverged = delta("nonfinite_env_steps") / np.maximum(delta("env_steps"), 1)
    skipped = delta("nonfinite_updates") / np.maximum(delta("updates"), 1)
    for seed in range(len(metrics["env_steps"])):
        problems = [
            f"{part} parameters are not finite" for part, ok in finite_parts.items() if not ok[seed]
        ]
        if diverged[seed] > limits.max_diverged_env_steps:
            problems.append(
                f"{delta('nonfinite_env_steps')[seed]:.0f} of the chunk's "
                f"{delta('env_steps')[seed]:.0f} "
                f"environment steps diverged ({diverged[seed]:.1%} > max_diverged_env_steps "
                f"{limits.max_diverged_env_steps:.1%})"
            )
        if skipped[seed] > limits.max_skipped_updates:
            problems.append(
                f"{delta('nonfinite_updates')[seed]:.0f} updates skipped in the chunk's "
                f"{delta('updates')[seed]:.0f} update steps ({skipped[seed]:.2f} per step > "
                f"max_skipped_updates {limits.max_skipped_updates:g})"
            )
        if problems:
            steps = int(metrics["env_steps"][seed])
            return Divergence(seed, chunk, chunks, steps, "; ".join(problems))
    return None


def first_nonfinite_part(parts: dict[str, object]) -> tuple[int, str] | None:
    """``(seed, part)`` of the first seed whose parameters are not finite in a batched
    state's ``parts`` (``part -> pytree with a leading seed axis``, as numpy or JAX
    arrays), or None when all are finite."""
    for part, tree in parts.items():
        leaves = jax.tree.leaves(eqx.filter(tree, eqx.is_inexact_array))
        if leaves:
            finite = np.all(
                [np.isfinite(np.asarray(x)).reshape(len(x), -1).all(1) for x in leaves], 0
            )
            if not finite.all():
                return int(np.argmin(finite)), part
    return None
