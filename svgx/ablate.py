"""Model-error ablations: a grid of gradient diagnoses (:func:`svgx.diagnostics.diagnose`)
written as a Markdown table and heat maps (README, "Model-error ablations").

A grid file is TOML, like a sweep file (:mod:`svgx.sweep`): a list is an axis, a
scalar a fixed value. Its keys are the fields of
:class:`~svgx.diagnostics.DiagnoseConfig` (``env``, ``estimator``, ``k``,
``jacobians``, ``model_hidden``, ``samples``, ``batches``, ``reference_samples``,
``gamma``, ``critic_steps``, ``model_steps``, ``policy_std``, …, with its defaults)
but ``model_samples`` and ``seed``, and these::

    policy = "initial"        # or a run directory of `svgx train` (its checkpoint's policy),
                              # or one of its policy snapshots, RUN/policies/steps-N.eqx
    policy_seed = 0           # which of that run's seeds
    model_transitions = 10000 # on-policy transitions the model is fitted on
    seeds = 1                 # diagnosis seeds (not an axis): seed, seed + 1, …
    seed = 0

    env = ["lqg", "cartpole"]
    estimator = ["svg0", "svg1", "svgk", "svg_inf"]
    k = [2, 5, 10]
    jacobians = ["simulator", "learned"]
    model_hidden = [5, 10, 20]
    model_transitions = [1000, 10000, 100000]

    [env_options]             # every task's options; a table named after a task is its own
    noise_scale = 0.1
    [env_options.hand]
    horizon = 100

An axis multiplies only the cells it applies to: ``k`` the ``svgk`` cells,
``jacobians`` the estimators that use dynamics (an estimator without dynamics,
such as ``svg0``, gets one cell with no Jacobian source; with ``jacobians =
"learned"`` alone it is an error), ``model_hidden``, ``model_transitions`` and
``model_steps`` the learned cells, ``policy_seed`` the run-directory policies,
``policy_std`` the initial policy, ``critic`` the estimators that read a critic
(and ``critic_hidden``, ``critic_samples``, ``critic_steps`` those with a fitted
one), ``reference_samples`` and ``reference_estimator`` the sampled references (not
``lqg``'s exact one).
A cell's key in ``cells.jsonl`` holds the values that apply to it (``null`` for
the others). A learned cell fits its model on ``ceil(model_transitions / T)``
episodes of its task's horizon ``T``.

Every cell is checked when the file is parsed, before anything runs: unknown keys,
values of the wrong type, what :class:`~svgx.diagnostics.DiagnoseConfig` and the
task reject (``k`` must divide the horizon), and policies from run directories
(a run of the cell's task, with a checkpoint, that seed).

A cell is its diagnosis repeated with ``seeds`` seeds, the seeds vmapped
(:func:`svgx.diagnostics.diagnose_seeds`: each stage one program over all seeds). The
parts that cells share for a seed (the policy, the reference gradient, a fitted model
with its errors) are computed once per invocation, for the seeds that need them
together, and the compiled programs of a diagnosis
(:data:`svgx.diagnostics.PROGRAMS`) once per process for each task, estimator and
set of sizes. A learned cell also reports its model's error
on 256 held-out on-policy transitions (:func:`svgx.diagnostics.model_errors`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import itertools
import json
import math
import pathlib
import re
import sys
import textwrap
import time
import tomllib
import typing
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import envs
from svgx import diagnostics, rollout, rundir
from svgx.cache import release_compiled_programs
from svgx.diagnostics import ESTIMATORS, DiagnoseConfig, Keys
from svgx.io import atomic_write_bytes, atomic_write_text
from svgx.policy import GaussianPolicy

CELLS, TABLE, REFERENCES = "cells.jsonl", "ablation.md", "references"
HELD_OUT_TRANSITIONS = 256
# DiagnoseConfig fields a grid sets otherwise (model_transitions, seeds and seed).
REPLACED = ("model_samples", "seed")
KNOBS = tuple(f.name for f in dataclasses.fields(DiagnoseConfig) if f.name not in REPLACED)
# Keys of a grid beyond DiagnoseConfig's fields, and their defaults.
GRID_DEFAULTS = dict(policy="initial", policy_seed=0, model_transitions=10_000)
COUNTS = dict(seeds=1, seed=0)  # integers, not axes
AXES = (*KNOBS, *GRID_DEFAULTS)
# What a heat map's rows and columns are; the rest of a cell picks its heat map.
ROWS, COLUMNS, PER_MAP = ("estimator", "k"), ("jacobians", "model_hidden"), ("model_transitions",)


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of the ablation: a diagnosis repeated over ``seeds`` seeds.

    Attributes:
      fields: the grid's values that apply to the cell, ``None`` for those that do
        not (its identity in ``cells.jsonl``).
      config: the first seed's diagnosis (the others differ only in ``seed``).
      seeds: diagnosis seeds, ``config.seed`` onwards.
    """

    fields: dict
    config: DiagnoseConfig
    seeds: int

    @property
    def key(self) -> str:
        return json.dumps(self.fields, sort_keys=True)

    @property
    def policy(self) -> str:
        return self.fields["policy"]

    @property
    def label(self) -> str:
        """``env estimator [jacobians H=… N=…]`` for progress lines."""
        f = self.fields
        parts = [f["env"], estimator_label(f)]
        if f["jacobians"]:
            parts.append(f["jacobians"])
        if f["jacobians"] == "learned":
            parts += [f"H={f['model_hidden']}", f"N={f['model_transitions']}"]
        if f["policy"] != "initial":
            parts.append(f"policy {f['policy']} seed {f['policy_seed']}")
        return " ".join(parts)


def estimator_label(fields: dict) -> str:
    return fields["estimator"] + (f" k={fields['k']}" if fields["k"] is not None else "")


