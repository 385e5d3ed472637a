"""Brax baselines inside sweep files: ``[[baseline]]`` tables take the sweep's budget and
sizes unless they set their own, a list is an axis, and a finished baseline is not run again."""

import dataclasses
import json
import pathlib

import numpy as np
import pytest

from svgx import cli, rundir, sweep

GRID = """
seeds = 3
seed = 5
steps = 2000
chunks = 4
env = "lqg"
env_options = { horizon = 10 }
n_envs = 2
batch_size = 16
updates_per_step = 2
gamma = 0.95
policy_hidden = [16, 8]

[[baseline]]
algo = "sac"
learning_rate = [3e-4, 1e-3]

[[baseline]]
algo = "ppo"
seeds = 1
hidden = [[32], [8, 8]]
"""


def test_a_baseline_table_takes_the_sweeps_budget_and_sizes():
    groups, baselines = sweep.parse_all(GRID)
    assert [g.name for g in groups] == ["g00-lqg-svg1_er"]
    assert [b.name for b in baselines] == [
        "b00-lqg-sac",
        "b01-lqg-sac",
        "b02-lqg-ppo",
        "b03-lqg-ppo",
    ]
    sac = baselines[0].args
    assert (sac.env, sac.env_options, sac.steps, sac.seeds, sac.seed) == (
        "lqg",
        {"horizon": 10},
        2000,
        3,
        5,
    )
    assert (sac.n_envs, sac.batch_size, sac.updates_per_step) == (2, 16, 2)
    assert sac.discounting == pytest.approx(0.95)
    assert sac.hidden == (16, 8)
    assert sac.evaluations == 5  # one per chunk, and Brax's at step 0
    assert [b.args.learning_rate for b in baselines[:2]] == [3e-4, 1e-3]
    assert [b.args.hidden for b in baselines[2:]] == [(32,), (8, 8)]
    assert all(b.args.seeds == 1 for b in baselines[2:])


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('[[baseline]]\nalgo = "td3"', "algo='td3': unknown Brax baseline; valid: ppo, sac, apg"),
        ("[[baseline]]\nseeds = 2", "algo is required"),
        ('[[baseline]]\nalgo = "sac"\nlr = 1e-3', "unknown key(s) lr; valid: algo,"),
        ('[[baseline]]\nalgo = "sac"\nlearning_rate = -1.0', "learning_rate=-1.0: must be"),
        ('[[baseline]]\nalgo = "sac"\nenv = "pendulum"', "pendulum"),
        ('[[baseline]]\nalgo = "apg"\napg_horizon = 0', "apg_horizon=0: must be an integer"),
        ('baseline = "sac"', "baseline: must be [[baseline]] tables"),
    ],
)
def test_a_bad_baseline_table_is_an_error_naming_it(table, message):
    text = 'steps = 1000\nenv = "lqg"\n' + table
    with pytest.raises(ValueError, match="baseline") as error:
        sweep.parse_all(text, "grid.toml")
    assert message in str(error.value)
    assert str(error.value).startswith("grid.toml")


def test_apg_truncates_at_apg_horizon_and_its_steps_per_evaluation_follow():
    """Brax's APG reports evaluation indices; svgx converts them with the schedule: with
    8000 steps of 4 environments and 5 evaluations, whole 100-step episodes make
    8000 // 400 = 20 updates, 5 per evaluation, 2000 steps each; the default
    truncation (32) makes 62 updates, round(62 / 4) = 16 per evaluation, 2048 steps."""
    import envs
    from svgx.baselines import apg_schedule

    env = envs.make("lqg", horizon=100)
    assert apg_schedule(env, 8000, 4, 5, apg_horizon=100) == (100, 20, 2000)
    assert apg_schedule(env, 8000, 4, 5) == (32, 62, 2048)
    assert apg_schedule(env, 8000, 4, 5, apg_horizon=500)[0] == 100  # at most the horizon


def test_a_baseline_recorded_before_a_field_existed_is_the_same_configuration():
    """A run directory written before BaselineArgs had ``apg_horizon`` resumes: the
    missing field counts as its default; a recorded value that differs does not."""
    from svgx.baselines import BaselineArgs

    args = BaselineArgs(env="lqg", algo="sac", out="here")
    recorded = json.loads(json.dumps(dataclasses.asdict(dataclasses.replace(args, out="x"))))
    assert sweep.same_baseline(recorded, args)
    del recorded["apg_horizon"]
    assert sweep.same_baseline(recorded, args)
    assert not sweep.same_baseline(recorded, dataclasses.replace(args, apg_horizon=100))
    assert not sweep.same_baseline({**recorded, "learning_rate": 1e-3}, args)


