"""An algorithm registered from outside the package trains like a built-in one: through
:func:`svgx.runner.run`, and through ``svgx train --algo NAME`` with its own option.

The example is README's ("Adding an estimator"): SVG(1) with replay whose importance
weights are self-normalised over the batch (``w_i = n π_i/q_i / Σ_j π_j/q_j``, so they
average 1) and then capped at its own option ``cap``, instead of truncated at
``Hyperparams.truncation``.
"""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from small import TINY_LQG, TINY_LQG_FLAGS

from svgx import algorithms, cli, estimators, replay, rundir
from svgx.config import Config
from svgx.runner import run


@dataclasses.dataclass(frozen=True)
class SVG1SelfNormalised(algorithms.Algorithm):
    """SVG(1) on replayed transitions, weights w_i = n (π_i/q_i) / Σ_j π_j/q_j, capped."""

    data, critic, uses_dynamics = "replay", "v", True
    cap: float = 5.0  # an option: Config(algo_options={"cap": 2.0}), svgx train --cap 2

    def policy_loss(self, inputs, *, key):
        ready = replay.count_sequence_starts(inputs.buffer, 1) > 0
        batch = replay.sample_sequences(inputs.buffer, key, inputs.batch_size, 1)  # [n, 1, ...]

        def loss(policy):
            log_ratio = (
                jax.vmap(policy.log_prob)(batch.s[:, 0], batch.a[:, 0]) - batch.log_prob[:, 0]
            )
            w = jnp.minimum(jax.nn.softmax(log_ratio) * log_ratio.shape[0], self.cap)
            return estimators.svg_loss(
                policy,
                inputs.dynamics,
                inputs.reward,
                inputs.critic,
                batch,
                gamma=inputs.hp.gamma,
                weights=w,
            )

        return loss, ready

    def policy_metrics(self, aux):  # report the weights, as the built-in replay SVGs do
        return algorithms.importance_weight_metrics(aux)


algorithms.register("svg1_snis", SVG1SelfNormalised)

TINY = dict(iterations=6, chunks=2, **TINY_LQG)


def test_a_registered_algorithm_trains_through_the_runner_with_its_own_option():
    config = Config(algo="svg1_snis", algo_options=dict(cap=0.5), **TINY)
    result = run(config, seeds=2, progress=lambda line: None)
    last = result.metrics[-1]
    assert {"value_loss", "importance_weight_mean", "importance_weight_max"} <= set(last)
    assert "model_nll" not in last  # simulator Jacobians: no model
    for name, values in last.items():
        assert np.isfinite(values).all(), name
    # Its own weights: normalised to mean 1, then capped at 0.5 (the built-in rule, truncation
    # at Hyperparams.truncation = 5 of ratios near 1 this early, would give weights near 1).
    weights = np.stack([m["importance_weight_max"] for m in result.metrics])
    assert (weights <= 0.5 + 1e-6).all() and (weights > 0.4).all(), weights
    assert last["nonfinite_updates"].sum() == 0


def test_a_registered_algorithm_is_a_choice_of_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    flags = [
        *TINY_LQG_FLAGS,
        *("--iterations", "4", "--chunks", "2"),
    ]
    cli.main(
        [
            "train",
            "--out",
            str(out),
            "--algo",
            "svg1_snis",
            "--cap",
            "0.5",
            "--jacobians",
            "learned",
            *flags,
        ]
    )
    recorded = json.loads((out / rundir.CONFIG).read_text())["config"]
    assert recorded["algo"] == "svg1_snis" and recorded["algo_options"] == {"cap": 0.5}
    assert rundir.read_spec(out).config.algorithm == SVG1SelfNormalised(cap=0.5)
    row = json.loads((out / rundir.METRICS).read_text().splitlines()[-1])
    assert np.isfinite(row["model_nll"]) and row["importance_weight_max"] <= 0.5 + 1e-6

    with pytest.raises(SystemExit) as exit_:  # its option is refused for another algorithm
        cli.main(
            ["train", "--out", str(tmp_path / "other"), "--algo", "svg1_er", "--cap", "2", *flags]
        )
    assert exit_.value.code == 2
    assert "--cap: an option of svg1_snis, not of algo='svg1_er'" in capsys.readouterr().err


def test_the_registry_refuses_what_the_loop_could_not_run():
    with pytest.raises(ValueError, match="'svg1_er': already registered to SVG1Replay"):
        algorithms.register("svg1_er", SVG1SelfNormalised)
    algorithms.register("svg1_snis", SVG1SelfNormalised)  # the same class again: nothing happens

    @dataclasses.dataclass(frozen=True)
    class NoLoss(algorithms.Algorithm):
        data, critic, uses_dynamics = "replay", None, False

    with pytest.raises(ValueError, match="not a concrete subclass"):
        algorithms.register("no_loss", NoLoss)

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class NoDefault(SVG1SelfNormalised):
        depth: int

    with pytest.raises(ValueError, match="option depth needs a default"):
        algorithms.register("no_default", NoDefault)

    @dataclasses.dataclass(frozen=True)
    class Undeclared(SVG1SelfNormalised):
        data = "yesterday"

    with pytest.raises(ValueError, match=r"Undeclared\.data='yesterday'"):
        algorithms.register("undeclared", Undeclared)
    assert "no_loss" not in algorithms.names() and "undeclared" not in algorithms.names()
