"""Sweeps: a grid of configurations, grouped so that each group is one compiled program.

A sweep file is TOML. Top-level keys are ``seeds`` (per combination), ``seed``,
``steps`` (environment steps per seed, optional) and any field of
:class:`~svgx.config.Config` or :class:`~svgx.config.Hyperparams`; a list is an
axis of the grid (``policy_hidden``/``critic_hidden`` take a list of lists)::

    seeds = 4
    steps = 20000
    env = "cartpole"
    algo = ["svg1_er", "svg0_er"]
    n_envs = 4
    policy_lr = [1e-3, 3e-4]

Configurations that fix shapes (Config fields) make groups; within a group every
combination of swept hyperparameters × seeds is one member of a single
``vmap``-ed (and device-sharded) program, written to one run directory
``DIR/<group>/``. Member ``i`` has hyperparameter combination ``i // seeds`` and
seed ``i % seeds``; ``DIR/<group>/members.json`` lists them
(:func:`svgx.rundir.member_labels` reads it). Running the sweep again (or
``svgx resume DIR``) skips finished groups and resumes an interrupted one.
``DIR/sweep.toml`` keeps the file's text; a file that differs from it only in
comments or layout (equal as TOML) is the same sweep, any other is refused.

Methods that need different budgets or sizes in one figure are ``[[group]]``
tables: each is a grid of its own, its keys (``seeds``, ``seed``, ``steps`` and
any field) overriding the top-level ones, and the sweep's groups are those of
every table in turn (numbered on across tables)::

    env = "hand"
    jacobians = "learned"
    steps = 400000

    [[group]]
    algo = "svg_inf"
    n_envs = 4

    [[group]]
    algo = "planner"
    n_envs = 16

``group = []`` runs no svgx group: a file of ``[[baseline]]`` tables only.

Brax's own agents run beside them, as ``[[baseline]]`` tables (the fields of
:class:`svgx.baselines.BaselineArgs` but ``out``)::

    [[baseline]]
    algo = "sac"
    learning_rate = [3e-4, 1e-3]   # a list is an axis here too: one run each

A field a table leaves out is the sweep's own, so that the baseline sees the same
budget and sizes: ``env``, ``env_options``, ``seeds``, ``seed``, ``steps``,
``n_envs``, ``batch_size``, ``updates_per_step``, ``gamma`` (as ``discounting``),
``chunks`` (as ``evaluations``) and ``policy_hidden`` (as ``hidden``). Each
baseline run writes ``DIR/b<i>-<env>-<algo>/`` after the groups; a finished one
is not run again, an unfinished one (Brax's trainers keep no checkpoint) is run
again from the start.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import itertools
import json
import pathlib
import sys
import tomllib

import jax.numpy as jnp

from svgx import rundir
from svgx.baselines import ALGORITHMS as BASELINE_ALGORITHMS
from svgx.baselines import BaselineArgs, check_args, same_baseline
from svgx.cache import release_compiled_programs
from svgx.config import Config, Hyperparams, config_for_steps
from svgx.divergence import NonFiniteError
from svgx.io import atomic_write_text

SWEEP_FILE = "sweep.toml"
TOP_LEVEL = ("seeds", "seed", "steps", "group", "baseline")
TUPLE_FIELDS = ("policy_hidden", "critic_hidden")


# A baseline field a [[baseline]] table leaves out: the sweep's value of this key.
BASELINE_DEFAULTS = dict(
    env="env",
    env_options="env_options",
    seeds="seeds",
    seed="seed",
    steps="steps",
    n_envs="n_envs",
    batch_size="batch_size",
    updates_per_step="updates_per_step",
    discounting="gamma",
    evaluations="chunks",  # plus one: Brax evaluates at step 0 too
    hidden="policy_hidden",
)


@dataclasses.dataclass(frozen=True)
class Group:
    name: str
    spec: rundir.RunSpec
    members: list[dict]  # hyperparameter values and seed index of each member


@dataclasses.dataclass(frozen=True)
class Baseline:
    name: str
    args: BaselineArgs  # its out is the run directory's name, relative to the sweep's


def parse(text: str, where: str = "sweep file") -> list[Group]:
    """The groups of a sweep file's text (raises ValueError naming the bad key or value)."""
    return parse_all(text, where)[0]


