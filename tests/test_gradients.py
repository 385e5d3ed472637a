"""Gradients through the simulator exist, are finite, and are right.

* The gradient of a short rollout's return with respect to the actions, by reverse
  mode through ``transition``, agrees with central finite differences in float64.
* The cause of NaN gradients through MJX's solver (``envs/mjx_patch.py``) is pinned
  by a line search constructed to overflow on every CPU, and (with ``-m slow``) a
  rollout that used to turn NaN stays finite.
"""

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
import pytest
from families import by_family
from mujoco import mjx
from mujoco.mjx._src import solver, support
from rollouts import check_central_differences, rollout_return

import envs
from envs import mjx_patch

NAMES = envs.names(playground_tasks=False)  # Playground's: tests/test_playground.py
CONTACT_TASKS = {name for name in NAMES if envs.make(name).has_contact}
# Steps of the finite-difference check: 20 without contact; contact makes the
# dynamics stiff (and only piecewise smooth), so a few steps there.
STEPS = {name: 5 if name in CONTACT_TASKS else 20 for name in NAMES}


# swimmer3, monoped and hand (64 s, 133 s, 47 s) are slow too; the default suite checks
# cartpole and lqg here (MJX's gradients against finite differences) and monoped's
# contact gradients below.
@pytest.mark.parametrize("name", by_family(NAMES, also_slow=("swimmer3", "monoped", "hand")))
def test_rollout_gradient_matches_central_differences_float64(name):
    """Directional derivatives of the return along 3 random action perturbations:
    reverse mode vs. central differences with step 1e-6, relative tolerance 1e-4
    (float64; ``hand`` gets horizon = steps so its terminal reward is inside)."""
    steps = STEPS[name]
    with jax.enable_x64(True):
        env = envs.make(name, horizon=steps) if name == "hand" else envs.make(name)
        key_s, key_a, key_n, key_d = jax.random.split(jax.random.key(7), 4)
        s0 = env.reset(key_s).astype(jnp.float64)
        assert s0.dtype == jnp.float64
        actions = 0.5 * jnp.tanh(jax.random.normal(key_a, (steps, env.action_size)))
        noise = jax.random.normal(key_n, (steps, env.noise_size))
        check_central_differences(lambda a: rollout_return(env, s0, a, noise), actions, key_d)


# --- the NaN through MJX's solver ---------------------------------------------

CARTPOLE_WITH_RAIL_LIMIT = (
    (envs.base.ASSETS / "cartpole.xml")
    .read_text()
    .replace('<flag contact="disable" constraint="disable"/>', '<flag contact="disable"/>')
    .replace('damping="0.5"/>', 'damping="0.5" limited="true" range="-2.5 2.5"/>')
)
# A state-feedback gain whose 200-step rollout on that cartpole, without the patch,
# had NaN policy gradients on the CPU where it was found (an AMD EPYC: at step 176
# the Newton direction was rounding noise). Whether a given rollout meets such a
# state depends on the CPU's rounding; the test of the cause below does not.
GAIN = np.array([[-0.2977605, -0.34497336, -2.50607, -0.85792637]], np.float32)


@pytest.fixture
def limited_cartpole():
    model = mujoco.MjModel.from_xml_string(CARTPOLE_WITH_RAIL_LIMIT)
    assert model.jnt_limited[0] and model.opt.iterations == 1
    return mjx.put_model(model, impl="jax")


def state_feedback_gradient(mx, steps):
    def rollout(gain):
        def body(carry, _):
            q, v = carry
            u = jnp.tanh(gain @ jnp.concatenate([q, v]))
            d = mjx.step(mx, mjx.make_data(mx).replace(qpos=q, qvel=v, ctrl=u))
            return (d.qpos, d.qvel), -jnp.sum(d.qpos**2)

        init = (jnp.array([0.0, 3.0]), jnp.zeros(2))
        return jax.lax.scan(body, init, None, length=steps)[1].sum()

    return jax.jit(jax.grad(rollout))(jnp.asarray(GAIN))


def converged_context(mx, search_size):
    """``(d, ctx)``: the limited cartpole far from its limit (no active constraint row),
    with the solver context at the unconstrained acceleration, which already solves
    the problem, and a Newton direction of size ``search_size`` built by hand, as
    rounding leaves it (gradient ``-M s``: converged by MuJoCo's test)."""
    d = mjx.make_data(mx).replace(
        qpos=jnp.array([0.3, 3.0]), qvel=jnp.array([0.1, -0.2]), ctrl=jnp.array([0.05])
    )
    d = jax.jit(mjx.forward)(mx, d)  # eager, op by op, it is many small compiles
    assert (d._impl.efc_force == 0).all()  # the limit is untouched
    d = d.replace(qacc=d.qacc_smooth)
    search = search_size * jnp.array([1.0, -1.0]) / jnp.sqrt(2.0)
    ctx = jax.jit(solver.Context.create)(mx, d)
    ctx = ctx.replace(search=search, grad=-support.mul_m(mx, d, search))
    return d, ctx


