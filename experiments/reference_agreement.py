"""Two estimators of the same reference gradient, side by side: do they agree, and which
one can be read?

An ablation grid's reference (:func:`svgx.diagnostics.sampled_reference`) is the mean
of back-propagated episodes (``pathwise``) unless the grid says otherwise; the
likelihood-ratio estimator (``score``) is unbiased for the same ``∇θ J`` and needs no
Jacobian. For each task, policy and diagnosis seed of the grid, this reads the grid's
own saved reference from ``OUT/references/`` and the other estimator's (computed and
saved there where it is not, so that a grid using it later reads it back; with
``--compute`` the grid's own too, without running its cells), and prints
a Markdown row: each reference's mean's norm ``|ḡ|``, the true gradient's squared norm
as it reads it (``|ḡ|² − tr S / m``, unbiased, ± its standard error:
:func:`svgx.diagnostics.squared_norm`) and its norm ``|g|`` (where that is more than two
standard errors above zero, else the upper bound it gives: ``< …``), its relative
standard error and its largest chunk's share of the chunks' squared norms; then the
inner product of the two means (unbiased for ``g · g′``: two unbiased references of one
gradient read ``|g|²`` there, :func:`svgx.diagnostics.inner_product`) and their
agreement (:func:`svgx.diagnostics.reference_agreement`: the cosine of their
expectations, 1 for two unbiased references, with its standard error; n/a where either
does not resolve its norm).

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
    """The mean's norm ``|ḡ|``, ``|g|²`` without the noise and its standard error
    (:func:`svgx.diagnostics.squared_norm`), the relative standard error and the largest
    chunk's share of the chunks' squared norms."""
    chunks = np.asarray(reference.chunks, np.float64)
    squared, error = diagnostics.squared_norm(reference)
    norms = (chunks**2).sum(1)
    return dict(
        mean_norm=float(np.linalg.norm(chunks.mean(0))),
        squared_norm=squared,
        squared_norm_error=error,
        standard_error=reference.standard_error,
        largest_share=float(norms.max() / norms.sum()),
    )


def norm_text(side: dict) -> str:
    """``|g|`` where the reference resolves it (its squared-norm estimate more than two
    standard errors above zero), else ``< `` the bound that estimate + 2 errors gives."""
    squared, error = side["squared_norm"], side["squared_norm_error"]
    if squared > 2 * error:
        return f"{math.sqrt(squared):.3g}"
    return f"< {math.sqrt(max(squared + 2 * error, 0.0)):.3g}"


def compare(
    grid: pathlib.Path,
    out: pathlib.Path,
    other: str,
    samples: int | None,
    compute_own: bool = False,
) -> list[dict]:
    """One row per task, policy and seed: the grid's reference against ``other``'s (with
    ``samples`` episodes, default the grid's), or ``missing`` where the grid's own
    reference is not saved yet and not ``compute_own`` (``other``'s is computed and
    saved all the same)."""
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
    for cell, seed, reference in ablate.references(grid, out, compute=compute_own):
        row = dict(env=cell.fields["env"], policy=ablate.policy_label(cell.fields), seed=seed)
        if reference is None:
            rows.append(dict(row, missing=True))
            continue
        _, found = others[identity(cell, seed)]
        agreement, error = diagnostics.reference_agreement(reference, found)
        product, product_error = diagnostics.inner_product(reference, found)
        rows.append(
            dict(
                row,
                inner_product=product,
                inner_product_error=product_error,
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
        head += f"| {name}: episodes | ‖ḡ‖ | ‖g‖² | ‖g‖ | rel. std. error | largest chunk's share "
    lines = [head + "| ḡ · ḡ′ | agreement |", "|" + "---|" * 17]
    for r in rows:
        line = f"| {r['env']} | {r['policy']} | {r['seed']} "
        if r.get("missing"):
            lines.append(line + f"| {own} reference not saved yet |" + " |" * 13)
            continue
        for side in (r["own"], r["other"]):
            line += (
                f"| {side['episodes']:,} | {side['mean_norm']:.3g} "
                f"| {side['squared_norm']:.3g} ± {side['squared_norm_error']:.2g} "
                f"| {norm_text(side)} | {side['standard_error']:.2f} "
                f"| {side['largest_share']:.1%} "
            )
        line += f"| {r['inner_product']:.3g} ± {r['inner_product_error']:.2g} "
        agreement = "n/a" if math.isnan(r["agreement"]) else f"{r['agreement']:.3f}"
        if not math.isnan(r["agreement_error"]):
            agreement += f" ± {r['agreement_error']:.2g}"
        lines.append(line + f"| {agreement} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=pathlib.Path, help="the grid file")
    parser.add_argument("--out", type=pathlib.Path, help="its output directory")
    parser.add_argument(
        "--samples", type=int, help="episodes of the other reference (default: the grid's)"
    )
    parser.add_argument(
        "--compute",
        action="store_true",
        help="compute (and save) the grid's own references where none is saved",
    )
    args = parser.parse_args()
    out = args.out or args.grid.with_suffix("")
    own = {c.config.reference_estimator for c in ablate.parse(args.grid.read_text())}
    if len(own) != 1:
        raise SystemExit(f"{args.grid}: one reference_estimator per grid here, not {own}")
    (own,) = own
    (other,) = set(diagnostics.REFERENCE_ESTIMATORS) - {own}
    rows = compare(args.grid, out, other, args.samples, compute_own=args.compute)
    print(markdown(rows, own, other), end="")


if __name__ == "__main__":
    main()
