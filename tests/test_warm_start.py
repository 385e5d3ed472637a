"""The export cache (svgx.export_cache): a second run of a configuration loads its traced
programs instead of tracing them, and runs to the same numbers; a damaged or stale entry
is a miss, traced again and rewritten; the cache can be turned off."""

import shutil

import jax
import numpy as np
import pytest
from small import TINY_LQG

from svgx import export_cache, rundir, runner
from svgx.config import Config, Hyperparams

CONFIG = Config(algo="svg1_er", iterations=4, chunks=2, **TINY_LQG)
PROGRAMS = ("init", "iterate", "diagnostics", "evaluate")


def quiet(line):
    pass


def run(monkeypatch, directory, config=CONFIG, *, enabled=True):
    """A run of ``config`` with the export cache in ``directory``; returns it and what
    the cache did: ``{program: "hit" | "miss"}``."""
    monkeypatch.setenv(export_cache.DIR_VAR, str(directory))
    monkeypatch.setenv(export_cache.ENV_VAR, "1" if enabled else "0")
    before = len(export_cache.EVENTS)
    result = runner.run(config, Hyperparams(), seeds=2, progress=quiet)
    return result, dict(export_cache.EVENTS[before:])


def assert_same(a, b):
    """Every metric (but timings) and every array of the final state, bit for bit."""
    for chunk_a, chunk_b in zip(a.metrics, b.metrics, strict=True):
        for name in chunk_a.keys() - set(rundir.TIMINGS):
            np.testing.assert_array_equal(chunk_a[name], chunk_b[name], err_msg=name)
    leaves_a = jax.tree.leaves(rundir.unwrap_keys(a.state))
    leaves_b = jax.tree.leaves(rundir.unwrap_keys(b.state))
    for x, y in zip(leaves_a, leaves_b, strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    """A first run into an empty export cache: ``(run, events, directory)``."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        directory = tmp_path_factory.mktemp("exported")
        result, events = run(monkeypatch, directory)
    return result, events, directory


def copy(source, target):
    shutil.copytree(source, target)
    return target


def entry(directory, name):
    (path,) = directory.glob(f"{name}-*.bin")
    return path


def test_second_run_loads_every_program_and_matches(first, tmp_path, monkeypatch):
    result, events, directory = first
    assert events == dict.fromkeys(PROGRAMS, "miss")
    directory = copy(directory, tmp_path / "exported")

    def no_tracing(*args, **kwargs):
        raise AssertionError("a hit must not trace")

    with monkeypatch.context() as patch:
        patch.setattr(jax.export, "export", no_tracing)
        second, events = run(monkeypatch, directory)
    assert events == dict.fromkeys(PROGRAMS, "hit")
    assert_same(result, second)


def test_results_equal_with_the_cache_off(first, tmp_path, monkeypatch):
    result, _, _ = first
    directory = tmp_path / "exported"
    off, events = run(monkeypatch, directory, enabled=False)
    assert events == {} and not directory.exists()
    assert_same(result, off)


def test_damaged_entry_is_a_miss_and_is_rewritten(first, tmp_path, monkeypatch):
    result, _, directory = first
    directory = copy(directory, tmp_path / "exported")
    iterate = entry(directory, "iterate")
    good = iterate.read_bytes()
    data = bytearray(good)
    data[-100] ^= 0xFF  # one flipped bit in the program
    iterate.write_bytes(bytes(data))
    entry(directory, "evaluate").write_bytes(b"svgx-exported\n{not json")
    second, events = run(monkeypatch, directory)
    assert events == dict(init="hit", iterate="miss", diagnostics="hit", evaluate="miss")
    assert_same(result, second)
    assert entry(directory, "iterate").read_bytes() != bytes(data)  # rewritten
    _, events = run(monkeypatch, directory)
    assert events == dict.fromkeys(PROGRAMS, "hit")


def test_entry_of_another_key_is_a_miss(first, tmp_path, monkeypatch):
    _, _, directory = first
    # Another batch size: programs that would run on the same inputs, to other numbers.
    other = Config(algo="svg1_er", iterations=4, chunks=2, **{**TINY_LQG, "batch_size": 8})
    reference, events = run(monkeypatch, tmp_path / "reference", other)
    assert events == dict.fromkeys(PROGRAMS, "miss")
    # ``other``'s file names, holding the first config's programs.
    stale = copy(tmp_path / "reference", tmp_path / "stale")
    for name in PROGRAMS:
        entry(stale, name).write_bytes(entry(directory, name).read_bytes())
    result, events = run(monkeypatch, stale, other)
    assert events == dict.fromkeys(PROGRAMS, "miss")
    assert_same(reference, result)


def test_the_key_covers_config_inputs_and_salt(monkeypatch):
    leaves = jax.tree.leaves(Hyperparams().as_arrays())
    key = export_cache.key("chunk", CONFIG, leaves, n_devices=1)
    assert key == export_cache.key("chunk", CONFIG, leaves, n_devices=1)
    other_config = Config(algo="svg1_er", iterations=4, chunks=2, **{**TINY_LQG, "n_envs": 3})
    swept = jax.tree.leaves(Hyperparams(policy_lr=np.array([1e-3, 1e-4])).as_arrays())
    float64 = [np.asarray(leaf, np.float64) for leaf in leaves]
    others = [
        export_cache.key("evaluate", CONFIG, leaves, n_devices=1),
        export_cache.key("chunk", other_config, leaves, n_devices=1),
        export_cache.key("chunk", CONFIG, swept, n_devices=1),
        export_cache.key("chunk", CONFIG, float64, n_devices=1),
        export_cache.key("chunk", CONFIG, leaves, n_devices=2),
    ]
    monkeypatch.setenv(export_cache.SALT_VAR, "edited")
    others.append(export_cache.key("chunk", CONFIG, leaves, n_devices=1))
    assert len({key, *others}) == len(others) + 1


@pytest.mark.parametrize(("value", "on"), [("0", False), ("1", True), (None, "cpu")])
def test_on_by_default_on_cpu_only(monkeypatch, value, on):
    if value is None:
        monkeypatch.delenv(export_cache.ENV_VAR, raising=False)
        on = jax.default_backend() == "cpu"  # unchecked on GPU/TPU: off there unless asked
    else:
        monkeypatch.setenv(export_cache.ENV_VAR, value)
    assert export_cache.enabled() is on
