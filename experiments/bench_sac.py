"""Benchmark: svgx's SVG(1)-ER against Brax's SAC on the same task and machine.

Both use the same network widths, parallel environments, batch size and
updates per environment step; each runs in its own process with the same
environment-step budget. Reported in one run: environment steps per second of
each (whole run, compile included, and after the first evaluation) and their
ratio, and environment steps until the evaluation success rate first reaches
``--threshold`` (or "not reached" within the budget) and their ratio. Writes
``experiments/results/bench_sac.md``.

    python -m experiments.bench_sac                       # the defaults below
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """svg1_er vs Brax SAC: throughput and steps to success."""

    env: str = "cartpole"
    """task (svgx envs)."""
    steps: int = 40_000
    """environment steps per run."""
    n_envs: int = 8
    """parallel environments of both."""
    hidden: tuple[int, ...] = (64, 64)
    """hidden widths of every network of both."""
    batch_size: int = 64
    """mini-batch size of both."""
    updates_per_step: int = 1
    """gradient updates per (parallel) environment step, both."""
    evaluations: int = 10
    """evaluation points."""
    threshold: float = 0.5
    """success rate that counts as solved."""
    seed: int = 0
    out: pathlib.Path = pathlib.Path("experiments/results/bench_sac.md")


def svgx_command(args: Args, out: str) -> list[str]:
    hidden = [str(h) for h in args.hidden]
    # svg1_er: per iteration, one step of each of n_envs environments and updates_per_step updates;
    # Brax SAC (grad_updates_per_step) does the same per batched environment step.
    return [
        sys.executable, "-m", "svgx.cli", "train", "--env", args.env, "--algo", "svg1_er",
        "--steps", str(args.steps), "--chunks", str(args.evaluations), "--n-envs", str(args.n_envs),
        "--batch-size", str(args.batch_size), "--updates-per-step", str(args.updates_per_step),
        "--policy-hidden", *hidden, "--critic-hidden", *hidden, "--seed", str(args.seed),
        "--policy-lr", "1e-3", "--gamma", "0.98", "--tau", "0.01", "--reward-scale", "0.1",
        "--out", out,
    ]  # fmt: skip


def sac_command(args: Args, out: str) -> list[str]:
    return [
        sys.executable, "-m", "svgx.cli", "baseline", "--env", args.env, "--algo", "sac",
        "--steps", str(args.steps), "--evaluations", str(args.evaluations + 1), "--n-envs", str(args.n_envs),
        "--hidden", *[str(h) for h in args.hidden], "--seed", str(args.seed), "--out", out,
    ]  # fmt: skip


def summary(directory: str, threshold: float) -> dict:
    from svgx import rundir

    history = rundir.read_metrics(directory)
    steps = np.array([float(m["env_steps"].mean()) for m in history])
    wall = np.array([float(m["wall_time"].mean()) for m in history])
    success = np.array([float(m["eval_success"].mean()) for m in history])
    solved = np.flatnonzero(success >= threshold)
    return dict(
        steps=steps[-1], wall=wall[-1], steps_per_s=steps[-1] / wall[-1],
        steps_per_s_after_first=(steps[-1] - steps[0]) / max(wall[-1] - wall[0], 1e-9),
        to_threshold=float(steps[solved[0]]) if solved.size else None,
        final_return=float(history[-1]["eval_return"].mean()), final_success=success[-1],
    )  # fmt: skip


def main(args: Args) -> None:
    from experiments.bench_envs import machine
    from svgx.io import atomic_write_text

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in (("svg1_er", svgx_command), ("Brax SAC", sac_command)):
            out = f"{tmp}/{name.replace(' ', '_')}"
            subprocess.run(command(args, out), check=True)
            results[name] = summary(out, args.threshold)
    a, b = results["svg1_er"], results["Brax SAC"]

    def fmt_steps(x):
        return f"{x:,.0f}" if x is not None else f"not reached in {args.steps:,}"

    ratio_solved = (
        f"{a['to_threshold'] / b['to_threshold']:.2f}"
        if a["to_threshold"] is not None and b["to_threshold"] is not None
        else "n/a (one or both did not reach it)"
    )
    rows = [
        ("environment steps per second, whole run (compile included)", "steps_per_s", "{:,.0f}"),
        ("environment steps per second, after the first evaluation", "steps_per_s_after_first", "{:,.0f}"),
        ("wall time (s)", "wall", "{:.0f}"),
        ("final evaluation return", "final_return", "{:.2f}"),
        ("final success rate", "final_success", "{:.0%}"),
    ]
    command = "python -m experiments.bench_sac " + " ".join(sys.argv[1:])
    lines = [
        f"# svg1_er vs Brax SAC on {args.env}",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}  ",
        f"Both: {args.steps:,} environment steps, {args.n_envs} parallel environments, hidden {args.hidden}, "
        f"batch {args.batch_size}, {args.updates_per_step} update(s) per environment step, seed {args.seed}, "
        "one seed each, each in its own process (cold start: compile time counts).",
        "",
        "| | svg1_er | Brax SAC | ratio svg1_er / SAC |",
        "|---|---|---|---|",
        *(
            f"| {label} | {f.format(a[key])} | {f.format(b[key])} | {a[key] / b[key]:.2f} |"
            if key.startswith(("steps", "wall")) else f"| {label} | {f.format(a[key])} | {f.format(b[key])} | |"
            for label, key, f in rows
        ),
        f"| environment steps to success rate ≥ {args.threshold:.0%} | {fmt_steps(a['to_threshold'])} | "
        f"{fmt_steps(b['to_threshold'])} | {ratio_solved} |",
        "",
    ]  # fmt: skip
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    print(json.dumps(results, indent=2, default=float))


if __name__ == "__main__":
    main(tyro.cli(Args))
