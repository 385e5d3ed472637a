"""Runs that go non-finite stop and say so.

(``inf`` or ``nan`` for a float hyperparameter of ``train``, a sweep file, ``baseline``
or ``diagnose`` is bad input, exit status 2: cases in tests/test_cli.py's table.)

* A run whose parameters stop being finite, or whose diverged steps or skipped
  updates pass :class:`~svgx.divergence.NonFiniteLimits`, stops at the end of that
  chunk with one line naming the seed, chunk, step and quantity, and exit status 3;
  the run directory keeps the last finite checkpoint and the metrics of every seed,
  and ``resume`` refuses it.
"""

import json
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small import TINY_LQG, TINY_LQG_FLAGS

from svgx import cli, divergence, rundir, runner
from svgx.config import Config, Hyperparams
from svgx.divergence import NonFiniteError, NonFiniteLimits, first_divergence
from svgx.train import parameters

# Two iterations per chunk, one step per environment each; the first two iterations
# act at random and do not learn (random_steps), so chunk 1 is always finite.
LQG = [
    *TINY_LQG_FLAGS,
    *("--algo", "svg1_er", "--iterations", "6", "--chunks", "3", "--random-steps", "2"),
    *("--seeds", "2"),
]


# --- the check after each chunk (no compilation) ----------------------------------------


def chunk_metrics(env_steps, diverged, updates, skipped):
    return dict(
        env_steps=np.array(env_steps),
        nonfinite_env_steps=np.array(diverged),
        updates=np.array(updates),
        nonfinite_updates=np.array(skipped),
    )


FINITE = dict(policy=np.array([True, True]), critic=np.array([True, True]))


def test_the_first_bad_seed_and_quantity_are_named():
    previous = chunk_metrics([100, 100], [0, 0], [50, 50], [0, 0])
    # Seed 0: 5 of 100 new steps diverged (5% is allowed); seed 1: 6 of 100.
    now = chunk_metrics([200, 200], [5, 6], [100, 100], [0, 0])
    found = first_divergence(FINITE, now, previous, NonFiniteLimits(), chunk=2, chunks=4)
    assert (found.seed, found.chunk, found.env_steps) == (1, 2, 200)
    assert (
        "6 of the chunk's 100 environment steps diverged (6.0% > max_diverged_env_steps 5.0%)"
        in found.quantity
    )
    assert str(found).startswith("seed 1 went non-finite in chunk 2/4 (env step 200): ")
    # Counters are cumulative: the same totals after a quiet chunk are fine.
    quiet = chunk_metrics([300, 300], [5, 6], [150, 150], [0, 0])
    assert first_divergence(FINITE, quiet, now, NonFiniteLimits(), chunk=3, chunks=4) is None
    # 13 skipped in 50 update steps is 0.26 per step > 0.25.
    skips = chunk_metrics([300, 300], [6, 6], [150, 150], [13, 0])
    found = first_divergence(FINITE, skips, now, NonFiniteLimits(), chunk=3, chunks=4)
    assert (
        found.seed == 0
        and "13 updates skipped in the chunk's 50 update steps (0.26 per step" in found.quantity
    )
    assert (
        first_divergence(FINITE, skips, now, NonFiniteLimits(max_skipped_updates=0.3), 3, 4) is None
    )


def test_non_finite_parameters_are_named_before_counts():
    parts = dict(
        policy=np.array([True, True]), critic=np.array([True, False]), model=np.array([True, False])
    )
    now = chunk_metrics([100, 100], [0, 0], [50, 50], [0, 0])
    found = first_divergence(parts, now, None, NonFiniteLimits(), chunk=1, chunks=1)
    assert (
        found.seed == 1
        and found.quantity == "critic parameters are not finite; model parameters are not finite"
    )


def test_limits_are_checked_when_built():
    with pytest.raises(
        ValueError, match=r"max_diverged_env_steps=-0.1: must be a number in \[0, 1\]"
    ):
        NonFiniteLimits(max_diverged_env_steps=-0.1)
    with pytest.raises(ValueError, match=r"max_skipped_updates=inf: must be a number in \[0, 3\]"):
        NonFiniteLimits(max_skipped_updates=float("inf"))


# --- whole runs -------------------------------------------------------------------------


