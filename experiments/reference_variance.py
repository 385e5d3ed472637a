"""Where the ablation's sampled reference gradient gets its variance: the start state or the rest.

On tasks other than lqg the ablation's reference is back-propagation through the
simulator on sampled episodes (:func:`svgx.diagnostics.reference_gradient`). By the
law of total variance, one episode's gradient ``g`` has

    Var(g) = E[Var(g | s_0)] + Var(E[g | s_0]),

the second term being the start state's part. This measures both on the grid's own
policy (the initial one of ``seed``, or a run's): ``Var(g)`` over episodes from
independent starts, ``E[Var(g | s_0)]`` pooled over ``--starts`` fixed starts with
``--episodes / --starts`` noise draws each (total variance: the sum over parameters).
The start's share bounds what any stratification or conditioning on the start could
save: removing it all leaves ``1 − share`` of the variance.

For the swimmers (the goal at the origin, a uniform start direction and heading, an
isotropic fluid) it also pairs each start with its rotations about the goal: an
unbiased antithetic or stratified design, which helps only if the rotated episodes'
gradients are negatively correlated. Reported as the variance of the group's mean
relative to as many independent episodes (below 1: a gain).

    python -m experiments.reference_variance swimmer3 --episodes 32
"""

from __future__ import annotations

import dataclasses
import pathlib
import shlex
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import tyro


@dataclasses.dataclass(frozen=True)
class Args:
    """Split the reference gradient's per-episode variance into the start's part and the rest."""

    env: tyro.conf.Positional[str]
    """the task (as in an ablation grid)."""
    horizon: int | None = None
    """episode length (None: the task's own)."""
    episodes: int = 32
    """episodes per design (independent starts; fixed starts; each rotation)."""
    starts: int = 4
    """fixed starts for the within-start variance (``episodes`` must be a multiple)."""
    policy: str = "initial"
    """``initial`` (the grid's initial policy of ``seed``) or a run directory or snapshot."""
    policy_seed: int = 0
    """the run's member, for a run's policy."""
    seed: int = 0
    """seeds the initial policy (as the grid's ``seed``) and the episodes."""
    out: pathlib.Path | None = None
    """the markdown file (None: experiments/results/ablation/reference_variance_ENV.md)."""


def total_variance(g: np.ndarray) -> float:
    """``Σ_j Var(g[:, j])`` over rows (episodes), unbiased."""
    return float(g.var(axis=0, ddof=1).sum())


def variance_split(independent: np.ndarray, by_start: np.ndarray) -> dict[str, float]:
    """``total`` (rows of ``independent``: one episode per independent start),
    ``within`` (``by_start[i]``: episodes from start ``i``, pooled) and the start's
    share ``1 − within / total``."""
    total = total_variance(independent)
    within = float(np.mean([total_variance(g) for g in by_start]))
    return dict(total=total, within=within, start_share=1.0 - within / total)


def group_variance_ratio(groups: list[np.ndarray]) -> float:
    """Variance of the mean of each row's group (``groups[k][i]``: episode ``i`` of design
    ``k``) over that of as many independent episodes; 1 without correlation."""
    mean = np.mean(groups, axis=0)
    independent = np.mean([total_variance(g) for g in groups]) / len(groups)
    return total_variance(mean) / independent


def rotate_about_goal(env, s, angle):
    """A swimmer's state rotated by ``angle`` about the goal (the origin): the head's
    position, its velocity in the plane and its heading; joints unchanged."""
    qpos, qvel, task = env.split(s)
    c, si = jnp.cos(angle), jnp.sin(angle)
    turn = lambda v: jnp.stack([c * v[0] - si * v[1], si * v[0] + c * v[1]])  # noqa: E731
    plane = ("root_x", "root_y")
    position, velocity = env.qpos_address(plane), env.dof_address(plane)
    qpos = qpos.at[position].set(turn(qpos[position]))
    qpos = qpos.at[env.qpos_address("root_yaw")].add(angle)
    qvel = qvel.at[velocity].set(turn(qvel[velocity]))
    return env.join(qpos, qvel, task)


def episode_gradients(env, policy, starts, keys, gamma) -> np.ndarray:
    """One row per episode: BPTT through the simulator from ``starts[i]`` with ``keys[i]``
    (the reference's estimator on one episode), flattened; one compiled program for
    every batch of the same size."""
    return np.asarray(_episode_gradients(env, policy, starts, keys, gamma))


