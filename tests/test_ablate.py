"""The gradient-quality ablation grid (:mod:`svgx.ablate`, ``svgx ablate``; README,
"Model-error ablations"): how a grid file expands into cells, its errors at parse
time, a tiny grid on ``lqg`` end to end (with the tolerance of
tests/test_diagnostics.py: with simulator Jacobians and the exact critic, SVG(1)'s
cosine of the mean estimate to the exact gradient is ≥ 0.99), resuming, and
policies from ``svgx train`` run directories."""

import dataclasses
import json
import math
import os
import pathlib
import shutil
import tomllib

import equinox as eqx
import jax
import numpy as np
import pytest
from small import TINY_LQG
from test_diagnostics import trace_counts, traces

import envs
from svgx import ablate, cli, diagnostics, rundir, runner, sweep
from svgx.config import Config, Hyperparams, env_steps_per_iteration
from svgx.policy import linear_gaussian_params

# Two depths x (the simulator + two model widths), 2 seeds, tiny sizes: 6 cells.
TINY_GRID = """
env = "lqg"
horizon = 10
estimator = ["svg1", "svgk"]
k = 5
jacobians = ["simulator", "learned"]
model_hidden = [5, 10]
model_transitions = 200
model_steps = 200
samples = 16
batches = 4
seeds = 2
"""


def cells_of(text):
    return ablate.parse(text, "test grid")


def test_axes_multiply_only_the_cells_they_apply_to():
    cells = cells_of(
        """
        env = ["lqg", "cartpole"]
        estimator = ["svg0", "svg1", "svgk", "svg_inf"]
        k = [2, 5]
        jacobians = ["simulator", "learned"]
        model_hidden = [5, 10]
        model_transitions = [100, 1000]
        [env_options.cartpole]
        horizon = 20
        """
    )
    # Per task: svg0 once (no Jacobian source); svg1 and svg_inf: the simulator + 2 widths
    # x 2 amounts of data = 5; svgk: 5 per k.
    assert len(cells) == 2 * (1 + 5 + 2 * 5 + 5)
    for cell in cells:
        fields = cell.fields
        assert (fields["k"] is not None) == (fields["estimator"] == "svgk")
        assert (fields["jacobians"] is None) == (fields["estimator"] == "svg0")
        learned = fields["jacobians"] == "learned"
        for name in ("model_hidden", "model_transitions", "model_steps"):
            assert (fields[name] is not None) == learned, fields
        # lqg's reference is exact: its sample count does not apply.
        assert (fields["reference_samples"] is None) == (fields["env"] == "lqg")
        # The per-task table cuts cart-pole to 20 steps and leaves lqg alone (50 steps).
        horizon = 20 if fields["env"] == "cartpole" else 50
        assert fields["env_options"] == ({"horizon": 20} if fields["env"] == "cartpole" else {})
        if learned:
            assert cell.config.model_samples == math.ceil(fields["model_transitions"] / horizon)
    assert len({cell.key for cell in cells}) == len(cells)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("depth = [0, 1]", r"unknown key\(s\) depth; valid: .*estimator"),
        ('estimator = ["svg1", "svg2"]', r"unknown estimator 'svg2'; valid: svg0, svg1"),
        ('estimator = "svg0"\njacobians = "learned"', r"'svg0' uses no dynamics.*simulator"),
        ('estimator = "svgk"\nk = [2, 3]\nhorizon = 10', r"k=3 must divide the horizon \(10\)"),
        ('samples = "16"', r"samples = '16': must be an integer"),
        ("model_transitions = 0", r"model_transitions = 0: must be an integer >= 1"),
        ("gamma = [0.9, 1.5]", r"gamma=1\.5: must be in \(0, 1\]"),
        ('env = ["lqg", "pendulum"]', r"unknown env 'pendulum'; valid names: hand"),
        ("seeds = 0", r"seeds = 0: must be an integer >= 1"),
        ("[env_options.hand]\nhorizon = 100", r"env_options\.hand: .* not one of .*\(lqg\)"),
        ("[env_options]\nsize = 3", r"unknown override\(s\) size for env 'lqg'; valid fields"),
        ('policy = "no/such/run"', r"policy = 'no/such/run': .*not a run directory"),
        ("estimator = 1", r"estimator = 1: must be a string"),
        ("samples = [", r"TOML syntax error"),
    ],
)
def test_bad_grids_fail_at_parse_time_naming_the_key_and_the_value(text, message):
    with pytest.raises(ValueError, match=message):
        cells_of(text)


