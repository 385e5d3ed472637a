"""Benchmark: an ablation cell's seeds vmapped, against the same seeds one at a time.

``svgx ablate`` runs a cell's seeds together: each stage (reference chunks, model fits,
critic fits, the batches of estimates) is one compiled program over all seeds
(:func:`svgx.diagnostics.diagnose_seeds`). This times one small cart-pole cell with
``--seeds`` seeds run that way, and the same seeds as that many one-seed cells (each
stage one program per seed), in one process, each warm (a first untimed run compiles
its programs), and prints the ratio. Writes ``experiments/results/bench_ablate_seeds.md``.

    python -m experiments.bench_ablate_seeds            # the defaults below
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Time a cart-pole ablation cell's seeds vmapped against one at a time."""

    seeds: int = 4
    """Diagnosis seeds of the cell."""
    horizon: int = 50
    """Episode length of the cartpole task."""
    samples: int = 16
    """Episodes per batch."""
    batches: int = 4
    """Batches per diagnosis."""
    reference_samples: int = 256
    """Episodes of the sampled reference gradient."""
    note: str = ""
    """A line for the results file under the machine (what else ran on it)."""
    out: pathlib.Path = pathlib.Path("experiments/results/bench_ablate_seeds.md")
    """The results file."""


def grid(args: Args, seeds: int, seed: int) -> str:
    return f"""
env = "cartpole"
horizon = {args.horizon}
estimator = "svgk"
k = 5
jacobians = "learned"
model_hidden = 5
model_transitions = 1000
model_steps = 1000
samples = {args.samples}
batches = {args.batches}
reference_samples = {args.reference_samples}
critic_samples = 16
critic_steps = 500
seeds = {seeds}
seed = {seed}
"""


def timed(cells) -> float:
    """Seconds to run ``cells`` from scratch (nothing shared between them but programs)."""
    from svgx import ablate

    start = time.perf_counter()
    for cell in cells:
        ablate.run_cell(cell)  # a fresh set of shared parts per cell
    return time.perf_counter() - start


def main(args: Args) -> None:
    from experiments.bench_envs import machine
    from svgx import ablate
    from svgx.io import atomic_write_text

    start = time.perf_counter()
    together = ablate.parse(grid(args, args.seeds, 0))
    apart = [c for s in range(args.seeds) for c in ablate.parse(grid(args, 1, s))]
    for cells in (together, apart):  # compile
        timed(cells)
    seconds = {"vmapped": timed(together), "one at a time": timed(apart)}
    ratio = seconds["one at a time"] / seconds["vmapped"]
    command = "python -m experiments.bench_ablate_seeds" + (
        f" --note '{args.note}'" if args.note else ""
    )
    lines = [
        "# Ablation cells: a cell's seeds vmapped against one at a time",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        *([f"{args.note}  "] if args.note else []),
        f"Cell: cartpole (horizon {args.horizon}), SVG(5) through a width-5 model fitted on "
        f"1,000 transitions, {args.samples} episodes x {args.batches} batches, reference "
        f"from {args.reference_samples} episodes, {args.seeds} seeds; each way run once to "
        "compile, then timed (everything but the programs computed anew).",
        "",
        f"**{args.seeds} seeds vmapped: {seconds['vmapped']:.2f} s; one at a time: "
        f"{seconds['one at a time']:.2f} s ({ratio:.2f}x).** "
        f"Whole benchmark: {time.perf_counter() - start:.0f} s.",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
