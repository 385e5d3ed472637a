"""svgx report: the learning table's figures on run directories with made-up metrics."""

import dataclasses
import json
import math

import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from svgx import cli, plot, report, rundir
from svgx.config import Config, Hyperparams
from svgx.io import atomic_write_text


def svgx_run(path, success, returns, *, wall, compile_time, algo="svg1_er"):
    """A run directory of ``len(success)`` chunks of 100 env steps and ``len(success[0])``
    seeds."""
    success = np.asarray(success, float)
    spec = rundir.RunSpec(Config(env="lqg", algo=algo), Hyperparams(), success.shape[1], 0)
    atomic_write_text(path / rundir.CONFIG, spec.to_json())
    seeds = success.shape[1]
    history = [
        dict(
            env_steps=np.full(seeds, 100 * (i + 1)),
            eval_success=success[i],
            eval_return=np.asarray(returns[i], float),
            wall_time=np.full(seeds, wall[i]),
            compile_time=np.full(seeds, compile_time),
        )
        for i in range(len(success))
    ]
    rundir.write_metrics(path, history)


def brax_run(path, success, wall_per_seed, algo="sac"):
    """A baseline directory: evaluations at 0, 100, 200, ... env steps."""
    success = np.asarray(success, float)
    seeds = success.shape[1]
    fields = dict(env="lqg", algo=algo, seeds=seeds, learning_rate=3e-4, reward_scaling=1.0)
    atomic_write_text(path / rundir.CONFIG, json.dumps(dict(format=2, baseline=fields)))
    history = [
        dict(
            env_steps=np.full(seeds, 100 * i),
            eval_success=success[i],
            eval_return=success[i] * 10,
            wall_time=np.asarray(wall_per_seed[i], float),
        )
        for i in range(len(success))
    ]
    rundir.write_metrics(path, history)


