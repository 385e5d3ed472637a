"""Benchmark: svgx's SVG(1)-ER against Brax's SAC on the same task and machine.

Both use the same network widths, parallel environments, batch size, updates
per environment step, discount and number of evaluation episodes (16), with the
same environment-step budget, each run in its own process. Reported in one run:

* throughput: environment steps per second of one seed of each (whole run,
  compile included, and from the second evaluation on, when both have compiled
  everything) and their ratio;
* sample efficiency: over ``--seeds`` seeds of each (svg1_er vmaps them in one
  program, Brax's SAC trains them one after another), the environment steps at
  which each seed's evaluation success rate first reaches ``--threshold``, their
  median and the ratio of the medians.

The default is the ``lqg`` probe cut to 20 steps, where both reach success within
the budget on 2 CPU cores; ``--env cartpole --env-options horizon 250 --squash``
runs the paper's swing-up. Writes ``experiments/results/bench_sac.md``.

    python -m experiments.bench_sac                       # the defaults below
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import numpy as np
import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """svg1_er vs Brax SAC: throughput and steps to success."""

    env: str = "lqg"
    """task (svgx envs)."""
    env_options: dict[str, int | float | bool | str] = dataclasses.field(
        default_factory=lambda: {"horizon": 20}
    )
    """overrides of the task's configuration, for both (as svgx train --env-options)."""
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
    gamma: float = 0.98
    """discount factor of both."""
    policy_lr: float = 1e-3
    """svg1_er's policy learning rate (its critic and model use svgx's defaults)."""
    tau: float = 0.05
    """svg1_er's target-network averaging rate."""
    reward_scale: float = 0.05
    """svg1_er's reward scale for the value function."""
    init_std: float = 0.3
    """svg1_er's initial policy standard deviation."""
    squash: bool = False
    """svg1_er squashes its actions into the task's bounds (lqg's are ±1e3, so not by default;
    Brax's SAC always squashes into [-1, 1])."""
    sac_lr: float = 3e-4
    """Brax SAC's learning rate (all networks)."""
    evaluations: int = 20
    """evaluation points (the resolution of steps to success)."""
    seeds: int = 4
    """seeds of each for steps to success."""
    threshold: float = 0.5
    """success rate that counts as solved."""
    seed: int = 0
    cold: bool = True
    """compile every run from an empty persistent compilation cache (a temporary
    SVGX_CACHE_DIR), so the whole-run rates count compilation the same way on every invocation."""
    out: pathlib.Path = pathlib.Path("experiments/results/bench_sac.md")


def env_flags(args: Args) -> list[str]:
    return [
        "--env",
        args.env,
        *(["--env-options"] if args.env_options else []),
        *(str(x) for kv in args.env_options.items() for x in kv),
    ]


def svgx_command(args: Args, out: str, seeds: int) -> list[str]:
    hidden = [str(h) for h in args.hidden]
    # svg1_er: per iteration, one step of each of n_envs environments and updates_per_step updates;
    # Brax SAC (grad_updates_per_step) does the same per batched environment step.
    return [
        sys.executable,
        "-m",
        "svgx.cli",
        "train",
        *env_flags(args),
        "--algo",
        "svg1_er",
        "--steps",
        str(args.steps),
        "--chunks",
        str(args.evaluations),
        "--n-envs",
        str(args.n_envs),
        "--batch-size",
        str(args.batch_size),
        "--updates-per-step",
        str(args.updates_per_step),
        "--policy-hidden",
        *hidden,
        "--critic-hidden",
        *hidden,
        "--seed",
        str(args.seed),
        "--policy-lr",
        str(args.policy_lr),
        "--gamma",
        str(args.gamma),
        "--tau",
        str(args.tau),
        "--reward-scale",
        str(args.reward_scale),
        "--init-std",
        str(args.init_std),
        "--squash" if args.squash else "--no-squash",
        "--eval-episodes",
        "16",
        "--seeds",
        str(seeds),
        "--out",
        out,
    ]


def sac_command(args: Args, out: str, seeds: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "svgx.cli",
        "baseline",
        *env_flags(args),
        "--algo",
        "sac",
        "--steps",
        str(args.steps),
        "--evaluations",
        str(args.evaluations + 1),
        "--n-envs",
        str(args.n_envs),
        "--hidden",
        *[str(h) for h in args.hidden],
        "--batch-size",
        str(args.batch_size),
        "--updates-per-step",
        str(args.updates_per_step),
        "--discounting",
        str(args.gamma),
        "--learning-rate",
        str(args.sac_lr),
        "--seed",
        str(args.seed),
        "--seeds",
        str(seeds),
        "--out",
        out,
    ]


def throughput(directory: str) -> dict:
    """Steps per second of a one-seed run: the whole run, and from its second evaluation on
    (by then both have compiled everything: Brax's SAC evaluates before it trains, so its
    training step compiles between its first two evaluations)."""
    from svgx import rundir

    history = rundir.read_metrics(directory)
    steps = np.array([float(m["env_steps"][0]) for m in history])
    wall = np.array([float(m["wall_time"][0]) for m in history])
    return dict(
        wall=wall[-1],
        steps_per_s=steps[-1] / wall[-1],
        steps_per_s_compiled=(steps[-1] - steps[1]) / max(wall[-1] - wall[1], 1e-9),
    )


