"""Videos of a run's mean policy, drawn by MuJoCo's own renderer (``svgx render``).

:func:`render_run` takes one member of a run directory's checkpoint (a seed; in a sweep
group, a seed with its hyperparameter combination), runs episodes with the mean action
(``η = 0``, as evaluation does, from the member's evaluation key), draws every state
through the task's ``MjModel`` and writes an MP4 or a GIF. :func:`render_states` is the
part that draws: flat states in, ``uint8`` frames out.

>>> from svgx.render import render_run
>>> video = render_run("runs/c1", seed=0, episodes=2)        # runs/c1/video.mp4
>>> video.path, video.returns                                 # and each episode's return

Rendering needs no display: unless ``MUJOCO_GL`` is set, it uses EGL (README, "Videos").
Tasks whose goal lives only in the task variables of the state (``reacher4`` and
``reacher_moving``'s target, ``hand``'s target configuration) have no body or site for
it in their model, so the goal is not drawn; fixed goals (``gripper``'s target site,
the swimmers' goal) are.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import json
import os
import pathlib
import platform
import warnings

import equinox as eqx
import jax
import mujoco
import numpy as np
from jaxtyping import Array, Float, UInt8

from envs.base import Env, MjxEnv

FORMATS = (".mp4", ".gif")
VIDEO = "video.mp4"  # the default file in the run directory
WIDTH, HEIGHT = 640, 480  # MuJoCo's default offscreen buffer; multiples of 16 for MP4 players
# The shadow map's side in pixels. MuJoCo's default, 4096, costs software OpenGL (Mesa's
# llvmpipe) 50 ms a frame whatever the frame's size; 1024 costs 10 ms at 640 x 480.
SHADOW_SIZE = 1024
# What makes EGL work on Debian and Ubuntu (libopengl0: PyOpenGL's GL library).
GL_PACKAGES = ("libegl1", "libopengl0", "libegl-mesa0", "libgl1-mesa-dri")


class GLError(RuntimeError):
    """No OpenGL context could be opened for rendering."""


@dataclasses.dataclass(frozen=True)
class Video:
    """A written video.

    Attributes:
      path: the file.
      frames: how many frames it holds (``episodes · (horizon + 1)``: every state from
        the first to the last of each episode).
      returns, success: each episode's return and success (``[episodes]``).
    """

    path: pathlib.Path
    frames: int
    returns: np.ndarray
    success: np.ndarray


def renderable_tasks() -> list[str]:
    """The tasks with a MuJoCo model, which :func:`render_states` can draw."""
    import envs

    return [name for name in envs.names() if issubclass(envs.task_class(name), MjxEnv)]


def check_renderable(env: Env) -> MjxEnv:
    """``env`` if it has a MuJoCo model to draw; otherwise a ``ValueError`` naming it and
    the tasks that have one."""
    if not isinstance(env, MjxEnv):
        raise ValueError(
            f"env {env.name!r} has no MuJoCo model to render; "
            f"tasks that can be rendered: {', '.join(renderable_tasks())}"
        )
    return env


# --- drawing -----------------------------------------------------------------------------


def _use_headless_gl() -> None:
    """``MUJOCO_GL=egl`` when the user chose no OpenGL backend (on Linux).

    MuJoCo picks its context class from ``MUJOCO_GL`` when it is imported (the tasks
    import it long before anything is drawn), and ``mujoco.Renderer`` builds an instance
    of that class; so after setting the variable, the module that picks runs again.
    """
    if os.environ.get("MUJOCO_GL", "").strip() or platform.system() != "Linux":
        return
    os.environ["MUJOCO_GL"] = "egl"
    from mujoco.rendering.classic import gl_context

    try:
        importlib.reload(gl_context)
    except Exception as error:
        raise _gl_error(error) from error


def _gl_error(error: Exception) -> GLError:
    backend = os.environ.get("MUJOCO_GL", "")
    return GLError(
        f"cannot open an OpenGL context with MUJOCO_GL={backend!r} "
        f"({type(error).__name__}: {error}); for EGL on Debian/Ubuntu: "
        f"apt-get install {' '.join(GL_PACKAGES)}; or set MUJOCO_GL=osmesa (libosmesa6) "
        "or MUJOCO_GL=glfw (a display)"
    )


def _renderer(model: mujoco.MjModel, width: int, height: int) -> mujoco.Renderer:
    _use_headless_gl()
    try:
        return mujoco.Renderer(model, height=height, width=width)
    except Exception as error:
        raise _gl_error(error) from error


def check_gl(env: Env) -> None:
    """Raises :class:`GLError` (saying what to install) unless an OpenGL context for
    drawing ``env`` opens: ``svgx train --video`` asks before it trains."""
    _renderer(check_renderable(env).mj_model, 16, 16).close()


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int | np.integer) or value < 2 or value % 2:
            raise ValueError(f"--{name} {value!r}: must be an even integer >= 2 (pixels)")


MARKER_SIZE = 0.1  # m: a fixed geom or site at most this large is a marker (a goal), kept in view


def fit_camera(env: MjxEnv, states: Float[Array, "T n_s"], width: int, height: int):
    """A fixed free camera that keeps in view every moving part of the model in all of
    ``states``, and the fixed markers (the world's geoms and sites within
    ``MARKER_SIZE``: goals, not floors, rails or walls). It looks along the axis the
    parts spread least along (from above at tasks in the horizontal plane, from the side
    at those in a vertical one), from as far as their bounding box needs."""
    model, data = env.mj_model, mujoco.MjData(env.mj_model)
    moving = model.geom_bodyid > 0
    fixed = ~moving & (model.geom_type != mujoco.mjtGeom.mjGEOM_PLANE)
    fixed &= model.geom_rbound <= MARKER_SIZE
    sites = (model.site_bodyid == 0) & (model.site_size[:, 0] <= MARKER_SIZE)
    low, high = np.full(3, np.inf), np.full(3, -np.inf)

    def cover(points, radius):
        nonlocal low, high
        if len(points) and np.isfinite(points).all():
            low = np.minimum(low, (points - radius[:, None]).min(0))
            high = np.maximum(high, (points + radius[:, None]).max(0))

    for t, s in enumerate(states):
        _place(env, data, s)
        cover(data.geom_xpos[moving], model.geom_rbound[moving])
        if t == 0:
            cover(data.geom_xpos[fixed], model.geom_rbound[fixed])
            cover(data.site_xpos[sites], model.site_size[sites, 0])
    camera = mujoco.MjvCamera()
    mujoco.mjv_defaultFreeCamera(model, camera)
    if not np.isfinite(low).all():
        return camera
    spread = high - low
    camera.lookat[:] = (low + high) / 2
    if spread[2] <= min(spread[0], spread[1]):  # the horizontal plane: from above
        camera.azimuth, camera.elevation, across, up, depth = 90.0, -90.0, 0, 1, 2
    elif spread[1] <= spread[0]:  # the x-z plane: from -y
        camera.azimuth, camera.elevation, across, up, depth = 90.0, -10.0, 0, 2, 1
    else:  # the y-z plane: from +x
        camera.azimuth, camera.elevation, across, up, depth = 180.0, -10.0, 1, 2, 0
    half = 0.55 * max(spread[up], spread[across] * height / width)  # 10% margin
    fovy = np.deg2rad(model.vis.global_.fovy)
    camera.distance = half / np.tan(fovy / 2) + spread[depth] / 2
    return camera


def _place(env: MjxEnv, data: mujoco.MjData, s: np.ndarray) -> None:
    env.write_mjdata(data, s)
    mujoco.mj_forward(env.mj_model, data)


def render_states(
    env: Env,
    states: Float[Array, "T n_s"],
    *,
    width: int = WIDTH,
    height: int = HEIGHT,
    camera: mujoco.MjvCamera | int | str | None = None,
) -> UInt8[np.ndarray, "T height width 3"]:
    """Draws each flat state ``s = (qpos, qvel, task)`` of ``env`` (``[T, n_s]``) with
    ``mujoco.Renderer``: RGB frames ``[T, height, width, 3]``.

    ``camera``: one of the model's cameras (id or name) or an ``MjvCamera``; ``None``:
    :func:`fit_camera` over ``states``. Task variables are not drawn (module docstring).
    """
    env = check_renderable(env)
    _check_size(width, height)
    states = np.asarray(states, np.float64)
    if states.ndim != 2 or states.shape[1] != env.state_size:
        raise ValueError(
            f"states have shape {states.shape}; env {env.name!r} needs (T, {env.state_size})"
        )
    model = copy.copy(env.mj_model)  # visual settings for drawing; the task's model stays
    model.vis.global_.offwidth = max(width, model.vis.global_.offwidth)
    model.vis.global_.offheight = max(height, model.vis.global_.offheight)
    model.vis.quality.shadowsize = min(SHADOW_SIZE, model.vis.quality.shadowsize)
    camera = fit_camera(env, states, width, height) if camera is None else camera
    data = mujoco.MjData(model)
    frames = np.empty((len(states), height, width, 3), np.uint8)
    renderer = _renderer(model, width, height)
    try:
        for t, s in enumerate(states):
            _place(env, data, s)
            renderer.update_scene(data, camera)
            renderer.render(out=frames[t])
    finally:
        renderer.close()
    return frames


# --- files -------------------------------------------------------------------------------


def _check_out(out: str | os.PathLike) -> pathlib.Path:
    out = pathlib.Path(out)
    if out.suffix.lower() not in FORMATS:
        raise ValueError(
            f"--out {str(out)!r}: the suffix chooses the format; allowed: {', '.join(FORMATS)}"
        )
    return out


def write_video(
    path: str | os.PathLike, frames: UInt8[np.ndarray, "T H W 3"], fps: float
) -> pathlib.Path:
    """Writes ``frames`` at ``fps`` frames per second (atomically) with imageio: H.264 for
    ``.mp4`` (every frame kept), an endlessly looping ``.gif`` (Pillow merges identical
    consecutive frames, and GIF delays are whole centiseconds)."""
    import imageio.v3 as iio

    from svgx.io import atomic_write_bytes

    path = _check_out(path)
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8 or not len(frames):
        raise ValueError(f"frames: {frames.dtype} {frames.shape}; need uint8 [T >= 1, H, W, 3]")
    if path.suffix.lower() == ".mp4":
        _check_size(frames.shape[2], frames.shape[1])  # H.264 in yuv420p halves both sides
        with warnings.catch_warnings():
            # imageio-ffmpeg starts ffmpeg with subprocess (fork, then exec at once), which
            # JAX warns about in general; nothing of JAX's runs in the child.
            warnings.filterwarnings("ignore", "os.fork", RuntimeWarning)
            data = iio.imwrite(
                "<bytes>", frames, extension=".mp4", plugin="FFMPEG", fps=fps, macro_block_size=1
            )
    else:
        data = iio.imwrite(
            "<bytes>", frames, extension=".gif", plugin="pillow", duration=1000 / fps, loop=0
        )
    return atomic_write_bytes(path, data)


# --- run directories ---------------------------------------------------------------------


def load_member(run_dir: str | os.PathLike, seed: int = 0):
    """``(spec, env, policy)`` of member ``seed`` of the run in ``run_dir``, after the
    checks that name what is wrong: not a run directory (a sweep directory: its groups), a
    task without a MuJoCo model, a member index out of range, no checkpoint yet."""
    from svgx import ablate, rundir, sweep

    path = pathlib.Path(run_dir)
    if sweep.is_sweep_dir(path):
        groups = ", ".join(str(p) for p in sweep.group_dirs(path)) or "none yet"
        raise rundir.RunDirError(
            f"{str(path)!r}: a sweep directory; render one of its groups: {groups}"
        )
    config_file = path / rundir.CONFIG
    if config_file.is_file() and "baseline" in json.loads(config_file.read_text()):
        raise rundir.RunDirError(
            f"{str(path)!r}: a Brax baseline run (svgx baseline); svgx render draws svgx runs"
        )
    spec = rundir.read_spec(path)
    env = check_renderable(spec.config.make_env())
    if (path / rundir.MEMBERS).is_file():
        what = "members (seeds × hyperparameter combinations, in members.json)"
    else:
        what = "seed" if spec.seeds == 1 else "seeds"
    if not isinstance(seed, int | np.integer) or not 0 <= seed < spec.seeds:
        raise ValueError(
            f"--seed {seed!r}: the run in {str(path)!r} has {spec.seeds} {what}; "
            f"allowed: 0 to {spec.seeds - 1}"
        )
    if not (path / rundir.CHECKPOINT).is_file():
        raise rundir.RunDirError(
            f"{str(path / rundir.CHECKPOINT)!r}: missing; the run has not finished a chunk"
        )
    return spec, env, ablate.load_policy(path, int(seed))


def mean_action_episodes(env: Env, policy, key, episodes: int):
    """``episodes`` episodes of ``policy``'s mean action from ``key``, as evaluation runs
    them (:func:`svgx.rollout.episodes`): ``(transitions, success)``, leaves
    ``[episodes, horizon, …]`` and ``[episodes]``."""
    from svgx import rollout, runner

    params, static = eqx.partition(policy, eqx.is_array)

    def run(params, key):
        policy = eqx.combine(params, static)
        data = rollout.episodes(env, policy, key, episodes, deterministic=True)
        return data, jax.vmap(env.success)(data.s_next[:, -1])

    return jax.jit(run, compiler_options=runner.compiler_options())(params, key)


def render_run(
    run_dir: str | os.PathLike,
    *,
    seed: int = 0,
    episodes: int = 1,
    out: str | os.PathLike | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Video:
    """Renders ``episodes`` episodes of the mean policy of member ``seed`` of the run in
    ``run_dir`` (its last checkpoint) to ``out`` (``.mp4`` or ``.gif``; default
    ``run_dir/video.mp4``), one after another, at the task's control rate.

    The episodes start from the member's evaluation key, so with ``episodes`` equal to
    the run's ``eval_episodes`` they are the episodes its last ``eval_return`` measured.
    Errors name what is wrong and what is allowed (:func:`load_member`).
    """
    from svgx import runner

    out = _check_out(pathlib.Path(run_dir) / VIDEO if out is None else out)
    _check_size(width, height)
    if not isinstance(episodes, int | np.integer) or episodes < 1:
        raise ValueError(f"--episodes {episodes!r}: must be an integer >= 1")
    spec, env, policy = load_member(run_dir, seed)
    key = runner.evaluation_keys(spec.seed, spec.seeds)[seed]
    data, success = jax.device_get(mean_action_episodes(env, policy, key, int(episodes)))
    states = np.concatenate([data.s, data.s_next[:, -1:]], axis=1)  # [episodes, T + 1, n_s]
    frames = render_states(env, states.reshape(-1, env.state_size), width=width, height=height)
    path = write_video(out, frames, fps=1 / env.dt)
    return Video(path, len(frames), data.r.sum(1), success)