def test_a_bad_grid_writes_nothing(tmp_path):
    grid = tmp_path / "bad.toml"
    grid.write_text(TINY_GRID + "\nmodel_steps = -1\n")  # TOML: a key given twice
    with pytest.raises(ValueError, match="TOML syntax error"):
        ablate.run_grid(grid)
    grid.write_text(TINY_GRID.replace("model_steps = 200", "model_steps = -1"))
    with pytest.raises(ValueError, match=r"model_steps=-1: must be >= 0"):
        ablate.run_grid(grid)
    assert not (tmp_path / "bad").exists()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny grid, run once: ``(grid file, output directory, records)``."""
    directory = tmp_path_factory.mktemp("ablate")
    grid = directory / "tiny.toml"
    grid.write_text(TINY_GRID)
    records = ablate.run_grid(grid, progress=lambda line: None)
    return grid, directory / "tiny", records


def test_a_tiny_lqg_grid_fills_its_table_and_heat_map(tiny):
    grid, out, records = tiny
    cells = cells_of(grid.read_text())
    assert len(records) == len(cells) == 6
    lines = (out / ablate.CELLS).read_text().splitlines()
    assert [json.loads(line)["cell"] for line in lines] == [cell.fields for cell in cells]
    table = (out / ablate.TABLE).read_text()
    rows = [line for line in table.splitlines() if line.startswith("| initial |")]
    assert len(rows) == 6
    assert "| cosine | corrected cosine | cos. of mean |" in table
    # A cell recorded before the corrected cosine existed, and one whose reference was
    # indistinguishable from zero.
    assert ablate._corrected({"cosine": 0.5}) == "—"
    assert ablate._corrected({"cosine_corrected": None, "cosine_standard_error": None}) == "n/a"
    assert ablate._corrected({"cosine_corrected": 0.4, "cosine_standard_error": 0.05}) == (
        "0.40 ± 0.05"
    )
    assert (out / "heatmap-lqg-initial-n200.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    for record in records:
        cell, per_seed = record["cell"], record["per_seed"]
        assert [s["seed"] for s in per_seed] == [0, 1]
        assert record["cosine"] == pytest.approx(np.mean([s["cosine"] for s in per_seed]))
        # One exact reference per seed, whatever the estimator: nothing to correct.
        assert per_seed[0]["reference_standard_error"] == 0.0
        for s in per_seed:
            assert s["cosine_corrected"] == pytest.approx(s["cosine"])
        errors = [s["cosine_standard_error"] for s in per_seed]
        assert record["cosine_standard_error"] == pytest.approx(np.hypot(*errors) / 2)
        assert record["cosine_corrected"] == pytest.approx(record["cosine"])
        if cell["jacobians"] == "simulator":
            # Unbiased with the simulator's Jacobians and the exact critic.
            assert all(s["cosine_of_mean"] >= 0.99 for s in per_seed), record
            assert record["cosine"] >= 0.95, record
            assert "jacobian_error_s" not in record and record["model_samples"] is None
        else:
            assert record["model_samples"] == 20  # 200 transitions of 10 steps
            for name in ("jacobian_error_s", "jacobian_error_a", "model_one_step_mse"):
                assert 0 < record[name] < math.inf, record
    # lqg's reference is exact: the same gradient for every cell and seed.
    norms = [s["reference_norm"] for r in records for s in r["per_seed"]]
    assert norms == pytest.approx([norms[0]] * len(norms), rel=1e-6)
    # Cells with the same model (seed, width, data) report the same model errors.
    learned = [r for r in records if r["cell"]["jacobians"] == "learned"]
    by_width = {}
    for r in learned:
        errors = [s["jacobian_error_a"] for s in r["per_seed"]]
        by_width.setdefault(r["cell"]["model_hidden"], []).append(errors)
    assert all(len(v) == 2 and v[0] == v[1] for v in by_width.values()), by_width


def count_diagnoses(monkeypatch):
    """The configs of the diagnoses run (one per seed, each with its seed)."""
    calls = []
    diagnose_seeds = diagnostics.diagnose_seeds

    def counted(config, seeds, **kwargs):
        calls.extend(dataclasses.replace(config, seed=seed) for seed in seeds)
        return diagnose_seeds(config, seeds, **kwargs)

    monkeypatch.setattr(diagnostics, "diagnose_seeds", counted)
    return calls


def test_rerunning_skips_finished_cells_and_recomputes_only_an_unfinished_one(
    tiny, tmp_path, monkeypatch
):
    grid, finished, _ = tiny
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    before = (out / ablate.CELLS).read_bytes()
    calls = count_diagnoses(monkeypatch)
    ablate.run_grid(grid, out, progress=lambda line: None)
    assert calls == [] and (out / ablate.CELLS).read_bytes() == before

    # An interrupted grid: the last cell never finished.
    lines = before.decode().splitlines(keepends=True)
    (out / ablate.CELLS).write_text("".join(lines[:-1]))
    # --report-only shows the 5 finished cells and runs none.
    cli.main(["ablate", str(grid), "--out", str(out), "--report-only"])
    assert calls == [] and (out / ablate.CELLS).read_text() == "".join(lines[:-1])
    table = (out / ablate.TABLE).read_text()
    assert len([line for line in table.splitlines() if line.startswith("| initial |")]) == 5
    assert f"svgx ablate {grid} --out {out} --report-only" in table
    assert "5 of the grid's 6 cells are finished" in table
    released = []  # compiled programs are released after each cell run (svgx.cache)
    monkeypatch.setattr(ablate, "release_compiled_programs", lambda: released.append(1))
    # The first run saved each seed's reference gradient; the resumed cell reads them.
    saved = sorted((out / ablate.REFERENCES).glob("*.npz"))
    assert len(saved) == 2
    computed = []
    reference_gradients = diagnostics.reference_gradients
    monkeypatch.setattr(
        diagnostics,
        "reference_gradients",
        lambda *args: computed.append(1) or reference_gradients(*args),
    )
    records = ablate.run_grid(grid, out, progress=lambda line: None)
    assert computed == [] and sorted((out / ablate.REFERENCES).glob("*.npz")) == saved
    assert released == [1]
    assert "--report-only" not in (out / ablate.TABLE).read_text()
    assert len(calls) == 2  # that cell's two seeds, nothing else
    assert {c.seed for c in calls} == {0, 1}
    after = (out / ablate.CELLS).read_text().splitlines(keepends=True)
    assert after[:-1] == lines[:-1]
    assert json.loads(after[-1])["cell"] == json.loads(lines[-1])["cell"]
    assert json.loads(after[-1])["cosine"] == pytest.approx(json.loads(lines[-1])["cosine"])
    assert len(records) == 6


def test_a_seed_whose_estimate_is_not_finite_is_recorded_and_the_grid_goes_on(
    tiny, tmp_path, monkeypatch
):
    grid, finished, _ = tiny
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    lines = (out / ablate.CELLS).read_text().splitlines(keepends=True)
    (out / ablate.CELLS).write_text("".join(lines[:-1]))
    diagnose_seeds = diagnostics.diagnose_seeds

    def fails_for_seed_1(config, seeds, **kwargs):
        results = diagnose_seeds(config, seeds, **kwargs)
        assert kwargs["nonfinite"] == "return"
        return [
            FloatingPointError("a gradient estimate is not finite") if seed == 1 else result
            for seed, result in zip(seeds, results, strict=True)
        ]

    monkeypatch.setattr(diagnostics, "diagnose_seeds", fails_for_seed_1)
    record = ablate.run_grid(grid, out, progress=lambda line: None)[-1]
    assert record["nonfinite_seeds"] == 1 and record["cosine_spread"] is None
    assert record["per_seed"][1] == {"seed": 1, "error": "a gradient estimate is not finite"}
    assert record["cosine"] == record["per_seed"][0]["cosine"]
    assert "(1 seed(s) non-finite)" in (out / ablate.TABLE).read_text()


def test_ablate_command(tiny, capsys):
    grid, out, _ = tiny
    cli.main(["ablate", str(grid), "--out", str(out)])  # finished: nothing to compute
    assert str(out / ablate.TABLE) in capsys.readouterr().out
    bad = out.parent / "bad.toml"
    bad.write_text('estimator = "svg9"\n')
    with pytest.raises(SystemExit) as exit_:
        cli.main(["ablate", str(bad)])
    assert exit_.value.code == 2
    assert "unknown estimator 'svg9'" in capsys.readouterr().err


def test_held_out_model_errors_fall_as_the_model_learns():
    config = diagnostics.DiagnoseConfig(
        env="lqg", horizon=10, jacobians="learned", model_hidden=10, model_samples=50
    )
    env = diagnostics.make_env(config)
    keys = diagnostics.Keys.of(0)
    policy = diagnostics.make_policy(env, config, keys.policy)
    errors = {
        steps: ablate.fit_and_measure(
            env, policy, dataclasses.replace(config, model_steps=steps), keys.model
        )[1]
        for steps in (0, 3000)
    }
    # Measured: MSE 0.77 -> 0.40, Jacobian error (state) 1.05 -> 0.76.
    assert errors[3000]["model_one_step_mse"] < 0.75 * errors[0]["model_one_step_mse"], errors
    assert errors[3000]["jacobian_error_s"] < 0.9 * errors[0]["jacobian_error_s"], errors


def test_a_second_seed_of_a_learned_cell_traces_nothing():
    """Its policy, model, model errors and estimates come from the programs the first
    seed compiled (sizes no other test uses, so that the first seed traces)."""
    grid = """
    env = "lqg"
    horizon = 6
    estimator = "svg1"
    jacobians = "learned"
    model_hidden = 3
    model_transitions = 30
    model_steps = 10
    samples = 5
    batches = 2
    seed = {seed}
    """
    with traces() as first:
        (cell,) = cells_of(grid.format(seed=0))
        ablate.run_cell(cell)
    assert first, "the trace listener heard nothing: the check below would be void"
    counts = trace_counts(), eqx.debug.get_num_traces(ablate._held_out)
    with traces() as second:
        (cell,) = cells_of(grid.format(seed=1))
        record = ablate.run_cell(cell)
    assert (trace_counts(), eqx.debug.get_num_traces(ablate._held_out)) == counts
    assert second == [], f"traced again: {second}"
    assert record["per_seed"][0]["seed"] == 1 and record["model_one_step_mse"] > 0


def test_diagnose_with_its_parts_given_equals_diagnose_computing_them():
    config = diagnostics.DiagnoseConfig(
        env="lqg", estimator="svg1", jacobians="learned", horizon=10, samples=16, batches=2,
        model_samples=4, model_steps=50, seed=3,
    )  # fmt: skip
    env = diagnostics.make_env(config)
    keys = diagnostics.Keys.of(config.seed)
    policy = diagnostics.make_policy(env, config, keys.policy)
    given = diagnostics.diagnose(
        config,
        policy=policy,
        reference=diagnostics.reference_gradient(env, policy, config, keys.reference),
        model=diagnostics.fit_model(env, policy, config, keys.model),
    )
    computed = diagnostics.diagnose(config)
    for name in ("cosine", "relative_bias", "variance", "reference_norm"):
        assert getattr(given, name) == pytest.approx(getattr(computed, name), rel=1e-5), name


def exact_gradient_norm(policy, horizon):
    env = envs.make("lqg", horizon=horizon)
    grad = eqx.filter_grad(lambda p: env.exact_return(*linear_gaussian_params(p)))(policy)
    return float(np.linalg.norm(diagnostics.flatten(grad)))


def test_a_policy_from_a_training_run_is_diagnosed(tmp_path):
    """The run's last checkpoint, and its policy snapshot after the first chunk."""
    run = tmp_path / "run"
    config = Config(algo="svg1_er", iterations=4, chunks=2, **TINY_LQG)
    spec = rundir.RunSpec(config, Hyperparams(), seeds=2, seed=0)
    runner.run_in_dir(run, spec, progress=lambda line: None)
    snapshots = rundir.policy_snapshots(run)
    steps_per_chunk = 2 * config.n_envs * config.steps_per_iteration
    assert list(snapshots) == [steps_per_chunk, 2 * steps_per_chunk]
    first = snapshots[steps_per_chunk]
    grid = tmp_path / "trained.toml"
    grid.write_text(
        f"""
        env = "lqg"
        horizon = 10
        estimator = "svg1"
        policy = ["initial", "{run}", "{first}"]
        policy_seed = [0, 1]
        samples = 16
        batches = 4
        """
    )
    records = ablate.run_grid(grid, progress=lambda line: None)
    assert [(r["cell"]["policy"], r["cell"]["policy_seed"]) for r in records] == [
        ("initial", None),
        (str(run), 0),
        (str(run), 1),
        (str(first), 0),
        (str(first), 1),
    ]
    state, _ = rundir.load_checkpoint(run, runner.state_shape(spec))
    last = rundir.load_policies(snapshots[2 * steps_per_chunk], runner.state_shape(spec).policy)
    for a, b in zip(jax.tree.leaves(state.policy), jax.tree.leaves(last), strict=True):
        np.testing.assert_array_equal(a, b)  # the last snapshot is the checkpoint's policy
    halfway = rundir.load_policies(first, runner.state_shape(spec).policy)
    norms = []
    for record, policies in zip(records[1:], [state.policy] * 2 + [halfway] * 2, strict=True):
        seed = record["cell"]["policy_seed"]
        policy = jax.tree.map(lambda x, i=seed: x[i] if eqx.is_array(x) else x, policies)
        (diagnosis,) = record["per_seed"]
        expected = exact_gradient_norm(policy, horizon=10)
        assert diagnosis["reference_norm"] == pytest.approx(expected, rel=1e-4)
        assert diagnosis["cosine_of_mean"] >= 0.99, record
        norms.append(expected)
    initial = records[0]["per_seed"][0]["reference_norm"]
    assert not np.isclose(initial, norms[0], rtol=1e-3)  # not the initial policy's gradient
    assert not np.isclose(norms[2], norms[0], rtol=1e-3)  # halfway is not the end
    table = (tmp_path / "trained" / ablate.TABLE).read_text()
    assert f"| run after {steps_per_chunk} steps, seed 1 | svg1 |" in table
    assert "| run, seed 1 | svg1 |" in table
    maps = sorted(p.name for p in (tmp_path / "trained").glob("heatmap-*.png"))
    assert f"heatmap-lqg-run-{steps_per_chunk}steps-seed1-simulator.png" in maps, maps
    assert "heatmap-lqg-run-seed1-simulator.png" in maps, maps
    # One saved reference per policy and seed; a policy file written again (a run trained
    # again) is another version, whose reference a later grid computes anew.
    assert len(list((tmp_path / "trained" / ablate.REFERENCES).glob("*.npz"))) == 5
    version = ablate._version(str(first))
    os.utime(first, ns=(0, first.stat().st_mtime_ns + 1))
    assert ablate._version(str(first)) != version and ablate._version("initial") == ()