def sample_efficiency(directory: str, threshold: float) -> dict:
    """Per seed, the environment steps at which the success rate first reaches ``threshold``."""
    from svgx import rundir

    history = rundir.read_metrics(directory)
    steps = np.stack([m["env_steps"] for m in history]).astype(float)  # [evaluations, seeds]
    success = np.stack([m["eval_success"] for m in history])
    to_threshold = [
        float(steps[np.flatnonzero(success[:, i] >= threshold)[0], i])
        if (success[:, i] >= threshold).any()
        else None
        for i in range(steps.shape[1])
    ]
    reached = [x for x in to_threshold if x is not None]
    return dict(
        to_threshold=to_threshold,
        median=float(np.median(reached)) if len(reached) == len(to_threshold) else None,
        final_return=float(history[-1]["eval_return"].mean()),
        final_success=float(success[-1].mean()),
        best_success=float(success.mean(axis=1).max()),
    )


def main(args: Args) -> None:
    from experiments.bench_envs import machine
    from svgx.io import atomic_write_text

    if args.evaluations < 2 or args.seeds < 1:
        raise SystemExit(
            f"bench_sac: error: evaluations={args.evaluations}, seeds={args.seeds}: "
            "the steady-state rate needs evaluations >= 2, and seeds must be >= 1"
        )
    methods = {"svg1_er": svgx_command, "Brax SAC": sac_command}
    speed, efficiency = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, command in methods.items():
            out = f"{tmp}/{name.replace(' ', '_')}"
            for seeds, suffix in ((1, "-1"), (args.seeds, "-n")):
                env = (
                    {**os.environ, "SVGX_CACHE_DIR": f"{out}{suffix}-cache"} if args.cold else None
                )
                subprocess.run(command(args, out + suffix, seeds), check=True, env=env)
            speed[name] = throughput(f"{out}-1")
            efficiency[name] = sample_efficiency(f"{out}-n", args.threshold)
    a, b = speed["svg1_er"], speed["Brax SAC"]
    x, y = efficiency["svg1_er"], efficiency["Brax SAC"]

    def fmt_steps(e):
        per_seed = ", ".join(f"{v:,.0f}" if v is not None else "—" for v in e["to_threshold"])
        n = sum(v is not None for v in e["to_threshold"])
        head = (
            f"{e['median']:,.0f}"
            if e["median"] is not None
            else f"{n} of {len(e['to_threshold'])} seeds reached it"
        )
        return f"{head} ({per_seed})"

    ratio = (
        f"{x['median'] / y['median']:.2f}"
        if x["median"] is not None and y["median"] is not None
        else "n/a"
    )
    command = "python -m experiments.bench_sac " + " ".join(sys.argv[1:])
    options = ", ".join(f"{k}={v}" for k, v in args.env_options.items())
    lines = [
        f"# svg1_er vs Brax SAC on {args.env}" + (f" ({options})" if options else ""),
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}  ",
        f"Both: {args.steps:,} environment steps per seed, {args.n_envs} parallel environments, "
        f"hidden {args.hidden}, batch {args.batch_size}, {args.updates_per_step} update(s) per "
        f"(batched) environment step, γ = {args.gamma}, {args.evaluations} evaluations of 16 "
        "episodes with the mean action; each run in a new process"
        + (
            ", compiling from an empty persistent cache"
            if args.cold
            else ", with the persistent compilation cache as it was"
        )
        + " (compile time counts in the whole-run rate).  ",
        f"svg1_er: policy lr {args.policy_lr}, τ {args.tau}, reward scale {args.reward_scale}, "
        f"initial σ {args.init_std}, {'squashed' if args.squash else 'unsquashed'} Gaussian "
        f"policy; SAC: lr {args.sac_lr}, Brax's defaults otherwise (tanh-squashed into [-1, 1]).",
        "",
        "| | svg1_er | Brax SAC | ratio svg1_er / SAC |",
        "|---|---|---|---|",
        f"| environment steps per second, one seed, whole run | {a['steps_per_s']:,.0f} "
        f"| {b['steps_per_s']:,.0f} | {a['steps_per_s'] / b['steps_per_s']:.2f} |",
        f"| environment steps per second, one seed, from the second evaluation on "
        f"| {a['steps_per_s_compiled']:,.0f} | {b['steps_per_s_compiled']:,.0f} "
        f"| {a['steps_per_s_compiled'] / b['steps_per_s_compiled']:.2f} |",
        f"| wall time, one seed (s) | {a['wall']:.0f} | {b['wall']:.0f} "
        f"| {a['wall'] / b['wall']:.2f} |",
        f"| environment steps to success rate ≥ {args.threshold:.0%}, "
        f"median of {args.seeds} seeds (per seed) | {fmt_steps(x)} | {fmt_steps(y)} | {ratio} |",
        f"| final success rate, mean of {args.seeds} seeds "
        f"| {x['final_success']:.0%} | {y['final_success']:.0%} | |",
        f"| best success rate of an evaluation, mean of {args.seeds} seeds "
        f"| {x['best_success']:.0%} | {y['best_success']:.0%} | |",
        f"| final evaluation return, mean of {args.seeds} seeds "
        f"| {x['final_return']:.2f} | {y['final_return']:.2f} | |",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))
    print(json.dumps(dict(speed=speed, efficiency=efficiency), indent=2, default=float))


if __name__ == "__main__":
    main(tyro.cli(Args))
