"""The kinematic-tree fix of ``envs/mjx_patch.py``: same numbers, linear cost in depth.

Without the fix XLA fuses MJX's level-by-level tree walk into loops that recompute
every ancestor's frame, so the compiled code (and the run time) grows
exponentially with the depth of the chain: the swimmers have depth 3, 5 and 7.
Counting operations in the compiled program tests this without timing anything.
"""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from mujoco import mjx
from mujoco.mjx._src import smooth

import envs
from envs import mjx_patch

SWIMMERS = ("swimmer3", "swimmer5", "swimmer7")


def compiled_kinematics(name, batch=16):
    env = envs.make(name)
    m = env.mjx_model
    keys = jax.random.split(jax.random.key(0), batch)
    d0 = mjx.make_data(m)
    d = jax.vmap(lambda k: d0.replace(qpos=jax.random.normal(k, d0.qpos.shape)))(keys)
    fn = jax.jit(jax.vmap(lambda d: smooth.kinematics(m, d).xpos))
    return fn.lower(d).compile(), d


def multiplies(compiled) -> int:
    return len(re.findall(r" multiply\(", compiled.as_text()))


@pytest.fixture
def unpatched():
    mjx_patch.remove()
    try:
        yield
    finally:
        mjx_patch.apply()


def test_compiled_kinematics_grow_linearly_with_chain_depth():
    counts = [multiplies(compiled_kinematics(name)[0]) for name in SWIMMERS]
    # Each pair of extra links adds the same work (measured: 313, 531, 749).
    assert counts[2] - counts[1] <= 1.2 * (counts[1] - counts[0]), counts


@pytest.mark.slow  # 35 s; it pins MJX's behaviour, not svgx's
def test_without_the_patch_the_growth_is_superlinear(unpatched):
    """Pins the cause: if an MJX upgrade stops the blow-up, this says so."""
    counts = [multiplies(compiled_kinematics(name)[0]) for name in SWIMMERS]
    # Measured: 318, 1101, 2772.
    assert counts[2] - counts[1] > 1.5 * (counts[1] - counts[0]), counts


def test_patch_leaves_the_kinematics_unchanged():
    patched, d = compiled_kinematics("swimmer7")
    mjx_patch.remove()
    try:
        original, _ = compiled_kinematics("swimmer7")
    finally:
        mjx_patch.apply()
    np.testing.assert_allclose(patched(d), original(d), rtol=0, atol=1e-5)
    assert jnp.isfinite(patched(d)).all()
