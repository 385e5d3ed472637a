"""A run's final policies, evaluated on many fresh episodes: success with a tight interval.

A run's own evaluations use 8 episodes per seed (``Config.eval_episodes``), so one
seed's success moves by 12.5 points per episode, and a curve's last point can sit
±25 points away from its neighbours. This evaluates every member's final policy (the
checkpoint's) with the mean action on ``--episodes`` fresh episodes, drawn from a key
that training and the run's evaluations never use, as the runner evaluates (a
diverged episode ends there and is no success), and prints per-member success and
the mean over members with a 95% interval over members (Student's t, as ``svgx report``).

    python -m experiments.final_success runs/learning/reacher4_batch/g00-reacher4-svg1_er-learned
"""

from __future__ import annotations

import argparse
import dataclasses

import jax
import numpy as np

from envs.base import Env
from svgx import rollout, rundir, runner
from svgx.plot import confidence_band
from svgx.replay import Transition
from svgx.train import make_train

# Folded into the run's seed for the fresh evaluation episodes: not a key the run used.
SALT = 7_919


def final_success(directory: str, episodes: int, keys=None) -> dict[str, np.ndarray]:
    """``{"eval_success": [...], "eval_return": [...], "eval_diverged": [...]}`` per
    member, each over ``episodes`` fresh episodes of the member's final policy (``keys``,
    one per member, draws other episodes: the run's own evaluation keys give its last
    evaluation back)."""
    spec, state, keys = _final_policies(directory, keys)
    train = make_train(dataclasses.replace(spec.config, eval_episodes=episodes))
    metrics = jax.jit(jax.vmap(train.evaluate))(state, keys)
    return {name: np.asarray(values) for name, values in metrics.items()}


def final_episodes(directory: str, episodes: int, keys=None) -> tuple[Env, Transition]:
    """``(task, episodes)``: ``episodes`` fresh episodes of every member's final policy
    with the mean action, the same ones :func:`final_success` scores (leaves
    ``[members, episodes, steps, …]``), for a closer look at how they end."""
    spec, state, keys = _final_policies(directory, keys)
    env = spec.config.make_env()

    def member(policy, key):
        return rollout.episodes(env, policy, key, episodes, deterministic=True)

    return env, jax.jit(jax.vmap(member))(state.policy, keys)


def _final_policies(directory: str, keys):
    spec = rundir.read_spec(directory)
    state = rundir.load_checkpoint(directory, runner.state_shape(spec))[0]
    if keys is None:
        keys = jax.random.split(jax.random.fold_in(jax.random.key(spec.seed), SALT), spec.seeds)
    return spec, state, keys


def parse_arguments(description: str, directories: str = "run directories (sweep groups)"):
    """``directories`` and ``--episodes`` (per member), the arguments of the scripts that
    look at a run's final policies."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("directories", nargs="+", help=directories)
    parser.add_argument("--episodes", type=int, default=256, help="episodes per member")
    return parser.parse_args()


def main() -> None:
    args = parse_arguments(__doc__.splitlines()[0])
    for directory in args.directories:
        metrics = final_success(directory, args.episodes)
        success, returns = metrics["eval_success"], metrics["eval_return"]
        _, low, high = confidence_band(success, bounds=(0.0, 1.0))
        steps = int(rundir.read_metrics(directory)[-1]["env_steps"].max())
        print(
            f"{directory}: after {steps:,} env steps, {args.episodes} episodes per member: "
            f"success {success.mean():.0%} ({low:.0%}–{high:.0%}), per member "
            f"{', '.join(f'{s:.0%}' for s in success)}; eval return {returns.mean():.1f}; "
            f"diverged episodes {int(metrics['eval_diverged'].sum())}"
        )


if __name__ == "__main__":
    main()
