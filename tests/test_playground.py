"""MuJoCo Playground's DM Control Suite tasks as svgx tasks (envs/playground.py): the
adapter forces gradients to exist, reproduces Playground's own step, and passes the
per-task tests of svgx's own tasks (finite random rollouts, ``transition`` replaying
``step``, gradients against finite differences).

The default suite compiles MJX for one test, the cart-pole's step, reward and
observation against Playground's; the rest (the float64 finite differences, the
random rollouts, the other tasks: about 3 min of compiling on 2 cores for the
cart-pole and reacher alone, which the suite's 20 min could not hold) run with
``pytest -m slow``. Playground is a test dependency (``make test``
installs ``.[test,playground]``), so these tests run in CI rather than skipping."""

import functools
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from rollouts import check_central_differences, random_rollout, rollout_return

import envs
from envs import playground

REQUIRED = ["CartpoleSwingup", "ReacherEasy", "CheetahRun", "WalkerWalk", "SwimmerSwimmer6"]
# What Playground 0.2.0's models set: (solver iterations, line-search steps).
PLAYGROUND_SOLVER = {
    "CartpoleSwingup": (1, 4),
    "ReacherEasy": (1, 6),
    "CheetahRun": (4, 8),
    "WalkerWalk": (2, 5),
    "SwimmerSwimmer6": (4, 8),
}


def slow_unless(task, fast):
    return task if task in fast else pytest.param(task, marks=pytest.mark.slow)


@functools.cache
def make(task, **overrides):
    return envs.make(playground.PREFIX + task, **overrides)


def test_registry_lists_playground_tasks_by_playground_names():
    names = envs.names()
    assert [n for n in names if n.startswith("playground:")] == [
        "playground:" + t for t in playground.TASKS
    ]
    assert set(REQUIRED) <= set(playground.TASKS)
    assert "playground:CartpoleSwingup" not in envs.names(playground_tasks=False)
    with pytest.raises(ValueError, match=r"unknown env 'playground:Nope'.*playground:WalkerWalk"):
        envs.make("playground:Nope")
    with pytest.raises(ValueError, match=r"unknown override\(s\) iterations.*solver_iterations"):
        envs.make("playground:CartpoleSwingup", iterations=2)
    with pytest.raises(ValueError, match=r"noise_scale=0.1: .*no exogenous noise"):
        envs.make("playground:CartpoleSwingup", noise_scale=0.1)
    with pytest.raises(ValueError, match=r"solver_iterations=0: must be an integer >= 1"):
        envs.make("playground:CartpoleSwingup", solver_iterations=0)


