"""Benchmark: one run's training speed on 1, as many as the cores, and twice as many
CPU devices (:mod:`svgx.devices`), each in a fresh process, measured one after another.

A device count is fixed when JAX starts, so each is a child process
(``SVGX_CPU_DEVICES=n``) that compiles one training chunk of the task (the tuned
settings, ``--seeds`` seeds laid out over the devices as :func:`svgx.runner.seed_mesh`
lays them), runs it once to warm up and times it ``--repeats`` times (the best is
kept). The ratios are to the one-device run of the same invocation. Writes
``experiments/results/bench_cpu_devices.md``.

    python -m experiments.bench_cpu_devices            # cart-pole, svg1_er, learned, 4 seeds
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import subprocess
import sys
import time

import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Time one run's training chunks on several CPU device counts."""

    env: str = "cartpole"
    algo: str = "svg1_er"
    jacobians: str = "learned"
    seeds: int = 4
    """seeds vmapped in the run (the devices split them when they divide them)."""
    devices: tuple[int, ...] = ()
    """device counts to time (default: 1, the cores, twice the cores)."""
    iterations: int = 400
    """iterations per timed chunk."""
    repeats: int = 3
    """timed chunks per device count (the best is kept)."""
    out: pathlib.Path = pathlib.Path("experiments/results/bench_cpu_devices.md")
    child: bool = False
    """(internal) time this process's devices and print one JSON line."""


def time_here(args: Args) -> dict:
    """Compile and time the run's chunk on this process's devices."""
    import jax

    import svgx
    from svgx import cli, runner  # importing svgx.cli applies SVGX_CPU_DEVICES

    svgx.enable_compilation_cache()
    flags = ["--out", "unused", "--env", args.env, "--algo", args.algo]
    flags += ["--jacobians", args.jacobians]  # and the tuned settings, as svgx train
    spec = cli.train_spec(tyro.cli(cli.train_args(), args=flags))
    config = dataclasses.replace(
        spec.config, iterations=args.iterations * (args.repeats + 1), chunks=args.repeats + 1
    )
    hp = spec.hparams.as_arrays()
    mesh = runner.seed_mesh(args.seeds)
    init, chunk, _ = runner.compiled(config, hp, args.seeds, mesh)
    state = init(runner._put(runner._keys(0, args.seeds), mesh), runner._put(hp, mesh))
    hp = runner._put(hp, mesh)
    start = time.perf_counter()
    chunk = chunk.lower(state, hp).compile()
    compile_s = time.perf_counter() - start
    state, _ = chunk(state, hp)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        state, _ = chunk(state, hp)
        jax.block_until_ready(state)
        best = min(best, time.perf_counter() - start)
    steps = args.iterations * config.n_envs * args.seeds
    return dict(
        devices=jax.device_count(),
        used=mesh.devices.size,
        compile_s=compile_s,
        steps_per_s=steps / best,
    )


def main(args: Args) -> None:
    if args.child:
        print(json.dumps(time_here(args)), flush=True)
        return
    from experiments.bench_envs import machine
    from svgx.io import atomic_write_text

    cores = os.cpu_count() or 1
    counts = args.devices or tuple(dict.fromkeys((1, cores, 2 * cores)))
    rows = []
    for n in counts:
        child = [sys.executable, "-m", "experiments.bench_cpu_devices", "--child"]
        child += [f"--env={args.env}", f"--algo={args.algo}", f"--jacobians={args.jacobians}"]
        child += [f"--seeds={args.seeds}", f"--iterations={args.iterations}"]
        child += [f"--repeats={args.repeats}"]
        result = subprocess.run(
            child,
            capture_output=True,
            text=True,
            env={**os.environ, "SVGX_CPU_DEVICES": str(n)},
        )
        if result.returncode:
            raise SystemExit(f"{n} devices failed:\n{result.stderr[-3000:]}")
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"{n} devices: {rows[-1]['steps_per_s']:,.0f} env steps/s", flush=True)
    reference = rows[0]["steps_per_s"]
    command = " ".join(["python -m experiments.bench_cpu_devices", *sys.argv[1:]]).strip()
    lines = [
        f"# One run on several CPU devices ({args.env}, {args.algo}, {args.jacobians})",
        "",
        f"Command: `{command}`  ",
        f"Machine: {machine()}  ",
        f"{args.seeds} seeds in one program, the task's tuned settings; each device count in a "
        f"fresh process (`SVGX_CPU_DEVICES`), one after another: best of {args.repeats} "
        f"chunks of {args.iterations} iterations after a warm-up chunk.",
        "",
        "| CPU devices | used by the seeds | env steps/s (all seeds) | ratio to 1 device | "
        "compile (s) |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['devices']} | {row['used']} | {row['steps_per_s']:,.0f} | "
            f"{row['steps_per_s'] / reference:.2f} | {row['compile_s']:.1f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main(tyro.cli(Args))
