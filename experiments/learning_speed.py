"""Learning speed of runs: each seed's metric averaged over all of the run's
evaluations (the area under its curve, divided by the number of evaluations), its
mean and 95% interval over seeds, and Welch's t-test between the first run and each
other one (a seed that went non-finite is left out of both).

A final return says where a run ended; this says how fast it got there, which is what
the paper's Fig. 2 right compares across critic sizes (experiments/results/paper.md,
claim 3).

    python -m experiments.learning_speed runs/paper/fig2_right_cartpole_critic/g03-cartpole-dpg \\
        runs/paper/fig2_right_cartpole_critic/g05-cartpole-dpg
"""

from __future__ import annotations

import argparse

import numpy as np
from scipy import stats

from svgx import report, rundir
from svgx.plot import confidence_band


def mean_over_run(
    directory: str, metric: str = "eval_return", up_to: int | None = None
) -> np.ndarray:
    """``[seeds]``: each seed's ``metric`` averaged over the run's evaluations after
    training began (:func:`svgx.report.mean_over_run`; a Brax baseline's evaluation at 0
    environment steps is left out), and with ``up_to`` only those at most that many
    environment steps in. A seed that went non-finite is NaN."""
    return report.mean_over_run(rundir.read_metrics(directory), metric, up_to)


def compare(
    directories: list[str], metric: str = "eval_return", up_to: int | None = None
) -> list[dict]:
    """Per run: ``mean``, ``low``, ``high`` (95% interval over seeds) of the per-seed
    mean over the run (up to ``up_to`` environment steps), and Welch's ``t`` and ``p``
    against the first run (None for it)."""
    first = mean_over_run(directories[0], metric, up_to)
    rows = []
    for directory in directories:
        values = mean_over_run(directory, metric, up_to)
        mean, low, high = confidence_band(values)
        t = p = None
        if directory != directories[0]:
            test = stats.ttest_ind(first, values, equal_var=False, nan_policy="omit")
            t, p = float(test.statistic), float(test.pvalue)
        rows.append(
            dict(run=directory, mean=float(mean), low=float(low), high=float(high), t=t, p=p)
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "directories", nargs="+", help="run directories; the first is the reference"
    )
    parser.add_argument("--metric", default="eval_return", help="a per-seed metric of the runs")
    parser.add_argument(
        "--up-to",
        type=int,
        default=None,
        metavar="STEPS",
        help="only the evaluations at most STEPS environment steps in (runs of unequal length)",
    )
    args = parser.parse_args()
    span = "over the run" if args.up_to is None else f"up to {args.up_to:,} steps"
    print(f"| run | mean {args.metric} {span} (95% interval) | Welch's t, p against the first |")
    print("|---|---|---|")
    for row in compare(args.directories, args.metric, args.up_to):
        test = "—" if row["t"] is None else f"t = {row['t']:.2f}, p = {row['p']:.3f}"
        print(f"| {row['run']} | {row['mean']:.1f} ({row['low']:.1f}–{row['high']:.1f}) | {test} |")


if __name__ == "__main__":
    main()
