"""Every registered task: interface, sizes, determinism of ``transition``, finite
rollouts, smooth rewards, and errors for bad names and overrides."""

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from families import by_family
from rollouts import random_rollout

import envs

NAMES = envs.names(playground_tasks=False)  # Playground's: tests/test_playground.py
# The paper's tasks (§6), in its order; the registry lists them first.
PAPER_TASKS = [
    "hand",
    "cartpole",
    "swimmer3",
    "swimmer5",
    "swimmer7",
    "reacher4",
    "reacher_moving",
    "gripper",
    "monoped",
    "cheetah",
    "cheetah_springs",
    "walker",
]
# Probes that are not the paper's (no MuJoCo): registered after the paper's tasks.
PROBES = ["lqg"]

# Sizes the paper gives (§6); the others are ours (see each task's docstring).
PAPER_SIZES = {
    "swimmer3": (10, 2),
    "swimmer5": (14, 4),
    "swimmer7": (18, 6),
    "reacher4": (8, 3),
    "monoped": (14, 4),
    "cheetah": (18, 6),
    "cheetah_springs": (18, 6),
    "walker": (18, 6),
    "cartpole": (4, 1),
}


@functools.cache
def make(name, **overrides):
    return envs.make(name, **overrides)


# The MuJoCo MJX tasks (the MuJoCo-specific tests run on these only).
MJX_NAMES = [n for n in NAMES if isinstance(make(n), envs.MjxEnv)]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gripper", "monoped", "cheetah", "cheetah_springs", "walker"])
def test_contact_tasks_do_not_diverge_under_random_actions(name):
    """256 rollouts of 200 steps of uniformly random actions (with the task's noise) stay
    finite and physical. At 5 ms the cheetah diverged in 4 of them (MuJoCo C: 7), at
    2.5 ms the walker in 2 (MuJoCo C: 4) and the monoped in 1, with |s| past 7e4 first."""
    env = make(name)
    states = random_rollout(env, jax.random.key(0), steps=200, batch=256)[2]
    largest = np.asarray(jnp.abs(states).max(axis=(1, 2)))
    assert np.isfinite(largest).all() and largest.max() < 1e3, np.sort(largest)[-5:]


def test_contact_tasks_are_the_ones_with_feet_or_fingers():
    contact = {n for n in NAMES if make(n).has_contact}
    assert contact == {"gripper", "monoped", "cheetah", "cheetah_springs", "walker"}


def test_registry_lists_the_papers_tasks():
    """All of the paper's tasks, in its order, then the probes; the paper's are MJX."""
    assert NAMES == PAPER_TASKS + PROBES
    assert MJX_NAMES == PAPER_TASKS


@pytest.mark.parametrize("name", NAMES)
def test_sizes_and_interface(name):
    env = make(name)
    key = jax.random.key(0)
    s = jax.jit(env.reset)(key)
    assert s.shape == (env.state_size,)
    if name in PAPER_SIZES:
        assert (env.state_size, env.action_size) == PAPER_SIZES[name]
    assert jax.jit(env.observe)(s).shape == (env.observation_size,)
    assert env.action_low.shape == env.action_high.shape == (env.action_size,)
    assert np.all(env.action_low < env.action_high)
    assert env.horizon >= 1 and env.dt > 0 and env.noise_size >= 0
    assert jax.jit(env.success)(s).dtype == jnp.bool_