def depth_order(fields: dict) -> tuple:
    """Sort key: SVG(0), SVG(1), SVG(k) by k, SVG(∞), then the others as registered."""
    depth = {"svg0": 0, "svg1": 1, "svgk": fields["k"], "svg_inf": math.inf}
    name = fields["estimator"]
    if name in depth:
        return (0, depth[name], 0)
    return (1, math.inf, list(ESTIMATORS).index(name))


# --- parsing ---------------------------------------------------------------------------


def parse(text: str, where: str = "grid file") -> list[Cell]:
    """The cells of a grid file's text, each checked (raises ValueError naming the key,
    the value and what is allowed)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise ValueError(f"{where}: TOML syntax error: {error}") from None
    if unknown := set(data) - set(AXES) - set(COUNTS):
        raise ValueError(
            f"{where}: unknown key(s) {', '.join(sorted(unknown))}; valid: "
            f"{', '.join(sorted((*AXES, *COUNTS)))}"
        )
    counts = {name: data.pop(name, default) for name, default in COUNTS.items()}
    for name, value in counts.items():
        if not _is_int(value) or value < (name == "seeds"):
            raise ValueError(
                f"{where}: {name} = {value!r}: must be an integer >= {int(name == 'seeds')}"
            )
    defaults = {f.name: f.default for f in dataclasses.fields(DiagnoseConfig) if f.name in KNOBS}
    defaults |= {"env_options": {}, **GRID_DEFAULTS}
    axes = {}
    for name in AXES:
        value = data.get(name, defaults[name])
        values = value if isinstance(value, list) else [value]
        if not values:
            raise ValueError(f"{where}: {name} = []: an axis needs at least one value")
        for v in values:
            _check_type(name, v, where)
        axes[name] = values
    for name in ("env", "estimator"):  # used before the cells are checked
        for value in axes[name]:
            try:
                DiagnoseConfig(**{name: value})
            except ValueError as error:
                raise ValueError(f"{where}: {error}") from None
    tasks = list(dict.fromkeys(axes["env"]))
    for options in axes["env_options"]:
        _check_env_options(options, tasks, where)

    checked = _Checks(where)
    cells: dict[str, Cell] = {}
    for combo in itertools.product(*axes.values()):
        fields = dict(zip(axes, combo, strict=True))
        uses_dynamics = ESTIMATORS[fields["estimator"]].uses_dynamics
        if not uses_dynamics and "simulator" in axes["jacobians"]:
            fields["jacobians"] = "simulator"  # no Jacobian source; one cell, not one per source
        fields["env_options"] = _task_options(fields["env_options"], fields["env"])
        fields = applicable(fields)
        if (key := json.dumps(fields, sort_keys=True)) in cells:
            continue
        cells[key] = checked.cell(fields, counts)
    return list(cells.values())


def applicable(fields: dict) -> dict:
    """``fields`` with ``None`` for the keys that do not apply to the cell (module
    docstring); the estimator's check of ``jacobians`` is left to DiagnoseConfig."""
    estimator = ESTIMATORS[fields["estimator"]]
    learned = estimator.uses_dynamics and fields["jacobians"] == "learned"
    critic = fields["critic"] or ("exact" if fields["env"] == "lqg" else "fitted")
    fitted_critic = estimator.reads_critic and critic == "fitted"
    applies = dict(
        k=fields["estimator"] == "svgk",
        jacobians=estimator.uses_dynamics or fields["jacobians"] != "simulator",
        model_hidden=learned,
        model_transitions=learned,
        model_steps=learned,
        policy_seed=fields["policy"] != "initial",
        policy_std=fields["policy"] == "initial",
        critic=estimator.reads_critic,
        critic_hidden=fitted_critic,
        critic_samples=fitted_critic,
        critic_steps=fitted_critic,
        reference_samples=fields["env"] != "lqg",
        reference_estimator=fields["env"] != "lqg",
    )
    return {name: (v if applies.get(name, True) else None) for name, v in fields.items()}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_HINTS = typing.get_type_hints(DiagnoseConfig)


def _check_type(name: str, value, where: str) -> None:
    """A grid value of the kind its key takes (the ranges are DiagnoseConfig's)."""
    if value is None:  # a default (TOML has no null)
        return
    if name == "env_options":
        ok, kind = isinstance(value, dict), "a table"
    elif name == "policy":
        ok, kind = isinstance(value, str), '"initial" or a run directory'
    elif name in ("policy_seed", "model_transitions"):
        ok, kind = (
            _is_int(value) and value >= (name == "model_transitions"),
            (f"an integer >= {int(name == 'model_transitions')}"),
        )
    elif int in typing.get_args(_HINTS[name]) or _HINTS[name] is int:
        ok, kind = _is_int(value), "an integer"
    elif _HINTS[name] is float:
        ok, kind = isinstance(value, int | float) and not isinstance(value, bool), "a number"
    else:
        ok, kind = isinstance(value, str), "a string"
    if not ok:
        raise ValueError(f"{where}: {name} = {value!r}: must be {kind}")


def _check_env_options(options: dict, tasks: list[str], where: str) -> None:
    for name, value in options.items():
        if isinstance(value, dict) and name not in tasks:
            valid = f"the grid's tasks ({', '.join(tasks)})"
            raise ValueError(
                f"{where}: env_options.{name}: a table of options, but {name!r} is not one of "
                f"{valid}; a table named after a task holds its own options"
            )
        if name in tasks and not isinstance(value, dict):
            raise ValueError(f"{where}: env_options.{name} = {value!r}: must be a table")


def _task_options(options: dict, task: str) -> dict:
    """The options of ``task``: every task's, then its own table's."""
    common = {k: v for k, v in options.items() if not isinstance(v, dict)}
    return dict(sorted({**common, **options.get(task, {})}.items()))


