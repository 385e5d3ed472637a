"""The environment interface of svgx (paper §4.1, §6; docs/design.md, "Tasks") and its
MuJoCo MJX implementation.

Every task is a pure, jittable, vmappable set of functions on a flat state vector

    s = concat(qpos, qvel, task)           # task: target positions, velocities, ...

* ``reset(key) -> s``
* ``step(s, a, key, t=None) -> (s', r, done, info)``; ``info["noise"]`` is the
  exogenous noise ``ξ`` the step used, so that ``transition(s, a, ξ)`` reproduces
  ``s'``.
* ``transition(s, a, ξ) -> s'``: the deterministic, differentiable simulator
  ``F(s, a, ξ)`` (autodiff through ``mjx.step``).
* ``reward(s, a, t) -> r``: a known, smooth function.
* ``observe(s)``: features (sin/cos of hinge angles, velocities, task variables).
* ``success(s) -> bool``: what "solved" means, judged on an episode's final state.

Noise is standard normal, ``ξ ~ N(0, I_{noise_size})``; each task scales it into
forces or target motion itself, so ``ρ(ξ)`` is the same for every task.
"""

from __future__ import annotations

import abc
import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import mujoco
import numpy as np
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray
from mujoco import mjx

ASSETS = pathlib.Path(__file__).parent / "assets"


@dataclasses.dataclass(frozen=True)
class EnvConfig:
    """Settings every task has; tasks extend it with their own fields.

    Attributes:
      horizon: episode length in control steps.
      noise_scale: multiplies the task's exogenous noise (0 switches it off).
    """

    horizon: int = 250
    noise_scale: float = 1.0

    def __post_init__(self):
        if not isinstance(self.horizon, int | np.integer) or self.horizon < 1:
            raise ValueError(f"horizon={self.horizon!r}: must be an integer >= 1")
        if not self.noise_scale >= 0:
            raise ValueError(f"noise_scale={self.noise_scale!r}: must be >= 0")