@pytest.mark.parametrize("name", by_family(NAMES, also_slow=("swimmer3",)))
def test_random_rollouts_are_finite_and_transition_reproduces_step(name):
    env = make(name)
    s, a, s_next, r, done, noise = random_rollout(env, jax.random.key(1), steps=200, batch=16)
    assert jnp.isfinite(s_next).all(), "non-finite state in 200 random steps"
    assert jnp.isfinite(r).all()
    assert noise.shape == (16, 200, env.noise_size)
    # The step's reported noise reproduces the step (the simulator Jacobian source).
    replay = jax.jit(jax.vmap(jax.vmap(env.transition)))(s, a, noise)
    # float32: the replay is a differently fused program, and one step is
    # several substeps of a stiff articulated body, so allow rounding; a contact
    # resolved in one solver iteration amplifies it (monoped: 4e-3 measured), and
    # where a contact starts within the step, one program may resolve it a substep
    # before the other (monoped at 16 substeps: 1 of 3,200 steps, 0.5 rad/s apart).
    # A replay that did not use the step's noise would miss nearly every step.
    tol = 1e-2 if env.has_contact else 1e-3
    close = np.isclose(replay, s_next, rtol=tol, atol=tol).all(axis=-1)
    if env.has_contact:
        assert close.mean() >= 0.99, f"{(~close).sum()} of {close.size} steps not replayed"
    else:
        np.testing.assert_allclose(replay, s_next, rtol=tol, atol=tol)
    # done marks the horizon and nothing else (no task terminates early).
    expected_done = jnp.arange(200) + 1 >= env.horizon
    assert (done == expected_done).all()


# The variants' (families.py) run with -m slow: 5-13 s each of compiling on 2 cores.
@pytest.mark.parametrize("name", by_family(NAMES))
def test_reward_gradients_are_finite(name):
    env = make(name)
    s = env.reset(jax.random.key(2))
    a = 0.3 * jnp.ones(env.action_size)
    grad_s, grad_a = jax.jit(jax.grad(env.reward, argnums=(0, 1)))(s, a, env.horizon - 1)
    assert jnp.isfinite(grad_s).all() and jnp.isfinite(grad_a).all()
    assert jnp.abs(grad_s).sum() > 0, "reward does not depend on the state"


def test_hand_reward_is_terminal_only():
    env = make("hand", horizon=50)
    s = env.reset(jax.random.key(0))
    a = jnp.ones(2)
    rewards = jax.vmap(env.reward, (None, None, 0))(s, a, jnp.arange(50))
    assert (rewards[:-1] == 0).all()
    assert rewards[-1] < 0
    with pytest.raises(ValueError, match="needs the time index t"):
        env.step(s, a, jax.random.key(1))


def test_hand_targets_are_both_drawn():
    env = make("hand")
    s = jax.vmap(env.reset)(jax.random.split(jax.random.key(0), 64))
    targets = jax.vmap(lambda s: env.split(s)[2])(s)
    assert len(np.unique(np.asarray(targets), axis=0)) == 2


def test_hand_targets_are_where_the_ball_hangs_at_rest():
    """With the hand held at a target (MuJoCo C, hand's joints reset every step), the ball
    settles within a tenth of the success distance of the target's ball position."""
    import mujoco

    from envs.tasks.hand import TARGETS

    env = make("hand", noise_scale=0.0)
    model = env.mj_model
    data = mujoco.MjData(model)
    hand, ball = env._hand_qpos, env._ball_qpos
    for target in np.asarray(TARGETS):
        data.qpos[:] = 0.0
        data.qvel[:] = 0.0
        data.qpos[hand], data.qpos[ball] = target[:2], target[:2] - [0.0, 0.3]  # dropped
        for _ in range(2000):  # 20 s: the spring's oscillation decays in about 1 s
            mujoco.mj_step(model, data)
            data.qpos[hand], data.qvel[hand] = target[:2], 0.0
        error = np.linalg.norm(data.qpos[ball] - target[2:])
        assert error < 0.1 * env.config.success_distance, (target, data.qpos)


def test_monoped_torque_noise_is_five_percent_of_max_torque():
    env = make("monoped")
    assert env.config.noise_scale == 0.05
    s = env.reset(jax.random.key(0))
    keys = jax.random.split(jax.random.key(1), 4000)
    noise = jax.vmap(env.sample_noise)(keys)
    torque = jax.vmap(env._applied_force, (None, 0))(s, noise)[:, env._actuated_dofs]
    max_torque = env.mj_model.actuator_gear[:, 0]
    std = np.asarray(torque.std(axis=0)) / max_torque
    # 4000 samples: the sample std is within 5% of the truth with overwhelming probability.
    np.testing.assert_allclose(std, 0.05, rtol=0.05)
    assert np.all(np.abs(np.asarray(torque.mean(axis=0))) / max_torque < 0.005)


