"""Which tasks the default suite compiles MJX programs for.

Compiling MJX (and, worse, its reverse mode in float64) costs 20-120 s per task on
2 cores with an empty cache. The default suite runs the per-task simulation tests on
one task of each kind: a point mass on a spring (hand), slider and hinge (cartpole),
fluid (swimmer3), contact (monoped) and no MuJoCo at all (lqg); the other tasks are
variants of these or larger contact models and run with `pytest -m slow`.
"""

import pytest

VARIANTS = {
    "swimmer5",
    "swimmer7",
    "reacher4",
    "reacher_moving",
    "gripper",
    "cheetah",
    "cheetah_springs",
    "walker",
}


def by_family(names, also_slow=()):
    """``names`` as pytest params, the variants (and ``also_slow``) marked slow."""
    slow = VARIANTS | set(also_slow)
    return [pytest.param(n, marks=pytest.mark.slow) if n in slow else n for n in names]
