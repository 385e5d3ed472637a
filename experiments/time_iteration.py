"""Seconds per training iteration of svg1_er (4 environment steps, one update of batch
64), 5 vmapped seeds, with ``other_tasks.toml``'s settings, by Jacobian source and V's
targets: what the simulator column costs against the learned one on a task, and with
``--transition-clip X`` what per-stretch clipping adds to the simulator's.

Each variant's chunk of training iterations (without the end-of-chunk diagnostics,
which a run computes once per thousands of iterations) is compiled ahead of time, run
once to warm up, then timed twice (the best is kept); prints one line per variant.

    python -m experiments.time_iteration cheetah [--transition-clip 10]
        [--only learned] [--with-diagnostics]

``--with-diagnostics`` times whole chunks as a run has them, diagnostics included
(what this script timed before 2026-11-30: at 20 iterations a chunk they dominate).
"""

from __future__ import annotations

import argparse
import time

import jax

from svgx.config import Config, Hyperparams
from svgx.runner import compiled

VARIANTS = [("simulator", "dynamics"), ("simulator", "replayed"), ("learned", "dynamics")]
SEEDS = 5


def variants(transition_clip: float = 0.0, only: str | None = None) -> list[tuple]:
    """(Jacobian source, V's targets, transition_clip) to time, in order: the clipped
    simulator's after the unclipped one's when ``transition_clip`` > 0."""
    chosen = [(jacobians, targets, 0.0) for jacobians, targets in VARIANTS]
    if transition_clip > 0:
        chosen.insert(1, ("simulator", "dynamics", transition_clip))
    return [v for v in chosen if only is None or v[0] == only]


def config(env: str, jacobians: str, targets: str, clip: float, iterations: int) -> Config:
    """svg1_er with ``other_tasks.toml``'s settings, ``iterations`` iterations a chunk."""
    options = {"actions": "fresh", "targets": targets}
    return Config(
        env=env,
        algo="svg1_er",
        jacobians=jacobians,
        critic_n_step=5,
        algo_options={**options, "transition_clip": clip} if clip else options,
        iterations=iterations * 3,
        chunks=3,
    )


def time_chunk(config: Config, diagnostics: bool = False) -> tuple[float, float, dict]:
    """Compile ``config``'s chunk for 5 seeds, run it once to warm up and twice timed:
    (compile seconds, the faster timed run's seconds per iteration, its metrics)."""
    hp = Hyperparams(entropy_coef=0.01, tau=0.05, policy_lr=1e-3, model_lr=3e-3).as_arrays()
    start = time.perf_counter()
    init, chunk, _ = compiled(config, hp, SEEDS, diagnostics=diagnostics)
    state = init(jax.random.split(jax.random.key(0), SEEDS), hp)
    chunk = chunk.lower(state, hp).compile()
    compile_s = time.perf_counter() - start
    state, metrics = chunk(state, hp)  # warm-up
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(2):
        start = time.perf_counter()
        state, metrics = chunk(state, hp)
        jax.block_until_ready(state)
        best = min(best, time.perf_counter() - start)
    return compile_s, best / (config.iterations // config.chunks), metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("env", nargs="?", default="cheetah", help="the task")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per chunk")
    parser.add_argument(
        "--transition-clip",
        type=float,
        default=0.0,
        help="also time the simulator's with this per-stretch clip (0: not)",
    )
    parser.add_argument(
        "--only",
        choices=("simulator", "learned"),
        help="time only the variants with this Jacobian source",
    )
    parser.add_argument(
        "--with-diagnostics",
        action="store_true",
        help="time whole chunks with their end-of-chunk diagnostics",
    )
    args = parser.parse_args()
    for jacobians, targets, clip in variants(args.transition_clip, args.only):
        compile_s, per_iteration, _ = time_chunk(
            config(args.env, jacobians, targets, clip, args.iterations), args.with_diagnostics
        )
        print(
            f"{args.env} {jacobians:9s} targets={targets:8s} clip={clip:<4g} "
            f"{'with diagnostics ' if args.with_diagnostics else ''}"
            f"compile {compile_s:6.0f} s  "
            f"{per_iteration * 1000:8.1f} ms/iteration  -> "
            f"{per_iteration * 5000 / 60:6.1f} min per 20k-step chunk",
            flush=True,
        )


if __name__ == "__main__":
    main()