class Env(abc.ABC):
    """A task: pure functions on flat state vectors (see module docstring)."""

    name: ClassVar[str]
    config: EnvConfig

    state_size: int
    action_size: int
    dt: float
    # Rewards that depend on the time index (the hand task's terminal reward)
    # need ``t`` in ``step``; time-invariant tasks ignore it.
    time_dependent: ClassVar[bool] = False
    # A state with a coordinate beyond this magnitude is a simulation that diverged
    # (training treats it as a non-finite one: the episode ends and the step is stored
    # as a stay-put step, s' = s and r = 0, and counted; svgx.train); no bound for tasks
    # whose states may grow without limit (lqg).
    max_state_abs: ClassVar[float] = float("inf")

    def diverged(self, s_next: Array, r: Array) -> Array:
        """Steps (leading axes of ``r``) whose simulation diverged: a non-finite state or
        reward, or a state beyond ``max_state_abs``."""
        finite = jnp.all(jnp.isfinite(s_next), axis=-1) & jnp.isfinite(r)
        return ~(finite & (jnp.max(jnp.abs(s_next), axis=-1, initial=0.0) <= self.max_state_abs))

    @property
    @abc.abstractmethod
    def noise_size(self) -> int:
        """``n_xi``, the size of the exogenous noise ``ξ`` of one step (0: none)."""

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def action_low(self) -> Float[Array, " n_a"]:
        return -jnp.ones(self.action_size)

    @property
    def action_high(self) -> Float[Array, " n_a"]:
        return jnp.ones(self.action_size)

    @abc.abstractmethod
    def reset(self, key: PRNGKeyArray) -> Float[Array, " n_s"]:
        """Samples an initial state."""

    @abc.abstractmethod
    def transition(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"], noise: Float[Array, " n_xi"]
    ) -> Float[Array, " n_s"]:
        """The deterministic, differentiable simulator ``s' = F(s, a, ξ)``."""

    @abc.abstractmethod
    def reward(
        self, s: Float[Array, " n_s"], a: Float[Array, " n_a"], t: Int[Array, ""] | int
    ) -> Float[Array, ""]:
        """The smooth reward ``r(s, a, t)`` of taking ``a`` in ``s`` at step ``t``."""

    @abc.abstractmethod
    def success(self, s: Float[Array, " n_s"]) -> Bool[Array, ""]:
        """Whether an episode that ends in ``s`` solved the task."""

    @property
    def has_contact(self) -> bool:
        """Whether the dynamics can make contacts (stiff, only piecewise smooth)."""
        return False

    def observe(self, s: Float[Array, " n_s"]) -> Float[Array, " n_o"]:
        """Features for policies and critics; the identity unless a task says otherwise."""
        return s

    @property
    def observation_size(self) -> int:
        return int(jax.eval_shape(self.observe, jnp.zeros(self.state_size)).shape[0])

    def sample_noise(self, key: PRNGKeyArray) -> Float[Array, " n_xi"]:
        """Exogenous noise ``ξ ~ N(0, I)``; tasks scale it in ``transition``."""
        return jax.random.normal(key, (self.noise_size,))

    def step(
        self,
        s: Float[Array, " n_s"],
        a: Float[Array, " n_a"],
        key: PRNGKeyArray,
        t: Int[Array, ""] | int | None = None,
    ) -> tuple[Float[Array, " n_s"], Float[Array, ""], Bool[Array, ""], dict[str, Any]]:
        """One step of the real environment.

        Returns ``(s', r, done, info)``: ``r = reward(s, a, t)``; ``done`` is true on
        the last step of the episode (no task terminates early, so this is the
        horizon; it is false when ``t`` is not given); ``info["noise"]`` is the
        exogenous noise used and ``info["success"]`` the success measure of ``s'``.
        """
        if t is None:
            if self.time_dependent:
                raise ValueError(
                    f"env {self.name!r} has a time-dependent reward: step(s, a, key, t) "
                    "needs the time index t"
                )
            t_index = jnp.zeros((), jnp.int32)
            done = jnp.zeros((), bool)
        else:
            t_index = jnp.asarray(t)
            done = t_index + 1 >= self.horizon
        noise = self.sample_noise(key)
        s_next = self.transition(s, a, noise)
        r = self.reward(s, a, t_index)
        return s_next, r, done, {"noise": noise, "success": self.success(s_next)}

    def check_shapes(self, s: jax.Array, a: jax.Array, noise: jax.Array | None = None) -> None:
        """Raises a clear error when ``s``, ``a`` or ``noise`` has the wrong trailing size."""
        if s.shape[-1:] != (self.state_size,):
            raise ValueError(
                f"state has shape {s.shape}; env {self.name!r} needs (..., {self.state_size})"
            )
        if a.shape[-1:] != (self.action_size,):
            raise ValueError(
                f"action has shape {a.shape}; env {self.name!r} needs (..., {self.action_size})"
            )
        if noise is not None and noise.shape[-1:] != (self.noise_size,):
            raise ValueError(
                f"noise has shape {noise.shape}; env {self.name!r} needs (..., {self.noise_size})"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config})"


def _index(addresses: list[int]) -> slice | np.ndarray:
    """``addresses`` as a slice when they are consecutive: reading them is then a plain
    slice of the state, as hand-written code would do."""
    if addresses == list(range(addresses[0], addresses[0] + len(addresses))):
        return slice(addresses[0], addresses[0] + len(addresses))
    return np.array(addresses, dtype=int)


def smooth_norm(x: Float[Array, "... d"], eps: float = 1e-2) -> Float[Array, " ..."]:
    """``sqrt(|x|² + eps²) - eps``: a distance with a finite gradient at 0."""
    return jnp.sqrt(jnp.sum(jnp.square(x), axis=-1) + eps**2) - eps


