"""``[[group]]`` tables in sweep files (each a grid of its own, overriding the top level),
and every committed experiment's sweep file: it parses and builds its configurations."""

import pathlib

import pytest

from svgx import sweep

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(
    p.relative_to(ROOT)
    for folder in ("experiments/learning", "experiments/paper")
    for p in (ROOT / folder).glob("*.toml")
)

FIGURE = """
seeds = 2
steps = 4000
chunks = 2
env = "lqg"
policy_lr = [1e-3, 3e-4]

[[group]]
algo = "svg_inf"
n_envs = 4

[[group]]
algo = ["svg1_er", "svg0_er"]
n_envs = 2
steps = 2000
seeds = 3
policy_lr = 1e-4
"""


def test_group_tables_are_grids_of_their_own_that_override_the_top_level():
    groups = sweep.parse(FIGURE)
    assert [g.name for g in groups] == ["g00-lqg-svg_inf", "g01-lqg-svg1_er", "g02-lqg-svg0_er"]
    inf, *replay = (g.spec for g in groups)
    horizon = inf.config.make_env().horizon  # svg_inf collects whole episodes
    assert (inf.config.n_envs, inf.config.iterations * 4 * horizon) == (4, 4000)
    assert [m["policy_lr"] for m in groups[0].members] == [1e-3, 1e-3, 3e-4, 3e-4]
    for spec, group in zip(replay, groups[1:], strict=True):
        assert (spec.config.n_envs, spec.config.iterations * spec.config.n_envs) == (2, 2000)
        assert spec.config.chunks == 2  # from the top level
        assert [m["policy_lr"] for m in group.members] == [1e-4] * 3
        assert [m["seed"] for m in group.members] == [0, 1, 2]


def test_a_file_without_group_tables_is_one_grid():
    text = FIGURE.split("[[group]]")[0] + 'algo = "svg1_er"\n'
    assert [g.name for g in sweep.parse(text)] == ["g00-lqg-svg1_er"]


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ("[[group]]\nlr = 1e-3", "grid.toml: [[group]] 1: unknown key(s) lr; valid: seeds,"),
        ("[[group]]\nseeds = 0", "grid.toml: [[group]] 1: seeds=0: must be an integer >= 1"),
        ('[[group]]\nalgo = "svg2"', "algo='svg2': unknown algorithm"),
        ('[[group]]\n[[group.baseline]]\nalgo = "sac"', "unknown key(s) baseline"),
        ("group = 3", "group: must be [[group]] tables (or [], baselines only)"),
        ("group = []", "group = [] runs no svgx groups: add [[baseline]] tables"),
    ],
)
def test_a_bad_group_table_is_an_error_naming_it(table, message):
    text = 'steps = 1000\nenv = "lqg"\n[[group]]\nalgo = "svg1_er"\n'
    if table.startswith("group ="):
        text = f'{table}\nsteps = 1000\nenv = "lqg"\n'
    else:
        text += table
    with pytest.raises(ValueError) as error:
        sweep.parse_all(text, "grid.toml")
    assert message in str(error.value)


@pytest.mark.parametrize("path", EXPERIMENTS, ids=str)
def test_every_experiment_sweep_file_parses_and_builds_its_configurations(path):
    text = (ROOT / path).read_text()
    groups, baselines = sweep.parse_all(text, str(path))
    assert groups or baselines
    for group in groups:
        assert len(group.members) == group.spec.seeds
        assert group.spec.config.make_env().name == group.spec.config.env
    # Each file says how to run it.
    assert f"svgx sweep {path}" in text


def test_a_file_of_baselines_only():
    text = 'group = []\nsteps = 1000\nenv = "lqg"\n[[baseline]]\nalgo = "sac"\n'
    groups, baselines = sweep.parse_all(text)
    assert groups == [] and [b.name for b in baselines] == ["b00-lqg-sac"]


def test_a_playground_task_names_its_group_without_a_colon():
    text = 'env = "playground:CartpoleSwingup"\nalgo = "svg1_er"\nsteps = 1000\n'
    assert [g.name for g in sweep.parse(text)] == ["g00-playground-CartpoleSwingup-svg1_er"]