def parse_all(text: str, where: str = "sweep file") -> tuple[list[Group], list[Baseline]]:
    """The groups and the baseline runs of a sweep file's text (raises ValueError naming
    the bad key or value)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{where}: TOML syntax error: {error}") from None
    config_fields = {f.name for f in dataclasses.fields(Config)}
    hp_fields = {f.name for f in dataclasses.fields(Hyperparams)}
    _check_keys(data, config_fields | hp_fields | set(TOP_LEVEL), where)
    subgrids = data.get("group", [{}])
    if not isinstance(subgrids, list) or not all(isinstance(t, dict) for t in subgrids):
        raise ValueError(f"{where}: group: must be [[group]] tables (or [], baselines only)")
    if not subgrids and not data.get("baseline"):
        raise ValueError(f"{where}: group = [] runs no svgx groups: add [[baseline]] tables")
    top = {k: v for k, v in data.items() if k not in ("group", "baseline")}
    groups = []
    for index, table in enumerate(subgrids):
        place = f"{where}: [[group]] {index}" if "group" in data else where
        _check_keys(table, config_fields | hp_fields | {"seeds", "seed", "steps"}, place)
        groups.extend(_groups({**top, **table}, config_fields, hp_fields, place, len(groups)))
    tables = data.get("baseline", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise ValueError(f"{where}: baseline: must be [[baseline]] tables")
    sweep_values = {
        **dataclasses.asdict(Config()),
        **data,
        "seeds": data.get("seeds", 1),
        "seed": data.get("seed", 0),
    }
    baselines = []
    for table in tables:
        baselines.extend(_baselines(table, sweep_values, where, start=len(baselines)))
    return groups, baselines


def _check_keys(table: dict, allowed: set[str], where: str) -> None:
    if unknown := set(table) - allowed:
        config = ", ".join(sorted(f.name for f in dataclasses.fields(Config)))
        hparams = ", ".join(sorted(f.name for f in dataclasses.fields(Hyperparams)))
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
            f"{', '.join(k for k in TOP_LEVEL if k in allowed)}, the Config fields "
            f"({config}) and the Hyperparams fields ({hparams})"
        )


def _groups(data: dict, config_fields, hp_fields, where: str, start: int) -> list[Group]:
    """The groups of one grid: ``data`` maps fields to a value or an axis (a list)."""
    seeds, seed, steps = data.get("seeds", 1), data.get("seed", 0), data.get("steps")
    for name, value in (("seeds", seeds), ("seed", seed), ("steps", steps)):
        if value is not None and (
            not isinstance(value, int) or isinstance(value, bool) or value < (name != "seed")
        ):
            raise ValueError(
                f"{where}: {name}={value!r}: must be an integer >= {int(name != 'seed')}"
            )

    def axis(name, value):
        if name in TUPLE_FIELDS:
            is_axis = isinstance(value, list) and value and all(isinstance(v, list) for v in value)
            return [tuple(v) for v in value] if is_axis else [tuple(value)]
        return value if isinstance(value, list) else [value]

    config_axes = {k: axis(k, v) for k, v in data.items() if k in config_fields}
    hp_axes = {k: axis(k, v) for k, v in data.items() if k in hp_fields}
    for name, values in {**config_axes, **hp_axes}.items():
        if not values:
            raise ValueError(f"{where}: {name} = []: an axis needs at least one value")
    hp_combos = [
        dict(zip(hp_axes, values, strict=True)) for values in itertools.product(*hp_axes.values())
    ]
    for combo in hp_combos:
        Hyperparams(**combo).check()

    groups = []
    for values in itertools.product(*config_axes.values()):
        fields = dict(zip(config_axes, values, strict=True))
        config = config_for_steps(fields, steps)
        # The checks that need the task (e.g. k <= horizon), before anything is written.
        config.make_env()
        members = [dict(combo, seed=s) for combo in hp_combos for s in range(seeds)]
        hparams = Hyperparams(
            **{name: jnp.asarray([m[name] for m in members], jnp.float32) for name in hp_axes}
        )
        spec = rundir.RunSpec(config, hparams, len(members), seed)
        jac = (
            f"-{config.jacobians}"
            if "jacobians" in fields or config.jacobians != "simulator"
            else ""
        )
        name = f"g{start + len(groups):02d}-{_path_part(config.env)}-{config.algo}{jac}"
        groups.append(Group(name, spec, members))
    return groups


def _baselines(table: dict, sweep_values: dict, where: str, start: int) -> list[Baseline]:
    """The baseline runs of one ``[[baseline]]`` table (a list value is an axis)."""
    fields = {f.name for f in dataclasses.fields(BaselineArgs)} - {"out", "overwrite"}
    where = f"{where}: [[baseline]] {start}"
    if unknown := set(table) - fields:
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
            f"{', '.join(sorted(fields))}"
        )
    if "algo" not in table:
        raise ValueError(f"{where}: algo is required ({', '.join(BASELINE_ALGORITHMS)})")
    values = {}
    for name, key in BASELINE_DEFAULTS.items():
        if name not in table and sweep_values.get(key) is not None:
            value = sweep_values[key]
            if isinstance(value, list) and not (key == "policy_hidden" and _is_widths(value)):
                raise ValueError(
                    f"{where}: {name}: the sweep's {key} is an axis; give {name} in the table"
                )
            values[name] = value + 1 if name == "evaluations" else value
    values.update(table)
    if "steps" not in values:
        raise ValueError(f"{where}: steps is required (in the table or at the top level)")
    axes = {
        k: (v if isinstance(v, list) and not (k == "hidden" and _is_widths(v)) else [v])
        for k, v in values.items()
    }
    runs = []
    for combo in itertools.product(*axes.values()):
        fields_ = dict(zip(axes, combo, strict=True))
        fields_["hidden"] = tuple(fields_.get("hidden", (100, 100)))
        args = BaselineArgs(out="", **fields_)
        try:
            check_args(args)
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        name = f"b{start + len(runs):02d}-{_path_part(args.env)}-{args.algo}"
        runs.append(Baseline(name, dataclasses.replace(args, out=name)))
    return runs


def _is_widths(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, int) for v in value)


def is_sweep_dir(path) -> bool:
    return (pathlib.Path(path) / SWEEP_FILE).is_file()


def _path_part(name: str) -> str:
    """A task name as part of a directory name: ``playground:CartpoleSwingup`` ->
    ``playground-CartpoleSwingup`` (a colon reads as a drive or a host elsewhere)."""
    return name.replace(":", "-")


def group_dirs(path) -> list[pathlib.Path]:
    return sorted(p for p in pathlib.Path(path).iterdir() if (p / rundir.CONFIG).is_file())


def run_sweep(
    file: str | None,
    out: str | None = None,
    *,
    only: tuple[str, ...] = (),
    progress=None,
    devices=None,
) -> list:
    """Runs (or resumes) the sweep in ``file`` into ``out``; ``file=None`` resumes the sweep
    ``out``.

    ``only``: shell-style patterns (``fnmatch``) of the group and baseline names to run,
    e.g. ``g0[0-6]-*`` or ``*-cheetah-*``; the others are left for another command. A
    pattern that matches no name is an error.

    A group or baseline that another process is running (:func:`svgx.rundir.exclusive`)
    is skipped, so the same command started in several processes shares the sweep out
    between them. A group that goes non-finite stops (:mod:`svgx.divergence`) and the
    other groups still run; so do the baselines after a baseline seed went non-finite
    (:mod:`svgx.baselines`). Then :class:`~svgx.divergence.NonFiniteError` is raised for
    the first such run. A run that stopped in an earlier invocation is not run again.
    """
    from svgx import runner

    if file is None:
        out = pathlib.Path(out)
        text, where = (out / SWEEP_FILE).read_text(), str(out / SWEEP_FILE)
    else:
        path = pathlib.Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"sweep file {file!r}: no such file")
        text, where = path.read_text(), str(path)
        out = pathlib.Path(out) if out else path.with_suffix("")
    groups, baselines = parse_all(text, where)
    if only:
        groups, baselines = _select(groups, baselines, only, where)
    if file is not None and is_sweep_dir(out):
        if tomllib.loads((out / SWEEP_FILE).read_text()) != tomllib.loads(text):
            raise ValueError(
                f"--out {str(out)!r}: holds a different sweep; use another directory "
                f"(or `svgx resume {out}` to continue the one it holds)"
            )
    if not is_sweep_dir(out) or (out / SWEEP_FILE).read_text() != text:
        # New, or the same sweep (equal as TOML) with other comments or layout: the
        # directory keeps the text that ran last.
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / SWEEP_FILE, text)
    progress = progress or _print
    results, stopped, busy = [], [], []
    for group in groups:
        directory = out / group.name
        atomic_write_text(
            directory / rundir.MEMBERS, json.dumps(_jsonable(group.members), indent=2)
        )
        try:
            if (directory / rundir.CONFIG).is_file():
                if rundir.read_spec(directory).to_json() != group.spec.to_json():
                    raise rundir.RunDirError(
                        f"{str(directory)!r}: written by a different sweep configuration"
                    )
                if (divergence := rundir.read_stopped(directory)) is not None:
                    raise NonFiniteError(divergence, None, checkpoint=str(directory))
                result = runner.run_in_dir(directory, progress=progress, devices=devices)
            else:
                result = runner.run_in_dir(
                    directory, group.spec, progress=progress, devices=devices
                )
        except NonFiniteError as error:  # the other groups still run
            progress(f"{group.name}: {error}")
            stopped.append(error)
            continue
        except rundir.RunDirInUse as error:  # another process runs it
            progress(f"{group.name}: skipped, {error}")
            busy.append(group.name)
            continue
        finally:
            release_compiled_programs()  # one group's programs at a time
        results.append(result)
        if result.interrupted:
            break
    else:
        for baseline in baselines:
            try:
                _run_baseline(baseline, out / baseline.name, progress)
            except NonFiniteError as error:  # the other baselines still run
                progress(f"{baseline.name}: {error}")
                stopped.append(error)
            except rundir.RunDirInUse as error:
                progress(f"{baseline.name}: skipped, {error}")
                busy.append(baseline.name)
    if busy:
        progress(
            f"{len(busy)} run(s) of the sweep were running in other processes and were "
            f"skipped: {', '.join(busy)}"
        )
    if stopped:
        raise (
            stopped[0]
            if len(stopped) == 1
            else NonFiniteError(
                stopped[0].divergence,
                stopped[0].run,
                stopped[0].checkpoint,
                others=len(stopped) - 1,
            )
        )
    return results


def _select(groups, baselines, patterns, where):
    """The groups and baselines whose names match one of ``patterns`` (``fnmatch``)."""
    names = [run.name for run in (*groups, *baselines)]
    for pattern in patterns:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise ValueError(
                f"--only {pattern!r}: matches none of the runs of {where} ({', '.join(names)})"
            )

    def chosen(run):
        return any(fnmatch.fnmatchcase(run.name, pattern) for pattern in patterns)

    return [g for g in groups if chosen(g)], [b for b in baselines if chosen(b)]


def _run_baseline(baseline: Baseline, directory: pathlib.Path, progress) -> None:
    """Runs a baseline into ``directory`` unless it finished there before (one with a
    seed that went non-finite raises :class:`NonFiniteError` again, as it did then)."""
    from svgx.baselines import run_baseline

    args = dataclasses.replace(baseline.args, out=str(directory), overwrite=True)
    if (directory / rundir.CONFIG).is_file():
        recorded = json.loads((directory / rundir.CONFIG).read_text()).get("baseline", {})
        if not same_baseline(recorded, args):
            raise rundir.RunDirError(
                f"{str(directory)!r}: written by a different sweep configuration"
            )
        if (directory / rundir.METRICS).is_file():
            if (divergence := rundir.read_stopped(directory)) is not None:
                raise NonFiniteError(divergence, None)  # finished, with a stopped seed
            return
    run_baseline(args, progress)


def _print(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _jsonable(members):
    return [{k: (list(v) if isinstance(v, tuple) else v) for k, v in m.items()} for m in members]
