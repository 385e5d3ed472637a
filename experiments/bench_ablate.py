"""Benchmark: the wall time of an ablation cell (``svgx ablate``) compiled and reused.

One process runs a small cart-pole grid twice (:func:`svgx.ablate.run_grid`): with
``seed = 0``, where each cell is the first of its shapes (it traces and compiles its
programs: the reference gradient, the critics' and the model's fits, the estimates),
then with ``seed = 1``, where every cell has the shapes of a cell already run and
recomputes everything (policy, reference, critics, model, estimates) from its new seed
with the programs compiled before. Reports each cell's wall time in both passes, the
number of functions JAX traced for it (JAX's ``/jax/core/compile/jaxpr_trace_duration``
events: diagnostics' programs, and eager operations the first time each runs), and the
ratio cold / warm. The persistent compilation cache is off, so that a cold cell
compiles. Writes ``experiments/results/bench_ablate.md``.

    python -m experiments.bench_ablate            # the defaults below
"""

from __future__ import annotations

import dataclasses
import pathlib
import tempfile
import time

import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Time ablation cells of a small cart-pole grid, cold (first of their shapes) and warm."""

    horizon: int = 50
    """Episode length of the cartpole task."""
    samples: int = 16
    """Episodes per batch."""
    batches: int = 4
    """Batches per diagnosis."""
    reference_samples: int = 64
    """Episodes of the sampled reference gradient."""
    critic_steps: int = 500
    """Adam steps of each fitted critic."""
    model_steps: int = 1000
    """Adam steps of each fitted model."""
    note: str = ""
    """A line for the results file under the machine (what else ran on it)."""
    out: pathlib.Path = pathlib.Path("experiments/results/bench_ablate.md")
    """The results file."""


def grid(args: Args, seed: int) -> str:
    return f"""
env = "cartpole"
horizon = {args.horizon}
estimator = ["svg1", "svgk"]
k = 5
jacobians = ["simulator", "learned"]
model_hidden = [5, 10]
model_transitions = 1000
model_steps = {args.model_steps}
samples = {args.samples}
batches = {args.batches}
reference_samples = {args.reference_samples}
critic_samples = 16
critic_steps = {args.critic_steps}
seed = {seed}
"""


TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


def run_pass(text: str, directory: pathlib.Path) -> list[dict]:
    """Runs the grid ``text`` in ``directory``: per cell, its label, seconds and traces."""
    import jax

    from svgx import ablate

    traced = []

    def listen(event, duration, **kwargs):
        if event == TRACE_EVENT:
            traced.append(kwargs.get("fun_name"))

    rows, marks = [], [0]

    def progress(line: str) -> None:
        print(line, flush=True)
        rows.append(dict(traces=traced[marks[-1] :]))
        marks.append(len(traced))

    file = directory / "grid.toml"
    file.write_text(text)
    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        records = ablate.run_grid(file, directory / "out", progress=progress)
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)
    cells = ablate.parse(text)
    for row, cell, record in zip(rows, cells, records, strict=True):
        row.update(label=cell.label, seconds=record["seconds"])
    return rows


def _traces(names: list[str]) -> str:
    """A count, and the names when they are few."""
    if not names or len(names) > 3:
        return str(len(names))
    return f"{len(names)} ({', '.join(f'`{name}`' for name in names)})"


def main(args: Args) -> None:
    from experiments.bench_envs import machine
    from svgx.io import atomic_write_text

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        passes = []
        for seed in (0, 1):
            directory = pathlib.Path(tmp) / f"seed{seed}"
            directory.mkdir()
            passes.append(run_pass(grid(args, seed), directory))
    total = time.perf_counter() - start
    cold, warm = passes
    cold_mean = sum(r["seconds"] for r in cold) / len(cold)
    warm_mean = sum(r["seconds"] for r in warm) / len(warm)
    defaults = Args()
    changed = [
        f"--{f.name.replace('_', '-')} {getattr(args, f.name)!r}"
        if isinstance(getattr(args, f.name), str)
        else f"--{f.name.replace('_', '-')} {getattr(args, f.name)}"
        for f in dataclasses.fields(Args)
        if f.name != "out" and getattr(args, f.name) != getattr(defaults, f.name)
    ]
    command = "nice -n 10 python -m experiments.bench_ablate" + "".join(f" {c}" for c in changed)
    span = f"`` {command} ``" if "`" in command else f"`{command}`"  # `` holds backticks
    lines = [
        "# Ablation cells: compiled once, reused by every cell of the same shapes",
        "",
        f"Command: {span}  ",
        f"Machine: {machine()}  ",
        *([f"{args.note}  "] if args.note else []),
        f"Grid: cartpole (horizon {args.horizon}), svg1 and svgk (k = 5) x (simulator, "
        f"learned width 5, learned width 10), models fitted on 1000 transitions in "
        f"{args.model_steps} Adam steps, {args.samples} episodes x {args.batches} batches, "
        f"reference from {args.reference_samples} episodes, critics from 16 episodes in "
        f"{args.critic_steps} Adam steps; one seed per cell. Run twice in one process: seed 0 "
        "(cold: each cell the first of its shapes) then seed 1 (warm: the same shapes, "
        "everything recomputed from the new seed). Persistent compilation cache off. "
        "Wall time of each cell as `svgx ablate` records it (its policy, reference "
        "gradient, model and its errors, critics and estimates); traces: functions JAX "
        "traced for jit or `jax.eval_shape` during the cell, and their names in the warm pass "
        "(the first cell's count includes reading the grid).",
        "",
        f"**Mean cell: {cold_mean:.1f} s cold, {warm_mean:.2f} s warm "
        f"({cold_mean / warm_mean:.0f}x)**; the first cell (nothing compiled yet): "
        f"{cold[0]['seconds']:.1f} s cold, {warm[0]['seconds']:.2f} s warm "
        f"({cold[0]['seconds'] / warm[0]['seconds']:.0f}x). Whole benchmark: {total:.0f} s.",
        "",
        "| cell | cold (s) | traces | warm (s) | traces | cold / warm |",
        "|---|---|---|---|---|---|",
    ]
    for c, w in zip(cold, warm, strict=True):
        lines.append(
            f"| {c['label']} | {c['seconds']:.1f} | {len(c['traces'])} | {w['seconds']:.2f} | "
            f"{_traces(w['traces'])} | {c['seconds'] / w['seconds']:.0f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main(tyro.cli(Args))
