"""Can a swimmer reach its goal in an episode at all? Two measurements of the task itself.

1. Gaits: the head's steady speed under open-loop travelling-wave torques
   ``a_i(t) = sin(ω t - φ i)`` (full amplitude), over a grid of ω and φ, measured as the
   head's displacement between 10 s and 20 s from rest.
2. Open-loop optimisation: from starts at distance ``--radius`` (the task's farthest)
   with four headings, an action sequence for the whole episode optimised with Adam by
   back-propagation through the simulator (the task's own transition), first on the
   final distance plus the mean distance, then on the final distance alone. It prints
   the final distance after 100, 300 and 600 iterations; below the task's 0.1 m, the
   episode can succeed from that start.

Run: python -m experiments.swimmer_reach swimmer3 --radius 1.0
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax

import envs


def gait_speeds(env, omegas, phases, seconds=20.0):
    """Steady head speed (m/s) of each travelling wave, ``[len(omegas), len(phases)]``."""
    steps = round(seconds / env.dt)
    half = steps // 2
    s0 = env.join(jnp.zeros(env.nq), jnp.zeros(env.nv))
    links = jnp.arange(env.action_size)

    def speed(omega, phase):
        def step(s, t):
            a = jnp.sin(omega * t * env.dt - phase * links)
            s = env.transition(s, a, jnp.zeros(env.noise_size))
            return s, env.head(s)

        heads = jax.lax.scan(step, s0, jnp.arange(steps))[1]
        return jnp.linalg.norm(heads[-1] - heads[half - 1]) / (seconds - half * env.dt)

    grid = jax.vmap(jax.vmap(speed, (None, 0)), (0, None))
    return np.asarray(jax.jit(grid)(omegas, phases))


def open_loop_final_distances(env, radius, iterations=600, switch=300, lr=0.05):
    """Final head distance after optimising an open-loop action sequence from four starts
    at ``radius``; ``[4, iterations]`` (the distance of each iteration's sequence)."""
    horizon = env.horizon

    def start(angle, heading):
        qpos = (
            jnp.zeros(env.nq)
            .at[env._head_qpos]
            .set(radius * jnp.array([jnp.cos(angle), jnp.sin(angle)]))
        )
        return env.join(qpos.at[env._heading_qpos].set(heading), jnp.zeros(env.nv))

    def objective(u, s0, mean_weight):
        def step(s, u_t):
            s = env.transition(s, jnp.tanh(u_t), jnp.zeros(env.noise_size))
            return s, env.head_distance(s)

        distances = jax.lax.scan(step, s0, u)[1]
        return distances[-1] + mean_weight * distances.mean(), distances[-1]

    opt = optax.adam(lr)

    def solve(key, s0):
        u = 0.5 * jax.random.normal(key, (horizon, env.action_size))

        def iteration(carry, i):
            u, state = carry
            weight = jnp.where(i < switch, 1.0, 0.0)
            (_, final), g = jax.value_and_grad(objective, has_aux=True)(u, s0, weight)
            update, state = opt.update(g, state)
            return (u + update, state), final

        return jax.lax.scan(iteration, (u, opt.init(u)), jnp.arange(iterations))[1]

    starts = jax.vmap(start)(jnp.array([0.0, 1.5, 3.0, 4.5]), jnp.array([0.0, 2.0, -2.0, 3.1]))
    keys = jax.random.split(jax.random.key(0), 4)
    return np.asarray(jax.jit(jax.vmap(solve))(keys, starts))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "env", nargs="?", default="swimmer3", choices=["swimmer3", "swimmer5", "swimmer7"]
    )
    parser.add_argument("--radius", type=float, default=1.0, help="start distance (m)")
    args = parser.parse_args()
    env = envs.make(args.env)
    omegas = jnp.array([0.5, 1, 2, 3, 4, 6, 8, 12])
    phases = jnp.linspace(-2.5, 2.5, 11)
    speeds = gait_speeds(env, omegas, phases)
    i, j = np.unravel_index(speeds.argmax(), speeds.shape)
    best = f"{speeds.max():.3f} m/s (omega {float(omegas[i])} rad/s, phase {float(phases[j]):.1f})"
    print(f"{args.env}: best travelling wave {best}; per omega {_list(speeds.max(1))}")
    d = open_loop_final_distances(env, args.radius)
    print(
        f"open loop from {args.radius} m, final distance (m) of 4 starts after 100 / 300 / 600 "
        f"iterations: {_list(d[:, 99])} / {_list(d[:, 299])} / {_list(d[:, -1])}; "
        f"success: < {env.config.success_distance} m in {env.horizon * env.dt:g} s"
    )


def _list(values) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


if __name__ == "__main__":
    main()