def test_a_policy_from_a_run_of_another_task_is_an_error_naming_both(tmp_path):
    run = tmp_path / "cartpole_run"
    rundir.create(run, rundir.RunSpec(Config(env="cartpole"), Hyperparams(), seeds=1, seed=0))
    with pytest.raises(ValueError, match=r"a run of task 'cartpole', but the cell's task is 'lqg'"):
        cells_of(f'env = "lqg"\npolicy = "{run}"')
    with pytest.raises(ValueError, match=r"policy_seed = 3: the run .* has seeds 0\.\.0"):
        cells_of(f'env = "cartpole"\nhorizon = 10\npolicy = "{run}"\npolicy_seed = 3')
    with pytest.raises(ValueError, match=r"no checkpoint"):
        cells_of(f'env = "cartpole"\npolicy = "{run}"')
    with pytest.raises(ValueError, match=r"no such snapshot; the run's snapshots are after none"):
        cells_of(f'env = "cartpole"\npolicy = "{run}/policies/steps-000001000.eqx"')


def test_the_trained_policy_grids_name_snapshots_that_the_policies_sweep_writes():
    """experiments/ablation/trained_*.toml diagnose policies of the runs that
    experiments/ablation/policies.toml trains: each names one of its groups, of the
    grid's task, and a snapshot at the end of one of its chunks."""
    root = pathlib.Path(__file__).resolve().parents[1]
    folder = root / "experiments" / "ablation"
    groups = {g.name: g.spec for g in sweep.parse((folder / "policies.toml").read_text())}
    grids = sorted(folder.glob("trained_*.toml"))
    assert [g.stem for g in grids] == [
        "trained_cartpole",
        "trained_hand",
        "trained_lqg",
        "trained_reacher4",
        "trained_swimmer3",
        "trained_swimmer3_score",
    ]
    for grid in grids:
        fields = tomllib.loads(grid.read_text())
        assert len(fields["policy"]) == 2, grid
        for policy in fields["policy"]:
            run, snapshot = ablate.run_of(policy)
            assert snapshot is not None and run.parent == pathlib.Path("runs/ablation/policies")
            config = groups[run.name].config
            assert config.env == fields["env"], grid
            per_chunk = env_steps_per_iteration(config) * config.iterations // config.chunks
            chunk_ends = {per_chunk * (i + 1) for i in range(config.chunks)}
            assert int(snapshot.stem.removeprefix("steps-")) in chunk_ends, (grid, policy)
        if fields["env"] == "hand":  # the run's task is the grid's hand, cut to 100 steps
            assert config.env_options == fields["env_options"] == {"horizon": 100}


