"""How often a task's simulation diverges under random actions, at a given physics step.

For each ``TASK:TIMESTEP:SUBSTEPS`` (the control step is their product), 256 rollouts of
200 control steps of uniformly random actions, with the task's own noise, through MJX;
a rollout diverges when a state is non-finite or has a coordinate beyond 1e3. MuJoCo C
steps the same model from the same states with the same actions (without the task's
noise, which only MJX's step draws) for comparison.

    python -m experiments.divergence cheetah:0.005:4 cheetah:0.0025:8 \\
        walker:0.0025:8 walker:0.00125:16 monoped:0.0025:8 monoped:0.00125:16
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from mujoco import mjx
from mujoco import rollout as mj_rollout

import envs

ROLLOUTS, STEPS, BOUND = 256, 200, 1e3


def measure(task: str, timestep: float, substeps: int) -> dict:
    env = envs.make(task)
    # Before the first step: the task's jitted physics (MjxEnv._integrate) reads its
    # model and substeps when it is first traced, and keeps them.
    env.mj_model.opt.timestep = timestep
    env.mjx_model = mjx.put_model(env.mj_model, impl="jax")
    env.n_substeps = substeps  # shadows the class's value for this instance
    key_s, key_a, key_n = jax.random.split(jax.random.key(0), 3)
    s0 = jax.vmap(env.reset)(jax.random.split(key_s, ROLLOUTS))
    actions = jax.random.uniform(key_a, (ROLLOUTS, STEPS, env.action_size), minval=-1.0, maxval=1.0)

    def one(s, actions, key):
        def body(s, inputs):
            t, a, k = inputs
            s_next = env.step(s, a, k, t)[0]
            return s_next, s_next

        ts = jnp.arange(STEPS)
        return jax.lax.scan(body, s, (ts, actions, jax.random.split(key, STEPS)))[1]

    states = np.asarray(jax.jit(jax.vmap(one))(s0, actions, jax.random.split(key_n, ROLLOUTS)))
    bad = (~np.isfinite(states) | (np.abs(np.nan_to_num(states, nan=np.inf)) > BOUND)).any(
        axis=(1, 2)
    )

    model, data = env.mj_model, mujoco.MjData(env.mj_model)
    spec = mujoco.mjtState.mjSTATE_FULLPHYSICS
    initial = np.empty((ROLLOUTS, mujoco.mj_stateSize(model, spec)))
    for i, s in enumerate(np.asarray(s0)):
        mujoco.mj_resetData(model, data)
        data.qpos[:], data.qvel[:] = s[: env.nq], s[env.nq : env.nq + env.nv]
        mujoco.mj_getState(model, data, initial[i], spec)
    control = np.repeat(np.asarray(actions), substeps, axis=1).astype(np.float64)
    c_states, _ = mj_rollout.rollout(
        model, [mujoco.MjData(model) for _ in range(2)], initial, control
    )
    c_bad = (~np.isfinite(c_states) | (np.abs(np.nan_to_num(c_states, nan=np.inf)) > BOUND)).any(
        axis=(1, 2)
    )
    return dict(mjx=int(bad.sum()), c=int(c_bad.sum()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", help="TASK:TIMESTEP:SUBSTEPS")
    print(
        f"| task | physics step (ms) | substeps | diverged of {ROLLOUTS}, MJX "
        "(with the task's noise) | MuJoCo C (no noise) |"
    )
    print("|---|---|---|---|---|")
    for variant in parser.parse_args().variants:
        task, timestep, substeps = variant.split(":")
        result = measure(task, float(timestep), int(substeps))
        print(
            f"| {task} | {1000 * float(timestep):g} | {substeps} "
            f"| {result['mjx']} | {result['c']} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
