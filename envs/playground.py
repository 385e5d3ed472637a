"""MuJoCo Playground's DM Control Suite tasks as svgx tasks (``envs.make("playground:NAME")``).

Playground (PyPI ``playground``, the optional extra ``svgx[playground]``) ships the DM
Control Suite on MJX. The adapter wraps Playground's own environment object and calls
its ``step`` for the physics and its own reward and observation functions, so the task
is Playground's; what it adds is svgx's interface of pure functions on a flat state:

* ``s = concat(qpos, qvel, task)`` where ``task`` is what Playground keeps outside
  ``qpos``/``qvel`` and its step reads: the mocap bodies' positions (the targets of
  ``Reacher*`` and ``SwimmerSwimmer6``, set at reset) and the floating-point entries
  of ``State.info`` (e.g. ``CartpoleSwingup``'s ``time_out``). ``info["rng"]`` is not
  part of the state: none of these tasks draws noise in ``step`` (``noise_size == 0``).
* ``transition(s, a, ξ)``: Playground's ``step`` from an ``mjx.Data`` rebuilt from
  ``s``. ``mjx.step`` recomputes every derived quantity from ``qpos``/``qvel``, so
  this is Playground's step except for the solver's warm start, which, as in every
  svgx task, starts from zero at each control step.
* ``reward(s, a, t)``: the task's own reward function (Playground's ``_get_reward``)
  of the state ``s`` where ``a`` is taken, with ``a``: a known function of
  ``(s, a)``, as the SVG estimators need it (paper §2), and no physics step, so that
  with learned Jacobians nothing goes through the simulator. Playground's ``step``
  instead returns that function of the data its step leaves behind, whose
  positions are those after the step and whose kinematics (``xpos``, ``xmat``,
  sensors) are those at the start of the step's last physics substep. The two
  reward sequences of an episode are the same function sampled up to one control
  step apart; ``tests/test_playground.py`` measures how far their returns differ.
* ``observe(s)``: Playground's ``_get_obs`` of the kinematics of ``s`` (positions,
  velocities and the sensors of both stages), also without a physics step.
* ``success(s)``: DM Control rewards lie in [0, 1] per step; an episode succeeds if
  the reward at its final state (with ``a = 0``) is at least :data:`SUCCESS_REWARD`
  (half the maximum), e.g. the pole up and the cart near the centre, the fingertip
  in the target, the cheetah at 5 m/s.
* No early termination: Playground's ``done`` only flags NaN, which svgx's training
  loop reports itself (``svgx.divergence``).

What the adapter changes, and why (both needed for gradients):

* ``impl="jax"``: Playground's default backend is Warp, which has no gradients.
* The constraint solver runs ``iterations = 1`` (Newton) with
  ``ls_iterations = min(the model's, 4)``: with more iterations MJX's solver runs a
  ``lax.while_loop``, which reverse mode cannot pass. Playground's models set
  (iterations, line-search steps) to (1, 4) for the cart-pole, (1, 6) for the
  reacher, (4, 8) for the cheetah and the 6-link swimmer and (2, 5) for the walker
  (``PlaygroundEnv.playground_solver`` records them). One iteration is one Newton step
  from the unconstrained acceleration, which resolves contacts and joint limits
  less exactly: on the contact tasks and the swimmer's limited joints the dynamics
  are not exactly Playground's. svgx's patch of MJX's line search
  (``envs.mjx_patch``, applied on import of ``envs``) keeps that iteration's
  reverse pass finite.
* The rewards' ``tolerance`` function is one with Playground's values and finite
  gradients at infinite bounds (:func:`_tolerance`; Playground's gave the walker's
  reward NaN gradients).
* The reacher's model is built with ``MjSpec.body`` (Playground 0.2.0 calls
  ``MjSpec.find_body``, absent from MuJoCo 3.17; :func:`_reacher_model_fixed`).

Playground computes its reset's observation before it places the reacher's and the
swimmer's target, so the first observation of its own episodes points at the old
target; ``observe(reset(key))`` points at the new one.

Which tasks: :data:`TASKS`, the DM Control Suite tasks whose state fits the above
(tested: ``tests/test_playground.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
from typing import Any

import jax
import jax.numpy as jnp
import mujoco
import numpy as np

from envs.base import EnvConfig, MjxEnv

PREFIX = "playground:"
# Playground's DM Control Suite tasks the adapter offers: those whose whole state is
# qpos, qvel, mocap positions and float info entries, and whose step draws no noise.
TASKS = (
    "CartpoleBalance",
    "CartpoleSwingup",
    "ReacherEasy",
    "ReacherHard",
    "CheetahRun",
    "WalkerStand",
    "WalkerWalk",
    "WalkerRun",
    "SwimmerSwimmer6",
)
SUCCESS_REWARD = 0.5
LS_ITERATIONS = 4  # the line-search steps of svgx's own contact tasks
INSTALL = "pip install 'svgx[playground]'"


def available() -> bool:
    """Whether MuJoCo Playground is installed."""
    return importlib.util.find_spec("mujoco_playground") is not None


@contextlib.contextmanager
def _reacher_model_fixed():
    """Playground 0.2.0 builds the reacher's model with ``MjSpec.find_body`` unless
    ``mujoco.__version__ >= "3.3.0"``, a string comparison that is false for "3.17.0";
    MuJoCo 3.17 has only ``MjSpec.body``. While loading, its ``_make_model`` is one
    that calls ``body``."""
    from mujoco_playground._src.dm_control_suite import reacher

    def make_model(xml_path, target_size, assets):
        spec = mujoco.MjSpec.from_string(xml_path.read_text(), assets)
        spec.body("target").first_geom().size[0] = target_size
        return spec.compile()

    original = reacher._make_model
    reacher._make_model = make_model
    try:
        yield
    finally:
        reacher._make_model = original


def _tolerance(x, bounds=(0.0, 0.0), margin=0.0, sigmoid="gaussian", value_at_margin=0.1):
    """Playground's ``reward.tolerance`` with the same values and finite gradients.

    Playground computes the distance to an infinite bound as ``x - inf`` in the branch
    of a ``where`` that in-bounds points do not take; its value is discarded, but its
    reverse pass multiplies ``0`` by ``inf`` (e.g. ``exp(-(x - inf)²)``' derivative), so
    ``WalkerWalk``'s reward had NaN state gradients. Here that side's distance is 0.
    """
    from mujoco_playground._src import reward

    lower, upper = bounds
    if lower > upper:
        raise ValueError("Lower bound must be <= upper bound.")
    if margin < 0:
        raise ValueError("`margin` must be non-negative.")
    in_bounds = jnp.logical_and(lower <= x, x <= upper)
    if margin == 0:
        return jnp.where(in_bounds, 1.0, 0.0)
    below = lower - x if np.isfinite(lower) else jnp.zeros_like(x)
    above = x - upper if np.isfinite(upper) else jnp.zeros_like(x)
    d = jnp.where(x < lower, below, above) / margin
    return jnp.where(in_bounds, 1.0, reward._sigmoids(d, value_at_margin, sigmoid))


@contextlib.contextmanager
def _finite_tolerance():
    """Playground's tasks call ``reward.tolerance`` while this is in effect: ours."""
    from mujoco_playground._src import reward

    original = reward.tolerance
    reward.tolerance = _tolerance
    try:
        yield
    finally:
        reward.tolerance = original


@dataclasses.dataclass(frozen=True)
class PlaygroundConfig(EnvConfig):
    """Attributes:
    horizon: episode length in control steps (Playground's ``episode_length``: 1000).
    noise_scale: 0: these tasks have no exogenous noise.
    solver_iterations: the constraint solver's iterations; 1, the only value whose
        solver reverse mode can differentiate (module docstring).
    ls_iterations: the solver's line-search steps; None: the model's, at most 4.
    """

    horizon: int = 1000
    noise_scale: float = 0.0
    solver_iterations: int = 1
    ls_iterations: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if self.noise_scale != 0:
            raise ValueError(
                f"noise_scale={self.noise_scale!r}: Playground's tasks have no exogenous "
                "noise; only 0 is allowed"
            )
        for name in ("solver_iterations", "ls_iterations"):
            value = getattr(self, name)
            if value is None and name == "ls_iterations":
                continue
            if not isinstance(value, int | np.integer) or value < 1:
                raise ValueError(f"{name}={value!r}: must be an integer >= 1")


class PlaygroundEnv(MjxEnv):
    """One of Playground's DM Control Suite tasks (:data:`TASKS`) as an svgx task."""

    def __init__(self, task: str, config: PlaygroundConfig):
        if task not in TASKS:
            raise ValueError(f"unknown Playground task {task!r}; valid: {', '.join(TASKS)}")
        if not available():
            raise ImportError(
                f"env {PREFIX + task!r} needs MuJoCo Playground, an optional dependency: {INSTALL}"
            )
        from mujoco import mjx
        from mujoco_playground import dm_control_suite

        self.name = PREFIX + task
        self.task = task
        self.config = config
        with _reacher_model_fixed():
            self.playground = dm_control_suite.load(task, config_overrides={"impl": "jax"})
        model = self.playground.mj_model
        # As loaded (for the docs and tests); then what makes gradients exist.
        self.playground_solver = dict(
            iterations=int(model.opt.iterations), ls_iterations=int(model.opt.ls_iterations)
        )
        model.opt.iterations = config.solver_iterations
        model.opt.ls_iterations = config.ls_iterations or min(
            self.playground_solver["ls_iterations"], LS_ITERATIONS
        )
        self.playground._mjx_model = mjx.put_model(model, impl="jax")
        self.mj_model = model
        self.mjx_model = self.playground.mjx_model
        self.nq, self.nv = model.nq, model.nv
        self.nmocap = model.nmocap
        self.action_size = model.nu
        self.dt = float(self.playground.dt)

        # What a Playground state holds besides qpos and qvel, from one reset.
        state = jax.eval_shape(self.playground.reset, jax.random.key(0))
        unsupported = {
            k: v.dtype
            for k, v in state.info.items()
            if k != "rng" and not jnp.issubdtype(v.dtype, jnp.floating)
        }
        if unsupported:
            raise ValueError(
                f"Playground task {task!r} keeps non-float entries in its info "
                f"({unsupported}), which a flat svgx state cannot carry"
            )
        self._info_keys = tuple(sorted(k for k in state.info if k != "rng"))
        self._info_shapes = {k: state.info[k].shape for k in self._info_keys}
        self._metrics = {k: jnp.zeros(v.shape, v.dtype) for k, v in state.metrics.items()}
        self.task_size = 3 * self.nmocap + sum(int(np.prod(s)) for s in self._info_shapes.values())
        self.state_size = self.nq + self.nv + self.task_size
        hinge = model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE
        circular = hinge & ~model.jnt_limited.astype(bool)
        self._circular_qpos = np.asarray(model.jnt_qposadr[circular], dtype=int)
        self._linear_qpos = np.setdiff1d(np.arange(self.nq), self._circular_qpos)
        # Traced once however often it is called (as MjxEnv's ``_integrate``).
        self._transition = jax.jit(lambda s, a: self.flat_state(self._step(s, a)))
        # Playground's reset runs MJX's forward pass; called eagerly, op by op, it took
        # 27.6 s on the cart-pole here against 1.9 s compiled as one program.
        self._reset = jax.jit(lambda key: self.flat_state(self.playground.reset(key)))

    @property
    def noise_size(self) -> int:
        return 0

    # --- between flat states and Playground's states ---------------------------------
    def _make_data(self):
        from mujoco_playground._src import mjx_env

        cfg = self.playground._config
        return mjx_env.make_data(
            self.mj_model,
            impl="jax",
            naconmax=cfg.get("naconmax"),
            njmax=cfg.get("njmax"),
        )

    def _unflatten(self, s) -> tuple[Any, dict[str, jax.Array]]:
        qpos, qvel, task = self.split(s)
        mocap_pos = task[: 3 * self.nmocap].reshape(self.nmocap, 3)
        data = self._make_data().replace(qpos=qpos, qvel=qvel, mocap_pos=mocap_pos)
        info, offset = {}, 3 * self.nmocap
        for k in self._info_keys:
            size = int(np.prod(self._info_shapes[k]))
            info[k] = task[offset : offset + size].reshape(self._info_shapes[k])
            offset += size
        return data, info

    def _flatten(self, data, info) -> jax.Array:
        dtype = data.qpos.dtype
        task = [data.mocap_pos.reshape(-1).astype(dtype)]
        task += [jnp.reshape(info[k], -1).astype(dtype) for k in self._info_keys]
        return jnp.concatenate([data.qpos, data.qvel, *task])

    def playground_state(self, s):
        """The Playground ``State`` of flat state ``s`` (its observation and reward zero,
        ``info["rng"]`` a fixed key)."""
        from mujoco_playground._src import mjx_env

        data, info = self._unflatten(s)
        info = {**info, "rng": jax.random.PRNGKey(0)}
        zero = jnp.zeros((), s.dtype)
        return mjx_env.State(data, zero, zero, zero, dict(self._metrics), info)

    def flat_state(self, state) -> jax.Array:
        """The flat svgx state of a Playground ``State`` (e.g. from its ``reset``)."""
        return self._flatten(state.data, state.info)

    def _step(self, s, a):
        self.check_shapes(s, a)
        model_dtype = self.mjx_model.body_mass.dtype
        if s.dtype != model_dtype:
            # Playground's step carries the whole mjx.Data through its substeps, so the
            # model's arrays must have the state's precision (svgx's own tasks carry
            # only qpos and qvel and take either).
            raise ValueError(
                f"env {self.name!r} was built in {model_dtype} and given a {s.dtype} state; "
                "build it inside jax.enable_x64(True) for float64 (svgx's runner does)"
            )
        return self.playground.step(self.playground_state(s), a.astype(s.dtype))

    # --- the svgx task ---------------------------------------------------------------
    def reset(self, key):
        return self._reset(key)

    def transition(self, s, a, noise):
        self.check_shapes(s, a, noise)
        return self._transition(s, a)

    def reward(self, s, a, t):
        del t
        self.check_shapes(s, a)
        data, info = self._kinematics(s)
        with _finite_tolerance():
            r = self.playground._get_reward(data, a.astype(s.dtype), info, dict(self._metrics))
        return jnp.asarray(r, s.dtype)

    def _kinematics(self, s):
        """Playground's ``mjx.Data`` at ``s`` with what rewards and observations read:
        MuJoCo's position and velocity stages without collision and constraints
        (``tests/test_playground.py``: equal to ``mjx.forward``'s)."""
        from mujoco import mjx

        m = self.mjx_model
        data, info = self._unflatten(s)
        data = mjx.com_pos(m, mjx.kinematics(m, data))
        data = mjx.sensor_pos(m, data)
        data = mjx.sensor_vel(m, mjx.com_vel(m, data))
        return data, info

    def observe(self, s):
        data, info = self._kinematics(s)
        return self.playground._get_obs(data, info).astype(s.dtype)

    def success(self, s):
        return self.reward(s, jnp.zeros(self.action_size, s.dtype), 0) >= SUCCESS_REWARD

    def write_mjdata(self, data, s) -> None:
        super().write_mjdata(data, s)
        task = np.asarray(self.split(s)[2])
        data.mocap_pos[:] = task[: 3 * self.nmocap].reshape(self.nmocap, 3)

    def __repr__(self) -> str:
        return f"PlaygroundEnv({self.task!r}, {self.config})"
