"""Two fixes to MJX 3.17.0: NaN gradients through the solver, and slow deep chains.

1. NaN reverse-mode gradients through MJX's constraint solver
-------------------------------------------------------------

**The cause.** With ``opt.iterations == 1`` (the only setting whose solver is
reverse-differentiable: more iterations run in a ``lax.while_loop``), MJX's
``solve`` runs one Newton iteration unconditionally, without the convergence
test that MuJoCo C and MJX's own multi-iteration loop apply first. When no
constraint row is active (an untouched joint limit, a foot in the air), the
initial acceleration already solves the problem and the Newton search
direction ``s`` is rounding noise (|s| ~ 1e-9 in float32). The line search then
takes the step ``α = -f'(0) / f''(0)`` with ``f'' ∝ |s|²``: the forward value
``s·α`` is harmless, but its reverse pass multiplies cotangents by
``f' / f''² ∝ 1/|s|³``, which overflows float32 to ``inf``; ``inf · 0`` then
turns the whole gradient into NaN. It happens at isolated states (one step in a
few hundred), so a state-feedback rollout on a cartpole whose rail has a limit
it never touches has NaN policy gradients after a few hundred steps, while
the same rollout without the limit row (no solver) is finite.

**The fix.** Apply MuJoCo's convergence test before the single iteration's
line search: if the solver's gradient is already below ``opt.tolerance``
(scaled as MuJoCo scales it), keep the acceleration, which is what MuJoCo C does.
The skipped line search runs on a well-conditioned stand-in direction and its
result is discarded with ``jnp.where`` (the "double where"), so no ``inf``
appears in either pass. ``tests/test_gradients.py`` pins the cause with a
rounding-size search direction built so that the reverse pass overflows on any CPU.

2. Run time exponential in the depth of the kinematic tree
---------------------------------------------------------
**The cause.** ``scan.body_tree`` walks the tree one depth level at a time and
hands each level's world frames (position, quaternion) to the next as a
carry. XLA then fuses the whole chain into a few loop fusions; a fused output
element recomputes its inputs instead of reading them, and every component of
a quaternion product needs all four components of the parent's quaternion, so
the work per body grows like ``4 ** depth``. Measured with batch 256 on 2 CPU
cores: ``swimmer5`` (depth 5) ran at 0.04× MuJoCo C and spent 400 µs of a
680 µs step in ``kinematics`` (``swimmer3``: 14 µs), and ``swimmer7`` did not
finish 100 steps in 5 minutes.

**The fix.** An ``optimization_barrier`` on each level's output: XLA
materialises it once and fuses no further, and the arithmetic is unchanged.
With it ``swimmer5`` runs 13.7× faster and ``swimmer7`` at 369k steps/s. It
replaces ``mujoco.mjx._src.scan._nvmap``, which ``body_tree`` (and ``flat``)
call once per group of bodies.

Both patches are applied when ``envs`` is imported and are checked against the
pinned ``mujoco-mjx`` release.
"""

import jax
import jax.numpy as jnp
import mujoco
from mujoco.mjx._src import math as mjx_math
from mujoco.mjx._src import scan, solver

PATCHED_MJX_VERSION = "3.17.0"

_original_linesearch = solver._linesearch
_original_nvmap = scan._nvmap


def _converged(m, d, ctx) -> jax.Array:
    """MuJoCo's stopping test (``solve.cond`` in MJX, ``mj_solNewton`` in C)."""
    return solver._rescale(m, d, mjx_math.norm(ctx.grad)) < m.opt.tolerance


def converged_safe_linesearch(m, d, ctx):
    """``solver._linesearch`` that leaves an already-converged solution alone."""
    done = _converged(m, d, ctx)
    stand_in = jnp.ones_like(ctx.search)
    searched = _original_linesearch(m, d, ctx.replace(search=jnp.where(done, stand_in, ctx.search)))
    return jax.tree_util.tree_map(lambda kept, new: jnp.where(done, kept, new), ctx, searched)


def materialised_nvmap(f, *args):
    """``scan._nvmap`` whose result XLA computes once, not inside its consumers."""
    return jax.lax.optimization_barrier(_original_nvmap(f, *args))


def apply() -> None:
    """Install the fix (idempotent)."""
    if mujoco.__version__ != PATCHED_MJX_VERSION:
        raise RuntimeError(
            f"envs.mjx_patch was written against mujoco-mjx {PATCHED_MJX_VERSION}, "
            f"but mujoco {mujoco.__version__} is installed; re-check "
            "mujoco/mjx/_src/solver.py (solve, _linesearch) and scan.py "
            "(body_tree, _nvmap) and update the patches."
        )
    solver._linesearch = converged_safe_linesearch
    scan._nvmap = materialised_nvmap


def remove() -> None:
    """Restore MJX's own functions (used by the regression tests)."""
    solver._linesearch = _original_linesearch
    scan._nvmap = _original_nvmap
