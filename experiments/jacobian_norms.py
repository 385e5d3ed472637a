"""How the simulator's Jacobians are spread over the states a task visits: the median and
upper percentiles of ``‖∂f/∂s‖_F`` and ``‖∂f/∂a‖_F`` over the states of episodes with
uniform-random actions from the task's initial states, and the share of
``Σ_i ‖J_i‖²_F`` that the top 1% of states hold. Where that share is large (stiff contact
states), a batch's ratio-of-sums Jacobian error (``svgx.dynamics.jacobian_errors``) is
carried by those few states, and its per-sample median says more about a typical one.

    python -m experiments.jacobian_norms cheetah walker
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np

import envs
import svgx
from svgx.dynamics import jacobians, make_dynamics


def visited(env, key, n_envs: int, steps: int):
    """``(s, a, s', noise)`` of ``n_envs`` episodes of ``steps`` uniform-random actions."""

    def episode(key):
        key_reset, key_steps = jax.random.split(key)

        def step(carry, key):
            s, t = carry
            key_action, key_env = jax.random.split(key)
            a = jax.random.uniform(key_action, (env.action_size,), minval=-1.0, maxval=1.0)
            s_next, _, _, info = env.step(s, a, key_env, t)
            return (s_next, t + 1), (s, a, s_next, info["noise"])

        start = (env.reset(key_reset), jnp.zeros((), jnp.int32))
        return jax.lax.scan(step, start, jax.random.split(key_steps, steps))[1]

    data = jax.jit(jax.vmap(episode))(jax.random.split(key, n_envs))
    return [x.reshape(-1, *x.shape[2:]) for x in data]


def norms(env, s, a, s_next, noise) -> tuple[np.ndarray, np.ndarray]:
    """``(‖∂f/∂s‖_F, ‖∂f/∂a‖_F)`` per state, at the noise the simulator infers."""
    simulator = make_dynamics("simulator", env)

    def one(x):
        s, a, s_next, noise = x
        j_s, j_a = jacobians(simulator, s, a, simulator.infer_noise(s, a, s_next, noise))
        return jnp.linalg.norm(j_s), jnp.linalg.norm(j_a)

    n_s, n_a = jax.jit(lambda x: jax.lax.map(one, x, batch_size=64))((s, a, s_next, noise))
    return np.asarray(n_s), np.asarray(n_a)


def summary(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    median, p90, p99, top = np.percentile(values, [50, 90, 99, 100])
    squares = np.sort(values**2)[::-1]
    share = squares[: max(1, len(values) // 100)].sum() / squares.sum()
    return (
        f"median {median:.3g}, p90 {p90:.3g}, p99 {p99:.3g}, max {top:.3g}; "
        f"the top 1% of states hold {share:.0%} of the sum of squares"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tasks", nargs="+", help="registered task names")
    parser.add_argument("--episodes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=200, help="steps per episode")
    args = parser.parse_args()
    svgx.enable_compilation_cache()
    for task in args.tasks:
        env = envs.make(task)
        data = visited(env, jax.random.key(0), args.episodes, args.steps)
        n_s, n_a = norms(env, *data)
        print(f"{task} ({len(n_a)} states): ‖∂f/∂s‖_F {summary(n_s)}")
        print(f"{task} ({len(n_a)} states): ‖∂f/∂a‖_F {summary(n_a)}")


if __name__ == "__main__":
    main()
