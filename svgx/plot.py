"""Learning curves: mean and 95% confidence band over seeds, x axis in environment steps;
one panel per metric (README, "Metrics")."""

from __future__ import annotations

import io
import json
import pathlib
import textwrap
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

from svgx import rundir
from svgx.baselines import with_defaults
from svgx.io import atomic_write_bytes

# Metrics that cannot leave a range: their bands are clipped to it (a t-interval over
# a few seeds of a success rate can reach below 0 % and above 100 %).
BOUNDS = {"eval_success": (0.0, 1.0)}


def confidence_band(
    values: np.ndarray, level: float = 0.95, bounds: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, low, high)`` over the last axis (seeds): a Student-t interval of the mean,
    clipped to ``bounds`` (the range the metric cannot leave) when given."""
    values = np.asarray(values, float)
    n = np.sum(np.isfinite(values), axis=-1)
    with warnings.catch_warnings():  # a chunk where every seed is NaN (a run that went non-finite)
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(values, axis=-1)
        if values.shape[-1] < 2:
            return mean, mean, mean
        sem = np.nanstd(values, axis=-1, ddof=1) / np.sqrt(np.maximum(n, 1))
    half = stats.t.ppf(0.5 + level / 2, np.maximum(n - 1, 1)) * sem
    low, high = mean - half, mean + half
    if bounds is not None:
        low, high = np.clip(low, *bounds), np.clip(high, *bounds)
    return mean, low, high


def curve(history: list[dict[str, np.ndarray]], metric: str = "eval_return"):
    """``(env_steps, [chunks, seeds] values)`` of one run's metrics (NaN in chunks that did
    not record ``metric``, e.g. ones written by an older version before a resume)."""
    steps = np.array([np.nanmean(m["env_steps"]) for m in history])
    missing = lambda m: np.full(len(m["env_steps"]), np.nan)  # noqa: E731
    values = np.stack([np.asarray(m.get(metric, missing(m)), float) for m in history])
    return steps, values


# Shown in the method's name already, or not a setting.
_NAMED = ("env", "algo", "jacobians", "iterations", "chunks")


def distinguishing(groups: Sequence[pathlib.Path]) -> tuple[str, ...]:
    """The Config fields, then the Hyperparams fields held by every member of a run, whose
    values differ between svgx run directories (e.g. a sweep's groups, or runs of several
    sweeps), which their names must show to tell them apart (:func:`field_value`). A
    hyperparameter that varies within a run is its members' to name."""
    descriptions = []
    for g in groups:
        description = json.loads((pathlib.Path(g) / rundir.CONFIG).read_text())
        if "config" in description:
            descriptions.append(description)
    if len(descriptions) < 2:
        return ()
    configs = [d["config"] for d in descriptions]
    fields = [
        k
        for k in configs[0]
        if k not in _NAMED and len({json.dumps(c.get(k)) for c in configs}) > 1
    ]
    held = [_held_hparams(d) for d in descriptions]
    for k in held[0]:
        values = [h.get(k) for h in held]
        if None not in values and len(set(values)) > 1:
            fields.append(k)
    return tuple(fields)


def _held_hparams(description: dict) -> dict[str, float]:
    """The hyperparameters that every member of a run shares (6 significant digits)."""
    held = {}
    for k, v in description.get("hparams", {}).items():
        values = {float(f"{x:.6g}") for x in (v if isinstance(v, list) else [v])}
        if len(values) == 1:
            held[k] = values.pop()
    return held


def field_value(path: pathlib.Path, spec: rundir.RunSpec, name: str) -> object:
    """The value of Config field ``name`` of a run, or of a hyperparameter its members
    share (as :func:`distinguishing` names them)."""
    if hasattr(spec.config, name):
        return getattr(spec.config, name)
    description = json.loads((pathlib.Path(path) / rundir.CONFIG).read_text())
    return f"{_held_hparams(description)[name]:g}"


# A Brax baseline's recorded options shown in its name already, or not a setting of it.
_BASELINE_NAMED = (
    "env",
    "algo",
    "out",
    "seed",
    "seeds",
    "steps",
    "evaluations",
    "overwrite",
    "learning_rate",
    "reward_scaling",
)


def baseline_distinguishing(groups: Sequence[pathlib.Path]) -> tuple[str, ...]:
    """The recorded options of the Brax baseline runs among ``groups`` whose values differ
    between them (e.g. ``updates_per_step``), which their names must show to tell them
    apart (:func:`baseline_name`), as :func:`distinguishing` does for svgx runs. A field
    that a run recorded before it existed counts as its default."""
    records = [with_defaults(b) for b in (_baseline(pathlib.Path(g)) for g in groups) if b]
    if len(records) < 2:
        return ()
    keys = dict.fromkeys(k for r in records for k in r if k not in _BASELINE_NAMED)
    return tuple(
        k for k in keys if len({json.dumps(r.get(k), sort_keys=True) for r in records}) > 1
    )


