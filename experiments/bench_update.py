"""Benchmark: where an svg1_er training step's time goes, against Brax SAC's.

One process times, at the same update-to-data ratio (one update per iteration of
``n_envs`` environment steps) and batch size, one seed each:

* Brax's SAC through ``svgx baseline``'s trainer: its steady rate between its
  second and last evaluation (compilation excluded);
* svgx training chunks of variants that each take one part away or swap it, so
  that the differences say what each part costs: ``svg1_er`` with the tuned
  cart-pole settings and simulator Jacobians (the reference), the same with
  1-step targets, without the entropy bonus, with learned Jacobians, ``svg0_er``
  (the same loop and critic, no back-propagation through dynamics), and ``dpg``.

Each variant's chunk is compiled ahead of time, run once to warm up, then timed
``--repeats`` times (the best is kept). Writes ``experiments/results/bench_update.md``.

    python -m experiments.bench_update            # cart-pole, the defaults below
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Time svg1_er's training step by parts against Brax SAC's, one seed each."""

    env: str = "cartpole"
    """the task."""
    n_envs: int = 4
    """parallel environments (one update per iteration of this many steps)."""
    iterations: int = 1000
    """iterations per timed chunk."""
    repeats: int = 3
    """timed chunks per variant (the best is kept)."""
    sac_steps: int = 40_000
    """Brax SAC's environment steps (its rate is measured after its first epoch)."""
    out: pathlib.Path = pathlib.Path("experiments/results/bench_update.md")


TUNED = dict(critic_n_step=5)
TUNED_HP = dict(entropy_coef=0.03, tau=0.05, policy_lr=1e-3)

Q = dict(critic_n_step=1)  # n-step targets are for V critics

# (label, Config changes, Hyperparams changes) relative to the tuned svg1_er.
VARIANTS = [
    ("svg1_er, simulator (tuned: 5-step V, entropy 0.03)", {}, {}),
    ("  the same, 1-step V targets", dict(critic_n_step=1), {}),
    ("  the same, no entropy bonus", {}, dict(entropy_coef=0.0)),
    ("  the same, learned Jacobians (+ model updates)", dict(jacobians="learned"), {}),
    (
        "svg0_er (Q critic, no dynamics in the policy step)",
        dict(algo="svg0_er", critic_n_step=1),
        {},
    ),
    ("dpg (Q critic, deterministic policy)", dict(algo="dpg", **Q), {}),
]


def time_variant(args: Args, changes: dict, hp_changes: dict) -> dict:
    import jax

    from svgx.config import Config, Hyperparams
    from svgx.runner import compiled

    config = Config(
        env=args.env,
        n_envs=args.n_envs,
        iterations=args.iterations * (args.repeats + 1),
        chunks=args.repeats + 1,
        **{**TUNED, **changes},
    )
    hp = Hyperparams(**{**TUNED_HP, **hp_changes}).as_arrays()
    keys = jax.random.split(jax.random.key(0), 1)
    start = time.perf_counter()
    init, chunk, _ = compiled(config, hp, 1)
    state = init(keys, hp)
    chunk = chunk.lower(state, hp).compile()
    compile_s = time.perf_counter() - start
    state, _ = chunk(state, hp)  # warm-up (fills the replay database)
    jax.block_until_ready(state)
    best = float("inf")
    for _ in range(args.repeats):
        start = time.perf_counter()
        state, _ = chunk(state, hp)
        jax.block_until_ready(state)
        best = min(best, time.perf_counter() - start)
    return dict(compile_s=compile_s, steps_per_s=args.iterations * args.n_envs / best)


def time_sac(args: Args) -> float:
    import envs
    from svgx.baselines import trainer

    points = []

    def record(step, metrics):
        points.append((int(step), time.perf_counter()))

    trainer(
        "sac",
        envs.make(args.env),
        steps=args.sac_steps,
        n_envs=args.n_envs,
        evaluations=5,
        hidden=(100, 100),
        seed=0,
        progress_fn=record,
        updates_per_step=1,
        batch_size=64,
    )
    (n1, t1), (n2, t2) = points[1], points[-1]
    return (n2 - n1) / (t2 - t1)


def main(args: Args) -> None:
    import svgx
    from experiments.bench_envs import machine
    from svgx.io import atomic_write_text

    svgx.enable_compilation_cache()
    sac = time_sac(args)
    rows = []
    for label, changes, hp_changes in VARIANTS:
        result = time_variant(args, changes, hp_changes)
        rows.append((label, result))
        print(f"{label}: {result['steps_per_s']:,.0f} env steps/s", flush=True)
    reference = rows[0][1]["steps_per_s"]
    lines = [
        f"# Where svg1_er's training step goes, against Brax SAC ({args.env})",
        "",
        "Command: `python -m experiments.bench_update"
        + (f" --env {args.env}" if args.env != "cartpole" else "")
        + "`  ",
        f"Machine: {machine()}  ",
        f"One seed, {args.n_envs} parallel environments, one update of batch 64 per "
        f"iteration of {args.n_envs} environment steps (both), hidden (100, 100); svgx: "
        f"best of {args.repeats} chunks of {args.iterations} iterations after a warm-up "
        "chunk; SAC: its rate from its second to its last evaluation. All measured in "
        "one process, one after another.",
        "",
        "| variant | env steps/s | ratio to SAC | time per step relative to svg1_er |",
        "|---|---|---|---|",
        f"| Brax SAC | {sac:,.0f} | 1.00 | {reference / sac:.2f} |",
    ]
    for label, result in rows:
        rate = result["steps_per_s"]
        lines.append(
            f"| {label.strip()} | {rate:,.0f} | {rate / sac:.2f} | {reference / rate:.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(args.out, text)


if __name__ == "__main__":
    main(tyro.cli(Args))
