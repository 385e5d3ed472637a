"""The learning table of run directories: success at the budget, the eval return at the
budget and averaged over the run, steps to 50% success, the ratio of those steps to a
reference method's (Brax SAC by default), throughput and times.

The return over the run is each seed's eval return averaged over the run's evaluations
after training began (the area under its learning curve over the number of
evaluations; :func:`mean_over_run`): how fast a method learns, where the return at the
budget says where it ended. A Brax baseline's evaluation of its initial policy, at 0
environment steps, which svgx's chunks do not have, is left out of it.

One row per method: a run directory, or one hyperparameter combination of a sweep group,
or one Brax baseline run. Times are read from the metrics: svgx records ``compile_time``
(measured, ahead-of-time compilation) and ``wall_time`` for the whole vmapped program;
Brax's seeds run one after another, each with its own ``wall_time``, and its compile time
is not visible from outside, so it is estimated as the wall time its steady rate does not
explain (the rate between its second and last evaluation) and marked ``~`` (so is that of
an svgx run made before svgx recorded ``compile_time``); where the rate changed so much
that the estimate is negative, it is shown as unknown. A seed whose return at the budget
is not finite (one that went non-finite) is left out of the figures at the budget, and
the seeds column counts it, e.g. ``5 (1 non-finite)``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from collections.abc import Sequence

import numpy as np

from svgx import rundir
from svgx.plot import (
    BOUNDS,
    baseline_distinguishing,
    baseline_name,
    confidence_band,
    distinguishing,
    field_value,
)

SUCCESS_LEVEL = 0.5  # "steps to 50% success": the first evaluation whose mean over seeds >= this


@dataclasses.dataclass(frozen=True)
class Row:
    """One method's results (every figure over its seeds)."""

    env: str
    method: str
    seeds: int
    steps: int  # environment steps per seed at the last evaluation
    success: tuple[float, float, float]  # mean and 95% interval at the last evaluation
    returns: tuple[float, float, float]
    run_returns: tuple[float, float, float]  # each seed's mean over the run's evaluations
    steps_to_level: float  # per seed; inf if never reached
    steps_per_s: float  # all seeds together, after compilation
    wall_s: float  # all seeds together
    compile_s: float
    compile_estimated: bool
    reference: bool = False  # a row of the reference method
    nonfinite: int = 0  # seeds whose return at the budget is not finite (left out above)


def mean_over_run(
    history: list[dict], metric: str = "eval_return", up_to: int | None = None
) -> np.ndarray:
    """``[members]``: each member's ``metric`` averaged over the evaluations after training
    began (``history`` as :func:`svgx.rundir.read_metrics` gives it; an evaluation at 0
    environment steps, a Brax baseline's initial policy, is left out), and with ``up_to``
    only those at most that many environment steps in (to compare a run still going, or
    a longer one, at equal steps). A seed that went non-finite is NaN."""
    rows = [row for row in history if "env_steps" not in row or np.nanmean(row["env_steps"]) > 0]
    if up_to is not None:
        if any("env_steps" not in row for row in rows):
            raise ValueError(f"up_to={up_to}: the run's metrics do not record env_steps")
        rows = [row for row in rows if np.nanmean(row["env_steps"]) <= up_to]
        if not rows:
            raise ValueError(
                f"up_to={up_to}: the run has no evaluation after training began and at most "
                f"{up_to:,} environment steps in"
            )
    return np.stack([np.asarray(row[metric], float) for row in rows]).mean(0)


def rows(dirs: Sequence[str | pathlib.Path], reference: str = "sac") -> list[Row]:
    """The table's rows for run directories (sweep directories are expanded into their
    groups and baselines; those without metrics yet, in a sweep still running, are left
    out)."""
    from svgx import sweep

    found = []  # (run directory, whether it is a sweep's group)
    for d in dirs:
        d = pathlib.Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"{str(d)!r}: no such run or sweep directory")
        if sweep.is_sweep_dir(d):
            found.extend((g, True) for g in sweep.group_dirs(d))
        else:
            found.append((d, False))
    # The Config fields that tell the svgx runs apart, across every directory given (as
    # svgx plot names them).
    fields = distinguishing([d for d, _ in found])
    baseline_fields = baseline_distinguishing([d for d, _ in found])
    result = []
    for d, in_sweep in found:
        history = rundir.read_metrics(d)
        if not history and in_sweep:  # a sweep still running: its finished part
            continue
        if not history:
            raise rundir.RunDirError(f"{str(d)!r}: no metrics yet (is it a run directory?)")
        result.extend(_rows(d, history, reference, fields, baseline_fields))
    return result