def label(
    path: pathlib.Path,
    n_seeds: int | None = None,
    fields: Sequence[str] = (),
    baseline_fields: Sequence[str] = (),
) -> str:
    """A run's name in a legend: algorithm, Jacobian source, task, seeds, and the Config
    ``fields`` (a Brax baseline: its options ``baseline_fields``) that tell it from the
    other runs drawn."""
    baseline = _baseline(path)
    if baseline:
        name = baseline_name(baseline, baseline_fields)
        return f"{name} on {baseline['env']}, {baseline['seeds']} seeds"
    try:
        spec = rundir.read_spec(path)
    except rundir.RunDirError:
        return path.name
    c = spec.config
    jac = f" ({c.jacobians})" if c.algorithm.uses_dynamics else ""
    named = "".join(f", {k}={field_value(path, spec, k)}" for k in fields)
    return f"{c.algo}{jac}{named} on {c.env}, {spec.seeds if n_seeds is None else n_seeds} seeds"


def baseline_name(fields: dict, named: Sequence[str] = ()) -> str:
    """A Brax baseline run's name, from its recorded options: ``sac (Brax), lr 0.0003``,
    then each option of ``named`` (:func:`baseline_distinguishing`) as ``key=value``."""
    name = f"{fields['algo']} (Brax), lr {fields['learning_rate']:g}"
    if fields.get("reward_scaling", 1.0) != 1.0:
        name += f", reward ×{fields['reward_scaling']:g}"
    for k in named:
        value = fields.get(k)
        name += f", {k}={tuple(value) if isinstance(value, list) else value}"
    return name


def _baseline(path: pathlib.Path) -> dict | None:
    try:
        return json.loads((path / rundir.CONFIG).read_text()).get("baseline")
    except (OSError, ValueError, AttributeError):
        return None


def recorded(history: list[dict[str, np.ndarray]]) -> set[str]:
    """The metrics a run recorded (in any chunk)."""
    return set().union(*history)


def plot_runs(
    dirs: Sequence[str | pathlib.Path],
    out: str | pathlib.Path,
    metrics: str | Sequence[str] = "eval_return",
    title: str = "",
) -> pathlib.Path:
    """Draws every run directory's ``metrics`` (a name or several: one panel each) against
    environment steps into ``out`` (PNG): per run, or per hyperparameter combination of a
    sweep group, the mean over seeds and its 95% confidence band.

    A run that lacks a metric others recorded is left out of that panel; a metric that no
    run recorded is a ValueError naming it and the metrics the runs have.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import EngFormatter

    metrics = (metrics,) if isinstance(metrics, str) else tuple(metrics)
    if not metrics:
        raise ValueError("metrics: name at least one metric")
    histories = []
    for d in dirs:
        d = pathlib.Path(d)
        history = rundir.read_metrics(d)
        if not history:
            raise rundir.RunDirError(f"{str(d)!r}: no metrics yet (is it a run directory?)")
        histories.append((d, history))
    have = set().union(*(recorded(history) for _, history in histories))
    for metric in metrics:
        if metric not in have:
            runs = ", ".join(str(d) for d, _ in histories)
            raise ValueError(
                f"metric {metric!r}: not recorded by {runs}; recorded: {', '.join(sorted(have))}"
            )

    fields = distinguishing([d for d, _ in histories])
    baseline_fields = baseline_distinguishing([d for d, _ in histories])
    columns = min(len(metrics), 2)
    rows = -(-len(metrics) // columns)
    width, height = (6.4, 4.0) if len(metrics) == 1 else (5.2 * columns, 3.6 * rows)
    fig, axes = plt.subplots(rows, columns, figsize=(width, height), dpi=120, squeeze=False)
    legend: dict[str, object] = {}  # label -> line: one legend for all panels, below them
    for ax, metric in zip(axes.flat, metrics, strict=False):
        for d, history in histories:
            if metric not in recorded(history):
                continue
            steps, values = curve(history, metric)
            combos = rundir.member_labels(d)
            if combos is None:
                combos = [(label(d, None, fields, baseline_fields), np.arange(values.shape[1]))]
            else:  # a sweep group: one curve per hyperparameter combination
                combos = [
                    (label(d, len(m), fields) + (f": {name}" if name else ""), m)
                    for name, m in combos
                ]
            for name, members in combos:
                mean, low, high = confidence_band(values[:, members], bounds=BOUNDS.get(metric))
                color = legend[name].get_color() if name in legend else None
                (line,) = ax.plot(steps, mean, marker="o", markersize=3, color=color)
                legend.setdefault(name, line)
                ax.fill_between(steps, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("environment steps (per seed)")
        ax.xaxis.set_major_formatter(EngFormatter(sep=""))  # 400k, 2M: labels that fit
        ax.set_ylabel(metric.replace("_", " "))
        ax.grid(alpha=0.3)
    for ax in axes.flat[len(metrics) :]:
        ax.set_visible(False)
    title = title or "mean and 95% confidence band over seeds"
    if len(metrics) == 1:
        axes[0, 0].set_title(title, fontsize=10)
    else:
        fig.suptitle(title, fontsize=10)
    # Labels name every field that tells runs apart, so they can be long: wrapped, in one
    # legend under the panels, with the figure made taller to hold it.
    labels = [textwrap.fill(name, int(16 * width)) for name in legend]
    lines = sum(label.count("\n") + 1 for label in labels)
    extra = 0.14 * lines + 0.1
    fig.set_size_inches(width, height + extra)
    fig.legend(list(legend.values()), labels, loc="lower center", fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, extra / (height + extra), 1, 1))
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return atomic_write_bytes(out, buffer.getvalue())