def line_search_vjp(mx, d, ctx):
    """``(qacc, cotangents of (search, qacc))`` after the ``_linesearch`` installed now
    (MJX's own or the patch's), traced anew on each call."""

    def qacc_after(search, qacc):
        return solver._linesearch(mx, d, ctx.replace(search=search, qacc=qacc)).qacc

    def value_and_vjp(search, qacc):
        out, pullback = jax.vjp(qacc_after, search, qacc)
        return out, pullback(jnp.ones_like(out))

    return jax.jit(value_and_vjp)(ctx.search, ctx.qacc)


def test_untouched_limit_nan_cause_is_the_unconverged_line_search(limited_cartpole):
    """The cause of the NaN, constructed so that it happens on every CPU: with a
    rounding-size Newton direction |s| = 1e-13, the line search's curvature
    f'' = s·M s ~ 1e-26 is a normal float32 but f''² (~1e-52) is below even the
    subnormal range, so the reverse pass of the Newton step α = -f'/f'' divides by
    zero. Without the patch the VJP is not finite (if an MJX upgrade fixes this
    upstream, this test says so and the patch can go); with it, it is finite and
    the acceleration is kept."""
    d, ctx = converged_context(limited_cartpole, 1e-13)
    assert mjx_patch._converged(limited_cartpole, d, ctx)
    curvature = jnp.vdot(ctx.search, support.mul_m(limited_cartpole, d, ctx.search))
    assert 1e-30 < curvature < 1e-22 and curvature * curvature == 0  # the construction holds
    mjx_patch.remove()
    try:
        _, unpatched = line_search_vjp(limited_cartpole, d, ctx)
    finally:
        mjx_patch.apply()
    assert not all(jnp.isfinite(g).all() for g in unpatched)
    qacc, patched = line_search_vjp(limited_cartpole, d, ctx)
    assert all(jnp.isfinite(g).all() for g in patched)
    np.testing.assert_array_equal(qacc, ctx.qacc)


def test_patch_leaves_an_active_constraint_solve_unchanged(limited_cartpole):
    """Where the solver has work to do (the cart pressed into its limit), the patched
    step and its VJP equal MJX's own."""

    def step(q, v, u):
        d = mjx.step(
            limited_cartpole, mjx.make_data(limited_cartpole).replace(qpos=q, qvel=v, ctrl=u)
        )
        return d.qpos, d.qvel

    def value_and_vjp(q, v, u):
        out, pullback = jax.vjp(step, q, v, u)
        return out, pullback((jnp.ones(2), jnp.ones(2)))

    args = (jnp.array([2.55, 3.0]), jnp.array([1.0, 0.5]), jnp.array([0.5]))
    patched = jax.jit(value_and_vjp)(*args)
    mjx_patch.remove()
    try:  # a new function object, so jit traces MJX's own line search
        original = jax.jit(lambda *a: value_and_vjp(*a))(*args)
    finally:
        mjx_patch.apply()
    assert patched[0][0][0] < 2.55 + 1.0 * 0.01  # the limit pushed back
    for mine, theirs in zip(jax.tree.leaves(patched), jax.tree.leaves(original), strict=True):
        np.testing.assert_allclose(mine, theirs, rtol=1e-6, atol=1e-7)


@pytest.mark.slow  # 55 s of the cold suite; the two tests above pin the cause and the fix
def test_untouched_limit_leaves_state_feedback_gradients_unchanged(limited_cartpole):
    """200 steps of state feedback with a rail limit the cart never reaches: the policy
    gradient is finite and equals the one of the same cartpole without the limit row
    (with no constraint rows MJX skips the solver)."""
    unlimited = mjx.put_model(
        mujoco.MjModel.from_xml_string(
            CARTPOLE_WITH_RAIL_LIMIT.replace(' limited="true" range="-2.5 2.5"', "")
        ),
        impl="jax",
    )
    with_limit = state_feedback_gradient(limited_cartpole, 200)
    without_limit = state_feedback_gradient(unlimited, 200)
    assert jnp.isfinite(with_limit).all()
    np.testing.assert_allclose(with_limit, without_limit, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", by_family(sorted(CONTACT_TASKS)))
def test_contact_task_policy_gradients_are_finite(name):
    """Reverse mode through 25 steps of state feedback on every contact task,
    including flight phases where all contact rows are inactive."""
    env = envs.make(name)
    s0 = env.reset(jax.random.key(0))
    gain = 0.05 * jax.random.normal(jax.random.key(1), (env.action_size, env.state_size))

    def rollout(gain):
        def body(s, t):
            a = jnp.tanh(gain @ s)
            return env.transition(s, a, jnp.zeros(env.noise_size)), env.reward(s, a, t)

        return jax.lax.scan(body, s0, jnp.arange(25))[1].sum()

    grad = jax.jit(jax.grad(rollout))(gain)
    assert jnp.isfinite(grad).all()