class _Checks:
    """Builds and checks cells, building each task and reading each run directory once."""

    def __init__(self, where: str):
        self.where = where
        self.envs: dict[str, envs.Env] = {}
        self.runs: dict[str, tuple[rundir.RunSpec, envs.Env]] = {}

    def fail(self, message: str):
        raise ValueError(f"{self.where}: {message}") from None

    def cell(self, fields: dict, counts: dict) -> Cell:
        knobs = {
            name: value
            for name, value in fields.items()
            if name in KNOBS and value is not None and name != "jacobians"
        }
        try:
            config = DiagnoseConfig(
                **knobs,
                jacobians=fields["jacobians"] or "simulator",
                seed=counts["seed"],
            )
            env = self.env(config)
        except ValueError as error:
            hint = ""
            if (
                fields["jacobians"] == "learned"
                and not ESTIMATORS[fields["estimator"]].uses_dynamics
            ):
                hint = ' (with "simulator" in jacobians it gets one cell, with no Jacobian source)'
            self.fail(f"{_describe(fields)}: {error}{hint}")
        if fields["jacobians"] == "learned":
            config = dataclasses.replace(
                config, model_samples=-(-fields["model_transitions"] // env.horizon)
            )
        if fields["policy"] != "initial":
            self.check_run(fields, env)
        return Cell(fields, config, counts["seeds"])

    def env(self, config: DiagnoseConfig) -> envs.Env:
        """``diagnostics.make_env(config)``, once per task, options, horizon and depth."""
        key = json.dumps([config.env, config.env_options, config.horizon, config.depth])
        if key not in self.envs:
            self.envs[key] = diagnostics.make_env(config)
        return self.envs[key]

    def check_run(self, fields: dict, env: envs.Env) -> None:
        """A run's policy fits the cell: its task, its sizes, that seed, that snapshot."""
        path = fields["policy"]
        directory, snapshot = run_of(path)
        if path not in self.runs:
            try:
                self.runs[path] = rundir.read_spec(directory), None
            except ValueError as error:
                self.fail(
                    f'policy = {path!r}: "initial", a run directory of svgx train or one of '
                    f"its policy snapshots (RUN/{rundir.POLICIES}/steps-N.eqx): {error}"
                )
        spec, run_env = self.runs[path]
        if spec.config.env != fields["env"]:
            self.fail(
                f"policy = {path!r}: a run of task {spec.config.env!r}, "
                f"but the cell's task is {fields['env']!r}"
            )
        if not fields["policy_seed"] < spec.seeds:
            self.fail(
                f"policy_seed = {fields['policy_seed']}: the run {str(directory)!r} has seeds "
                f"0..{spec.seeds - 1}"
            )
        if run_env is None:
            if snapshot is None and not (directory / rundir.CHECKPOINT).is_file():
                self.fail(f"policy = {path!r}: the run has no checkpoint yet")
            if snapshot is not None and not snapshot.is_file():
                steps = ", ".join(map(str, rundir.policy_snapshots(directory))) or "none yet"
                self.fail(
                    f"policy = {path!r}: no such snapshot; the run's snapshots are after "
                    f"{steps} environment steps per seed"
                )
            run_env = spec.config.make_env()
            self.runs[path] = spec, run_env
        sizes = lambda e: (e.state_size, e.observation_size, e.action_size)  # noqa: E731
        if sizes(run_env) != sizes(env):
            self.fail(
                f"policy = {path!r}: the run's task {spec.config.env!r} has (state, observation, "
                f"action) sizes {sizes(run_env)}, the cell's {sizes(env)} "
                f"(env_options {fields['env_options']})"
            )
        if env.name == "lqg" and not spec.config.linear_policy:
            self.fail(
                f"policy = {path!r}: an MLP policy, but lqg's exact reference gradient and "
                "critics need a linear policy (train with linear_policy=True)"
            )


def _describe(fields: dict) -> str:
    shown = ("env", "estimator", "k", "jacobians", "model_hidden", "model_transitions", "horizon")
    return "cell " + ", ".join(f"{k}={fields[k]!r}" for k in shown if fields[k] is not None)


# --- running ---------------------------------------------------------------------------


def run_of(policy: str | pathlib.Path) -> tuple[pathlib.Path, pathlib.Path | None]:
    """``(run directory, snapshot file or None)`` of a grid's ``policy`` that is not
    ``"initial"``: a run directory, or a snapshot ``RUN/policies/steps-N.eqx`` in one."""
    path = pathlib.Path(policy)
    if path.suffix == ".eqx" and path.parent.name == rundir.POLICIES:
        return path.parent.parent, path
    return path, None


def load_policy(path: str | pathlib.Path, seed: int = 0) -> GaussianPolicy:
    """Seed ``seed``'s policy in the checkpoint of the ``svgx train`` run in ``path``,
    or in its policy snapshot ``path`` (``RUN/policies/steps-N.eqx``), in the default
    float precision."""
    from svgx import runner

    directory, snapshot = run_of(path)
    spec = rundir.read_spec(directory)
    with jax.enable_x64(spec.config.float64):
        if snapshot is None:
            policy = rundir.load_checkpoint(directory, runner.state_shape(spec))[0].policy
        else:
            policy = rundir.load_policies(snapshot, runner.state_shape(spec).policy)
    dtype = jnp.zeros(()).dtype

    def pick(x):
        x = np.asarray(x[seed])
        return jnp.asarray(x, dtype if np.issubdtype(x.dtype, np.floating) else x.dtype)

    return jax.tree.map(lambda x: pick(x) if eqx.is_array(x) else x, policy)


class _Shared:
    """What cells share for a seed, computed once per invocation: the task, the policy,
    the reference gradient, and a fitted model with its errors. With a ``folder``,
    reference gradients are also saved there and read back by later invocations (a
    long task's references are most of its cells' cost, and a resumed grid needs them
    again)."""

    def __init__(self, folder: pathlib.Path | None = None, compute: bool = True):
        self.memo: dict = {}
        self.folder = folder
        self.compute = compute  # False: a reference not saved in folder is a LookupError

    def reference(self, key: tuple, make: Callable) -> diagnostics.Reference:
        """The reference of ``key``: from this invocation, from ``folder``, or ``make()``."""
        if key in self.memo:
            return self.memo[key]
        file = self._file(key)
        if not self.compute and (file is None or not file.is_file()):
            raise LookupError(f"no saved reference gradient for {key}")
        if file is not None and file.is_file():
            with np.load(file) as saved:
                reference = diagnostics.Reference(
                    jnp.asarray(saved["gradient"]),
                    float(saved["standard_error"]),
                    jnp.asarray(saved["chunks"]) if "chunks" in saved else None,
                )
        else:
            reference = make()
            if file is not None:
                arrays = dict(gradient=reference.gradient, standard_error=reference.standard_error)
                if reference.chunks is not None:
                    arrays["chunks"] = reference.chunks
                buffer = io.BytesIO()
                np.savez(buffer, **{k: np.asarray(v) for k, v in arrays.items()})
                atomic_write_bytes(file, buffer.getvalue())
        self.memo[key] = reference
        return reference

    def get(self, key, make: Callable):
        if key not in self.memo:
            self.memo[key] = make()
        return self.memo[key]

    def parts(self, cell: Cell, config: DiagnoseConfig, model: bool = True) -> dict:
        """The task, the policy and its reference gradient for ``config``'s seed, and
        with ``model`` a learned cell's model and its errors."""
        return self.parts_of_seeds(cell, [config], model)[0]

    def parts_of_seeds(
        self, cell: Cell, configs: list[DiagnoseConfig], model: bool = True
    ) -> list[dict]:
        """:meth:`parts` for several seeds of one cell (``configs`` differ only in
        ``seed``): the references and models not computed yet are computed for those
        seeds together, vmapped."""
        config = configs[0]
        env_key = (config.env, json.dumps(config.env_options, sort_keys=True), config.horizon)
        env = self.get(("env", env_key), lambda: diagnostics.make_env(config))
        policy_keys, policies = [], []
        for c in configs:
            if cell.policy == "initial":
                policy_key = ("initial", env_key, c.policy_std, c.gamma, c.seed)
                make = lambda c=c: diagnostics.make_policy(env, c, Keys.of(c.seed).policy)  # noqa: E731
            else:
                policy_key = ("run", cell.policy, cell.fields["policy_seed"])
                make = lambda: load_policy(cell.policy, cell.fields["policy_seed"])  # noqa: E731
            policy_keys.append(policy_key)
            policies.append(self.get(policy_key, make))

        def reference_key(c, policy_key):
            sampling = (c.gamma, c.samples, c.reference_samples, c.seed)
            if c.reference_estimator != "pathwise":  # the key of those saved before it existed
                sampling += (c.reference_estimator,)
            return ("reference", *policy_key, *_version(cell.policy), *env_key, *sampling)

        ref_keys = [reference_key(c, k) for c, k in zip(configs, policy_keys, strict=True)]
        missing = [i for i, k in enumerate(ref_keys) if not self.has_reference(k)]
        if missing:
            computed = diagnostics.reference_gradients(
                env,
                diagnostics.stack([policies[i] for i in missing]),
                config,
                [Keys.of(configs[i].seed).reference for i in missing],
            )
            for i, reference in zip(missing, computed, strict=True):
                self.reference(ref_keys[i], lambda r=reference: r)
        parts = [
            dict(env=env, policy=p, reference=self.reference(k, None))
            for p, k in zip(policies, ref_keys, strict=True)
        ]
        if model and config.jacobians == "learned":
            model_keys = [
                ("model", k, env_key, c.model_hidden, c.model_samples, c.model_steps, c.seed)
                for c, k in zip(configs, policy_keys, strict=True)
            ]
            missing = [i for i, k in enumerate(model_keys) if k not in self.memo]
            if missing:
                fitted = fit_and_measure_seeds(
                    env, [policies[i] for i in missing], config, [configs[i].seed for i in missing]
                )
                for i, pair in zip(missing, fitted, strict=True):
                    self.memo[model_keys[i]] = pair
            for part, k in zip(parts, model_keys, strict=True):
                part["model"], part["model_errors"] = self.memo[k]
        return parts

    def has_reference(self, key: tuple) -> bool:
        """Whether :meth:`reference` has ``key`` without computing it (a ``LookupError``
        where it may not compute)."""
        if key in self.memo or ((file := self._file(key)) is not None and file.is_file()):
            return True
        if not self.compute:
            raise LookupError(f"no saved reference gradient for {key}")
        return False

    def _file(self, key: tuple) -> pathlib.Path | None:
        if self.folder is None:
            return None
        return self.folder / f"{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:24]}.npz"


# What a reference gradient depends on besides its policy.
_REFERENCE_FIELDS = (
    "env",
    "env_options",
    "horizon",
    "gamma",
    "samples",
    "reference_samples",
    "reference_estimator",
    "seed",
)


def references(
    file: str | pathlib.Path,
    out: str | pathlib.Path | None = None,
    *,
    compute: bool = False,
    **changes,
) -> list[tuple[Cell, int, diagnostics.Reference | None]]:
    """The sampled reference gradients of a grid: one per task, policy and diagnosis
    seed, as ``(a cell that uses it, seed, reference)``. Read from ``out/references/``
    (``out``: as :func:`run_grid`'s); where none is saved, computed and saved with
    ``compute``, else ``None``. ``changes`` replace the grid's values of
    :class:`~svgx.diagnostics.DiagnoseConfig` fields (``reference_estimator="score"``:
    the same policies' likelihood-ratio references). Exact references (lqg) are left out."""
    path = pathlib.Path(file)
    out = pathlib.Path(out) if out is not None else path.with_suffix("")
    shared = _Shared(out / REFERENCES, compute=compute)
    found, seen = [], set()
    for cell in parse(path.read_text(), str(path)):
        if cell.fields["reference_samples"] is None:
            continue
        for seed in range(cell.config.seed, cell.config.seed + cell.seeds):
            config = dataclasses.replace(cell.config, seed=seed, **changes)
            identity = json.dumps(
                [cell.policy, cell.fields["policy_seed"], cell.fields["policy_std"]]
                + [getattr(config, name) for name in _REFERENCE_FIELDS]
            )
            if identity in seen:
                continue
            seen.add(identity)
            try:
                reference = shared.parts(cell, config, model=False)["reference"]
            except LookupError:
                reference = None
            found.append((cell, seed, reference))
    return found


def _version(policy: str) -> tuple:
    """What tells a policy file's versions apart (a run trained again rewrites it): its
    size and modification time; nothing for the initial policy."""
    if policy == "initial":
        return ()
    run, snapshot = run_of(policy)
    stat = (snapshot or run / rundir.CHECKPOINT).stat()
    return (stat.st_size, stat.st_mtime_ns)


def fit_and_measure(env, policy, config: DiagnoseConfig, key) -> tuple:
    """The model :func:`diagnostics.fit_model` fits with ``key``, and its errors on
    ``HELD_OUT_TRANSITIONS`` fresh on-policy transitions."""
    model = diagnostics.fit_model(env, policy, config, key)
    return model, _errors(env, policy, model, key)


def fit_and_measure_seeds(env, policies: list, config: DiagnoseConfig, seeds: list) -> list:
    """:func:`fit_and_measure` with each seed's ``Keys.model``, the fits vmapped."""
    keys = [Keys.of(seed) for seed in seeds]
    stacked = diagnostics.fit_models(
        env, diagnostics.stack(policies), config, [k.model for k in keys]
    )
    models = diagnostics.unstack(stacked, len(seeds))
    return [
        (m, _errors(env, p, m, k.model)) for m, p, k in zip(models, policies, keys, strict=True)
    ]


def _errors(env, policy, model, key) -> dict:
    key_data, key_direction = jax.random.split(jax.random.fold_in(key, 1))
    data = _held_out(env, policy, key_data)
    return diagnostics.model_errors(env, model, data, key_direction)


@eqx.filter_jit
@eqx.debug.assert_max_traces(max_traces=None)
def _held_out(env, policy, key):
    """``HELD_OUT_TRANSITIONS`` on-policy transitions (leaves ``[batch, …]``)."""
    episodes = -(-HELD_OUT_TRANSITIONS // env.horizon)
    data = rollout.per_step(rollout.episodes(env, policy, key, episodes))
    return jax.tree.map(lambda x: x[:HELD_OUT_TRANSITIONS], data)


def run_cell(cell: Cell, shared: _Shared | None = None) -> dict:
    """The cell's diagnosis for each of its seeds, and their summary (one JSON record)."""
    shared = shared or _Shared()
    start = time.perf_counter()
    seeds = list(range(cell.config.seed, cell.config.seed + cell.seeds))
    configs = [dataclasses.replace(cell.config, seed=seed) for seed in seeds]
    all_parts = shared.parts_of_seeds(cell, configs)
    learned = cell.fields["jacobians"] == "learned"
    results = diagnostics.diagnose_seeds(
        cell.config,
        seeds,
        policies=[p["policy"] for p in all_parts],
        references=[p["reference"] for p in all_parts],
        models=[p["model"] for p in all_parts] if learned else None,
        nonfinite="return",  # recorded: the rest of the grid still runs
    )
    per_seed = []
    for seed, parts, result in zip(seeds, all_parts, results, strict=True):
        if isinstance(result, FloatingPointError):
            per_seed.append({"seed": seed, "error": str(result)})
        else:
            per_seed.append(
                {"seed": seed, **dataclasses.asdict(result), **parts.get("model_errors", {})}
            )
    parts = all_parts[0]
    return _finite(
        dict(
            cell=cell.fields,
            horizon=parts["env"].horizon,
            model_samples=cell.config.model_samples if learned else None,
            **summarise(per_seed),
            seconds=time.perf_counter() - start,
            per_seed=per_seed,
        )
    )


def summarise(per_seed: list[dict]) -> dict:
    """A cell's statistics over its seeds (README, "Model-error ablations"):

    * ``cosine``, ``cosine_spread``: the mean and standard deviation over seeds of a
      seed's mean cosine between a batch's estimate and the reference (spread
      ``None`` with one seed);
    * ``cosine_corrected``, ``cosine_standard_error``: the mean over seeds of a seed's
      noise-corrected cosine (:func:`svgx.diagnostics.corrected_cosine`; each seed has
      its own reference) and that mean's standard error;
    * ``cosine_of_mean``, ``relative_bias``, ``bias_standard_error``,
      ``relative_variance``, ``reference_standard_error``: means over seeds of the
      per-seed values of :class:`~svgx.diagnostics.Diagnosis` (``bias_standard_error``
      is the Monte-Carlo noise floor of a seed's relative bias: an unbiased estimator
      reads ``relative_bias ≈ bias_standard_error``);
    * ``norm_ratio``: the mean over seeds of ``|E ĝ| / |g|`` (``None`` where a seed's
      cannot be read), and ``norm_ratio_lower``: the smallest seed's lower bound on it
      (:class:`~svgx.diagnostics.Diagnosis`);
    * learned cells: the means over seeds of each seed's model's errors;
    * ``nonfinite_seeds``: seeds whose estimate was not finite, left out of the rest
      (all ``None`` when every seed's was not).
    """
    failed = sum("error" in s for s in per_seed)
    per_seed = [s for s in per_seed if "error" not in s]
    if not per_seed:
        return dict(cosine=None, cosine_spread=None, nonfinite_seeds=failed)
    cosines = np.array([s["cosine"] for s in per_seed])
    names = (
        "cosine_of_mean",
        "relative_bias",
        "bias_standard_error",
        "relative_variance",
        "reference_standard_error",
        "model_one_step_mse",
        "model_one_step_nll",
        "jacobian_error_s",
        "jacobian_error_a",
        "jacobian_cosine",
    )
    errors = np.array([s["cosine_standard_error"] for s in per_seed], float)
    ratios = {}
    if "norm_ratio" in per_seed[0]:  # cells recorded before it existed have none
        central = np.array([s["norm_ratio"] for s in per_seed], float)
        ratios = dict(
            norm_ratio=float(central.mean()) if np.isfinite(central).all() else None,
            norm_ratio_lower=float(np.min([s["norm_ratio_lower"] for s in per_seed])),
        )
    return dict(
        **ratios,
        cosine=float(cosines.mean()),
        cosine_spread=float(cosines.std(ddof=1)) if len(cosines) > 1 else None,
        cosine_corrected=float(np.mean(np.array([s["cosine_corrected"] for s in per_seed], float))),
        cosine_standard_error=float(np.sqrt((errors**2).sum()) / len(errors)),
        **{
            name: float(np.mean([s[name] for s in per_seed]))
            for name in names
            if name in per_seed[0]
        },
        nonfinite_seeds=failed,
    )


def _finite(tree):
    """JSON has no NaN or infinity: ``None`` stands for them (as in metrics.jsonl)."""
    if isinstance(tree, dict):
        return {k: _finite(v) for k, v in tree.items()}
    if isinstance(tree, list):
        return [_finite(v) for v in tree]
    if isinstance(tree, float) and not math.isfinite(tree):
        return None
    return tree


def read_cells(out: str | pathlib.Path) -> dict[str, dict]:
    """The finished cells in ``out/cells.jsonl``, by their key."""
    file = pathlib.Path(out) / CELLS
    if not file.is_file():
        return {}
    records = {}
    for number, line in enumerate(file.read_text().splitlines(), 1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            raise ValueError(f"{file}:{number}: not a JSON line; delete it to recompute") from None
        record["cell"] = _with_defaults(record["cell"])
        records[json.dumps(record["cell"], sort_keys=True)] = record
    return records


def _with_defaults(cell: dict) -> dict:
    """A recorded cell with the grid keys added since it was written: each holds its
    default where it applies (what the cell was computed with), else ``None``."""
    missing = [name for name in AXES if name not in cell]
    if not missing:
        return cell
    defaults = {f.name: f.default for f in dataclasses.fields(DiagnoseConfig) if f.name in KNOBS}
    full = applicable({**defaults, **GRID_DEFAULTS, **cell})
    return {**cell, **{name: full[name] for name in missing}}


def _append(file: pathlib.Path, record: dict) -> None:
    """Adds one line to ``file`` in place of any with the same cell, writing the whole
    file anew (write-then-rename)."""
    key = json.dumps(_with_defaults(record["cell"]), sort_keys=True)
    lines = file.read_text().splitlines() if file.is_file() else []
    kept = [
        line
        for line in lines
        if json.dumps(_with_defaults(json.loads(line)["cell"]), sort_keys=True) != key
    ]
    atomic_write_text(file, "".join(line + "\n" for line in [*kept, json.dumps(record)]))


def _finished(cell: Cell, done: dict[str, dict]) -> bool:
    """Whether ``done`` holds the cell with the seeds the grid asks for now (a grid whose
    ``seeds`` or ``seed`` changed runs its cells again)."""
    record = done.get(cell.key)
    wanted = list(range(cell.config.seed, cell.config.seed + cell.seeds))
    return record is not None and [s["seed"] for s in record["per_seed"]] == wanted


def run_grid(
    file: str | pathlib.Path,
    out: str | pathlib.Path | None = None,
    *,
    progress: Callable[[str], None] | None = None,
    report_only: bool = False,
) -> list[dict]:
    """Runs the grid in ``file`` into ``out`` (default: the file's path without
    ``.toml``), skipping the cells that ``out/cells.jsonl`` holds; then writes
    ``out/ablation.md`` and the heat maps. Returns the grid's records, in its order.
    With ``report_only``, runs no cell: the table and heat maps show the finished
    cells, and the table says how many are not finished."""
    path = pathlib.Path(file)
    if not path.is_file():
        raise FileNotFoundError(f"grid file {str(file)!r}: no such file")
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    cells = parse(path.read_text(), str(path))
    out = pathlib.Path(out) if out else path.with_suffix("")
    done = read_cells(out)
    shared = _Shared(out / REFERENCES)
    for index, cell in enumerate(cells, 1):
        if _finished(cell, done) or report_only:
            continue
        record = run_cell(cell, shared)
        release_compiled_programs()  # one cell's programs at a time
        _append(out / CELLS, record)
        done[cell.key] = record
        failed = record["nonfinite_seeds"]
        failed = f", {failed} seed(s) non-finite" if failed else ""
        progress(
            f"[{index}/{len(cells)}] {cell.label}: cosine {_cosine(record['cosine'])} "
            f"({record['seconds']:.1f} s{failed})"
        )
    records = [done[cell.key] for cell in cells if _finished(cell, done)]
    command = f"svgx ablate {path} --out {out}"
    if len(records) < len(cells):
        command += " --report-only"
        unfinished = [cell for cell in cells if not _finished(cell, done)]
        note = (
            f"{len(records)} of the grid's {len(cells)} cells are finished; the table shows "
            f"those. The next unfinished cell: {unfinished[0].label}. The same command "
            "without --report-only runs the rest."
        )
    else:
        note = None
    if not records:
        raise ValueError(f"{str(out)!r}: no finished cell of the grid {str(path)!r} to report")
    atomic_write_text(out / TABLE, markdown(records, command=command, note=note))
    for name, figure in heat_maps(records).items():
        atomic_write_bytes(out / name, figure)
    return records


# --- the table and the heat maps ---------------------------------------------------------


def _number(value, digits: int = 3) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


def _cosine(value) -> str:
    return "—" if value is None else f"{value:.3f}"


def _columns(records: list[dict]) -> list[str]:
    """The cell fields shown as columns: the rows' own, and any other that varies."""
    fixed = ("env", "policy", "policy_seed", "estimator", "k", "jacobians", "model_hidden")
    fixed += ("model_transitions",)
    varying = [
        name
        for name in records[0]["cell"]
        if name not in fixed and len({json.dumps(r["cell"][name]) for r in records} - {"null"}) > 1
    ]
    return ["policy", "estimator", "jacobians", "model_hidden", "model_transitions", *varying]


def _row_order(record: dict) -> tuple:
    cell = record["cell"]
    return (
        depth_order(cell),
        cell["jacobians"] == "learned",
        cell["model_hidden"] or 0,
        cell["model_transitions"] or 0,
    )


HEADERS = dict(
    policy="policy",
    estimator="estimator",
    jacobians="Jacobians",
    model_hidden="width",
    model_transitions="transitions",
)


def markdown(records: list[dict], command: str | None = None, note: str | None = None) -> str:
    """One table per task: a row per cell, the columns of README, "Model-error ablations";
    ``command``, the one that made it, and a ``note``, under the title."""
    lines = ["# Gradient-quality ablation", ""]
    if command:
        lines += [f"Command: `{command}`", ""]
    if note:
        lines += [f"**{note}**", ""]
    lines.append(
        "cosine: mean over seeds of the mean cosine between a batch's estimate and the "
        "reference gradient (± its standard deviation over seeds); corrected cosine: the "
        "same with the sampled reference's noise taken out of its norm (± its standard "
        "error; — in cells recorded before it existed, n/a where the reference cannot tell "
        "the gradient from zero); rel. bias: "
        "|mean estimate − reference| / |reference| (± its Monte-Carlo standard error); "
        "rel. variance: Σ_i Var(estimate_i) / |reference|²; ‖E ĝ‖ / ‖g‖: the mean "
        "estimate's norm over the true gradient's, both without their sampling noise (mean "
        "over seeds; n/a where one cannot be told from zero), and in brackets the smallest "
        "seed's lower bound on it (two standard errors each way), which holds where the "
        "reference cannot give the gradient's direction: above 1 + x, the estimator's "
        "relative bias is at least x; model columns (learned "
        f"Jacobians): on {HELD_OUT_TRANSITIONS} held-out on-policy transitions, the relative "
        "Frobenius errors of ∂f̂/∂s and ∂f̂/∂a and the one-step MSE of the mean prediction."
    )
    for task in dict.fromkeys(r["cell"]["env"] for r in records):
        rows = sorted((r for r in records if r["cell"]["env"] == task), key=_row_order)
        columns = _columns(rows)
        first = rows[0]
        sizes = f"{first['cell']['samples']} episodes x {first['cell']['batches']} batches"
        seeds = len(first["per_seed"])
        lines += ["", f"## {task}", ""]
        lines.append(
            f"horizon {first['horizon']}, env_options {json.dumps(first['cell']['env_options'])}"
            f", {sizes} per estimate, {seeds} seed{'s' * (seeds > 1)}"
        )
        lines.append("")
        names = [HEADERS.get(c, c) for c in columns]
        names += ["cosine", "corrected cosine", "cos. of mean", "rel. bias", "rel. variance"]
        names += ["‖E ĝ‖ / ‖g‖"]
        names += ["Jacobian error s", "Jacobian error a", "model MSE", "seconds"]
        lines.append("| " + " | ".join(names) + " |")
        lines.append("|" + "---|" * len(names))
        for r in rows:
            cell = r["cell"]
            values = []
            for c in columns:
                if c == "estimator":
                    values.append(estimator_label(cell))
                elif c == "jacobians":
                    values.append(cell["jacobians"] or "none")
                elif c == "policy":
                    values.append(policy_label(cell))
                else:
                    values.append("—" if cell[c] is None else str(cell[c]))
            spread = "" if r["cosine_spread"] is None else f" ± {r['cosine_spread']:.2g}"
            if r["nonfinite_seeds"]:
                spread += f" ({r['nonfinite_seeds']} seed(s) non-finite)"
            values += [
                _cosine(r["cosine"]) + spread,
                _corrected(r),
                _cosine(r.get("cosine_of_mean")),
                f"{_number(r.get('relative_bias'))} ± {_number(r.get('bias_standard_error'), 2)}",
                _number(r.get("relative_variance")),
                _ratio(r),
                _number(r.get("jacobian_error_s")),
                _number(r.get("jacobian_error_a")),
                _number(r.get("model_one_step_mse")),
                f"{r['seconds']:.1f}",
            ]
            lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def _ratio(record: dict) -> str:
    """``|E ĝ| / |g|`` and, in brackets, the lower bound that holds where the reference
    cannot give ``g``'s direction; ``—`` for a cell recorded before they existed."""
    if "norm_ratio_lower" not in record:
        return "—"
    ratio, lower = record["norm_ratio"], record["norm_ratio_lower"]
    central = "n/a" if ratio is None else f"{ratio:.3g}"
    return f"{central} (≥ {'∞' if lower is None else f'{lower:.3g}'})"


def _corrected(record: dict) -> str:
    """The noise-corrected cosine ± its standard error, ``—`` for a cell recorded before it
    existed, ``n/a`` where a seed's reference could not tell the gradient from zero."""
    if "cosine_corrected" not in record:
        return "—"
    if record["cosine_corrected"] is None:
        return "n/a"
    error = record["cosine_standard_error"]
    return f"{record['cosine_corrected']:.2f} ± {'n/a' if error is None else f'{error:.2g}'}"


def _group(cell: dict) -> dict:
    """What picks a cell's heat map: all but its row, its column and its model data."""
    return {k: v for k, v in cell.items() if k not in (*ROWS, *COLUMNS, *PER_MAP)}


def _covers(wide: dict, narrow: dict) -> bool:
    """``wide`` agrees with every value ``narrow`` has (``None``: not applicable)."""
    return all(v is None or wide[k] == v for k, v in narrow.items())


def policy_label(group: dict, file_name: bool = False) -> str:
    """``initial``, or the run's directory name, the snapshot's steps and the seed
    (``g01-cartpole-svg1_er after 30000 steps, seed 0``; in a file name
    ``g01-cartpole-svg1_er-30000steps-seed0``)."""
    if group["policy"] == "initial":
        return "initial"
    run, snapshot = run_of(group["policy"])
    seed = group["policy_seed"]
    if snapshot is None:
        return f"{run.name}-seed{seed}" if file_name else f"{run.name}, seed {seed}"
    steps = int(snapshot.stem.removeprefix("steps-"))
    return (
        f"{run.name}-{steps}steps-seed{seed}"
        if file_name
        else (f"{run.name} after {steps} steps, seed {seed}")
    )


def heat_maps(records: list[dict]) -> dict[str, bytes]:
    """PNG heat maps by file name, one per task, policy and model data (and any other
    value that varies): depth × Jacobian source (the simulator, then each model width),
    coloured by cosine, with the values written in. A cell to which a value does not
    apply (a simulator cell and the model data) is in every map of the other values."""
    groups = {json.dumps(_group(r["cell"]), sort_keys=True): _group(r["cell"]) for r in records}
    groups = [
        g for g in groups.values() if not any(h != g and _covers(h, g) for h in groups.values())
    ]
    figures = {}
    for group in groups:
        members = [r for r in records if _covers(group, _group(r["cell"]))]
        others = [g for g in groups if g["env"] == group["env"] and g != group]
        # Values that tell this map from another of its task (one that applies to one
        # kind of cell only, as policy_std to the initial policy, tells nothing).
        varying = [
            k
            for k in group
            if k not in ("env", "policy", "policy_seed")
            and group[k] is not None
            and any(g[k] is not None and g[k] != group[k] for g in others)
        ]
        amounts = sorted({r["cell"]["model_transitions"] for r in members} - {None}) or [None]
        for amount in amounts:
            chosen = [r for r in members if r["cell"]["model_transitions"] in (None, amount)]
            parts = [
                group["env"],
                policy_label(group, file_name=True),
                *(f"{k}{group[k]}" for k in varying),
            ]
            parts.append("simulator" if amount is None else f"n{amount}")
            name = re.sub(r"[^A-Za-z0-9.=_-]+", "_", "-".join(["heatmap", *parts])) + ".png"
            title = f"{group['env']}: cosine to the reference\npolicy {policy_label(group)}"
            title += "" if amount is None else f"\nmodel fitted on {amount} transitions"
            title += "".join(f", {k}={group[k]}" for k in varying)
            figures[name] = _heat_map(chosen, title)
    return figures


def _heat_map(records: list[dict], title: str) -> bytes:
    """Rows: the estimators by depth; columns: the simulator (or no Jacobian source),
    then the learned models by width."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = {(r["cell"]["estimator"], r["cell"]["k"]): r["cell"] for r in records}
    rows = sorted(rows, key=lambda row: depth_order(rows[row]))
    widths = sorted({r["cell"]["model_hidden"] for r in records} - {None})
    columns = [None, *widths]
    cosine = np.full((len(rows), len(columns)), np.nan)
    for r in records:
        cell = r["cell"]
        width = cell["model_hidden"] if cell["jacobians"] == "learned" else None
        value = np.nan if r["cosine"] is None else r["cosine"]
        cosine[rows.index((cell["estimator"], cell["k"])), columns.index(width)] = value
    # From the lowest cosine (down to a tenth) to 1, so that 0.98 and 1 differ in colour.
    low = math.floor(10 * np.nanmin(cosine)) / 10 if np.isfinite(cosine).any() else 0.0
    low = min(low, 0.9)
    size = (1.6 + 1.2 * len(columns), 1.2 + 0.55 * len(rows))
    fig, ax = plt.subplots(figsize=size, dpi=120)
    image = ax.imshow(
        np.ma.masked_invalid(cosine), cmap="viridis", vmin=low, vmax=1.0, aspect="auto"
    )
    for (i, j), value in np.ndenumerate(cosine):
        if np.isfinite(value):
            colour = "black" if value > low + 0.6 * (1 - low) else "white"
            ax.text(j, i, f"{value:.3f}", ha="center", va="center", color=colour, fontsize=9)
    ax.set_xticks(
        range(len(columns)), ["simulator\n(or none)", *(f"learned\nH={w}" for w in widths)]
    )
    ax.set_yticks(range(len(rows)), [estimator_label(dict(estimator=e, k=k)) for e, k in rows])
    # Each line of the title wrapped to the figure's width (about 13 characters an inch).
    width = int(13 * size[0])
    ax.set_title("\n".join(textwrap.fill(line, width) for line in title.split("\n")), fontsize=9)
    fig.colorbar(image, ax=ax, label="cosine")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()
