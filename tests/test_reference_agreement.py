"""experiments/reference_agreement.py end to end on a tiny cart-pole grid: the grid's own
(pathwise) references and the likelihood-ratio ones are saved under their own keys, the
second run computes nothing, and each saved reference is the one
:func:`svgx.diagnostics.sampled_reference` computes for that seed."""

import dataclasses

import jax
import numpy as np
import pytest

from experiments import reference_agreement
from svgx import ablate, diagnostics

GRID = """
env = "cartpole"
horizon = 10
estimator = "svg_inf"
samples = 4
reference_samples = 16
"""


def test_the_two_references_of_a_grid_are_saved_apart_and_compared(tmp_path, monkeypatch):
    grid, out = tmp_path / "tiny.toml", tmp_path / "tiny"
    grid.write_text(GRID)
    (row,) = reference_agreement.compare(grid, out, "score", None)
    assert row == dict(env="cartpole", policy="initial", seed=0, missing=True)
    saved = list((out / ablate.REFERENCES).glob("*.npz"))
    assert len(saved) == 1  # the score reference of 16 episodes, for when the grid's is saved
    ((_, _, pathwise),) = ablate.references(grid, out, compute=True)
    rows = reference_agreement.compare(grid, out, "score", 32)
    assert len(list((out / ablate.REFERENCES).glob("*.npz"))) == 3  # + pathwise, score of 32
    (row,) = rows
    assert row["own"]["episodes"] == 16 and row["other"]["episodes"] == 32
    ((cell, seed, score),) = ablate.references(
        grid, out, reference_estimator="score", reference_samples=32
    )
    assert score.chunks.shape[0] == 8 and pathwise.chunks.shape[0] == 4
    computed = []
    monkeypatch.setattr(
        diagnostics, "reference_gradients", lambda *args: computed.append(args) or None
    )
    assert reference_agreement.compare(grid, out, "score", 32)[0]["agreement"] == (row["agreement"])
    assert computed == []  # both read back
    monkeypatch.undo()
    config = dataclasses.replace(
        cell.config, seed=seed, reference_estimator="score", reference_samples=32
    )
    env = diagnostics.make_env(config)
    keys = diagnostics.Keys.of(seed)
    policy = diagnostics.make_policy(env, config, keys.policy)
    again = diagnostics.sampled_reference(env, policy, config, keys.reference)
    np.testing.assert_array_equal(np.asarray(again.chunks), np.asarray(score.chunks))
    assert not np.allclose(np.asarray(again.gradient), np.asarray(pathwise.gradient))
    table = reference_agreement.markdown(rows, "pathwise", "score")
    assert table.count("\n") == 3 and "| cartpole | initial | 0 | 16 |" in table
    own = row["own"]
    assert own["mean_norm"] == pytest.approx(np.linalg.norm(np.asarray(pathwise.gradient)))
    assert own["squared_norm"] == pytest.approx(diagnostics.squared_norm(pathwise)[0])
    product = np.asarray(pathwise.gradient) @ np.asarray(score.gradient)
    assert row["inner_product"] == pytest.approx(float(product), rel=1e-5)
    assert jax.numpy.isfinite(score.gradient).all()
