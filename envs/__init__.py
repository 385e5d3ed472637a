"""svgx's tasks: the paper's control problems as differentiable MuJoCo MJX models,
and the ``lqg`` probe (a linear-quadratic-Gaussian system with closed-form answers).

>>> import envs
>>> env = envs.make("cartpole")
>>> s = env.reset(jax.random.key(0))
>>> s_next, r, done, info = env.step(s, jnp.zeros(env.action_size), jax.random.key(1))
"""

import contextlib
import io
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # see svgx/__init__.py

# svgx always uses MJX's impl="jax", the one with gradients. When Warp is installed
# (MuJoCo Playground brings it), importing mujoco.mjx also imports Warp and defines
# MJX's Warp kernels: 3-4 s of every process's start on 2 cores (2.0 s against 5.4 s
# for `import mujoco.mjx`). So MJX is imported with Warp hidden, unless
# SVGX_MJX_WARP=1 (to use MJX's Warp backend in a process that imports svgx first);
# Warp itself stays importable afterwards. MJX prints "Failed to import warp" when it
# finds none; that is hushed.
_HIDE_WARP = (
    os.environ.get("SVGX_MJX_WARP") != "1"
    and "warp" not in sys.modules
    and "mujoco.mjx" not in sys.modules
)
with contextlib.redirect_stdout(io.StringIO()):
    if _HIDE_WARP:
        sys.modules["warp"] = None  # makes `import warp` fail
    try:
        from mujoco import mjx  # noqa: F401
    finally:
        if _HIDE_WARP:
            del sys.modules["warp"]

from envs import mjx_patch  # noqa: E402  (after MJX is imported without Warp)

mjx_patch.apply()  # finite solver gradients, fast deep chains; see envs/mjx_patch.py

# After the patch on purpose: the tasks must see the patched MJX.
from envs.base import Env, EnvConfig, MjxEnv  # noqa: E402
from envs.registry import config_fields, make, names, task_class  # noqa: E402

__all__ = ["Env", "EnvConfig", "MjxEnv", "config_fields", "make", "names", "task_class"]
