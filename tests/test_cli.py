"""The ``svgx`` command and run directories: train, refuse to overwrite, checkpoints,
Ctrl-C and resume (bit-identical), sweeps, plots, and bad input (one line, exit 2,
nothing written)."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys

import equinox as eqx
import jax
import numpy as np
import pytest
import tyro
from small import TINY_LQG, TINY_LQG_FLAGS

from svgx import cli, devices, rundir, runner, sweep
from svgx.config import Config, Hyperparams, config_for_steps, iterations_for_steps
from svgx.train import parameters

ROOT = pathlib.Path(__file__).resolve().parents[1]
# A small lqg run: 3 chunks of 2 iterations, 2 seeds.
TINY = [
    *TINY_LQG_FLAGS,
    *("--algo", "svg1_er", "--iterations", "6", "--chunks", "3", "--seeds", "2"),
]


def tiny_spec(**overrides):
    config = Config(algo="svg1_er", iterations=6, chunks=3, **TINY_LQG)
    return rundir.RunSpec(config, Hyperparams(), seeds=2, seed=0, **overrides)


def svgx(*args, env=None, **kwargs):
    return subprocess.run(
        [sys.executable, "-m", "svgx.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        **kwargs,
    )


def snapshot(directory: pathlib.Path):
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def without_wall_time(history):
    return [{k: v for k, v in m.items() if k not in rundir.TIMINGS} for m in history]


def test_train_writes_a_run_directory_and_refuses_to_overwrite_it(tmp_path, capsys):
    out = tmp_path / "run"
    cli.main(["train", "--out", str(out), *TINY])
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "metrics.jsonl", "checkpoint.eqx", "curve.png"} <= names
    assert not [n for n in names if n.endswith(".tmp")]
    spec = rundir.read_spec(out)
    assert spec.config.env_options == {"horizon": 10} and spec.seeds == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 3 * 2
    row = json.loads(lines[-1])
    for name in (
        "eval_return",
        "eval_success",
        "train_return",
        "value_loss",
        "policy_grad_norm",
        "env_steps",
    ):
        assert np.isfinite(row[name]), name
    assert row["chunk"] == 2 and row["seed"] == 1
    assert (out / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "chunk 3/3" in capsys.readouterr().err
    steps = [int(json.loads(line)["env_steps"]) for line in lines[::2]]
    assert list(rundir.policy_snapshots(out)) == steps  # one policy snapshot per chunk

    before = snapshot(out)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["train", "--out", str(out), *TINY])
    assert exit_.value.code == 2
    assert "already holds a run" in capsys.readouterr().err
    assert snapshot(out) == before
    rundir.create(out, spec, overwrite=True)  # --overwrite: nothing of the old run is left
    assert {p.name for p in out.iterdir()} == {"config.json", "policies", rundir.LOCK}
    assert rundir.policy_snapshots(out) == {}


def test_steps_sets_the_iterations():
    config = Config(env="lqg", env_options=dict(horizon=10), n_envs=4, chunks=5, algo="svg1_er")
    assert iterations_for_steps(config, 1000) == 250  # 4 env steps per iteration
    on_policy = Config(env="lqg", env_options=dict(horizon=10), n_envs=4, chunks=5, algo="svg_inf")
    assert iterations_for_steps(on_policy, 1000) == 25  # one 10-step episode per env
    # Any chunk count: 1000 steps / 4 per iteration = 250 iterations, rounded up to 6 x 42.
    fields = dict(env="lqg", env_options=dict(horizon=10), n_envs=4, chunks=6)
    assert config_for_steps(fields, 1000).iterations == 252
    with pytest.raises(ValueError, match="steps=1000 and iterations=100: give one of them"):
        config_for_steps(dict(fields, iterations=100), 1000)
    flags = ["--out", "x", "--env", "lqg", "--steps", "1000", "--chunks", "6"]
    spec = cli.train_spec(tyro.cli(cli.train_args(), args=flags))
    assert (spec.config.iterations, spec.config.chunks) == (252, 6)


def test_an_interrupted_and_resumed_run_equals_an_uninterrupted_one(tmp_path):
    """Ctrl-C (a real SIGINT to ``svgx train``) after the first chunk saves and exits
    cleanly; ``svgx resume`` then ends with the same parameters and metrics, bit for bit."""
    whole = runner.run_in_dir(tmp_path / "whole", tiny_spec(), progress=lambda line: None)
    assert not whole.interrupted

    out = tmp_path / "interrupted"
    process = subprocess.Popen(
        [sys.executable, "-m", "svgx.cli", "train", "--out", str(out), *TINY],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    for line in process.stderr:
        lines.append(line)
        if line.startswith("[svg1_er lqg] chunk 1/3"):
            process.send_signal(signal.SIGINT)  # once: a second Ctrl-C aborts at once
    assert process.wait(timeout=300) == 0, "".join(lines)
    assert any("interrupt: stopping after the current chunk" in line for line in lines), lines
    assert any("svgx resume" in line for line in lines), lines
    assert len(rundir.read_metrics(out)) < 3

    resumed = svgx("resume", str(out))
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming after chunk" in resumed.stderr
    assert (out / "checkpoint.eqx").read_bytes() == (
        tmp_path / "whole" / "checkpoint.eqx"
    ).read_bytes()
    a, b = without_wall_time(rundir.read_metrics(out)), without_wall_time(whole.metrics)
    assert len(a) == len(b) == 3
    for ma, mb in zip(a, b, strict=True):
        for name in mb:
            np.testing.assert_array_equal(ma[name], mb[name], err_msg=name)


def test_a_checkpoint_ahead_of_the_metrics_is_recomputed_not_double_counted(tmp_path):
    """Metrics are written before the checkpoint; a crash between them leaves extra metric
    lines, which resuming drops and recomputes."""
    out = tmp_path / "run"
    whole = runner.run_in_dir(out, tiny_spec(), progress=lambda line: None)
    spec = rundir.read_spec(out)
    _, done = rundir.load_checkpoint(out, runner.state_shape(spec))
    assert done == 3
    first = runner.run(
        spec.config, spec.hparams, seeds=2, progress=lambda line: None, should_stop=lambda: True
    )
    rundir.save_checkpoint(
        out, runner._gather(first.state), 1
    )  # the metrics file still holds 3 chunks
    resumed = runner.run_in_dir(out, progress=lambda line: None)
    for ma, mb in zip(
        without_wall_time(resumed.metrics), without_wall_time(whole.metrics), strict=True
    ):
        for name in mb:
            np.testing.assert_array_equal(ma[name], mb[name], err_msg=name)
    assert len(rundir.read_metrics(out)) == 3


SWEEP = """
seeds = 2
env = "lqg"
env_options = { horizon = 10 }
algo = ["svg1_er", "svg0_er"]
linear_policy = true
squash = false
iterations = 4
chunks = 2
n_envs = 2
batch_size = 16
critic_hidden = [16, 16]
eval_episodes = 2
policy_lr = [1e-3, 1e-2]
"""


def test_a_sweep_groups_by_shape_vmaps_the_rest_and_resumes(tmp_path, monkeypatch):
    groups = sweep.parse(SWEEP)
    assert [g.name for g in groups] == ["g00-lqg-svg1_er", "g01-lqg-svg0_er"]
    for group in groups:  # 2 learning rates × 2 seeds in one program
        assert group.spec.seeds == 4
        np.testing.assert_allclose(group.spec.hparams.policy_lr, [1e-3, 1e-3, 1e-2, 1e-2])
        assert [m["seed"] for m in group.members] == [0, 1, 0, 1]
    file = tmp_path / "grid.toml"
    file.write_text(SWEEP)
    out = tmp_path / "grid"
    released = []  # compiled programs are released after each group (svgx.cache)
    monkeypatch.setattr(sweep, "release_compiled_programs", lambda: released.append(1))
    sweep.run_sweep(str(file), str(out), progress=lambda line: None)
    assert released == [1, 1]
    dirs = sweep.group_dirs(out)
    assert [d.name for d in dirs] == ["g00-lqg-svg1_er", "g01-lqg-svg0_er"]
    first = snapshot(dirs[0])
    # Lose the second group's results, as if the sweep had been stopped during it.
    for name in ("checkpoint.eqx", "metrics.jsonl", "curve.png"):
        (dirs[1] / name).unlink()
    lines = []
    sweep.run_sweep(None, str(out), progress=lines.append)
    assert any("g00" in line and "complete" in line for line in lines), lines
    assert len(rundir.read_metrics(dirs[1])) == 2
    assert snapshot(dirs[0]) == first
    # A copy without checkpoints (the run files committed with a results file) is finished.
    for directory in dirs:
        (directory / "checkpoint.eqx").unlink()
    before, lines = {d.name: snapshot(d) for d in dirs}, []
    assert [run.state for run in sweep.run_sweep(None, str(out), progress=lines.append)] == [
        None,
        None,
    ]
    assert sum("complete" in line for line in lines) == 2, lines
    assert {d.name: snapshot(d) for d in dirs} == before
    png = tmp_path / "sweep.png"
    assert cli.main(["plot", str(out), "--out", str(png)]) is None
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_sharded_seeds_equal_unsharded_seeds(tmp_path):
    """Four forced host devices: the seed axis is laid out over all four, and the
    metrics equal those of the same run on one device."""
    script = (
        "import sys; sys.path.insert(0, 'tests');"  # as pytest puts it, for `from small import`
        "import jax, numpy as np, svgx; from svgx import rundir, runner;"
        "from test_cli import tiny_spec; svgx.enable_compilation_cache();"
        "spec = tiny_spec(); quiet = lambda line: None;"
        "c, h = spec.config, spec.hparams;"
        "a = runner.run(c, h, seeds=4, progress=quiet);"
        "b = runner.run(c, h, seeds=4, progress=quiet, devices=jax.devices()[:1]);"
        "leaf = jax.tree.leaves(a.state.policy)[0];"
        "print('devices', len(jax.devices()), len(leaf.sharding.device_set));"
        "[np.testing.assert_allclose(a.metrics[i][k], b.metrics[i][k], "
        "rtol=1e-4, atol=1e-5, err_msg=k)"
        " for i in range(len(a.metrics)) for k in a.metrics[i] if k not in rundir.TIMINGS];"
        "print('equal');"
        "print('mesh', *[runner.seed_mesh(n).devices.size for n in (1, 2, 3, 5, 6, 8, 12)])"
    )
    flags = os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4"
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "XLA_FLAGS": flags},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "devices 4 4" in result.stdout and "equal" in result.stdout
    # The largest divisor of the seed count up to the 4 devices.
    assert "mesh 1 2 3 1 3 4 4" in result.stdout


def test_a_note_says_when_the_seeds_leave_devices_idle():
    assert runner.layout_note(5, 1, 2) == (
        "note: 5 seeds run on 1 of 2 devices (the most that split them evenly); "
        "a multiple of 2 seeds would use them all"
    )
    assert runner.layout_note(6, 3, 4) is not None  # 3 of 4 in use
    assert runner.layout_note(3, 3, 4) is None  # one seed per device already
    assert runner.layout_note(1, 1, 8) is None


def test_svgx_cpu_devices_shows_the_host_as_several_devices():
    """``SVGX_CPU_DEVICES`` takes effect before the command starts JAX's backend; a bad
    value is refused with the allowed ones, and so is a change once the backend runs."""

    def svgx_with(value, code):
        return subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env={**os.environ, "SVGX_CPU_DEVICES": value},
        )

    result = svgx_with("3", "import svgx.cli, jax; print('devices', jax.device_count())")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "devices 3" in result.stdout
    result = svgx_with("zero", "import svgx.cli")
    assert result.returncode == 2
    assert "SVGX_CPU_DEVICES='zero': must be a positive integer or 'auto'" in result.stderr
    jax.numpy.zeros(1)  # this process's backend has started
    with pytest.raises(RuntimeError, match="backend has already started"):
        devices.use_cpu_devices(2)
    with pytest.MonkeyPatch.context() as patch:  # svgx.cli imported late, as in a notebook
        patch.setenv("SVGX_CPU_DEVICES", "2")
        with pytest.warns(UserWarning, match="SVGX_CPU_DEVICES ignored: cpu devices 2: JAX's"):
            cli.initialize_cpu_devices()
    with pytest.raises(ValueError, match="must be a positive integer or 'auto'"):
        devices.use_cpu_devices(0)


def test_two_processes_with_jax_distributed_match_one_process(tmp_path):
    """``svgx train`` in two processes joined by ``jax.distributed`` (Gloo on CPU), each
    holding one device: process 0 writes the run, whose metrics match a one-process run."""
    single = runner.run_in_dir(tmp_path / "single", tiny_spec(), progress=lambda line: None)
    out = tmp_path / "multi"
    port = 20000 + os.getpid() % 20000
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "svgx.cli", "train", "--out", str(out), *TINY],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={
                **os.environ,
                "SVGX_COORDINATOR": f"localhost:{port}",
                "SVGX_NUM_PROCESSES": "2",
                "SVGX_PROCESS_ID": str(rank),
            },
        )
        for rank in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in processes]
    for p, (_, err) in zip(processes, outputs, strict=True):
        assert p.returncode == 0, err[-3000:]
    assert "chunk 3/3" in outputs[0][1]
    for ma, mb in zip(
        without_wall_time(rundir.read_metrics(out)), without_wall_time(single.metrics), strict=True
    ):
        for name in mb:
            np.testing.assert_allclose(ma[name], mb[name], rtol=1e-4, atol=1e-5, err_msg=name)


# --- bad input: one line, exit status 2, nothing written --------------------------------

BAD = {
    "unknown task": (
        ["train", "--out", "{out}", "--env", "pendulum"],
        "env='pendulum': unknown task; valid: ",
    ),
    "unknown algorithm": (["train", "--out", "{out}", "--algo", "ppo"], "--algo"),
    "unknown jacobians": (["train", "--out", "{out}", "--jacobians", "exact"], "--jacobians"),
    "unknown flag": (["train", "--out", "{out}", "--learning-rate", "1"], "--learning-rate"),
    "unknown command": (["fly"], "fly"),
    "wrong type": (["train", "--out", "{out}", "--batch-size", "many"], "--batch-size"),
    "negative steps": (
        ["train", "--out", "{out}", "--steps", "-5"],
        "steps=-5: must be an integer >= 1",
    ),
    "zero seeds": (["train", "--out", "{out}", "--seeds", "0"], "seeds=0: must be an integer >= 1"),
    "gamma above 1": (
        ["train", "--out", "{out}", "--gamma", "1.5"],
        "gamma=1.5: must be in (0, 1]",
    ),
    "gamma zero": (["train", "--out", "{out}", "--gamma", "0"], "gamma=0.0: must be in (0, 1]"),
    "negative learning rate": (
        ["train", "--out", "{out}", "--policy-lr", "-1e-3"],
        "policy_lr=-0.001: must be > 0",
    ),
    "truncation below 1": (
        ["train", "--out", "{out}", "--truncation", "0.5"],
        "truncation=0.5: must be >= 1",
    ),
    "learned jacobians without dynamics": (
        ["train", "--out", "{out}", "--algo", "svg0_er", "--jacobians", "learned"],
        "jacobians='learned' with algo='svg0_er'",
    ),
    "k beyond the horizon": (
        ["train", "--out", "{out}", "--algo", "svgk_er", "--k", "500"],
        "k=500: must be <= the horizon",
    ),
    "k of zero": (
        ["train", "--out", "{out}", "--algo", "svgk_er", "--k", "0"],
        "k=0: must be an integer >= 1",
    ),
    "an option of another algorithm": (
        ["train", "--out", "{out}", "--algo", "svg1_er", "--k", "3"],
        "--k: an option of svgk_er, not of algo='svg1_er' "
        "(its options: transition_clip, actions, targets)",
    ),
    "negative exploration noise": (
        ["train", "--out", "{out}", "--algo", "dpg", "--exploration-std", "-1"],
        "exploration_std=-1.0: must be a finite number >= 0",
    ),
    "chunks not dividing iterations": (
        ["train", "--out", "{out}", "--iterations", "10", "--chunks", "3"],
        "chunks=3 must divide iterations=10",
    ),
    "unknown env option": (
        ["train", "--out", "{out}", "--env", "lqg", "--env-options", "colour", "1"],
        "unknown override(s) colour",
    ),
    "linear policy squashed": (
        ["train", "--out", "{out}", "--linear-policy"],
        "linear_policy=True needs squash=False",
    ),
    "zero batch": (
        ["train", "--out", "{out}", "--batch-size", "0"],
        "batch_size=0: must be an integer >= 1",
    ),
    "resume without a run": (["resume", "{out}"], "not a run directory"),
    "missing sweep file": (["sweep", "{out}/none.toml"], "no such file"),
    "sweep syntax error": (["sweep", "{out}/bad.toml"], "TOML syntax error"),
    "sweep unknown key": (["sweep", "{out}/unknown.toml"], "unknown key(s) learning_rate"),
    "baseline unknown algorithm": (
        ["baseline", "--env", "lqg", "--algo", "td3", "--out", "{out}"],
        "--algo",
    ),
    "baseline unknown task": (
        ["baseline", "--env", "pong", "--algo", "sac", "--out", "{out}"],
        "unknown",
    ),
    "baseline zero batch": (
        ["baseline", "--env", "lqg", "--algo", "sac", "--batch-size", "0", "--out", "{out}"],
        "batch_size=0: must be an integer >= 1",
    ),
    "baseline discount above 1": (
        ["baseline", "--env", "lqg", "--algo", "sac", "--discounting", "1.5", "--out", "{out}"],
        "discounting=1.5: must be in (0, 1]",
    ),
    "baseline unknown env option": (
        [
            "baseline",
            "--env",
            "lqg",
            "--algo",
            "sac",
            "--env-options",
            "colour",
            "1",
            "--out",
            "{out}",
        ],
        "unknown override(s) colour",
    ),
    # non-finite values of float hyperparameters and limits
    "policy lr inf": (
        ["train", "--out", "{out}/run", "--policy-lr", "inf"],
        "policy_lr=inf: must be a finite",
    ),
    "critic lr nan": (
        ["train", "--out", "{out}/run", "--critic-lr", "nan"],
        "critic_lr=nan: must be a finite",
    ),
    "model lr -inf": (
        ["train", "--out", "{out}/run", "--model-lr", "-inf"],
        "model_lr=-inf: must be a finite",
    ),
    "gamma nan": (["train", "--out", "{out}/run", "--gamma", "nan"], "gamma=nan: must be a finite"),
    "tau inf": (["train", "--out", "{out}/run", "--tau", "inf"], "tau=inf: must be a finite"),
    "truncation inf": (
        ["train", "--out", "{out}/run", "--truncation", "inf"],
        "truncation=inf: must be a finite",
    ),
    "init std nan": (
        ["train", "--out", "{out}/run", "--init-std", "nan"],
        "init_std=nan: must be a finite",
    ),
    "exploration std inf": (
        ["train", "--out", "{out}/run", "--exploration-std", "inf"],
        "exploration_std=inf: must be a finite",
    ),
    "grad-norm cap inf": (
        ["train", "--out", "{out}/run", "--max-grad-norm", "inf"],
        "max_grad_norm=inf: must be a finite",
    ),
    "reward scale nan": (
        ["train", "--out", "{out}/run", "--reward-scale", "nan"],
        "reward_scale=nan: must be a finite",
    ),
    "limit above 1": (
        ["train", "--out", "{out}/run", "--max-diverged-env-steps", "2"],
        "max_diverged_env_steps=2.0: must be a number in [0, 1]",
    ),
    "limit nan": (
        ["train", "--out", "{out}/run", "--max-skipped-updates", "nan"],
        "max_skipped_updates=nan",
    ),
    "sweep value inf": (["sweep", "{out}/inf.toml"], "policy_lr=inf: must be a finite"),
    "sweep list with nan": (["sweep", "{out}/nan.toml"], "tau=nan: must be a finite"),
    "baseline learning rate inf": (
        [
            "baseline",
            "--env",
            "lqg",
            "--algo",
            "sac",
            "--learning-rate",
            "inf",
            "--out",
            "{out}/run",
        ],
        "learning_rate=inf: must be a finite",
    ),
    "baseline discount nan": (
        ["baseline", "--env", "lqg", "--algo", "sac", "--discounting", "nan", "--out", "{out}/run"],
        "discounting=nan: must be in (0, 1]",
    ),
    "diagnose gamma nan": (["diagnose", "--gamma", "nan"], "gamma=nan: must be in (0, 1]"),
    "diagnose policy std inf": (
        ["diagnose", "--policy-std", "inf"],
        "policy_std=inf: must be a finite",
    ),
    "plot of nothing": (["plot", "{out}/nothing"], "no metrics"),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_gives_one_line_and_exit_status_2(case, tmp_path, capsys):
    argv, expected = BAD[case]
    (tmp_path / "bad.toml").write_text("seeds = [\n")
    (tmp_path / "unknown.toml").write_text("learning_rate = 1e-3\n")
    (tmp_path / "inf.toml").write_text("env = 'lqg'\npolicy_lr = inf\n")
    (tmp_path / "nan.toml").write_text("env = 'lqg'\ntau = [0.01, nan]\n")
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(SystemExit) as exit_:
        cli.main([a.replace("{out}", str(tmp_path)) for a in argv])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("svgx: error: ") and expected in err, err
    assert "Traceback" not in err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before


@pytest.mark.parametrize(
    "damage",
    ["corrupt checkpoint", "missing checkpoint", "other version", "corrupt metrics"],
)
def test_a_damaged_run_directory_gives_one_line_and_is_left_alone(damage, tmp_path, capsys):
    out = tmp_path / "run"
    runner.run_in_dir(out, tiny_spec(), progress=lambda line: None)
    if damage == "corrupt checkpoint":
        data = (out / "checkpoint.eqx").read_bytes()
        (out / "checkpoint.eqx").write_bytes(data[: len(data) // 2])
        expected = "corrupt or from another run configuration"
    elif damage == "missing checkpoint":  # of an unfinished run: its last chunk is missing too
        (out / "checkpoint.eqx").unlink()
        lines = (out / "metrics.jsonl").read_text().splitlines(keepends=True)
        kept = [line for line in lines if '"chunk": 2' not in line]
        (out / "metrics.jsonl").write_text("".join(kept))
        expected = "metrics but no checkpoint"
    elif damage == "other version":
        spec = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**spec, "format": 0}))
        expected = f"run directory format 0, this svgx reads format {rundir.FORMAT}"
    else:
        (out / "metrics.jsonl").write_text("{not json\n")
        expected = "not a JSON line"
    before = snapshot(out)
    with pytest.raises(SystemExit) as exit_:
        cli.main(["resume", str(out)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected in err, err
    assert snapshot(out) == before


def test_a_finished_run_without_its_checkpoint_is_complete_not_damaged(tmp_path, monkeypatch):
    """The run files committed beside a results file keep metrics but no checkpoint:
    resuming such a copy (alone, or as a sweep's group) runs nothing and changes nothing.
    With its checkpoint, resuming it compiles nothing (a sweep resumed on a fresh
    compilation cache would compile every finished group) and returns its state."""
    out = tmp_path / "run"
    whole = runner.run_in_dir(out, tiny_spec(), progress=lambda line: None)
    with monkeypatch.context() as patch:
        patch.setattr(runner, "programs", None)  # calling it would fail
        lines = []
        again = runner.run_in_dir(out, progress=lines.append)
    assert lines[0] == f"{out}: the run is complete (3 chunks); nothing to resume"
    assert not any("compiled" in line for line in lines), lines
    assert len(again.metrics) == 3 and not again.interrupted
    arrays = [
        jax.tree.leaves(eqx.filter(parameters(r.state), eqx.is_array)) for r in (again, whole)
    ]
    for a, b in zip(*arrays, strict=True):
        np.testing.assert_array_equal(a, b)
    (out / "checkpoint.eqx").unlink()
    shutil.rmtree(out / "policies")
    before, lines = snapshot(out), []
    copy = runner.run_in_dir(out, progress=lines.append)
    assert copy.state is None and not copy.interrupted
    assert lines == [
        f"{out}: the run is complete (3 chunks); nothing to resume "
        "(its directory holds no checkpoint, so the returned run has no state)"
    ]
    for ma, mb in zip(copy.metrics, whole.metrics, strict=True):
        assert ma.keys() == mb.keys()
        for name in mb:
            np.testing.assert_allclose(ma[name], mb[name], rtol=1e-6, err_msg=name)
    assert snapshot(out) == before


@pytest.mark.parametrize(("every", "expected"), [(1e9, [3]), (0.0, [1, 2, 3, 3])])
def test_the_curve_is_redrawn_at_most_every_curve_every_s_and_at_the_end(
    every, expected, tmp_path, monkeypatch
):
    """Each entry of ``drawn`` is how many chunks the curve showed when it was drawn."""
    import svgx.plot

    drawn = []
    monkeypatch.setattr(runner, "CURVE_EVERY_S", every)
    monkeypatch.setattr(
        svgx.plot, "plot_runs", lambda dirs, png: drawn.append(len(rundir.read_metrics(dirs[0])))
    )
    runner.run_in_dir(tmp_path / "run", tiny_spec(), progress=lambda line: None)
    assert drawn == expected


def test_envs_json_lists_every_task(capsys):
    import envs

    cli.main(["envs", "--json", "--no-playground"])  # Playground's: tests/test_playground.py
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows] == envs.names(playground_tasks=False)
    assert {"name", "state_size", "action_size", "horizon"} <= set(rows[0])


def test_a_brax_baseline_writes_the_same_metrics_and_plots_beside_svgx(tmp_path):
    """Brax's SAC on lqg through the adapter: svgx's metrics format, one curve per run."""
    out = tmp_path / "sac"
    cli.main(
        [
            "baseline",
            "--env",
            "lqg",
            "--algo",
            "sac",
            "--steps",
            "1000",
            "--evaluations",
            "3",
            "--n-envs",
            "4",
            "--hidden",
            "16",
            "16",
            "--env-options",
            "horizon",
            "10",
            "--batch-size",
            "32",
            "--out",
            str(out),
        ]
    )
    recorded = json.loads((out / "config.json").read_text())["baseline"]
    assert recorded["env_options"] == {"horizon": 10} and recorded["batch_size"] == 32
    history = rundir.read_metrics(out)
    assert len(history) == 3
    assert int(history[0]["env_steps"][0]) == 0 and history[-1]["env_steps"][0] >= 1000
    for name in ("eval_return", "eval_success", "eval_diverged", "wall_time"):
        assert np.isfinite(history[-1][name]).all(), name
    assert 0 <= history[-1]["eval_success"][0] <= 1
    assert history[-1]["eval_diverged"][0] == 0  # lqg's states never leave its bound
    run = runner.run_in_dir(tmp_path / "svg", tiny_spec(), progress=lambda line: None)
    assert run.metrics
    png = tmp_path / "both.png"
    cli.main(["plot", str(out), str(tmp_path / "svg"), "--out", str(png)])
    assert png.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(SystemExit):
        cli.main(["resume", str(out)])


def test_an_algorithms_options_become_its_config_and_the_rest_keep_their_defaults():
    import tyro

    def spec(*flags):
        lqg = ["--out", "x", "--env", "lqg", "--no-squash", "--linear-policy"]
        return cli.train_spec(tyro.cli(cli.train_args(), args=[*lqg, *flags]))

    svgk = spec("--algo", "svgk_er", "--k", "3", "--gamma", "0.9")
    assert svgk.config.algo_options == {"k": 3} and svgk.config.algorithm.k == 3
    assert svgk.hparams.gamma == 0.9 and svgk.hparams.policy_lr == Hyperparams().policy_lr
    assert svgk.config.n_envs == Config().n_envs
    planner = spec("--algo", "planner")
    assert planner.config.algo_options == {} and planner.config.algorithm.planner_horizon == 10


def test_the_command_line_leaves_python_stacks_on_a_native_crash(capfd):
    """``svgx`` enables :mod:`faulthandler`, so a segmentation fault inside native code
    leaves every thread's Python stack on stderr."""
    import faulthandler

    was = faulthandler.is_enabled()
    faulthandler.disable()
    try:
        cli.main(["envs", "--no-playground"])  # Playground's tasks take 30 s to build
        assert faulthandler.is_enabled()
    finally:
        faulthandler.disable()
        if was:
            faulthandler.enable(file=sys.__stderr__)
