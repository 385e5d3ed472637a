"""Two estimators of the same reference gradient, side by side: do they agree, and which
one can be read?

An ablation grid's reference (:func:`svgx.diagnostics.sampled_reference`) is the mean
of back-propagated episodes (``pathwise``) unless the grid says otherwise; the
likelihood-ratio estimator (``score``) is unbiased for the same ``∇θ J`` and needs no
Jacobian. For each task, policy and diagnosis seed of the grid, this reads the grid's
own saved reference from ``OUT/references/`` and the other estimator's (computed and
saved there where it is not, so that a grid using it later reads it back), and prints
a Markdown row: each reference's norm without its noise (``√(|ḡ|² − tr S / m)``), its
relative standard error and its largest chunk's share of the chunks' squared norms,
and their agreement (:func:`svgx.diagnostics.reference_agreement`: the cosine of their
expectations, 1 for two unbiased references, with its standard error).

    python -m experiments.reference_agreement experiments/ablation/swimmer3_reference.toml \\
        --out runs/ablation/swimmer3_reference
"""

from __future__ import annotations

import argparse
import math
import pathlib

import numpy as np

from svgx import ablate, diagnostics


def describe(reference: diagnostics.Reference) -> dict:
    """Norm without the noise (NaN where the noise exceeds it), relative standard error
    and the largest chunk's share of the chunks' squared norms."""
    chunks = np.asarray(reference.chunks, np.float64)
    mean = chunks.mean(0)
    squared = mean @ mean - chunks.var(0, ddof=1).sum() / len(chunks)
    norms = (chunks**2).sum(1)
    return dict(
        norm=math.sqrt(squared) if squared > 0 else math.nan,
        standard_error=reference.standard_error,
        largest_share=float(norms.max() / norms.sum()),
    )


def compare(grid: pathlib.Path, out: pathlib.Path, other: str, samples: int | None) -> list[dict]:
    """One row per task, policy and seed: the grid's reference against ``other``'s (with
    ``samples`` episodes, default the grid's), or ``missing`` where the grid's own
    reference is not saved yet (``other``'s is computed and saved all the same)."""
    changes = dict(reference_estimator=other)
    if samples is not None:
        changes["reference_samples"] = samples

    def identity(cell, seed):
        return (cell.fields["env"], cell.fields["policy"], cell.fields["policy_seed"], seed)

    others = {
        identity(cell, seed): (cell, reference)
        for cell, seed, reference in ablate.references(grid, out, compute=True, **changes)
    }
    rows = []
    for cell, seed, reference in ablate.references(grid, out):
        row = dict(env=cell.fields["env"], policy=ablate.policy_label(cell.fields), seed=seed)
        if reference is None:
            rows.append(dict(row, missing=True))
            continue
        _, found = others[identity(cell, seed)]
        agreement, error = diagnostics.reference_agreement(reference, found)
        rows.append(
            dict(
                row,
                own=describe(reference) | dict(episodes=cell.config.reference_samples),
                other=describe(found) | dict(episodes=samples or cell.config.reference_samples),
                agreement=agreement,
                agreement_error=error,
            )
        )
    return rows


def markdown(rows: list[dict], own: str, other: str) -> str:
    head = "| task | policy | diagnosis seed "
    for name in (own, other):
        head += f"| {name}: episodes | norm | rel. std. error | largest chunk's share "
    lines = [head + "| agreement |", "|" + "---|" * 12]
    for r in rows:
        line = f"| {r['env']} | {r['policy']} | {r['seed']} "
        if r.get("missing"):
            lines.append(line + f"| {own} reference not saved yet |" + " |" * 8)
            continue
        for side in (r["own"], r["other"]):
            line += (
                f"| {side['episodes']:,} | {side['norm']:.3g} | {side['standard_error']:.2f} "
                f"| {side['largest_share']:.1%} "
            )
        lines.append(line + f"| {r['agreement']:.2f} ± {r['agreement_error']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=pathlib.Path, help="the grid file")
    parser.add_argument("--out", type=pathlib.Path, help="its output directory")
    parser.add_argument(
        "--samples", type=int, help="episodes of the other reference (default: the grid's)"
    )
    args = parser.parse_args()
    out = args.out or args.grid.with_suffix("")
    own = {c.config.reference_estimator for c in ablate.parse(args.grid.read_text())}
    if len(own) != 1:
        raise SystemExit(f"{args.grid}: one reference_estimator per grid here, not {own}")
    (own,) = own
    (other,) = set(diagnostics.REFERENCE_ESTIMATORS) - {own}
    print(markdown(compare(args.grid, out, other, args.samples), own, other), end="")


if __name__ == "__main__":
    main()
