"""Benchmark: one seed vs many vmapped seeds of ``svg1_er`` on ``cartpole``.

Measured in one run, each case in its own process (so peak memory is its own):
wall time per environment step with 1 seed and with ``--seeds`` vmapped seeds
(goal: 16 seeds in at most 3× the time of 1), compile time with an empty
persistent compilation cache and again with the cache warm, and peak resident
memory. Writes ``experiments/results/bench_train.md``.

    python -m experiments.bench_train            # the defaults below
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import resource
import subprocess
import sys
import tempfile
import time

import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Time a fixed svg1_er budget with 1 seed and with many vmapped seeds."""

    seeds: int = 16
    """Vmapped seeds of the parallel case."""
    iterations: int = 2000
    """Training iterations per seed (each: one step of every parallel environment, one update)."""
    n_envs: int = 4
    """Parallel environments per seed."""
    horizon: int = 100
    """Episode length of the cartpole task."""
    out: pathlib.Path = pathlib.Path("experiments/results/bench_train.md")
    worker: int = 0
    """Internal: run one case with this many seeds and print JSON."""
    cache: str = ""
    """Internal: the compilation cache directory of a worker."""


def config(args: Args):
    from svgx.config import Config

    return Config(
        env="cartpole",
        env_options=dict(horizon=args.horizon),
        algo="svg1_er",
        n_envs=args.n_envs,
        iterations=args.iterations,
        chunks=2,
        batch_size=64,
    )


def worker(args: Args) -> dict:
    import jax

    import svgx
    from svgx.config import Hyperparams
    from svgx.runner import compiled

    svgx.enable_compilation_cache(args.cache)
    cfg = config(args)
    hp = Hyperparams().as_arrays()
    keys = jax.random.split(jax.random.key(0), args.worker)
    start = time.perf_counter()
    init, chunk, _evaluate = compiled(cfg, hp, args.worker)
    state = init(keys, hp)
    chunk_compiled = chunk.lower(state, hp).compile()
    jax.block_until_ready(state)
    compile_s = time.perf_counter() - start
    # Chunk 1 warms up (and fills the replay database); chunk 2 is timed.
    state, _ = chunk_compiled(state, hp)
    jax.block_until_ready(state)
    start = time.perf_counter()
    state, metrics = chunk_compiled(state, hp)
    jax.block_until_ready(state)
    seconds = time.perf_counter() - start
    steps = args.worker * args.n_envs * (args.iterations // cfg.chunks)
    return dict(
        seeds=args.worker,
        compile_s=compile_s,
        seconds=seconds,
        env_steps=steps,
        us_per_env_step=1e6 * seconds / steps,
        us_per_env_step_per_seed=1e6 * seconds / (args.iterations // cfg.chunks * args.n_envs),
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        nonfinite=int(metrics["nonfinite_updates"].sum()),
    )


def spawn(args: Args, seeds: int, cache: str) -> dict:
    command = [
        sys.executable,
        "-m",
        "experiments.bench_train",
        "--worker",
        str(seeds),
        "--cache",
        cache,
        "--iterations",
        str(args.iterations),
        "--n-envs",
        str(args.n_envs),
        "--horizon",
        str(args.horizon),
    ]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args: Args) -> None:
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from experiments.bench_envs import machine
    from svgx.io import atomic_write_text

    with tempfile.TemporaryDirectory() as cold:
        one_cold = spawn(args, 1, cold)
        one = spawn(args, 1, cold)  # warm cache
        many_cold = spawn(args, args.seeds, cold)
        many = spawn(args, args.seeds, cold)
    ratio = many["seconds"] / one["seconds"]
    rows = [
        ("seeds", "1", str(args.seeds)),
        (
            "compile, empty cache (s)",
            f"{one_cold['compile_s']:.1f}",
            f"{many_cold['compile_s']:.1f}",
        ),
        ("compile, warm cache (s)", f"{one['compile_s']:.1f}", f"{many['compile_s']:.1f}"),
        ("time of the timed chunk (s)", f"{one['seconds']:.2f}", f"{many['seconds']:.2f}"),
        (
            "µs per environment step (all seeds)",
            f"{one['us_per_env_step']:.1f}",
            f"{many['us_per_env_step']:.1f}",
        ),
        ("peak resident memory (MB)", f"{one['peak_rss_mb']:.0f}", f"{many['peak_rss_mb']:.0f}"),
    ]
    command = "python -m experiments.bench_train " + " ".join(sys.argv[1:])
    lines = [
        "# Training speed: 1 seed vs vmapped seeds (svg1_er on cartpole)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}  ",
        f"Budget: {args.iterations} iterations per seed (2 chunks; the second is timed), "
        f"{args.n_envs} parallel environments per seed, horizon {args.horizon}, one model-free "
        "update per iteration (simulator Jacobians), batch 64.",
        "",
        f"**{args.seeds} seeds took {ratio:.2f}× the time of 1 seed** (goal: ≤ 3×), i.e. "
        f"{args.seeds / ratio:.1f}× the throughput.",
        "",
        "| | 1 seed | " + f"{args.seeds} seeds |",
        "|---|---|---|",
        *(f"| {name} | {a} | {b} |" for name, a, b in rows),
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