def test_a_run_with_a_huge_learning_rate_stops_keeps_its_finite_checkpoint_and_cannot_resume(
    tmp_path, capsys
):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--out", str(out), *LQG, "--policy-lr", "1e30", "--critic-lr", "1e30"])
    assert exit_.value.code == divergence.EXIT_STATUS == 3
    err = capsys.readouterr().err.strip().splitlines()
    # Adam's first steps of size 1e30 make the actions so large that lqg's states
    # overflow (the parameters themselves stay finite: later updates are skipped).
    assert re.fullmatch(
        r"svgx: error: run stopped: seed [01] went non-finite in chunk 2/3 \(env step 8\): .*"
        r"(environment steps diverged|updates skipped|parameters are not finite).*; "
        + re.escape(f"{out} keeps the checkpoint after chunk 1 and the metrics of every chunk"),
        err[-1],
    ), err[-1]
    assert sum("chunk 3/3" in line for line in err) == 0  # it stopped
    # The metrics of both seeds for chunks 1 and 2; the checkpoint of chunk 1, finite.
    history = rundir.read_metrics(out)
    assert len(history) == 2 and all(m["env_steps"].shape == (2,) for m in history)
    assert np.isfinite(history[0]["eval_return"]).all()
    spec = rundir.read_spec(out)
    state, chunks_done = rundir.load_checkpoint(out, runner.state_shape(spec))
    assert chunks_done == 1
    assert divergence.first_nonfinite_part(parameters(state)) is None
    assert json.loads((out / rundir.STOPPED).read_text())["chunk"] == 2
    # resume refuses it, in one line.
    with pytest.raises(SystemExit) as exit_:
        cli.main(["resume", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and re.search(
        r"the run stopped because seed [01] went non-finite in chunk 2", err
    )
    # A checkpoint that itself holds non-finite parameters is refused too.
    (out / rundir.STOPPED).unlink()
    policy = jax.tree.map(
        lambda x: jnp.full_like(x, jnp.nan), eqx.filter(state.policy, eqx.is_inexact_array)
    )
    state = eqx.tree_at(lambda s: s.policy, state, eqx.combine(policy, state.policy))
    rundir.save_checkpoint(out, state, chunks_done)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["resume", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert (
        len(err.splitlines()) == 1
        and "seed 0's policy parameters are not finite; refusing to resume" in err
    )


def diverging_lqg(monkeypatch):
    """lqg whose transition diverges whenever |s_0| > 0.5 (often, from its initial states)."""
    config = Config(iterations=4, chunks=2, **TINY_LQG)
    env_class = type(config.make_env())
    original = env_class.transition

    def transition(self, s, a, noise):
        return jnp.where(jnp.abs(s[0]) > 0.5, jnp.inf, original(self, s, a, noise))

    monkeypatch.setattr(env_class, "transition", transition)
    return config


def test_diverged_steps_past_the_limit_stop_the_run_and_the_limit_is_configurable(monkeypatch):
    config = diverging_lqg(monkeypatch)
    lines = []
    with pytest.raises(NonFiniteError) as error:
        runner.run(config, seeds=2, progress=lines.append)
    found = error.value.divergence
    assert found.chunk == 1 and "environment steps diverged" in found.quantity
    assert str(error.value) == f"run stopped: {found}"
    assert len(error.value.run.metrics) == 1  # every seed's metrics up to that chunk
    assert any(line.startswith(f"stopped: {found}") for line in lines)
    # With the limits raised the run goes to the end, and warns about what it saw (the
    # simulator Jacobians recompute the diverging transitions, so updates fail too).
    lines = []
    limits = NonFiniteLimits(max_diverged_env_steps=1, max_skipped_updates=3)
    result = runner.run(config, seeds=2, progress=lines.append, limits=limits)
    assert len(result.metrics) == 2
    diverged = result.metrics[-1]["nonfinite_env_steps"]
    assert diverged.sum() > 0
    assert any("WARNING this chunk:" in line and "diverged env steps" in line for line in lines)
    summary = [line for line in lines if line.startswith("seed ")]
    assert len(summary) == 2
    for seed, line in enumerate(summary):
        assert f"{int(diverged[seed])} diverged env steps in the run" in line or diverged[seed] == 0


def test_parameters_that_become_nan_stop_the_run_in_python(tmp_path, monkeypatch):
    """The case that used to pass silently: a learning rate of inf (now refused as input,
    so the check is bypassed here) turns the policy's parameters into NaN at its first
    update; the run stops after that chunk and says which parameters."""
    monkeypatch.setattr(Hyperparams, "check", lambda self: self)
    config = Config(iterations=6, chunks=3, random_steps=2, **TINY_LQG)
    spec = rundir.RunSpec(config, Hyperparams(policy_lr=float("inf")), seeds=2, seed=0)
    out = tmp_path / "run"
    with pytest.raises(NonFiniteError) as error:
        runner.run_in_dir(out, spec, progress=lambda line: None)
    found = error.value.divergence
    assert (found.seed, found.chunk, found.env_steps) == (0, 2, 8)
    assert found.quantity.startswith("policy parameters are not finite")
    assert error.value.checkpoint == str(out) and len(error.value.run.metrics) == 2
    assert len(rundir.read_metrics(out)) == 2
    assert rundir.load_checkpoint(out, runner.state_shape(spec))[1] == 1


SWEEP = """
seeds = 2
env = "lqg"
env_options = {horizon = 10}
algo = "svg1_er"
linear_policy = true
squash = false
n_envs = 2
iterations = 6
chunks = 3
batch_size = 16
critic_hidden = [[16, 16]]
eval_episodes = 2
policy_lr = 1e30
critic_lr = 1e30
random_steps = [2, 6]
"""


def test_a_sweep_group_that_goes_non_finite_stops_and_the_others_run(tmp_path, capsys):
    """Group random_steps=2 learns from iteration 3 on and blows up; random_steps=6
    never learns and finishes. Resuming the sweep does not run the stopped group again."""
    file = tmp_path / "sweep.toml"
    file.write_text(SWEEP)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["sweep", str(file)])
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "went non-finite in chunk 2/3" in err.strip().splitlines()[-1]
    groups = sorted((tmp_path / "sweep").glob("g*"))
    assert len(groups) == 2
    finished = [g for g in groups if not (g / rundir.STOPPED).exists()]
    assert len(finished) == 1 and len(rundir.read_metrics(finished[0])) == 3
    with pytest.raises(SystemExit) as exit_:
        cli.main(["resume", str(tmp_path / "sweep")])
    assert exit_.value.code == 3
    err = capsys.readouterr().err
    assert "chunk 1/" not in err  # nothing ran again
