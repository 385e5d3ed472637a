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

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # see svgx/__init__.py

# mujoco.mjx prints "Failed to import warp" when its optional Warp backend is
# absent; svgx always uses impl="jax" (the one with gradients), so hush it.
with contextlib.redirect_stdout(io.StringIO()):
    from mujoco import mjx  # noqa: F401

from envs import mjx_patch

mjx_patch.apply()  # finite solver gradients, fast deep chains; see envs/mjx_patch.py

# After the patch on purpose: the tasks must see the patched MJX.
from envs.base import Env, EnvConfig, MjxEnv  # noqa: E402
from envs.registry import config_fields, make, names, task_class  # noqa: E402

__all__ = ["Env", "EnvConfig", "MjxEnv", "config_fields", "make", "names", "task_class"]
