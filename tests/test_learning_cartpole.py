"""svg1_er learns cart-pole swing-up with the tuned settings, as `svgx train` resolves them.

Slow (11.5 minutes on 2 CPU cores: tests compile with SVGX_FAST_COMPILE=1): run with
``pytest -m slow tests/test_learning_cartpole.py``.
The budget has margin: in experiments/results/learning.md 12 of 12 seeds were at 100% success
after 100k environment steps, and 4 of 8 at 60k.
"""

import numpy as np
import pytest

from svgx import cli, rundir


@pytest.mark.slow
def test_svg1_er_with_the_tuned_settings_swings_up_the_cart_pole(tmp_path):
    out = tmp_path / "cartpole"
    flags = ["--seeds", "2", "--steps", "100000", "--chunks", "10", "--out", str(out)]
    cli.main(["train", "--env", "cartpole", "--algo", "svg1_er", *flags])
    history = rundir.read_metrics(out)
    spec = rundir.read_spec(out)
    assert spec.config.critic_n_step == 5  # the tuned settings, not the class defaults
    assert float(spec.hparams.entropy_coef) == pytest.approx(0.03)
    success = np.array([m["eval_success"] for m in history])  # [chunks, seeds]
    returns = np.array([m["eval_return"] for m in history])
    assert success[-1].mean() >= 0.5, success
    assert returns[-1].mean() > 2 * returns[0].mean() > 0, returns  # measured: 40 -> 142