def test_the_full_grid_file_parses_into_51_cells_per_task():
    """experiments/ablation/paper.toml, issue 15's grid: per task SVG(0) once and five
    depths (SVG(1), SVG(k) for k = 2, 5, 10, SVG(∞)) × (the simulator + 3 widths × 3
    amounts of data); every cell key distinct, so resuming finds each finished one."""
    root = pathlib.Path(__file__).resolve().parents[1]
    cells = ablate.parse((root / "experiments" / "ablation" / "paper.toml").read_text())
    tasks = ["lqg", "cartpole", "reacher4", "hand", "swimmer3"]
    assert [c.fields["env"] for c in cells] == [t for t in tasks for _ in range(51)]
    assert len({c.key for c in cells}) == 255
    hand = [c for c in cells if c.fields["env"] == "hand"]
    assert {json.dumps(c.fields["env_options"]) for c in hand} == {'{"horizon": 100}'}
    learned = [c for c in cells if c.fields["jacobians"] == "learned"]
    assert len(learned) == 5 * 5 * 9
    assert {(c.fields["model_hidden"], c.fields["model_transitions"]) for c in learned} == {
        (h, n) for h in (5, 10, 20) for n in (1000, 10000, 100000)
    }


def test_the_initial_policy_grid_files_parse():
    """The grids that need no training run (the trained_*.toml ones are checked above)."""
    folder = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "ablation"
    for name in ("lqg.toml", "paper.toml", "swimmer3_h100.toml", "reference_check.toml"):
        assert ablate.parse((folder / name).read_text(), name), name
    cells = ablate.parse((folder / "swimmer3_reference.toml").read_text())
    assert len(cells) == 51 and len({c.key for c in cells}) == 51
    assert {c.fields["reference_samples"] for c in cells} == {8192}
    assert {c.fields["reference_estimator"] for c in cells} == {"pathwise"}
    results = folder.parent / "results" / "ablation" / "swimmer3_reference"
    lines = (results / ablate.CELLS).read_text().splitlines()
    done = ablate.read_cells(results)
    assert sum(ablate._finished(cell, done) for cell in cells) == len(lines) == 51


