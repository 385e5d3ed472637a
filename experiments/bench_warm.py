"""Benchmark: start-up time of a run, cold and warm (svg1_er on cartpole).

Each case runs in a fresh process, in this order, sharing one temporary cache
directory (the compilation cache, with the export cache in its ``exported/``):

(a) cold: both caches empty;
(b) warm: both caches filled by (a);
(c) warm after a code change: ``SVGX_EXPORT_CACHE_SALT`` set, which changes every
    export-cache key as an edit of svgx's source would (the traced program is the
    same, so its compilation is still cached; an edit that changes the program would
    also recompile, as in (a));
(d) export cache off (``SVGX_EXPORT_CACHE=0``), compilation cache without this
    program: what a first run cost before the export cache;
(e) export cache off, compilation cache filled by (d): the warm start before it.

Two times from the worker's first line (before jax is imported): to the first training
step (the runner's "compiled in …; training" line), and start-up, the time to the first
chunk's progress line less the chunk's own run time (the runner's ``wall_time`` less
its ``compile_time``). They differ by the wait, after the first chunk, for the learning
diagnostics, which compile while it trains (a long chunk hides them; this one, a few
seconds, does not). Writes ``experiments/results/bench_warm.md``.

    python -m experiments.bench_warm
"""

from __future__ import annotations

import time

START = time.perf_counter()

import dataclasses  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pathlib  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import tyro  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Args:
    """Time from a fresh process to the first training step, cold and warm."""

    iterations: int = 1000
    """Training iterations (2 chunks; only the first runs)."""
    n_envs: int = 4
    """Parallel environments per seed."""
    horizon: int = 100
    """Episode length of the cartpole task."""
    out: pathlib.Path = pathlib.Path("experiments/results/bench_warm.md")
    worker: bool = False
    """Internal: run one case and print JSON."""
    cache: str = ""
    """Internal: the cache directory of a worker."""


def worker(args: Args) -> dict:
    import numpy as np

    import svgx
    from experiments.bench_train import config as cartpole_config
    from svgx import export_cache, rundir, runner

    svgx.enable_compilation_cache(args.cache)
    config = cartpole_config(args)  # bench_train's svg1_er on cartpole, at these sizes
    first, chunks = {}, []

    def progress(line):  # "... compiled in Ns; training", then one line per chunk
        first.setdefault("training" if line.endswith("training") else "chunk", time.perf_counter())

    class Stop(Exception):
        pass

    def on_chunk(index, state, history):  # after the first chunk: enough
        chunks.append(history[-1])
        raise Stop

    try:
        runner.run(config, seeds=1, progress=progress, on_chunk=on_chunk)
    except Stop:
        pass
    metrics = chunks[0]
    chunk_s = float(metrics["wall_time"][0] - metrics["compile_time"][0])
    return dict(
        training_s=first["training"] - START,
        startup_s=first["chunk"] - START - chunk_s,
        compile_s=float(metrics["compile_time"][0]),
        chunk_s=chunk_s,
        events=export_cache.EVENTS,
        metrics=json.dumps(
            {k: np.asarray(v).tolist() for k, v in metrics.items() if k not in rundir.TIMINGS},
            sort_keys=True,
        ),
    )


def spawn(args: Args, cache: str, **env) -> dict:
    command = [sys.executable, "-m", "experiments.bench_warm", "--worker", "--cache", cache]
    command += ["--iterations", str(args.iterations), "--n-envs", str(args.n_envs)]
    command += ["--horizon", str(args.horizon)]
    out = subprocess.run(
        command, capture_output=True, text=True, check=True, env={**os.environ, **env}
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(args: Args) -> None:
    if args.worker:
        print(json.dumps(worker(args)))
        return
    from experiments.bench_envs import machine
    from svgx.io import atomic_write_text

    begin = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache, tempfile.TemporaryDirectory() as plain:
        cold = spawn(args, cache)
        warm = spawn(args, cache)
        changed = spawn(args, cache, SVGX_EXPORT_CACHE_SALT="bench")
        off_cold = spawn(args, plain, SVGX_EXPORT_CACHE="0")
        off_warm = spawn(args, plain, SVGX_EXPORT_CACHE="0")
    total = time.perf_counter() - begin
    cases = [
        ("(a) cold: both caches empty", cold),
        ("(b) warm: both caches filled by (a)", warm),
        ("(c) warm after a code change (salted keys)", changed),
        ("(d) export cache off, compilation cache empty", off_cold),
        ("(e) export cache off, compilation cache warm", off_warm),
    ]
    rows = [
        f"| {name} | {case['training_s']:.1f} | {case['startup_s']:.1f} "
        f"| {case['startup_s'] / cold['startup_s']:.2f} | {case['compile_s']:.1f} "
        f"| {', '.join(f'{n} {e}' for n, e in case['events']) or '-'} |"
        for name, case in cases
    ]
    same = {
        "(b)": warm["metrics"] == cold["metrics"],
        "(c)": changed["metrics"] == cold["metrics"],
        "(e)": off_warm["metrics"] == cold["metrics"],
    }
    command = "python -m experiments.bench_warm " + " ".join(sys.argv[1:])
    lines = [
        "# Start-up time, cold and warm (svg1_er on cartpole)",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()} (absolute times depend on what else runs: compare the "
        "ratios, measured in one run)  ",
        f"Run: {args.iterations} iterations in 2 chunks, {args.n_envs} parallel "
        f"environments, horizon {args.horizon}, 1 seed; each case a fresh process. "
        f"Wall time of the benchmark: {total:.0f} s.",
        "",
        f"**Warm: training starts {warm['training_s']:.1f} s after launch, cold "
        f"{cold['training_s']:.1f} s.** Start-up to the first chunk's metrics: warm "
        f"{warm['startup_s']:.1f} s, {cold['startup_s'] / warm['startup_s']:.1f}× faster than "
        f"cold ({cold['startup_s']:.1f} s) and "
        f"{off_warm['startup_s'] / warm['startup_s']:.1f}× faster than a warm start without "
        f"the export cache ({off_warm['startup_s']:.1f} s). Goals: warm < 10 s, cold < 60 s.",
        "",
        "To training: from the process's first line (before importing jax) to the first "
        "training step. Start-up: to the first chunk's metrics, less the chunk's own run "
        "(so it adds the wait for the learning diagnostics, which compile while the first "
        "chunk trains and outlast this short chunk). Compile: the runner's `compile_time` "
        "(lowering and compiling init, the iterations, the diagnostics and evaluate; "
        "loading from the caches when warm). (c) salts every "
        "export-cache key with `SVGX_EXPORT_CACHE_SALT`, as an edit of svgx's source "
        "would change them, without changing the program (so XLA's compilation cache "
        "still hits).",
        "",
        "| case | to training (s) | start-up (s) | ÷ (a) | compile (s) | export cache |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "First-chunk metrics (every metric but timings) bit-identical to (a): "
        + ", ".join(f"{case} {'yes' if equal else 'NO'}" for case, equal in same.items())
        + ".",
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