def test_moving_target_stays_in_the_box_and_moves():
    env = make("reacher_moving", noise_scale=0.3, horizon=1000)
    s, *_ = random_rollout(env, jax.random.key(3), steps=1000, batch=8)
    target = jax.vmap(jax.vmap(env.target))(s)
    from envs.tasks.reacher import WALL

    assert (jnp.abs(target) <= WALL + 1e-6).all()
    travelled = jnp.abs(jnp.diff(target, axis=1)).sum(axis=(1, 2))
    assert (travelled > 0.5).all()
    # Reflections happened: some target reached within 2 cm of a wall.
    assert (jnp.abs(target) > WALL - 0.02).any()


def test_noise_size_is_part_of_the_interface():
    """Every task defines ``noise_size``; a task that does not cannot be built."""

    class NoNoiseSize(envs.MjxEnv):
        name, asset = "no_noise_size", "cartpole.xml"
        reset = reward = success = None

    with pytest.raises(TypeError, match="noise_size"):
        NoNoiseSize(envs.EnvConfig())
    for name in NAMES:
        assert isinstance(make(name).noise_size, int)


def test_joints_are_found_by_name():
    env = make("cartpole")  # qpos = (slider, hinge)
    assert (env.qpos_address("hinge"), env.dof_address("slider")) == (1, 0)
    assert env.qpos_address(["slider", "hinge"]) == slice(0, 2)  # consecutive: a slice
    np.testing.assert_array_equal(env.qpos_address(["hinge", "slider"]), [1, 0])
    with pytest.raises(KeyError):
        env.qpos_address("no_such_joint")


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError, match=r"unknown env 'pendulum'.*valid names: hand, cartpole"):
        envs.make("pendulum")


def test_unknown_override_lists_valid_fields():
    with pytest.raises(ValueError, match=r"unknown override\(s\) horizn.*valid fields: horizon"):
        envs.make("cartpole", horizn=10)


@pytest.mark.parametrize("bad", [0, -5, 2.5])
def test_bad_horizon_is_rejected(bad):
    with pytest.raises(ValueError, match="horizon"):
        envs.make("cartpole", horizon=bad)


def test_wrong_shapes_are_named():
    env = make("cartpole")
    with pytest.raises(ValueError, match=r"state has shape \(3,\); env 'cartpole' needs"):
        env.check_shapes(jnp.zeros(3), jnp.zeros(1))
    with pytest.raises(ValueError, match=r"action has shape \(2,\)"):
        env.check_shapes(jnp.zeros(4), jnp.zeros(2))


