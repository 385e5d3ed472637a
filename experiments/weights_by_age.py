"""The importance weights of a run's replay database by the age of the data.

``importance_weight_mean`` in a run's metrics is one number per chunk, the mean of
``min(c, π(a|s) / q(a|s))`` over replayed batches. This splits it by how many
iterations ago each transition was collected, at the run's last checkpoint: the
newest transitions should weigh about 1 (the policy has barely moved since), and how
fast the weight falls with age says how fast the policy leaves its data.

    python -m experiments.weights_by_age runs/learning/reacher4_fresh/g00-reacher4-svg1_er

Per member and age bin it prints the number of transitions, the mean truncated
weight (what the estimator uses), the mean untruncated ratio, the median log-ratio,
and the effective sample size of the weights as a fraction of the bin (Kish:
``(Σw)² / (n Σw²)``; 1 when the weights are equal).
"""

from __future__ import annotations

import argparse
import itertools

import jax
import jax.numpy as jnp
import numpy as np

from svgx import rundir, runner

EDGES = (0, 1, 10, 100, 1_000, 10_000, 100_000)
"""Age bins, in iterations since the transition was collected."""


def log_ratios(state, spec: rundir.RunSpec) -> tuple[np.ndarray, np.ndarray]:
    """``(age [members, cells], log π/q [members, cells])`` over the filled cells of each
    member's replay database (age in iterations; 0 = the latest iteration)."""

    def one(state):
        buffer = state.buffer
        data = buffer.data
        capacity = data.r.shape[0]
        log_p = jax.vmap(jax.vmap(state.policy.log_prob))(data.s, data.a)
        rows = jnp.arange(capacity)
        age = (buffer.position - 1 - rows) % capacity
        age = jnp.where(rows < buffer.size, age, -1)
        age = jnp.broadcast_to(age[:, None], log_p.shape)
        return age.reshape(-1), (log_p - data.log_prob).reshape(-1)

    with jax.enable_x64(spec.config.float64):
        age, log_ratio = jax.jit(jax.vmap(one))(state)
    return np.asarray(age), np.asarray(log_ratio, np.float64)


def table(age: np.ndarray, log_ratio: np.ndarray, truncation: float) -> list[dict]:
    """One row per non-empty age bin of one member."""
    rows = []
    for low, high in itertools.pairwise(EDGES):
        inside = (age >= low) & (age < high)
        if not inside.any():
            continue
        ratio = np.exp(log_ratio[inside])
        w = np.minimum(ratio, truncation)
        rows.append(
            dict(
                ages=f"{low}-{high - 1}",
                n=int(inside.sum()),
                weight=float(w.mean()),
                ratio=float(ratio.mean()),
                median_log_ratio=float(np.median(log_ratio[inside])),
                ess=float(w.sum() ** 2 / (len(w) * (w**2).sum())),
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directory", help="a run directory (a sweep group) with a checkpoint")
    directory = parser.parse_args().directory
    spec = rundir.read_spec(directory)
    with jax.enable_x64(spec.config.float64):
        state, chunks = rundir.load_checkpoint(directory, runner.state_shape(spec))
    age, log_ratio = log_ratios(state, spec)
    truncation = np.broadcast_to(np.asarray(spec.hparams.truncation), (spec.seeds,))
    print(f"{directory}: after chunk {chunks}, truncation c per member {truncation.tolist()}")
    print("member  ages (iterations)      n  mean w  mean π/q  median log π/q  ESS/n")
    for member in range(spec.seeds):
        for row in table(age[member], log_ratio[member], float(truncation[member])):
            print(
                f"{member:>6}  {row['ages']:>17}  {row['n']:>6}  {row['weight']:6.3f}  "
                f"{row['ratio']:8.3g}  {row['median_log_ratio']:14.3f}  {row['ess']:5.3f}"
            )


if __name__ == "__main__":
    main()
