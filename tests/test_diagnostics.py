"""The estimators against the exact policy gradient of the ``lqg`` probe, through
:func:`svgx.diagnostics.diagnose`, and the ``svgx diagnose`` command (docs/design.md,
"What the tests pin down").

On ``lqg`` the exact gradient comes from closed-form covariance propagation; the
value-expansion estimators (simulator Jacobians, exact ``V`` / ``Q``) must agree
with it: cosine ≥ 0.99, and a mean error within 3 Monte-Carlo standard errors
(``relative_bias ≤ 3 · bias_standard_error``: the squared error over its
expectation is a χ²/d variable, so 3 standard errors is a generous bound).
"""

import contextlib
import dataclasses
import json
import subprocess
import sys

import equinox as eqx
import jax
import pytest

from svgx import diagnostics
from svgx.diagnostics import DiagnoseConfig, diagnose

SIZES = {"small": dict(state_size=2, action_size=1), "large": dict(state_size=4, action_size=2)}


CASES = [
    ("svg_inf", {}),
    ("svg1", {}),
    ("svgk", {"k": 5}),
    ("svg0", {}),
]


def lqg(size, **kwargs):
    return DiagnoseConfig(
        env="lqg", env_options=SIZES[size], samples=64, batches=8, horizon=20, **kwargs
    )


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("estimator", "options"), CASES, ids=[c[0] for c in CASES])
def test_value_expansion_estimators_match_the_exact_lqg_gradient(size, estimator, options):
    config = lqg(size, estimator=estimator, **options)
    result = diagnose(config)
    assert result.cosine_of_mean >= 0.99, result
    assert result.relative_bias <= 3 * result.bias_standard_error + 1e-4, result


@pytest.mark.parametrize("estimator", ["actor_critic", "reinforce"])
def test_likelihood_ratio_estimators_are_unbiased_but_noisier(estimator):
    result = diagnose(lqg("small", estimator=estimator))
    pathwise = diagnose(lqg("small", estimator="svg1"))
    assert result.relative_bias <= 3 * result.bias_standard_error + 1e-4, result
    # Measured on this task: actor-critic 2.4x, REINFORCE more, than SVG(1)'s variance.
    assert result.relative_variance > 1.5 * pathwise.relative_variance, (result, pathwise)


def test_learned_jacobians_on_a_linear_system_are_nearly_exact():
    result = diagnose(lqg("small", estimator="svg1", jacobians="learned"))
    # Measured: 0.997 after 10k Adam steps (0.48 after 3k: an underfitted model's Jacobians).
    assert result.cosine_of_mean >= 0.98, result


# JAX's monitoring event for each trace of a function for jit: diagnostics' compiled
# programs, and eager operations the first time each is run with its shapes.
JAXPR_TRACE_EVENT = "/jax/core/compile/jaxpr_trace_duration"


@contextlib.contextmanager
def traces():
    """The names of the functions traced for jit inside the block."""
    names = []

    def listen(event, duration, **kwargs):
        if event == JAXPR_TRACE_EVENT:
            names.append(kwargs.get("fun_name"))

    jax.monitoring.register_event_duration_secs_listener(listen)
    try:
        yield names
    finally:
        jax.monitoring.unregister_event_duration_listener(listen)


def trace_counts():
    return {f.__name__: eqx.debug.get_num_traces(f) for f in diagnostics.PROGRAMS}


@pytest.mark.parametrize("critic", ["exact", "fitted"])
def test_a_second_diagnosis_of_the_same_shapes_traces_nothing(critic):
    # Sizes no other test uses, so that the first diagnosis traces (or the check is void).
    config = DiagnoseConfig(
        env="lqg", env_options=SIZES["small"], horizon=6, estimator="svg1",
        jacobians="learned", critic=critic, samples=7, batches=3, critic_hidden=8,
        critic_samples=4, critic_steps=10, model_hidden=3, model_samples=4, model_steps=10,
    )  # fmt: skip
    with traces() as first:
        diagnose(config)
    assert first, "the trace listener heard nothing: the check below would be void"
    counts = trace_counts()
    with traces() as second:
        diagnose(dataclasses.replace(config, seed=1))
    assert trace_counts() == counts  # names the program that traced again, if one did
    assert second == [], f"traced again: {second}"


def test_bad_diagnose_configs_name_the_field_and_the_allowed_values():
    with pytest.raises(ValueError, match=r"unknown estimator 'svg2'.*svg0, svg1"):
        DiagnoseConfig(estimator="svg2")
    with pytest.raises(ValueError, match=r"uses no dynamics.*svg1, svgk, svg_inf, planner"):
        DiagnoseConfig(estimator="svg0", jacobians="learned")
    with pytest.raises(ValueError, match="unknown env 'pendulum'"):
        DiagnoseConfig(env="pendulum")
    with pytest.raises(ValueError, match="critic='exact' exists only for env 'lqg'"):
        DiagnoseConfig(env="cartpole", critic="exact")
    with pytest.raises(ValueError, match=r"gamma=1\.5"):
        DiagnoseConfig(gamma=1.5)


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "svgx.cli", *args], capture_output=True, text=True, timeout=600
    )


def test_diagnose_command_prints_json_with_the_documented_fields():
    out = run_cli(
        "diagnose",
        "--env",
        "lqg",
        "--estimator",
        "svgk",
        "--k",
        "2",
        "--jacobians",
        "simulator",
        "--samples",
        "16",
        "--batches",
        "2",
        "--horizon",
        "10",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    for field in ("cosine", "relative_bias", "variance"):
        assert isinstance(result[field], float)
    assert result["config"]["k"] == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--estimator", "svg9"), "svg9"),
        (("--estimator", "svg0", "--jacobians", "learned"), "uses no dynamics"),
        (("--estimator", "svgk", "--k", "3", "--horizon", "10"), "k=3 must divide the horizon"),
        (("--env", "nope"), "unknown env 'nope'"),
    ],
)
def test_diagnose_command_rejects_bad_input_with_exit_status_2(args, message):
    out = run_cli("diagnose", *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr
