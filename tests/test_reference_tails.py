"""experiments/reference_tails.py: the tail statistics of a sampled reference's chunks,
and which of a grid's references have been saved."""

import numpy as np
import pytest
from test_ablate import TINY_GRID

from experiments import reference_tails


def test_one_chunk_far_larger_than_the_rest_carries_the_reference():
    rng = np.random.default_rng(0)
    chunks = rng.normal(size=(16, 5))
    chunks[3] = [1000.0, 0, 0, 0, 0]
    t = reference_tails.tails(chunks)
    norms = np.linalg.norm(chunks, axis=1)
    assert t["chunks"] == 16 and t["largest_chunk"] == pytest.approx(1000.0)
    assert t["median_chunk"] == pytest.approx(np.median(norms))
    assert t["top1"] == pytest.approx(1000.0**2 / (norms**2).sum())
    assert t["top1"] > 0.99 and t["top1"] <= t["top3"] <= 1
    assert t["norm"] == pytest.approx(np.linalg.norm(chunks.mean(0)))
    rest = np.delete(chunks, 3, axis=0)
    assert t["norm_without_largest"] == pytest.approx(np.linalg.norm(rest.mean(0)))
    error = np.sqrt(rest.var(0, ddof=1).sum() / 15) / np.linalg.norm(rest.mean(0))
    assert t["standard_error_without_largest"] == pytest.approx(error)
    row = reference_tails.markdown([dict(env="x", policy="initial", seed=0, **t)])
    assert f"| x | initial | 0 | 16 | {t['norm']:.3g} |" in row and "| 1e+03 |" in row


def test_references_not_saved_are_listed_and_none_is_computed(tmp_path):
    """A cart-pole grid before it ran: every policy and seed is "not saved yet", and
    nothing is computed; an lqg grid's references are exact, with no tails to show."""
    grid = tmp_path / "tiny.toml"
    grid.write_text('env = "cartpole"\nhorizon = 10\nestimator = "svg_inf"\nseeds = 2\n')
    rows = reference_tails.saved_tails(grid, tmp_path / "empty")
    assert [(r["seed"], r.get("missing")) for r in rows] == [(0, True), (1, True)]
    assert "| initial | 0 | not saved yet |" in reference_tails.markdown(rows)
    assert not (tmp_path / "empty").exists()
    lqg = tmp_path / "lqg.toml"
    lqg.write_text(TINY_GRID)
    assert reference_tails.saved_tails(lqg, tmp_path / "lqg") == []