def test_a_swept_axis_must_be_given_in_the_baseline_table():
    text = 'steps = 1000\nenv = "lqg"\nn_envs = [2, 4]\n[[baseline]]\nalgo = "sac"\n'
    with pytest.raises(ValueError, match="n_envs: the sweep's n_envs is an axis"):
        sweep.parse_all(text)
    groups, baselines = sweep.parse_all(text + "n_envs = 8\n")
    assert len(groups) == 2 and baselines[0].args.n_envs == 8


TINY = """
seeds = 1
steps = 400
chunks = 2
env = "lqg"
env_options = { horizon = 10 }
algo = "svg1_er"
linear_policy = true
squash = false
n_envs = 2
batch_size = 16
critic_hidden = [16, 16]
policy_hidden = [16, 16]
eval_episodes = 2

[[baseline]]
algo = "sac"
"""


def test_a_sweep_runs_its_baselines_after_its_groups_and_resumes_without_rerunning(tmp_path):
    file = tmp_path / "grid.toml"
    file.write_text(TINY)
    out = tmp_path / "grid"
    sweep.run_sweep(str(file), str(out), progress=lambda line: None)
    dirs = [d.name for d in sweep.group_dirs(out)]
    assert dirs == ["b00-lqg-sac", "g00-lqg-svg1_er"]
    baseline = out / "b00-lqg-sac"
    recorded = json.loads((baseline / rundir.CONFIG).read_text())["baseline"]
    assert recorded["n_envs"] == 2 and recorded["hidden"] == [16, 16]
    history = rundir.read_metrics(baseline)
    steps = [int(m["env_steps"][0]) for m in history]  # Brax's epochs count its prefill too
    assert len(steps) == 3 and steps[0] == 0 and steps[-1] >= 400
    written = (baseline / rundir.METRICS).read_bytes()
    lines = []
    sweep.run_sweep(None, str(out), progress=lines.append)
    assert not any("(brax)" in line for line in lines), lines  # finished: not run again
    assert (baseline / rundir.METRICS).read_bytes() == written
    # An unfinished baseline (no metrics) runs again from the start.
    (baseline / rundir.METRICS).unlink()
    sweep.run_sweep(None, str(out), progress=lines.append)
    assert any("(brax)" in line for line in lines)
    assert len(rundir.read_metrics(baseline)) == 3
    png = tmp_path / "both.png"
    assert cli.main(["plot", str(out), "--out", str(png)]) is None
    assert png.read_bytes()[:4] == b"\x89PNG"


