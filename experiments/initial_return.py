"""The evaluation of a run's initial policy: what its first chunk's ``eval_return`` starts from.

A run directory's metrics begin after its first chunk of training; this rebuilds each
member's initial training state from the run's seed (as ``svgx.runner.run`` does) and
evaluates it on the run's own evaluation episodes, so a curve can be read against the
policy it started from (e.g. the planner on the hand ends far below it).

    python -m experiments.initial_return runs/paper/fig2_left_hand/g02-hand-planner-learned
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp

from svgx import rundir, runner
from svgx.train import make_train


def initial_evaluation(directory: str) -> dict[str, list[float]]:
    """``{"eval_return": [...], "eval_success": [...]}``, one value per member."""
    spec = rundir.read_spec(directory)
    train = make_train(spec.config)
    keys = runner._keys(spec.seed, spec.seeds)  # the runner's per-member init keys
    eval_keys = runner.evaluation_keys(spec.seed, spec.seeds)
    hp_axes = jax.tree.map(lambda x: 0 if jnp.ndim(x) else None, spec.hparams)

    def one(key, eval_key, hp):
        return train.evaluate(train.init(key, hp), eval_key)

    metrics = jax.jit(jax.vmap(one, in_axes=(0, 0, hp_axes)))(keys, eval_keys, spec.hparams)
    return {name: [float(v) for v in values] for name, values in metrics.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", help="run directories (sweep groups)")
    for directory in parser.parse_args().directories:
        metrics = initial_evaluation(directory)
        returns = metrics["eval_return"]
        print(
            f"{directory}: initial eval return {sum(returns) / len(returns):.3g} "
            f"(per member {', '.join(f'{r:.3g}' for r in returns)}), success "
            f"{sum(metrics['eval_success']) / len(returns):.0%}"
        )


if __name__ == "__main__":
    main()
