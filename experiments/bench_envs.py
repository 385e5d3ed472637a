"""Speed of every task: MJX rollouts (jitted, vmapped, scanned) against MuJoCo C.

For each task it measures, in one run:

* compile time of the jitted rollout (cold unless the persistent cache already
  holds it: the table says which),
* physics steps per second of ``jit(vmap(scan(transition)))`` at batch 1, 16, 256,
* physics steps per second of the same model stepped by MuJoCo C
  (``mujoco.rollout`` on every core of the machine, one ``MjData`` per thread),
* the ratio MJX / C at the largest batch.

Both sides step the same MJCF model the same number of physics steps with the
same random controls. ``python -m experiments.bench_envs`` writes
``experiments/results/bench_envs.md``; ``--quick`` (``make demo``) runs every task
once with a random policy, prints returns, and measures batch 16 only.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import sys
import time

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import tyro
from mujoco import rollout as mj_rollout

import envs
import svgx
from svgx.io import atomic_write_text


@dataclasses.dataclass
class Args:
    """Benchmark the tasks' MJX simulation against MuJoCo C."""

    tasks: tuple[str, ...] = tuple(envs.names())
    """Tasks to measure (default: all; tasks that are not MuJoCo MJX models, such as
    the ``lqg`` probe, are skipped: there is no MuJoCo C model to compare with)."""
    batches: tuple[int, ...] = (1, 16, 256)
    """Batch sizes of the vmapped rollout."""
    steps: int = 100
    """Control steps per rollout."""
    repeats: int = 3
    """Timed runs per measurement (the best is reported)."""
    quick: bool = False
    """Short demo: 50 steps, batch 16, print random-policy returns; no results file."""
    out: str = "experiments/results/bench_envs.md"
    """Markdown table to write (atomically)."""


def mjx_rollout_fn(env: envs.Env):
    """``(s0[B], actions[B, T]) -> (final states, returns)``, jitted."""

    def one(s0, actions):
        def body(s, inputs):
            t, a = inputs
            noise = jnp.zeros(env.noise_size, s.dtype)
            return env.transition(s, a, noise), env.reward(s, a, t)

        ts = jnp.arange(actions.shape[0])
        s_final, rewards = jax.lax.scan(body, s0, (ts, actions))
        return s_final, rewards.sum()

    return jax.jit(jax.vmap(one))


def best_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return min(times)


def measure_mjx(env, batch: int, steps: int, repeats: int, seed: int = 0):
    key_s, key_a = jax.random.split(jax.random.key(seed))
    s0 = jax.vmap(env.reset)(jax.random.split(key_s, batch))
    actions = jax.random.uniform(key_a, (batch, steps, env.action_size), minval=-1, maxval=1)
    fn = mjx_rollout_fn(env)
    start = time.perf_counter()
    compiled = fn.lower(s0, actions).compile()
    compile_s = time.perf_counter() - start
    seconds = best_time(lambda: compiled(s0, actions), repeats)
    s_final, returns = compiled(s0, actions)
    physics_steps = batch * steps * env.n_substeps
    return dict(
        compile_s=compile_s,
        steps_per_s=physics_steps / seconds,
        diverged=int((~jnp.isfinite(s_final).all(axis=-1)).sum()),
        returns=np.asarray(returns),
        s0=np.asarray(s0),
        actions=np.asarray(actions),
    )


def measure_c(env, s0: np.ndarray, actions: np.ndarray, repeats: int) -> float:
    """MuJoCo C steps/s on the same model, states and controls, using every core."""
    model = env.mj_model
    batch, steps, _ = actions.shape
    nthread = os.cpu_count() or 1
    datas = [mujoco.MjData(model) for _ in range(nthread)]
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    initial = np.empty((batch, mujoco.mj_stateSize(model, spec)))
    for i in range(batch):
        d = datas[0]
        mujoco.mj_resetData(model, d)
        d.qpos[:], d.qvel[:] = s0[i, : env.nq], s0[i, env.nq : env.nq + env.nv]
        mujoco.mj_getState(model, d, initial[i], spec)
    control = np.repeat(actions, env.n_substeps, axis=1).astype(np.float64)
    seconds = min(
        _timed(lambda: mj_rollout.rollout(model, datas, initial, control)) for _ in range(repeats)
    )
    return batch * steps * env.n_substeps / seconds


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores; jax {jax.__version__} on {jax.default_backend()}, "
        f"mujoco {mujoco.__version__}"
    )


def main(args: Args) -> None:
    cache = svgx.enable_compilation_cache()
    batches = (16,) if args.quick else args.batches
    steps = 50 if args.quick else args.steps
    largest = max(batches)
    header = ["task", "state/action", "substeps", "compile (s)"]
    header += [f"MJX B={b} (steps/s)" for b in batches]
    header += [f"C B={largest} (steps/s)", f"MJX/C at B={largest}", "diverged (MJX)"]
    rows = []
    print(f"{'task':16s} " + " ".join(f"{h:>16s}" for h in header[2:]), flush=True)
    for name in args.tasks:
        env = envs.make(name)
        if not isinstance(env, envs.MjxEnv):
            print(f"{name:16s} skipped: not a MuJoCo MJX task", flush=True)
            continue
        results = {b: measure_mjx(env, b, steps, args.repeats) for b in batches}
        big = results[largest]
        c_rate = measure_c(env, big["s0"], big["actions"], args.repeats)
        ratio = big["steps_per_s"] / c_rate
        row = [
            name,
            f"{env.state_size}/{env.action_size}",
            str(env.n_substeps),
            f"{results[batches[0]]['compile_s']:.1f}",
            *(f"{results[b]['steps_per_s']:,.0f}" for b in batches),
            f"{c_rate:,.0f}",
            f"{ratio:.2f}",
            f"{big['diverged']}/{largest}",
        ]
        rows.append(row)
        extra = ""
        if args.quick:
            extra = (
                f"   random-policy return {big['returns'].mean():+.2f} ± {big['returns'].std():.2f}"
            )
        print(f"{name:16s} " + " ".join(f"{c:>16s}" for c in row[2:]) + extra, flush=True)
        if not args.quick:  # rewrite after every task, so a stopped run keeps what it measured
            write_table(args, cache, header, rows, batches, steps)
    if not args.quick:
        print(f"wrote {args.out}")


def write_table(args, cache, header, rows, batches, steps) -> None:
    command = "python -m experiments.bench_envs " + " ".join(sys.argv[1:])
    lines = [
        "# Simulation speed: MJX vs MuJoCo C",
        "",
        f"Command: `{command.strip()}`  ",
        f"Machine: {machine()}  ",
        f"Rollouts of {steps} control steps with uniformly random controls; steps/s counts "
        f"physics steps (control steps × substeps), best of {args.repeats}. MuJoCo C: "
        f"`mujoco.rollout` with {os.cpu_count()} threads. 'diverged' counts MJX rollouts "
        f"at batch {max(batches)} whose final state is not finite. Compile time is for batch "
        f"{batches[0]} with the persistent compilation cache at "
        f"`{cache}` (a warm cache makes it small).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    atomic_write_text(args.out, "\n".join(lines))


if __name__ == "__main__":
    main(tyro.cli(Args))