def test_large_batch_does_not_deadlock():
    """jaxlib 0.10's batched LAPACK Cholesky (MJX's Newton solver under vmap) parks
    every XLA CPU worker waiting on its own subtasks: the gripper's step at batch 2048
    hung forever at 0% CPU on 2 cores. The pinned jaxlib runs it. In a fresh process
    with a timeout, so a regression fails instead of hanging the suite."""
    code = (
        "import envs, jax, jax.numpy as jnp, svgx\n"
        "svgx.enable_compilation_cache()\n"  # the suite's cache: compiled once
        "env = envs.make('gripper')\n"
        "s = jax.jit(jax.vmap(env.reset))(jax.random.split(jax.random.key(0), 2048))\n"
        "a, xi = jnp.zeros((2048, env.action_size)), jnp.zeros((2048, env.noise_size))\n"
        "out = jax.jit(jax.vmap(env.transition))(s, a, xi)\n"
        "print(bool(jnp.isfinite(out).all()))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("True")


@pytest.mark.parametrize(("heading", "expected"), [(np.pi, (1.0, 0.0)), (np.pi / 2, (0.0, 1.0))])
def test_swimmer_can_observe_the_goal_in_its_heads_frame(heading, expected):
    """Head at (1, 0): facing -x the goal is 1 m ahead; facing +y it is 1 m to the left."""
    env = make("swimmer3", goal_in_head_frame=True)
    assert env.observation_size == make("swimmer3").observation_size + 2
    qpos = jnp.zeros(env.nq).at[env._head_qpos].set(jnp.array([1.0, 0.0]))
    s = env.join(qpos.at[env._heading_qpos].set(heading), jnp.zeros(env.nv))
    np.testing.assert_allclose(env.observe(s)[-2:], expected, atol=1e-6)


@pytest.mark.parametrize("name", ["reacher4", "reacher_moving"])
def test_reacher_can_observe_the_target_from_its_fingertip(name):
    """The two extra features are the target minus the fingertip, which MuJoCo C's own
    forward kinematics gives independently of MJX."""
    env = make(name, observe_to_target=True)
    assert env.observation_size == make(name).observation_size + 2
    s = env.reset(jax.random.key(3))
    s = s.at[: env.nq].set(jnp.array([0.7, -1.2, 2.0]))
    data = mujoco.MjData(env.mj_model)
    env.write_mjdata(data, np.asarray(s))
    mujoco.mj_forward(env.mj_model, data)
    fingertip = data.site_xpos[env.mj_model.site("fingertip").id][:2]
    np.testing.assert_allclose(env.observe(s)[-2:], env.target(s) - fingertip, atol=1e-5)
    assert np.linalg.norm(env.observe(s)[-2:]) > 0.1  # not a trivially zero offset


def test_the_physics_is_traced_once_however_transition_is_called(monkeypatch):
    """A chunk calls ``transition`` from several places under vmap, scan and grad; the
    MJX step is traced on the first call only (the jitted ``_integrate``), which halves
    a cart-pole chunk's tracing (experiments/results/bench_warm.md)."""
    from mujoco import mjx

    env = envs.make("cartpole")
    traced, step = [], mjx.step
    monkeypatch.setattr(mjx, "step", lambda m, d: traced.append(1) or step(m, d))
    s, a = jnp.zeros(env.state_size), jnp.zeros(env.action_size)
    noise = jnp.zeros(env.noise_size)
    jax.make_jaxpr(env.transition)(s, a, noise)
    first = len(traced)
    assert first >= 1
    batch = (jnp.zeros((3, env.state_size)), jnp.zeros((3, env.action_size)))
    jacobians = jax.vmap(jax.jacrev(env.transition, argnums=(0, 1)), in_axes=(0, 0, None))
    jax.make_jaxpr(jacobians)(*batch, noise)

    def rollout(s):
        return jax.lax.scan(lambda s, _: (env.transition(s, a, noise), None), s, None, length=3)

    jax.make_jaxpr(jax.grad(lambda s: rollout(s)[0].sum()))(s)
    assert len(traced) == first


def test_the_kinematics_of_a_reward_are_traced_once(monkeypatch):
    """The same for the forward kinematics that rewards read (``site_pos``)."""
    from mujoco import mjx

    env = envs.make("reacher4")
    traced, kinematics = [], mjx.kinematics
    monkeypatch.setattr(mjx, "kinematics", lambda m, d: traced.append(1) or kinematics(m, d))
    s, a = jnp.zeros(env.state_size), jnp.zeros(env.action_size)
    jax.make_jaxpr(env.reward)(s, a, 0)
    assert len(traced) == 1
    jax.make_jaxpr(jax.vmap(jax.grad(env.reward), in_axes=(0, None, None)))(
        jnp.zeros((3, env.state_size)), a, 0
    )
    jax.make_jaxpr(env.success)(s)
    assert len(traced) == 1


@pytest.mark.parametrize("opt_in", [False, True])
def test_mjx_is_imported_without_warp_unless_asked(opt_in):
    """Importing svgx's tasks leaves Warp (installed with MuJoCo Playground) unloaded,
    3-4 s of every start; Warp stays importable, and SVGX_MJX_WARP=1 loads it."""
    import importlib.util
    import os

    if opt_in and importlib.util.find_spec("warp") is None:
        pytest.skip("Warp is not installed")
    code = (
        "import sys, envs\n"
        "from mujoco.mjx import warp as mjx_warp\n"
        "print('warp' in sys.modules, mjx_warp.WARP_INSTALLED)\n"
        "import importlib.util; print(importlib.util.find_spec('warp') is not None)\n"
    )
    env = {**os.environ, "SVGX_MJX_WARP": "1" if opt_in else "0"}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    loaded, importable = result.stdout.strip().splitlines()
    assert loaded == ("True True" if opt_in else "False False")
    assert importable == str(importlib.util.find_spec("warp") is not None)