def _rows(
    d: pathlib.Path,
    history: list[dict],
    reference: str,
    fields: Sequence[str] = (),
    baseline_fields: Sequence[str] = (),
) -> list[Row]:
    description = json.loads((d / rundir.CONFIG).read_text())
    if "baseline" in description:
        b = description["baseline"]
        method = baseline_name(b, baseline_fields)
        wall = np.array([m["wall_time"] for m in history])  # [evaluations, seeds]
        steps = np.array([m["env_steps"] for m in history])
        ran = np.isfinite(wall)  # a seed that went non-finite stopped early (NaN after)
        startups = [_startup(wall[ran[:, i], i], steps[ran[:, i], i]) for i in range(wall.shape[1])]
        compile_s, wall_s = float(np.sum(startups)), float(np.nanmax(wall, axis=0).sum())
        run_s = wall_s - np.nan_to_num(compile_s)  # unknown: the whole run's rate
        members = [(method, np.arange(wall.shape[1]))]
        env, estimated = b["env"], True
        is_reference = b["algo"] == reference
    else:
        spec = rundir.read_spec(d)
        c = spec.config
        method = c.algo + (f" ({c.jacobians})" if c.algorithm.uses_dynamics else "")
        if fields:
            method += ", " + ", ".join(f"{k}={field_value(d, spec, k)}" for k in fields)
        wall_s = float(history[-1]["wall_time"][0])
        estimated = "compile_time" not in history[-1]  # runs before svgx measured it
        compile_s = (
            _startup(
                np.array([float(m["wall_time"][0]) for m in history]),
                np.array([float(m["env_steps"][0]) for m in history]),
            )
            if estimated
            else float(history[-1]["compile_time"][0])
        )
        run_s = wall_s - np.nan_to_num(compile_s)  # unknown: the whole run's rate
        labels = rundir.member_labels(d)
        members = (
            [(method, np.arange(spec.seeds))]
            if labels is None
            else [(method + (f": {name}" if name else ""), m) for name, m in labels]
        )
        env, is_reference = c.env, c.algo == reference
    total_members = len(history[0]["env_steps"])
    out = []
    for method_name, m in members:
        success = np.stack([h["eval_success"][m] for h in history])
        returns = np.stack([h["eval_return"][m] for h in history])
        over_run = mean_over_run(history)[m]
        steps = np.array([float(np.nanmean(h["env_steps"][m])) for h in history])
        reached = np.flatnonzero(np.nanmean(success, axis=1) >= SUCCESS_LEVEL)
        share = len(m) / total_members  # a sweep group's time is shared by its combinations
        out.append(
            Row(
                env=env,
                method=method_name,
                seeds=len(m),
                steps=int(steps[-1]),
                success=_interval(success[-1], BOUNDS["eval_success"]),
                returns=_interval(returns[-1]),
                run_returns=_interval(over_run),
                steps_to_level=float(steps[reached[0]]) if len(reached) else math.inf,
                steps_per_s=float(steps[-1] * total_members / run_s),
                wall_s=wall_s * share,
                compile_s=compile_s * share,
                compile_estimated=estimated,
                reference=is_reference,
                nonfinite=int(np.sum(~np.isfinite(returns[-1]))),
            )
        )
    return out


