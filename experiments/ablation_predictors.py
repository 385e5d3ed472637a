"""Which model error predicts a learned model's gradient quality: Jacobian or one-step?

For the learned cells of ``svgx ablate`` output directories, grouped by task, policy and
estimator (depth), the Spearman rank correlation of each model-error measure (the
relative errors of ``∂f̂/∂s`` and ``∂f̂/∂a``, the one-step MSE) with the cell's relative
bias and with ``1 − cosine``; each group's cells differ only in the model (width and
data), so a measure that predicts gradient quality ranks them as their gradients rank.
A Markdown table on standard output; the last rows pool the groups (mean ρ).

    python -m experiments.ablation_predictors runs/ablation/paper runs/ablation/trained_lqg
"""

from __future__ import annotations

import argparse
import collections

import numpy as np
from scipy.stats import spearmanr

from svgx import ablate

MEASURES = dict(
    jacobian_error_s="∂f̂/∂s error",
    jacobian_error_a="∂f̂/∂a error",
    model_one_step_mse="one-step MSE",
)
MIN_CELLS = 4  # fewer learned cells in a group tell nothing about a ranking


def correlations(records: list[dict]) -> list[dict]:
    """One row per (task, policy, estimator) group of learned cells with at least
    ``MIN_CELLS`` cells whose gradients differ: ``rho[measure] = (ρ with the relative bias,
    ρ with 1 − cosine)``."""
    groups = collections.defaultdict(list)
    for r in records:
        cell = r["cell"]
        if cell["jacobians"] == "learned" and r["cosine"] is not None:
            key = (cell["env"], cell["policy"], ablate.estimator_label(cell))
            groups[key].append(r)
    rows = []
    for (env, policy, estimator), cells in groups.items():
        bias = np.array([r["relative_bias"] for r in cells])
        loss = 1 - np.array([r["cosine"] for r in cells])
        if len(cells) < MIN_CELLS or np.ptp(bias) == 0:
            continue
        rho = {
            name: (
                float(spearmanr([r[name] for r in cells], bias)[0]),
                float(spearmanr([r[name] for r in cells], loss)[0]),
            )
            for name in MEASURES
        }
        rows.append(dict(env=env, policy=policy, estimator=estimator, cells=len(cells), rho=rho))
    return rows


def markdown(rows: list[dict]) -> str:
    head = ["task", "policy", "estimator", "cells"]
    head += [f"ρ({label}, {of})" for label in MEASURES.values() for of in ("bias", "1 − cos")]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        values = [row["env"], row["policy"].split("/")[-1], row["estimator"], str(row["cells"])]
        values += [f"{v:+.2f}" for name in MEASURES for v in row["rho"][name]]
        lines.append("| " + " | ".join(values) + " |")
    for env in dict.fromkeys(row["env"] for row in rows):
        mine = [row for row in rows if row["env"] == env]
        values = [env, "all", f"mean of {len(mine)} groups", ""]
        values += [
            f"{np.mean([row['rho'][name][i] for row in mine]):+.2f}"
            for name in MEASURES
            for i in (0, 1)
        ]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="+", help="svgx ablate output directories")
    records = []
    for directory in parser.parse_args().directories:
        records += ablate.read_cells(directory).values()
    print(markdown(correlations(records)), end="")


if __name__ == "__main__":
    main()