class MjxEnv(Env):
    """A task simulated by MJX from an MJCF file under ``envs/assets``.

    Subclasses name their ``asset``, the number of physics ``n_substeps`` per
    control step and their ``task_size``, and implement ``noise_size``,
    ``reset``, ``reward`` and ``success``; they override ``_applied_force`` (noise
    as joint forces) and ``_task_transition`` (moving targets) where needed.

    Tasks find their joints, sites and bodies in the flat state by name, once, when
    they are built (as MuJoCo Playground does): :meth:`qpos_address` and
    :meth:`dof_address` give a joint's index in ``qpos`` and ``qvel``, and
    ``mj_model.site(name).id`` a site's id for :meth:`site_pos`.
    """

    asset: ClassVar[str]
    n_substeps: ClassVar[int] = 1
    task_size: ClassVar[int] = 0
    # Far beyond any physical state of these tasks (positions in metres, velocities in
    # m/s or rad/s; a diverging contact simulation passes 1e20 before it is non-finite).
    max_state_abs: ClassVar[float] = 1e6

    def __init__(self, config: EnvConfig):
        self.config = config
        self.mj_model = mujoco.MjModel.from_xml_path(str(ASSETS / self.asset))
        self.mjx_model = mjx.put_model(self.mj_model, impl="jax")
        self.nq, self.nv = self.mj_model.nq, self.mj_model.nv
        self.state_size = self.nq + self.nv + self.task_size
        self.action_size = self.mj_model.nu
        self.dt = float(self.mj_model.opt.timestep) * self.n_substeps
        hinge = self.mj_model.jnt_type == mujoco.mjtJoint.mjJNT_HINGE
        # Unlimited hinges are angles on a circle: observe them as (cos, sin).
        circular = hinge & ~self.mj_model.jnt_limited.astype(bool)
        self._circular_qpos = np.asarray(self.mj_model.jnt_qposadr[circular], dtype=int)
        self._linear_qpos = np.setdiff1d(np.arange(self.nq), self._circular_qpos)
        # The physics as one jitted function of this task: jax keeps a jitted function's
        # trace (by the function and its input types) and the derivatives and batching
        # of that trace, so a training chunk, which calls ``transition`` from several
        # places under vmap, scan and grad, traces MJX once rather than once per call
        # (cart-pole's svg1_er chunk: 31-35 s of tracing before, 16-17 s after, on 2
        # cores beside other jobs; the start-up it saves: experiments/results/bench_warm.md).
        # The trace keeps ``mjx_model`` and ``n_substeps`` as they were at the first call:
        # change them only before a task's first step.
        self._integrate = jax.jit(self._integrate_substeps)
        self._site_positions = jax.jit(self._all_site_positions)  # rewards' kinematics

    @property
    def has_contact(self) -> bool:
        """Whether the model can make contacts (explicit pairs or colliding geoms)."""
        m = self.mj_model
        if m.opt.disableflags & mujoco.mjtDisableBit.mjDSBL_CONTACT:
            return False
        collides = (m.geom_contype[:, None] & m.geom_conaffinity[None, :]) != 0
        return bool(m.npair > 0 or collides.any())

    # --- state layout -----------------------------------------------------
    def qpos_address(self, joints: str | Sequence[str]) -> int | slice | np.ndarray:
        """Where one-coordinate joints sit in ``qpos`` (MuJoCo's ``jnt_qposadr``): an
        int for one name; for several, a slice if they are consecutive, else an array."""
        if isinstance(joints, str):
            return int(self.mj_model.jnt_qposadr[self.mj_model.joint(joints).id])
        return _index([self.qpos_address(j) for j in joints])

    def dof_address(self, joints: str | Sequence[str]) -> int | slice | np.ndarray:
        """Where one-coordinate joints sit in ``qvel`` and in the generalised forces
        (MuJoCo's ``jnt_dofadr``); an int, slice or array as in :meth:`qpos_address`."""
        if isinstance(joints, str):
            return int(self.mj_model.jnt_dofadr[self.mj_model.joint(joints).id])
        return _index([self.dof_address(j) for j in joints])

    def split(self, s: Float[Array, " n_s"]) -> tuple[Array, Array, Array]:
        """``s -> (qpos, qvel, task)``."""
        return s[: self.nq], s[self.nq : self.nq + self.nv], s[self.nq + self.nv :]

    def join(self, qpos: Array, qvel: Array, task: Array | None = None) -> Array:
        task = jnp.zeros(0, qpos.dtype) if task is None else task
        return jnp.concatenate([qpos, qvel, task])

    # --- physics ----------------------------------------------------------
    def _data(self, qpos: Array, qvel: Array) -> mjx.Data:
        return mjx.make_data(self.mjx_model).replace(qpos=qpos, qvel=qvel)

    def _applied_force(self, s: Array, noise: Array) -> Float[Array, " n_v"]:
        """Generalised forces from the exogenous noise (default: none)."""
        del noise
        return jnp.zeros(self.nv, s.dtype)

    def _task_transition(self, task: Array, noise: Array) -> Array:
        """How task variables evolve (default: constant)."""
        del noise
        return task

    def transition(self, s, a, noise):
        self.check_shapes(s, a, noise)
        qpos, qvel, task = self.split(s)
        qpos, qvel = self._integrate(qpos, qvel, a.astype(s.dtype), self._applied_force(s, noise))
        return self.join(qpos, qvel, self._task_transition(task, noise))

    def _integrate_substeps(
        self, qpos: Array, qvel: Array, ctrl: Array, qfrc_applied: Array
    ) -> tuple[Array, Array]:
        """``n_substeps`` MJX steps from ``(qpos, qvel)`` under fixed controls and
        applied forces (jitted as ``self._integrate``)."""
        data = self._data(qpos, qvel).replace(ctrl=ctrl, qfrc_applied=qfrc_applied)

        # Carry only the integrated state through the substeps: every other field of
        # mjx.Data is recomputed by mjx.step, and a small carry keeps the scan's
        # dtypes fixed under float64 (mjx.step may widen integer fields).
        def substep(carry, _):
            q, v, warm = carry
            d = mjx.step(self.mjx_model, data.replace(qpos=q, qvel=v, qacc_warmstart=warm))
            return (d.qpos, d.qvel, d.qacc_warmstart), None

        carry = (qpos, qvel, jnp.zeros(self.nv, qpos.dtype))
        (qpos, qvel, _), _ = jax.lax.scan(substep, carry, None, length=self.n_substeps)
        return qpos, qvel

    def site_pos(self, s: Float[Array, " n_s"], site_id: int) -> Float[Array, " 3"]:
        """World position of site ``site_id`` (``mj_model.site(name).id``) in state ``s``
        (forward kinematics)."""
        qpos, qvel, _ = self.split(s)
        return self._site_positions(qpos, qvel)[site_id]

    def _all_site_positions(self, qpos: Array, qvel: Array) -> Float[Array, "n_site 3"]:
        """Every site's world position (jitted as ``self._site_positions``)."""
        return mjx.kinematics(self.mjx_model, self._data(qpos, qvel)).site_xpos

    def write_mjdata(self, data: mujoco.MjData, s: np.ndarray) -> None:
        """Writes flat state ``s`` into MuJoCo C's ``data`` (for drawing); the caller runs
        ``mj_forward``."""
        qpos, qvel, _ = self.split(np.asarray(s))
        data.qpos[:], data.qvel[:] = qpos, qvel

    def observe(self, s):
        qpos, qvel, task = self.split(s)
        angles = qpos[self._circular_qpos]
        return jnp.concatenate(
            [qpos[self._linear_qpos], jnp.cos(angles), jnp.sin(angles), qvel, task]
        )