def _startup(wall: np.ndarray, steps: np.ndarray) -> float:
    """Wall time a run's steady rate (from its second to its last evaluation) does not
    explain: compilation and start-up, estimated; NaN with fewer than three evaluations."""
    if len(wall) < 3 or wall[-1] <= wall[1]:
        return math.nan
    rate = (steps[-1] - steps[1]) / (wall[-1] - wall[1])
    startup = float(wall[-1] - steps[-1] / rate)
    return startup if startup >= 0 else math.nan  # the rate changed (a shared machine)


def _interval(values: np.ndarray, bounds=None) -> tuple[float, float, float]:
    mean, low, high = confidence_band(values, bounds=bounds)
    return float(mean), float(low), float(high)


def _band(mean: float, low: float, high: float) -> str:
    """``mean (low–high)``; the dash spaced when a bound is negative (``-3.1 (-5.2 – -1.0)``)."""
    dash = " – " if min(low, high) < 0 else "–"
    return f"{_num(mean)} ({_num(low)}{dash}{_num(high)})"


def _num(value: float) -> str:
    """A return: one decimal, or three significant digits below 10 (terminal costs)."""
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"


def _compile_cell(row: Row) -> str:
    if math.isnan(row.compile_s):
        return "unknown"
    return f"{'~' if row.compile_estimated else ''}{row.compile_s:,.0f}"


def reference_steps(table: Sequence[Row], env: str) -> float:
    """The reference method's steps to 50% success on ``env``: its best row (fewest steps);
    inf when none reached it, NaN when the table has no reference row for ``env``."""
    steps = [r.steps_to_level for r in table if r.reference and r.env == env]
    return min(steps) if steps else math.nan


def markdown(table: Sequence[Row], reference: str = "sac") -> str:
    """The rows as a Markdown table (one per task, in the order given)."""
    header = (
        f"| task | method | seeds | env steps per seed | success at the budget (95% interval) "
        f"| eval return (95% interval) | eval return over the run (95% interval) "
        f"| env steps to {SUCCESS_LEVEL:.0%} success "
        f"| ratio to {reference.upper()} | env steps/s (all seeds) | wall time (s) "
        f"| compile time (s) |\n" + "|---" * 12 + "|\n"
    )
    lines = []
    for r in table:
        ref = reference_steps(table, r.env)
        if math.isinf(r.steps_to_level):
            ratio = "—"
        elif math.isnan(ref):
            ratio = "no reference"
        elif math.isinf(ref):
            ratio = f"< 1 ({reference.upper()} did not reach it)"
        else:
            ratio = f"{r.steps_to_level / ref:.2f}"
        reached = "not reached" if math.isinf(r.steps_to_level) else f"{r.steps_to_level:,.0f}"
        s = r.success
        seeds = f"{r.seeds} ({r.nonfinite} non-finite)" if r.nonfinite else f"{r.seeds}"
        lines.append(
            f"| {r.env} | {r.method} | {seeds} | {r.steps:,} "
            f"| {s[0]:.0%} ({s[1]:.0%}–{s[2]:.0%}) "
            f"| {_band(*r.returns)} | {_band(*r.run_returns)} | {reached} | {ratio} "
            f"| {r.steps_per_s:,.0f} | {r.wall_s:,.0f} "
            f"| {_compile_cell(r)} |"
        )
    return header + "\n".join(lines) + "\n" + _reference_notes(table, reference)


def _reference_notes(table: Sequence[Row], reference: str) -> str:
    """One line per task with more than one reference row, naming the row its ratios are to."""
    notes = []
    for env in dict.fromkeys(r.env for r in table):
        candidates = [r for r in table if r.reference and r.env == env]
        if len(candidates) < 2:
            continue
        best = min(candidates, key=lambda r: r.steps_to_level)
        if math.isinf(best.steps_to_level):
            notes.append(
                f"* {env}: none of the {len(candidates)} {reference.upper()} rows reached "
                f"{SUCCESS_LEVEL:.0%} success."
            )
        else:
            notes.append(
                f"* {env}: ratios are to {best.method}, the fastest to {SUCCESS_LEVEL:.0%} "
                f"success of the {len(candidates)} {reference.upper()} rows."
            )
    return "\n" + "\n".join(notes) + "\n" if notes else ""