def test_a_cell_recorded_before_a_grid_key_existed_is_still_finished(tmp_path):
    """swimmer3_reference.toml's first 10 cells were recorded before the key
    reference_estimator existed; such a record holds the key's default and is found."""
    folder = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "ablation"
    cells = ablate.parse((folder / "swimmer3_reference.toml").read_text())
    results = folder.parent / "results" / "ablation" / "swimmer3_reference"
    record = json.loads((results / ablate.CELLS).read_text().splitlines()[0])
    del record["cell"]["reference_estimator"]
    (tmp_path / ablate.CELLS).write_text(json.dumps(record) + "\n")
    done = ablate.read_cells(tmp_path)
    assert sum(ablate._finished(cell, done) for cell in cells) == 1
    (cell,) = done.values()
    assert cell["cell"]["reference_estimator"] == "pathwise"
    ablate._append(tmp_path / ablate.CELLS, dict(record, cosine=0.5))  # replaces, not adds
    (line,) = (tmp_path / ablate.CELLS).read_text().splitlines()
    assert json.loads(line)["cosine"] == 0.5


def test_reference_estimator_applies_to_sampled_references_only():
    def fields(text):
        return [c.fields for c in cells_of(text)]

    (score,) = fields('env = "cartpole"\nestimator = "svg_inf"\nreference_estimator = "score"')
    assert score["reference_estimator"] == "score"
    assert cells_of('env = "cartpole"\nestimator = "svg_inf"')[0].config.reference_estimator == (
        "pathwise"
    )
    (exact,) = fields('env = "lqg"\nestimator = "svg_inf"\nreference_estimator = "score"')
    assert exact["reference_estimator"] is None  # lqg's reference is exact
    with pytest.raises(ValueError, match=r"unknown reference_estimator 'bptt'.*pathwise, score"):
        cells_of('env = "cartpole"\nreference_estimator = "bptt"')