def fake_trainer(calls, nan_at):
    """Stands in for Brax's trainers: reports ``evaluations`` evaluations, with a NaN
    return at ``nan_at = (algo, seed, evaluation)``, and records every report."""

    def trainer(algo, env, *, steps, evaluations, seed, progress_fn, **_):
        for i in range(evaluations):
            calls.append((algo, seed, i))
            value = np.nan if (algo, seed, i) == nan_at else -10.0 + i
            metrics = {"eval/episode_reward": value, "eval/episode_success": 0.25}
            progress_fn(i * steps // (evaluations - 1), metrics | {"eval/episode_diverged": 0})
        return None, None, {}

    return trainer


def test_a_baseline_seed_that_goes_non_finite_stops_and_the_others_run(tmp_path, monkeypatch):
    from svgx import baselines
    from svgx.divergence import NonFiniteError

    calls = []
    monkeypatch.setattr(baselines, "trainer", fake_trainer(calls, nan_at=("sac", 6, 2)))
    args = baselines.BaselineArgs(
        env="lqg", algo="sac", out=str(tmp_path), steps=300, seeds=3, seed=5, evaluations=4
    )
    lines = []
    with pytest.raises(
        NonFiniteError, match=r"seed 1 went non-finite in chunk 2/3 \(env step 200\)"
    ):
        baselines.run_baseline(args, lines.append)
    assert [c for c in calls if c[1] == 6] == [("sac", 6, 0), ("sac", 6, 1), ("sac", 6, 2)]
    assert [c for c in calls if c[1] == 7] == [("sac", 7, i) for i in range(4)]
    assert any("stopped: seed 1 went non-finite" in line for line in lines), lines
    history = rundir.read_metrics(tmp_path)
    returns = np.array([h["eval_return"] for h in history])  # [evaluation, seed]
    np.testing.assert_array_equal(returns[:, [0, 2]], [[-10, -10], [-9, -9], [-8, -8], [-7, -7]])
    np.testing.assert_array_equal(returns[:2, 1], [-10, -9])
    assert np.isnan(returns[2:, 1]).all()
    assert [int(h["env_steps"][1]) for h in history] == [0, 100, 200, 300]
    assert rundir.read_stopped(tmp_path).seed == 1
    # Run again in its place without the NaN: it finishes, and stopped.json is gone.
    monkeypatch.setattr(baselines, "trainer", fake_trainer(calls, nan_at=None))
    baselines.run_baseline(dataclasses.replace(args, overwrite=True), lines.append)
    assert rundir.read_stopped(tmp_path) is None


def test_a_sweep_runs_its_other_baselines_after_one_stops_and_does_not_rerun_it(
    tmp_path, monkeypatch
):
    from svgx import baselines
    from svgx.divergence import NonFiniteError

    calls = []
    monkeypatch.setattr(baselines, "trainer", fake_trainer(calls, nan_at=("ppo", 0, 1)))
    file = tmp_path / "grid.toml"
    file.write_text(
        'group = []\nseeds = 1\nsteps = 300\nchunks = 3\nenv = "lqg"\n'
        '[[baseline]]\nalgo = "ppo"\n[[baseline]]\nalgo = "sac"\n'
    )
    out = tmp_path / "grid"
    lines = []
    with pytest.raises(NonFiniteError, match="seed 0 went non-finite in chunk 1/3"):
        sweep.run_sweep(str(file), str(out), progress=lines.append)
    assert ("sac", 0, 3) in calls  # the next baseline ran to the end
    assert any(line.startswith("b00-lqg-ppo: run stopped") for line in lines), lines
    calls.clear()
    with pytest.raises(NonFiniteError, match="seed 0 went non-finite"):
        sweep.run_sweep(None, str(out), progress=lines.append)
    assert calls == []  # neither is run again


def test_an_interrupted_baseline_resumes_after_its_finished_seeds(tmp_path, monkeypatch):
    """A crash in seed 2 (a native one killed a sweep here twice) loses only that seed:
    the same arguments in the same directory run seeds 2 and 3 and keep 0 and 1."""
    from svgx import baselines

    calls = []

    def crashing(algo, env, *, seed, **kwargs):
        if seed == 2:
            raise RuntimeError("interrupted")
        return fake_trainer(calls, nan_at=("sac", 1, 1))(algo, env, seed=seed, **kwargs)

    monkeypatch.setattr(baselines, "trainer", crashing)
    args = baselines.BaselineArgs(
        env="lqg", algo="sac", out=str(tmp_path), steps=300, seeds=4, evaluations=4
    )
    with pytest.raises(RuntimeError, match="interrupted"):
        baselines.run_baseline(args)
    assert not (tmp_path / rundir.METRICS).exists()
    calls.clear()
    monkeypatch.setattr(baselines, "trainer", fake_trainer(calls, nan_at=("sac", 1, 1)))
    lines = []
    with pytest.raises(Exception, match="seed 1 went non-finite in chunk 1/3"):
        baselines.run_baseline(dataclasses.replace(args, overwrite=True), lines.append)
    assert {seed for _, seed, _ in calls} == {2, 3}  # seeds 0 and 1 were kept
    assert sum("finished before, kept" in line for line in lines) == 2
    returns = np.array([h["eval_return"] for h in rundir.read_metrics(tmp_path)])
    np.testing.assert_array_equal(returns[:, [0, 2, 3]], np.tile([[-10], [-9], [-8], [-7]], 3))
    assert np.isnan(returns[1:, 1]).all()  # seed 1 stopped at its first evaluation
    # A finished run that is overwritten starts again; other arguments never reuse seeds.
    calls.clear()
    with pytest.raises(Exception, match="non-finite"):
        baselines.run_baseline(dataclasses.replace(args, overwrite=True))
    assert {seed for _, seed, _ in calls} == {0, 1, 2, 3}
    (tmp_path / rundir.METRICS).unlink()
    calls.clear()
    with pytest.raises(Exception, match="non-finite"):
        baselines.run_baseline(dataclasses.replace(args, overwrite=True, learning_rate=1e-3))
    assert {seed for _, seed, _ in calls} == {0, 1, 2, 3}


def test_a_sweep_file_with_other_comments_is_the_same_sweep_another_value_is_not(
    tmp_path, monkeypatch
):
    """The run directory compares sweep files as TOML: a comment fixed after the runs (or a
    number spelt differently) resumes the sweep and is recorded; a changed value is refused."""
    from svgx import baselines

    calls = []
    monkeypatch.setattr(baselines, "trainer", fake_trainer(calls, nan_at=None))
    text = 'group = []\nseeds = 1\nsteps = 300\nchunks = 3\nenv = "lqg"\n'
    text += '[[baseline]]\nalgo = "sac"\n'
    file, out = tmp_path / "grid.toml", tmp_path / "grid"
    file.write_text(text)
    sweep.run_sweep(str(file), str(out), progress=lambda line: None)
    assert len(calls) == 4
    edited = text.replace("300", "3_00").replace("3\n", "3  # evaluations\n")
    edited = "# Brax SAC on lqg\n" + edited
    file.write_text(edited)
    sweep.run_sweep(str(file), str(out), progress=lambda line: None)
    assert len(calls) == 4  # nothing ran again
    assert (out / "sweep.toml").read_text() == edited
    file.write_text(edited.replace("3_00", "400"))
    with pytest.raises(ValueError, match="holds a different sweep"):
        sweep.run_sweep(str(file), str(out), progress=lambda line: None)
    assert (out / "sweep.toml").read_text() == edited


@pytest.mark.skipif(not pathlib.Path("/proc/self/maps").exists(), reason="Linux only")
def test_a_baseline_releases_its_compiled_programs_after_each_seed(tmp_path):
    """Brax compiles each seed's programs anew and JAX kept every one loaded: about 1,000
    memory mappings per seed of SAC on lqg, never released, until a long sweep reached the
    kernel's limit (vm.max_map_count) and LLVM aborted while loading the next program.
    Released after each seed, three runs of one seed leave the process where one left it."""
    from svgx import baselines

    def mappings():
        return len(pathlib.Path("/proc/self/maps").read_text().splitlines())

    counts = []
    for run in range(3):
        args = baselines.BaselineArgs(
            env="lqg", algo="sac", out=str(tmp_path / f"run{run}"), steps=2000, seeds=1,
            evaluations=3,
        )  # fmt: skip
        baselines.run_baseline(args, lambda line: None)
        counts.append(mappings())
    assert counts[2] - counts[0] < 500, counts  # about 2,000 more without the release


SHARED = """
group = []
seeds = 1
steps = 300
chunks = 3
env = "lqg"

[[baseline]]
algo = "sac"
learning_rate = [3e-4, 1e-3]
"""


def test_a_run_another_process_holds_is_skipped_and_only_picks_runs(tmp_path, monkeypatch):
    """Several processes share a sweep: a run whose directory another holds is skipped
    (and run by a later command), and ``only`` picks runs by name; a pattern that matches
    none is an error naming the runs. (``flock`` locks conflict between two opens in one
    process too, so holding the directory here stands in for another process.)"""
    from svgx import baselines

    calls = []
    monkeypatch.setattr(baselines, "trainer", fake_trainer(calls, nan_at=None))
    file, out = tmp_path / "grid.toml", tmp_path / "grid"
    file.write_text(SHARED)
    lines = []
    with rundir.exclusive(out / "b00-lqg-sac"):
        sweep.run_sweep(str(file), str(out), progress=lines.append)
    assert len(calls) == 4  # b01's four evaluations only
    skipped = [line for line in lines if "b00-lqg-sac: skipped" in line]
    assert len(skipped) == 1 and "in use by process" in skipped[0], lines
    assert "were skipped: b00-lqg-sac" in lines[-1]
    assert not (out / "b00-lqg-sac" / rundir.METRICS).exists()
    sweep.run_sweep(str(file), str(out), progress=lines.append)
    assert len(calls) == 8 and (out / "b00-lqg-sac" / rundir.METRICS).is_file()

    calls.clear()
    other = tmp_path / "other"
    sweep.run_sweep(str(file), str(other), only=("b01-*",), progress=lines.append)
    assert len(calls) == 4 and not (other / "b00-lqg-sac").exists()
    with pytest.raises(ValueError, match=r"--only 'g\*': matches none .*b00-lqg-sac, b01-lqg-sac"):
        sweep.run_sweep(str(file), str(other), only=("g*",))


def test_a_run_directory_in_use_is_refused_before_anything_is_written(tmp_path, capsys):
    """A second run, resume or overwrite of a directory that a process is running gets a
    clear error, and the directory is as it was; once released it runs."""
    from svgx import runner

    (spec,) = [g.spec for g in sweep.parse(TINY)]
    out = tmp_path / "run"
    with rundir.exclusive(out):
        with pytest.raises(rundir.RunDirInUse, match="in use by process"):
            runner.run_in_dir(out, spec, overwrite=True)
        assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK]
        rundir.create(out, spec)
        with pytest.raises(SystemExit):
            cli.main(["resume", str(out)])
        assert "in use by process" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == [rundir.LOCK, rundir.CONFIG]
    with pytest.raises(rundir.RunDirError, match="not a run directory"):
        runner.run_in_dir(tmp_path / "missing")
    assert not (tmp_path / "missing").exists()


def test_another_process_holds_a_run_directory_until_it_dies(tmp_path):
    """The lock is another process's until that process ends, even by SIGKILL: a run
    that crashed can be resumed at once."""
    import subprocess
    import sys

    out = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom svgx import rundir\n"
            f"with rundir.exclusive({str(out)!r}):\n"
            "    print('held', flush=True)\n    time.sleep(600)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(rundir.RunDirInUse, match=rf"in use by process {holder.pid} on "):
            with rundir.exclusive(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with rundir.exclusive(out):
        pass
