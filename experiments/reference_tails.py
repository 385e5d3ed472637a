"""How heavy-tailed an ablation grid's sampled reference gradients are.

A sampled reference (:func:`svgx.diagnostics.sampled_reference`) is the mean of ``m``
chunks of ``samples`` back-propagated episodes. If a few chunks carry most of the
chunks' squared norms, the reference is their gradient, and more episodes shrink its
error slowly and erratically: its relative standard error says how noisy it is, the
tail says why. For each policy and seed of the grid whose reference ``svgx ablate``
saved under ``OUT/references/`` (none is computed here), prints a Markdown row: the
reference's norm and relative standard error, the median and largest chunk norm, the
share of ``Σ_j |G_j|²`` in the largest chunk and in the largest three, and the norm and
relative standard error without the largest chunk.

    python -m experiments.reference_tails experiments/ablation/trained_swimmer3.toml \\
        --out runs/ablation/trained_swimmer3
"""

from __future__ import annotations

import argparse
import pathlib

import numpy as np

from svgx import ablate


def tails(chunks: np.ndarray) -> dict:
    """The statistics of one reference from its chunk means ``[m, n]`` (m ≥ 3)."""
    chunks = np.asarray(chunks, np.float64)
    norms = np.linalg.norm(chunks, axis=1)
    squares = np.sort(norms**2)[::-1]

    def mean_and_error(c):
        mean = c.mean(0)
        norm = float(np.linalg.norm(mean))
        return norm, float(np.sqrt(c.var(0, ddof=1).sum() / len(c)) / norm)

    norm, error = mean_and_error(chunks)
    norm_without, error_without = mean_and_error(np.delete(chunks, np.argmax(norms), axis=0))
    return dict(
        chunks=len(chunks),
        norm=norm,
        standard_error=error,
        median_chunk=float(np.median(norms)),
        largest_chunk=float(norms.max()),
        top1=float(squares[0] / squares.sum()),
        top3=float(squares[:3].sum() / squares.sum()),
        norm_without_largest=norm_without,
        standard_error_without_largest=error_without,
    )


def saved_tails(grid: pathlib.Path, out: pathlib.Path) -> list[dict]:
    """One row per task, policy and seed of the grid: ``tails`` of its saved reference, or
    ``missing=True`` where ``svgx ablate`` has not saved it yet."""
    rows = []
    for cell, seed, reference in ablate.references(grid, out):
        row = dict(env=cell.fields["env"], policy=ablate.policy_label(cell.fields), seed=seed)
        if reference is None:
            rows.append(dict(row, missing=True))
        else:
            rows.append(dict(row, **tails(np.asarray(reference.chunks))))
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| task | policy | diagnosis seed | chunks | reference norm | rel. std. error "
        "| median chunk norm | largest chunk norm | largest chunk's share | largest three's share "
        "| norm without the largest | rel. std. error without it |",
        "|" + "---|" * 12,
    ]
    for r in rows:
        head = f"| {r['env']} | {r['policy']} | {r['seed']} "
        if r.get("missing"):
            lines.append(head + "| not saved yet |" + " |" * 8)
            continue
        lines.append(
            head + f"| {r['chunks']} | {r['norm']:.3g} | {r['standard_error']:.2f} "
            f"| {r['median_chunk']:.3g} | {r['largest_chunk']:.3g} | {r['top1']:.1%} "
            f"| {r['top3']:.1%} | {r['norm_without_largest']:.3g} "
            f"| {r['standard_error_without_largest']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("grid", type=pathlib.Path, help="the grid file")
    parser.add_argument("--out", type=pathlib.Path, help="its output directory")
    args = parser.parse_args()
    out = args.out or args.grid.with_suffix("")
    print(markdown(saved_tails(args.grid, out)), end="")


if __name__ == "__main__":
    main()
