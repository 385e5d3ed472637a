"""experiments/ablation_predictors.py: the rank correlations of model error with gradient
quality, on records whose ranking is known."""

import pytest

from experiments import ablation_predictors


def record(env, estimator, bias, cosine, errors, jacobians="learned"):
    cell = dict(env=env, policy="initial", estimator=estimator, k=None, jacobians=jacobians)
    s, a, mse = errors
    return dict(
        cell=cell,
        relative_bias=bias,
        cosine=cosine,
        jacobian_error_s=s,
        jacobian_error_a=a,
        model_one_step_mse=mse,
    )


def test_a_measure_that_ranks_the_cells_as_their_gradients_has_rho_one():
    # ∂f̂/∂a's error grows with the bias, ∂f̂/∂s's falls, the MSE half agrees (ranks 2, 1, 4, 3).
    records = [
        record("lqg", "svg1", bias, 1 - bias, (1 - bias, 2 * bias, mse))
        for bias, mse in [(0.1, 0.2), (0.2, 0.1), (0.3, 0.4), (0.4, 0.3)]
    ]
    records.append(record("lqg", "svg1", 0.9, 0.1, (0, 0, 0), jacobians="simulator"))
    records += [record("lqg", "svg_inf", b, 1 - b, (b, b, b)) for b in (0.1, 0.2, 0.3)]
    (row,) = ablation_predictors.correlations(records)  # svg_inf: too few cells
    assert (row["env"], row["estimator"], row["cells"]) == ("lqg", "svg1", 4)
    assert row["rho"]["jacobian_error_a"] == pytest.approx((1.0, 1.0))
    assert row["rho"]["jacobian_error_s"] == pytest.approx((-1.0, -1.0))
    assert row["rho"]["model_one_step_mse"] == pytest.approx((0.6, 0.6))
    table = ablation_predictors.markdown([row, dict(row, estimator="svgk k=2")])
    assert (
        "| lqg | all | mean of 2 groups |  | -1.00 | -1.00 | +1.00 | +1.00 | +0.60 | +0.60 |"
        in table
    )