@eqx.filter_jit
def _episode_gradients(env, policy, starts, keys, gamma):
    from svgx import diagnostics, estimators, rollout
    from svgx.dynamics import make_dynamics

    dynamics = make_dynamics("simulator", env)

    def one(start_and_key):
        s_0, key = start_and_key
        data = jax.tree.map(lambda x: x[None], rollout.episode(env, policy, key, s_0=s_0))
        g, _ = estimators.policy_gradient(
            estimators.svg_loss, policy, dynamics, env.reward, None, data, gamma=gamma
        )
        return diagnostics.flatten(g)

    return jax.lax.map(one, (starts, keys))  # one episode at a time, as memory allows


def measure(args: Args) -> dict:
    from svgx import ablate, diagnostics

    if args.episodes % args.starts or args.episodes < 2 * args.starts:
        raise ValueError(
            f"episodes={args.episodes}: must be a multiple of starts={args.starts}, "
            "with at least 2 episodes per start"
        )
    config = diagnostics.DiagnoseConfig(env=args.env, horizon=args.horizon, seed=args.seed)
    env = diagnostics.make_env(config)
    if args.policy == "initial":
        policy = diagnostics.make_policy(env, config, diagnostics.Keys.of(args.seed).policy)
    else:
        policy = ablate.load_policy(args.policy, args.policy_seed)
    n, per_start = args.episodes, args.episodes // args.starts
    key_starts, key_fixed, key_noise = jax.random.split(jax.random.key(args.seed + 1), 3)
    starts = jax.vmap(env.reset)(jax.random.split(key_starts, n))
    fixed = jax.vmap(env.reset)(jax.random.split(key_fixed, args.starts))
    noise = jax.random.split(key_noise, 6 * n).reshape(6, n)  # a block of keys per design
    designs = iter(range(6))

    def gradients(s_0):
        return episode_gradients(env, policy, s_0, noise[next(designs)], config.gamma)

    start = time.perf_counter()
    independent = gradients(starts)
    within = gradients(jnp.repeat(fixed, per_start, axis=0))
    result = dict(
        env=env.name,
        horizon=env.horizon,
        episodes=n,
        starts=args.starts,
        gradient_norm_median=float(np.median(np.linalg.norm(independent, axis=1))),
        mean_norm=float(np.linalg.norm(independent.mean(0))),
        **variance_split(independent, within.reshape(args.starts, per_start, -1)),
    )
    if env.name.startswith("swimmer"):
        rotations = [
            gradients(jax.vmap(lambda s, a=angle: rotate_about_goal(env, s, a))(starts))
            for angle in (np.pi, np.pi / 2, -np.pi / 2)
        ]
        result["antithetic_ratio"] = group_variance_ratio([independent, rotations[0]])
        result["four_rotations_ratio"] = group_variance_ratio([independent, *rotations])
    result["wall_s"] = time.perf_counter() - start
    return result


def markdown(result: dict, args: Args, command: str) -> str:
    lines = [
        f"# The reference gradient's per-episode variance on {result['env']}",
        "",
        f"Command: `{command}`  ",
        f"Policy: {args.policy}"
        + (f" (seed {args.seed})" if args.policy == "initial" else f" (member {args.policy_seed})")
        + f"; {result['horizon']} steps; {result['episodes']} episodes per design; "
        f"wall time {result['wall_s']:.0f} s (compilation included).",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| one episode's gradient norm, median | {result['gradient_norm_median']:.4g} |",
        f"| norm of the mean over the independent episodes | {result['mean_norm']:.4g} |",
        f"| total variance per episode, independent starts | {result['total']:.4g} |",
        f"| the same within a start (pooled over {result['starts']} fixed starts) "
        f"| {result['within']:.4g} |",
        f"| the start state's share | {result['start_share']:.2f} |",
    ]
    if "antithetic_ratio" in result:
        lines += [
            "| variance of an antithetic pair's mean (start and its rotation by π) "
            f"over two independent episodes' | {result['antithetic_ratio']:.2f} |",
            "| the same for four rotations (0, ±π/2, π) over four independent episodes' "
            f"| {result['four_rotations_ratio']:.2f} |",
        ]
    return "\n".join(lines) + "\n"


def main(args: Args) -> None:
    import svgx
    from svgx.io import atomic_write_text

    svgx.enable_compilation_cache()
    result = measure(args)
    command = shlex.join(["python", "-m", "experiments.reference_variance", *sys.argv[1:]])
    text = markdown(result, args, command)
    print(text)
    out = args.out or pathlib.Path(f"experiments/results/ablation/reference_variance_{args.env}.md")
    atomic_write_text(out, text)


if __name__ == "__main__":
    main(tyro.cli(Args))