def test_svgx_envs_lists_playground_tasks(monkeypatch, capsys):
    from svgx import cli

    monkeypatch.setattr(playground, "TASKS", ("ReacherEasy",))  # one build, not nine
    cli.main(["envs", "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert rows[-1] == dict(
        name="playground:ReacherEasy",
        state_size=7,
        action_size=2,
        noise_size=0,
        horizon=1000,
        dt=0.02,
    )
    monkeypatch.setattr(playground, "available", lambda: False)
    cli.main(["envs"])
    assert "need pip install 'svgx[playground]'" in capsys.readouterr().out


def test_without_playground_the_error_says_what_to_install(monkeypatch):
    monkeypatch.setattr(playground, "available", lambda: False)
    with pytest.raises(
        ImportError, match=r"playground:ReacherEasy.*pip install 'svgx\[playground\]'"
    ):
        envs.make("playground:ReacherEasy")


@pytest.mark.parametrize("task", REQUIRED)
def test_adapter_forces_the_jax_backend_and_one_solver_iteration(task):
    env = make(task)
    assert env.playground._config.impl == "jax"  # Playground's default is Warp: no gradients
    assert env.mjx_model.impl.value == "jax"
    assert env.playground.mjx_model is env.mjx_model  # Playground's step runs the changed model
    iterations, ls_iterations = PLAYGROUND_SOLVER[task]
    assert env.playground_solver == dict(iterations=iterations, ls_iterations=ls_iterations)
    assert env.mj_model.opt.iterations == 1
    assert env.mj_model.opt.ls_iterations == min(ls_iterations, playground.LS_ITERATIONS)
    assert env.noise_size == 0
    assert env.state_size == env.nq + env.nv + env.task_size
    assert env.action_size == env.playground.action_size
    assert env.dt == pytest.approx(env.playground.dt)
    assert env.horizon == 1000
    assert env.has_contact == (task in ("CheetahRun", "WalkerWalk"))


# How far an episode's return through the adapter may be from Playground's own, over
# 200 steps of the same random actions from the same reset (measured: cart-pole
# equal; reacher 160 vs 161, swimmer 90.94 vs 90.92, 200 vs 200). The adapter's reward is
# the task's function of the state where the action is taken; Playground's, of the
# data its step leaves (module docstring of envs/playground.py). On the contact tasks
# the trajectories themselves part (one solver iteration, no warm start carried
# over), so only their first step is compared.
RETURN_TOLERANCE = {"CartpoleSwingup": 1e-4, "ReacherEasy": 2.0, "SwimmerSwimmer6": 1.0}


@pytest.mark.parametrize("task", [slow_unless(t, ("CartpoleSwingup",)) for t in REQUIRED])
def test_adapter_reproduces_playgrounds_steps_rewards_and_observations(task):
    from mujoco import mjx

    env = make(task)
    steps = 200

    @jax.jit
    @jax.vmap
    def both(key):
        key_a, key_r = jax.random.split(key)
        actions = jax.random.uniform(key_a, (steps, env.action_size), minval=-1, maxval=1)
        state = env.playground.reset(key_r)
        # Playground's first step from a zero warm start, as each of svgx's starts.
        zero_warm = state.data.replace(qacc_warmstart=0 * state.data.qacc_warmstart)
        first = env.playground.step(state.replace(data=zero_warm), actions[0])

        def theirs(state, a):
            state = env.playground.step(state, a)
            return state, state.reward

        def ours(s, a):
            s_next, r, *_ = env.step(s, a, key, 0)
            return s_next, r

        s0 = env.reset(key_r)
        # The task's reward and observation of s0, from all of MuJoCo's forward pass.
        data, info = env._unflatten(s0)
        full = mjx.forward(env.mjx_model, data)
        forward_r = env.playground._get_reward(full, actions[0], info, dict(env._metrics))
        forward_obs = env.playground._get_obs(full, info)
        return dict(
            reset=(env.flat_state(state), s0),
            first=(env.flat_state(first), env.transition(s0, actions[0], jnp.zeros(0))),
            returns=(
                jax.lax.scan(theirs, state, actions)[1].sum(),
                jax.lax.scan(ours, s0, actions)[1].sum(),
            ),
            reward=(forward_r, env.reward(s0, actions[0], 0)),
            observation=(forward_obs, env.observe(s0)),
        )

    out = both(jax.random.split(jax.random.key(0), 4))
    np.testing.assert_array_equal(*out["reset"])
    np.testing.assert_allclose(*out["first"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(*out["reward"])
    np.testing.assert_array_equal(*out["observation"])
    if task in RETURN_TOLERANCE:
        theirs, ours = out["returns"]
        assert (theirs > 0).any()
        np.testing.assert_allclose(ours, theirs, rtol=0.01, atol=RETURN_TOLERANCE[task])


@pytest.mark.parametrize("task", [slow_unless(t, ()) for t in REQUIRED])
def test_random_rollouts_are_finite_and_transition_reproduces_step(task):
    """In float64 on the contact tasks: in float32 the walker's replay, a differently
    fused program, parted from its step by 0.49 at one of 400 states, float32 rounding
    amplified by a stiff contact within the step's 10 physics substeps."""
    contact = make(task).has_contact
    with jax.enable_x64(contact):
        env = envs.make(playground.PREFIX + task) if contact else make(task)  # float64 model
        s, a, s_next, r, done, noise = random_rollout(env, jax.random.key(1), steps=100, batch=4)
        assert jnp.isfinite(s_next).all() and jnp.isfinite(r).all()
        assert ((r >= 0) & (r <= 1)).all()  # DM Control's rewards
        replay = jax.jit(jax.vmap(jax.vmap(env.transition)))(s, a, noise)
    tol = 1e-6 if contact else 1e-3
    np.testing.assert_allclose(replay, s_next, rtol=tol, atol=tol)
    assert not done.any()  # the horizon is 1000


def test_tolerance_has_playgrounds_values_and_finite_gradients():
    from mujoco_playground._src import reward

    x = jnp.linspace(-3.0, 3.0, 61)
    cases = [
        dict(bounds=(1.2, float("inf")), margin=0.6),  # the walker's standing term
        dict(bounds=(1.0, float("inf")), margin=0.5, value_at_margin=0.5, sigmoid="linear"),
        dict(bounds=(-float("inf"), 0.5), margin=1.0, sigmoid="long_tail"),
        dict(bounds=(-0.25, 0.25), margin=0.0),
        dict(bounds=(0.0, 0.0), margin=2.0, sigmoid="quadratic", value_at_margin=0.0),
    ]
    for case in cases:
        np.testing.assert_allclose(playground._tolerance(x, **case), reward.tolerance(x, **case))
        grad = jax.vmap(jax.grad(lambda x, case=case: playground._tolerance(x, **case)))(x)
        assert jnp.isfinite(grad).all(), case
    theirs = jax.vmap(jax.grad(lambda x: reward.tolerance(x, (1.2, float("inf")), 0.6)))(x)
    assert not jnp.isfinite(theirs).all()  # what the replacement is for


@pytest.mark.parametrize("task", [slow_unless(t, ()) for t in REQUIRED])
def test_rollout_gradient_matches_central_differences_float64(task):
    """As tests/test_gradients.py does for svgx's tasks: directional derivatives of a
    short rollout's return along random action perturbations, reverse mode against
    central differences (float64). The reacher's reward is 0 or 1 (no margin) and the
    cheetah's is 0 below standstill, so the objective adds a fixed random projection
    of the final observation: the check is of the dynamics' gradients too."""
    steps = 5 if task in ("CheetahRun", "WalkerWalk") else 10
    with jax.enable_x64(True):
        env = envs.make(playground.PREFIX + task)
        key_s, key_a, key_d = jax.random.split(jax.random.key(7), 3)
        s0 = env.reset(key_s).astype(jnp.float64)
        if task == "CartpoleSwingup":  # hanging at rest, the reward's gradients are ~0
            s0 = s0.at[1].set(2.0)
        actions = 0.5 * jnp.tanh(jax.random.normal(key_a, (steps, env.action_size)))
        noise = jnp.zeros((steps, 0))
        weights = jax.random.normal(jax.random.key(8), (env.observation_size,))

        def objective(actions):
            final = jax.lax.scan(
                lambda s, a: (env.transition(s, a, jnp.zeros(0)), None), s0, actions
            )
            return rollout_return(env, s0, actions, noise) + env.observe(final[0]) @ weights

        check_central_differences(objective, actions, key_d)


def test_a_state_of_another_precision_than_the_model_is_named():
    env = make("CartpoleSwingup")  # built in float32
    with jax.enable_x64(True):
        s = env.reset(jax.random.key(0)).astype(jnp.float64)
        with pytest.raises(ValueError, match=r"built in float32 and given a float64 state"):
            env.transition(s, jnp.zeros(1, jnp.float64), jnp.zeros(0))


def test_success_is_half_the_rewards_maximum_at_the_final_state():
    env = make("CartpoleSwingup")
    hanging = env.reset(jax.random.key(0))
    upright = hanging.at[1].set(0.0).at[env.nq :].set(0.0)  # pole up, at rest, centred
    success = jax.jit(env.success)
    assert not bool(success(hanging)) and bool(success(upright))


@pytest.mark.slow
def test_svgx_trains_on_a_playground_task(tmp_path):
    """Every algorithm's interface is the task interface: svg1_er with simulator
    Jacobians runs two chunks on the cart-pole cut to 50 steps, with finite metrics."""
    from svgx import cli, rundir

    cli.main(
        [
            *("train", "--env", "playground:CartpoleSwingup", "--env-options", "horizon", "50"),
            *("--algo", "svg1_er", "--steps", "400", "--chunks", "2", "--seeds", "2"),
            *("--n-envs", "2", "--eval-episodes", "2", "--out", str(tmp_path / "run")),
        ]
    )
    rows = rundir.read_metrics(tmp_path / "run")  # one per chunk, each metric per seed
    assert len(rows) == 2 and all(np.isfinite(r["eval_return"]).all() for r in rows)
    assert all(
        (np.isfinite(r["policy_grad_norm"]) & (r["policy_grad_norm"] > 0)).all() for r in rows
    )


def test_the_target_is_drawn_where_the_state_puts_it():
    """``write_mjdata`` places the mocap target too: two states that differ only in
    the reacher's target draw different frames."""
    from svgx import render

    env = make("ReacherEasy")
    s = np.asarray(env.reset(jax.random.key(0)))
    moved = s.copy()
    moved[env.nq + env.nv : env.nq + env.nv + 2] *= -1  # the target's x, y
    camera = env.mj_model.camera(0).id if env.mj_model.ncam else None
    frames = render.render_states(env, np.stack([s, moved]), width=64, height=48, camera=camera)
    assert np.abs(frames[0].astype(int) - frames[1]).sum() > 0
