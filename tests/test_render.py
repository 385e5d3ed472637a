"""Videos (``svgx render``, ``svgx train --video``): the frames MuJoCo draws, read back
from the file; the episodes are the evaluation's; bad input is one line naming it.

The run directory is made without training (training cart-pole compiles MJX's
gradients, a minute): a checkpoint of random parameters, whose policies move the cart.
"""

import pathlib
import shutil

import imageio.v3 as iio
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import envs
from svgx import cli, render, rundir, runner, sweep
from svgx.config import Config, Hyperparams

# imageio-ffmpeg runs ffmpeg with subprocess, which JAX warns about (svgx.render.write_video).
pytestmark = pytest.mark.filterwarnings("ignore:os.fork:RuntimeWarning")

HORIZON = 20
FRAMES = HORIZON + 1  # every state of an episode, the first and the last included


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A cart-pole run of 2 members whose checkpoint holds random parameters."""
    out = tmp_path_factory.mktemp("render") / "run"
    config = Config(
        env="cartpole",
        env_options=dict(horizon=HORIZON),
        algo="svg1_er",
        n_envs=2,
        batch_size=16,
        policy_hidden=(16, 16),
        critic_hidden=(16, 16),
        iterations=2,
        chunks=2,
        eval_episodes=2,
    )
    spec = rundir.RunSpec(config, Hyperparams(), seeds=2, seed=0)
    rundir.create(out, spec)
    random = np.random.default_rng(0)

    def fill(x):  # numpy: jax.random would compile a program per shape
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.split(jax.random.key(0), x.shape)
        if jnp.issubdtype(x.dtype, jnp.floating):
            return (0.5 * random.standard_normal(x.shape)).astype(x.dtype)
        return np.zeros(x.shape, x.dtype)

    state = jax.tree.map(fill, runner.state_shape(spec))
    rundir.save_checkpoint(out, state, chunks_done=2)
    return out


def read(path):
    plugin = "FFMPEG" if path.suffix == ".mp4" else "pillow"
    return iio.imread(path, plugin=plugin, index=None)


def fails(capsys, *args) -> str:
    with pytest.raises(SystemExit) as exit_:
        cli.main(list(args))
    assert exit_.value.code == 2
    return capsys.readouterr().err


def test_video_shows_the_evaluation_episodes_of_a_member(run_dir, tmp_path):
    out = tmp_path / "member1.mp4"
    video = render.render_run(run_dir, seed=1, episodes=2, out=out, width=96, height=64)
    assert video.path == out and video.frames == 2 * FRAMES
    frames = read(out)
    assert frames.shape == (2 * FRAMES, 64, 96, 3) and frames.dtype == np.uint8
    assert np.abs(frames[0].astype(int) - frames[FRAMES - 1]).mean() > 1  # the cart moved
    assert iio.immeta(out, plugin="FFMPEG")["fps"] == pytest.approx(1 / envs.make("cartpole").dt)

    # The returns are those the runner's evaluation measures for member 1 (its
    # eval_episodes = 2 episodes, mean action, the member's evaluation key).
    spec = rundir.read_spec(run_dir)
    hparams = spec.hparams.as_arrays(jnp.float32)
    _, _, evaluate = runner.compiled(spec.config, hparams, spec.seeds)
    state, _ = rundir.load_checkpoint(run_dir, runner.state_shape(spec))
    evaluation, _ = evaluate(state, runner.evaluation_keys(spec.seed, spec.seeds))
    np.testing.assert_allclose(video.returns.mean(), evaluation["eval_return"][1], rtol=1e-4)
    np.testing.assert_array_equal(video.success.mean(), evaluation["eval_success"][1])
    assert not np.allclose(evaluation["eval_return"][0], evaluation["eval_return"][1])


def test_the_command_writes_a_gif(run_dir, tmp_path, capsys):
    out = tmp_path / "member0.gif"
    cli.main(["render", str(run_dir), "--out", str(out), "--width", "64", "--height", "48"])
    assert capsys.readouterr().out.startswith(f"{out} ({FRAMES} frames; return ")
    frames = read(out)
    # Pillow merges identical consecutive frames: at most one per state.
    assert 1 < len(frames) <= FRAMES and frames.shape[1:] == (48, 64, 3)


def test_train_video_renders_seed_0_into_the_run_directory(run_dir, tmp_path, monkeypatch):
    def trained(out, spec, overwrite=False):  # the run, without its minute of compiling
        shutil.copytree(run_dir, out)

    monkeypatch.setattr(runner, "run_in_dir", trained)
    out = tmp_path / "run"
    cli.main(["train", "--env", "cartpole", "--out", str(out), "--video"])
    frames = read(out / render.VIDEO)
    assert frames.shape == (FRAMES, render.HEIGHT, render.WIDTH, 3)


def test_train_video_refuses_a_task_without_a_model_before_training(tmp_path, capsys):
    out = tmp_path / "run"
    err = fails(capsys, "train", "--env", "lqg", "--out", str(out), "--video")
    assert "--video: env 'lqg' has no MuJoCo model to render" in err and "cartpole" in err
    assert not out.exists()


def test_bad_input_is_one_line_naming_it(run_dir, tmp_path, capsys):
    missing = tmp_path / "missing"
    assert "'" + str(missing) + "': not a run directory (no config.json)" in fails(
        capsys, "render", str(missing)
    )

    err = fails(capsys, "render", str(run_dir), "--seed", "2")
    assert "--seed 2:" in err and "has 2 seeds; allowed: 0 to 1" in err
    err = fails(capsys, "render", str(run_dir), "--out", str(tmp_path / "v.avi"))
    assert "allowed: .mp4, .gif" in err
    assert "--width 99: must be an even integer" in fails(
        capsys, "render", str(run_dir), "--width", "99"
    )
    assert "--episodes 0: must be an integer >= 1" in fails(
        capsys, "render", str(run_dir), "--episodes", "0"
    )

    lqg = tmp_path / "lqg"
    rundir.create(lqg, rundir.RunSpec(Config(env="lqg"), Hyperparams(), seeds=1, seed=0))
    err = fails(capsys, "render", str(lqg))
    assert "env 'lqg' has no MuJoCo model to render; tasks that can be rendered: " in err
    assert set(render.renderable_tasks()) == set(envs.names()) - {"lqg"}

    grid = tmp_path / "grid"
    grid.mkdir()
    (grid / sweep.SWEEP_FILE).write_text("")
    assert "a sweep directory; render one of its groups" in fails(capsys, "render", str(grid))

    assert not list(tmp_path.rglob("*.mp4")) and not (run_dir / render.VIDEO).exists()


def test_render_states_checks_the_states():
    env = envs.make("cartpole")
    with pytest.raises(ValueError, match=r"states have shape \(3, 5\); .* needs \(T, 4\)"):
        render.render_states(env, np.zeros((3, 5)))


def test_make_test_installs_and_readme_names_the_gl_packages():
    root = pathlib.Path(__file__).resolve().parents[1]
    script = (root / "scripts" / "install-system-packages").read_text()
    assert f"gl_packages=({' '.join(render.GL_PACKAGES)})" in script
    assert "scripts/install-system-packages" in (root / "Makefile").read_text()
    readme = " ".join((root / "README.md").read_text().split())
    assert f"apt-get install {' '.join(render.GL_PACKAGES)}" in readme