def test_success_interval_steps_to_half_and_ratio_to_sac(tmp_path):
    svg, sac = tmp_path / "svg", tmp_path / "sac"
    # Mean success over 3 seeds: 0, 1/3, 2/3, 1 -> first >= 50% at the third chunk (300 steps).
    success = [[0, 0, 0], [1, 0, 0], [1, 1, 0], [1, 1, 1]]
    returns = [[0, 0, 0], [1, 2, 3], [4, 5, 6], [7, 8, 12]]
    svgx_run(svg, success, returns, wall=[60, 70, 80, 90], compile_time=50.0)
    # SAC reaches a mean of 50% at its evaluation of 200 steps.
    brax_run(
        sac,
        [[0, 0], [0, 0], [1, 0], [1, 1]],
        # per seed: 30 s of start-up, then 10 s per 100 steps; the second seed twice as slow
        [[5, 5], [40, 50], [50, 70], [60, 90]],
    )
    rows = report.rows([svg, sac])
    assert [r.method for r in rows] == ["svg1_er (simulator)", "sac (Brax), lr 0.0003"]
    svg_row, sac_row = rows
    assert svg_row.steps_to_level == 300 and sac_row.steps_to_level == 200
    assert report.reference_steps(rows, "lqg") == 200
    mean = np.mean([7, 8, 12])
    half = stats.t.ppf(0.975, 2) * np.std([7, 8, 12], ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(svg_row.returns, (mean, mean - half, mean + half))
    assert svg_row.success == (1.0, 1.0, 1.0)
    # Over the run: each seed's mean over its 4 evaluations (3, 3.75, 5.25); Brax's
    # evaluation at 0 steps is left out (seeds: 0, 10, 10 and 0, 0, 10).
    over_run = [3.0, 3.75, 5.25]
    half = stats.t.ppf(0.975, 2) * np.std(over_run, ddof=1) / np.sqrt(3)
    np.testing.assert_allclose(svg_row.run_returns, (4.0, 4.0 - half, 4.0 + half))
    assert sac_row.run_returns[0] == pytest.approx(5.0)
    # svgx: measured compile time; 3 seeds x 400 steps in 90 - 50 s.
    assert (svg_row.compile_s, svg_row.wall_s) == (50.0, 90.0)
    assert svg_row.steps_per_s == pytest.approx(3 * 400 / 40)
    # Brax: per seed, start-up = wall - steps / steady rate: 60 - 300/10 = 30 and 90 - 300/5 = 30.
    assert sac_row.compile_s == pytest.approx(60.0) and sac_row.compile_estimated
    assert sac_row.wall_s == pytest.approx(150.0)
    assert sac_row.steps_per_s == pytest.approx(2 * 300 / 90)
    table = report.markdown(rows)
    assert "| lqg | svg1_er (simulator) | 3 | 400 | 100% (100%–100%) |" in table
    assert "| 300 | 1.50 |" in table and "| ~60 |" in table
    assert f"| 4 ({4 - half:.3g}–{4 + half:.3g}) | 300 |" in table
    negative = dataclasses.replace(svg_row, run_returns=(-4.0, -6.5, -1.5))
    assert "| -4 (-6.5 – -1.5) | 300 |" in report.markdown([negative, sac_row])


def test_a_baseline_seed_that_stopped_non_finite_is_counted_and_left_out(tmp_path):
    """svgx.baselines writes NaN after a stopped seed's last evaluation: the figures at the
    budget are the other seeds', its wall time is its time until it stopped, and the
    seeds column says how many are missing."""
    sac = tmp_path / "sac"
    brax_run(
        sac,
        [[0, 0, 0], [0, 0, 0], [1, 0, 1], [1, 1, 1]],
        [[5, 5, 5], [40, 50, 40], [50, 70, 50], [60, 90, 60]],
    )
    history = rundir.read_metrics(sac)
    for h in history[2:]:  # the second seed stopped after its second evaluation
        h["eval_success"][1] = h["eval_return"][1] = h["wall_time"][1] = np.nan
    rundir.write_metrics(sac, history)
    (row,) = report.rows([sac])
    assert row.nonfinite == 1 and row.success == (1.0, 1.0, 1.0) and row.returns[0] == 10
    assert row.steps_to_level == 200  # the mean over the seeds that report
    assert row.run_returns == pytest.approx((20 / 3,) * 3)  # the two seeds that ran
    assert row.wall_s == pytest.approx(60 + 50 + 60)
    assert "| sac (Brax), lr 0.0003 | 3 (1 non-finite) | 300 | 100% (100%–100%) |" in (
        report.markdown([row])
    )


def test_a_method_that_never_reaches_half_and_a_missing_reference(tmp_path):
    svgx_run(tmp_path / "a", [[0, 0], [0, 1]], [[0, 0], [0, 1]], wall=[2, 3], compile_time=1.0)
    (row,) = report.rows([tmp_path / "a"])
    assert math.isinf(row.steps_to_level) is False and row.steps_to_level == 200
    assert math.isnan(report.reference_steps([row], "lqg"))
    assert "no reference" in report.markdown([row])
    svgx_run(tmp_path / "b", [[0, 0], [0, 0]], [[0, 0], [0, 0]], wall=[2, 3], compile_time=1.0)
    brax_run(tmp_path / "sac", [[0], [0], [0]], [[1], [2], [3]])
    rows = report.rows([tmp_path / "b", tmp_path / "sac"])
    assert all(math.isinf(r.steps_to_level) for r in rows)
    assert "| not reached | — |" in report.markdown(rows)


def test_report_command_writes_the_table_and_names_a_missing_directory(tmp_path, capsys):
    svgx_run(tmp_path / "a", [[0], [1]], [[0], [1]], wall=[2, 3], compile_time=1.0)
    out = tmp_path / "learning.md"
    cli.main(["report", str(tmp_path / "a"), "--out", str(out)])
    assert out.read_text() == capsys.readouterr().out
    with pytest.raises(SystemExit) as exit_:
        cli.main(["report", str(tmp_path / "missing")])
    assert exit_.value.code == 2
    assert "missing" in capsys.readouterr().err


def test_a_sweeps_rows_name_what_tells_its_groups_and_combinations_apart(tmp_path):
    (tmp_path / "sweep.toml").write_text("# a sweep directory\n")
    for name, n_step in (("g00", 1), ("g01", 5)):
        d = tmp_path / name
        success = [[0, 0, 1, 1], [1, 1, 1, 1]]
        svgx_run(d, success, success, wall=[2, 3], compile_time=1.0)
        spec = rundir.read_spec(d)
        config = dataclasses.replace(spec.config, critic_n_step=n_step)
        atomic_write_text(d / rundir.CONFIG, dataclasses.replace(spec, config=config).to_json())
        # 2 step sizes × 2 seeds; tau is the same for all and goes unnamed.
        members = [dict(policy_lr=lr, tau=0.05, seed=s) for lr in (1e-3, 3e-4) for s in (0, 1)]
        atomic_write_text(d / rundir.MEMBERS, json.dumps(members))
    methods = [r.method for r in report.rows([tmp_path])]
    assert methods == [
        f"svg1_er (simulator), critic_n_step={n}: policy_lr={lr}"
        for n in (1, 5)
        for lr in (1e-3, 3e-4)
    ]
    # Per combination: seeds 0, 1 of policy_lr=1e-3 succeed at the first chunk only if both do.
    assert [r.steps_to_level for r in report.rows([tmp_path])][:2] == [200, 100]


def test_an_estimate_the_rate_cannot_support_is_unknown(tmp_path):
    # The run slowed down after its first epoch: wall - steps / (later rate) < 0.
    brax_run(tmp_path / "sac", [[0], [0], [0]], [[1], [2], [100]])
    (row,) = report.rows([tmp_path / "sac"])
    assert math.isnan(row.compile_s)
    assert "| unknown |" in report.markdown([row])


def test_a_sweep_still_running_reports_its_finished_runs(tmp_path):
    (tmp_path / "sweep.toml").write_text("# a sweep directory\n")
    svgx_run(tmp_path / "g00", [[0], [1]], [[0], [1]], wall=[2, 3], compile_time=1.0)
    running = tmp_path / "g01"
    running.mkdir()
    atomic_write_text(running / rundir.CONFIG, rundir.read_spec(tmp_path / "g00").to_json())
    assert len(report.rows([tmp_path])) == 1
    with pytest.raises(rundir.RunDirError, match="no metrics yet"):
        report.rows([running])


def test_the_band_is_a_t_interval_clipped_to_the_metrics_range():
    values = np.array([[0.0, 0.0, 0.0, 1.0, 1.0], [2.0, 4.0, 6.0, 8.0, 10.0]])
    mean, low, high = plot.confidence_band(values)
    half = stats.t.ppf(0.975, 4) * values.std(axis=1, ddof=1) / np.sqrt(5)
    np.testing.assert_allclose(mean, [0.4, 6.0])
    np.testing.assert_allclose(high - mean, half)
    assert low[0] < 0 and high[0] > 1  # a success rate's raw interval leaves [0, 1]
    _, low, high = plot.confidence_band(values[:1], bounds=plot.BOUNDS["eval_success"])
    assert (low[0], high[0]) == (0.0, 1.0)
    _, low, high = plot.confidence_band(np.array([[0.0, 1.0, 1.0, 1.0, 1.0]]), bounds=(0, 1))
    assert 0 < low[0] and high[0] == 1.0


def test_curve_labels_name_what_tells_the_runs_apart(tmp_path):
    dirs = []
    for name, hidden in (("g00", (200, 100)), ("g01", (50, 100))):
        d = tmp_path / name
        svgx_run(d, [[0, 1]], [[1.0, 2.0]], wall=[2], compile_time=1.0)
        spec = rundir.read_spec(d)
        config = dataclasses.replace(spec.config, critic_hidden=hidden)
        atomic_write_text(d / rundir.CONFIG, dataclasses.replace(spec, config=config).to_json())
        dirs.append(d)
    fields = plot.distinguishing(dirs)
    assert fields == ("critic_hidden",)
    assert [plot.label(d, fields=fields) for d in dirs] == [
        "svg1_er (simulator), critic_hidden=(200, 100) on lqg, 2 seeds",
        "svg1_er (simulator), critic_hidden=(50, 100) on lqg, 2 seeds",
    ]
    assert plot.distinguishing(dirs[:1]) == ()
    # A hyperparameter every member of a run shares is named too; one a run sweeps is not.
    for d, coef in zip(dirs, (0.01, 0.003), strict=True):
        spec = rundir.read_spec(d)
        held = dataclasses.replace(spec, hparams=Hyperparams(entropy_coef=coef))
        atomic_write_text(d / rundir.CONFIG, held.to_json())
    assert plot.distinguishing(dirs) == ("critic_hidden", "entropy_coef")
    assert plot.label(dirs[1], fields=plot.distinguishing(dirs)) == (
        "svg1_er (simulator), critic_hidden=(50, 100), entropy_coef=0.003 on lqg, 2 seeds"
    )
    swept = dataclasses.replace(spec, hparams=Hyperparams(entropy_coef=jnp.array([0.0, 0.1])))
    atomic_write_text(dirs[1] / rundir.CONFIG, swept.to_json())
    assert plot.distinguishing(dirs) == ("critic_hidden",)
    # The report's rows name them the same way, though the runs are not one sweep's groups.
    assert [row.method for row in report.rows(dirs)] == [
        "svg1_er (simulator), critic_hidden=(200, 100)",
        "svg1_er (simulator), critic_hidden=(50, 100)",
    ]


def test_baselines_that_differ_in_an_option_are_named_by_it(tmp_path):
    """Two SAC runs that differ only in their updates per step (and budget, which is not a
    setting of the method) get names that tell them apart, in the table and the legend."""
    runs = []
    for name, updates, steps, success in (
        ("b00", 1, 100, [[0, 0], [0, 0], [1, 1]]),  # 50% success at 200 steps
        ("b01", 4, 500, [[0, 0], [1, 1], [1, 1]]),  # at 100
    ):
        d = tmp_path / name
        brax_run(d, success, [[1, 1], [2, 2], [3, 3]])
        description = json.loads((d / rundir.CONFIG).read_text())
        description["baseline"] |= dict(updates_per_step=updates, steps=steps, hidden=[64, 64])
        atomic_write_text(d / rundir.CONFIG, json.dumps(description))
        runs.append(d)
    assert plot.baseline_distinguishing(runs) == ("updates_per_step",)
    assert plot.baseline_distinguishing(runs[:1]) == ()
    # A run recorded before a field existed has its default: apg_horizon is not a difference.
    description = json.loads((runs[0] / rundir.CONFIG).read_text())
    description["baseline"]["apg_horizon"] = 32
    atomic_write_text(runs[0] / rundir.CONFIG, json.dumps(description))
    assert plot.baseline_distinguishing(runs) == ("updates_per_step",)
    assert [r.method for r in report.rows(runs)] == [
        "sac (Brax), lr 0.0003, updates_per_step=1",
        "sac (Brax), lr 0.0003, updates_per_step=4",
    ]
    # svgx reaches 50% at 200 steps: its ratio is to the faster SAC run, which is named.
    svgx_run(tmp_path / "svg", [[0, 0], [1, 1]], [[0, 0], [1, 1]], wall=[2, 3], compile_time=1.0)
    table = report.markdown(report.rows([tmp_path / "svg", *runs]))
    assert "| 200 | 2.00 |" in table
    assert table.endswith(
        "\n* lqg: ratios are to sac (Brax), lr 0.0003, updates_per_step=4, the fastest to 50% "
        "success of the 2 SAC rows.\n"
    )
    assert "ratios are to" not in report.markdown(report.rows([tmp_path / "svg", runs[0]]))
    fields = plot.baseline_distinguishing(runs)
    assert plot.label(runs[1], baseline_fields=fields) == (
        "sac (Brax), lr 0.0003, updates_per_step=4 on lqg, 2 seeds"
    )
    assert (
        plot.baseline_name({"algo": "ppo", "learning_rate": 1e-3, "hidden": [32, 32]}, ("hidden",))
        == "ppo (Brax), lr 0.001, hidden=(32, 32)"
    )