def test_a_grid_asking_for_other_seeds_runs_its_cells_again(tiny, tmp_path, monkeypatch):
    """A cell recorded with seeds 0 and 1 is not finished for a grid that asks for 3
    seeds (or starts at seed 1); running it again replaces its line in cells.jsonl."""
    grid, finished, _ = tiny
    out = tmp_path / "out"
    shutil.copytree(finished, out)
    cells = cells_of(grid.read_text())
    done = ablate.read_cells(out)
    assert all(ablate._finished(cell, done) for cell in cells)
    for change in ("seeds = 3", "seeds = 2\nseed = 1"):
        other = cells_of(grid.read_text().replace("seeds = 2", change))
        assert not any(ablate._finished(cell, done) for cell in other), change
    three = tmp_path / "three.toml"
    three.write_text(grid.read_text().replace("seeds = 2", "seeds = 3"))
    with pytest.raises(ValueError, match="no finished cell"):
        ablate.run_grid(three, out, report_only=True, progress=lambda line: None)
    record = json.loads((out / ablate.CELLS).read_text().splitlines()[0])
    ablate._append(out / ablate.CELLS, dict(record, cosine=0.5))
    lines = (out / ablate.CELLS).read_text().splitlines()
    assert len(lines) == 6 and json.loads(lines[-1])["cosine"] == 0.5
    assert json.loads(lines[-1])["cell"] == record["cell"]


def test_a_cells_seeds_run_together_equal_each_seed_run_alone():
    """A learned cell's two seeds are vmapped (reference, model fit, critic, estimates);
    each seed's record is what the cell gives with that seed alone."""
    grid = """
    env = "lqg"
    horizon = 10
    estimator = "svgk"
    k = 5
    jacobians = "learned"
    model_hidden = 5
    model_transitions = 100
    model_steps = 100
    samples = 16
    batches = 3
    seeds = {seeds}
    seed = {seed}
    """
    (both,) = cells_of(grid.format(seeds=2, seed=0))
    together = ablate.run_cell(both)["per_seed"]
    for seed in (0, 1):
        (alone,) = cells_of(grid.format(seeds=1, seed=seed))
        (record,) = ablate.run_cell(alone)["per_seed"]
        for name in ("cosine", "relative_bias", "variance", "jacobian_error_s"):
            assert together[seed][name] == pytest.approx(record[name], rel=1e-3), name
    assert together[0]["cosine"] != together[1]["cosine"]
