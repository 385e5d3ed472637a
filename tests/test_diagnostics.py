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
import numpy as np
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
    assert result.norm_ratio_lower <= 1 <= result.norm_ratio + 3 * result.bias_standard_error


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
    with pytest.raises(ValueError, match=r"unknown reference_estimator 'bptt'.*pathwise, score"):
        DiagnoseConfig(reference_estimator="bptt")


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
    for field in ("cosine", "cosine_corrected", "cosine_standard_error", "relative_bias"):
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


def test_the_corrected_cosine_against_an_exact_reference_is_the_mean_cosine():
    rng = np.random.default_rng(0)
    g, grads = rng.standard_normal(6), rng.standard_normal((5, 6))
    cosines = grads @ g / (np.linalg.norm(grads, axis=1) * np.linalg.norm(g))
    value, error = diagnostics.corrected_cosine(grads, g)
    assert value == pytest.approx(cosines.mean())
    assert error == pytest.approx(cosines.std(ddof=1) / np.sqrt(5))


def test_the_corrected_cosine_removes_a_noisy_references_pull_towards_zero():
    """Chunks of a sampled reference with relative standard error 0.3 around a known g, and
    batches of estimates around a vector at 45° from it: over 200 draws the plain cosine
    against the chunks' mean reads low, the corrected one reads the true mean cosine, and
    its 95% interval covers it about 95% of the time."""
    rng = np.random.default_rng(1)
    n, m, batches = 50, 16, 8
    g, h = np.eye(n)[0], np.eye(n)[0] + np.eye(n)[1]
    sigma, tau = np.sqrt(0.3**2 * m / n), 0.15
    many = h + tau * rng.standard_normal((20_000, n))
    truth = np.mean(many @ g / np.linalg.norm(many, axis=1))  # E cos(batch estimate, g)
    plain, corrected, covered = [], [], []
    for draw in range(200):
        chunks = g + sigma * rng.standard_normal((m, n))
        grads = h + tau * rng.standard_normal((batches, n))
        value, error = diagnostics.corrected_cosine(grads, chunks)
        if draw < 3:  # the closed-form jackknife is the one written out with np.delete
            assert (value, error) == pytest.approx(_corrected_by_deletion(grads, chunks))
        ref = chunks.mean(0)
        plain.append(np.mean(grads @ ref / np.linalg.norm(grads, axis=1) / np.linalg.norm(ref)))
        corrected.append(value)
        covered.append(abs(value - truth) < 1.96 * error)
    assert np.mean(plain) == pytest.approx(truth / np.sqrt(1 + 0.3**2), abs=0.01)
    assert np.mean(corrected) == pytest.approx(truth, abs=0.01)
    assert 0.9 <= np.mean(covered) <= 0.99


def _corrected_by_deletion(grads, chunks):
    units = grads / np.linalg.norm(grads, axis=1, keepdims=True)

    def corrected(c):
        mean = c.mean(0)
        return units @ mean / np.sqrt(mean @ mean - c.var(0, ddof=1).sum() / len(c))

    per_batch, m = corrected(chunks), len(chunks)
    jack = np.array([corrected(np.delete(chunks, j, axis=0)).mean() for j in range(m)])
    variance = (m - 1) / m * ((jack - jack.mean()) ** 2).sum() + per_batch.var(ddof=1) / len(units)
    return m * per_batch.mean() - (m - 1) * jack.mean(), np.sqrt(variance)


def test_a_reference_that_cannot_tell_the_gradient_from_zero_gives_no_corrected_cosine():
    v = np.array([1.0, 2.0, 0.0])
    value, error = diagnostics.corrected_cosine(np.ones((3, 3)), np.stack([v, -v]))
    assert np.isnan(value) and np.isnan(error)


def test_on_lqg_the_corrected_cosine_against_a_sampled_reference_reads_the_exact_one():
    """The same SVG(∞) estimates against lqg's exact gradient and against six sampled
    references of 16 single-episode chunks (relative standard error 0.24–0.29): the
    plain cosine reads low on average (by about 0.01), the corrected one agrees with the
    exact cosine, each within 3.5 of its standard errors and on average within a fifth
    of the plain one's shortfall."""
    config = DiagnoseConfig(
        env="lqg", env_options=dict(SIZES["large"], noise_scale=1.0), samples=64, batches=8,
        horizon=20, estimator="svg_inf",
    )  # fmt: skip
    env = diagnostics.make_env(config)
    policy = diagnostics.make_policy(env, config, diagnostics.Keys.of(0).policy)
    exact = diagnose(config, policy=policy).cosine
    sampling = dataclasses.replace(config, samples=1, reference_samples=16)
    plain, corrected = [], []
    for seed in range(6):
        reference = diagnostics.sampled_reference(env, policy, sampling, jax.random.key(seed))
        assert reference.chunks.shape[0] == 16 and reference.standard_error > 0.1
        result = diagnose(config, policy=policy, reference=reference)
        z = (result.cosine_corrected - exact) / result.cosine_standard_error
        assert abs(z) < 3.5, (seed, result, exact)
        plain.append(result.cosine)
        corrected.append(result.cosine_corrected)
    shortfall = exact - np.mean(plain)
    assert shortfall > 0.005
    assert abs(np.mean(corrected) - exact) < shortfall / 5


def _agreement_by_deletion(a, b):
    """reference_agreement's value, written out with np.delete (the function's sums are
    the fast form of the same jackknife)."""

    def norm2(chunks):
        mean = chunks.mean(0)
        return mean @ mean - chunks.var(0, ddof=1).sum() / len(chunks)

    def cos(x, y):
        return x.mean(0) @ y.mean(0) / np.sqrt(norm2(x) * norm2(y))

    value = cos(a, b)
    corrected = value
    for i, chunks in enumerate((a, b)):
        m = len(chunks)
        loo = [np.delete(chunks, j, axis=0) for j in range(m)]
        jack = np.array([cos(c, b) if i == 0 else cos(a, c) for c in loo])
        corrected -= (m - 1) * (jack.mean() - value)
    return corrected


def test_reference_agreement_reads_the_cosine_of_two_noisy_references_expectations():
    """Two sampled references (relative standard error 0.4, 16 chunks each) of vectors at a
    known angle: over 200 draws the plain cosine of their means reads low, the agreement
    reads the true cosine, its 95% interval covers it about 95% of the time, and its value
    is the jackknife written out with np.delete."""
    rng = np.random.default_rng(2)
    n, m = 40, 16
    g, h = np.eye(n)[0], np.eye(n)[0] + np.eye(n)[1]  # cos(g, h) = 1/√2
    sigma = np.sqrt(0.4**2 * m / n)
    plain, values, covered = [], [], []
    for draw in range(200):
        a = g + sigma * rng.standard_normal((m, n))
        b = np.linalg.norm(h) * (h / np.linalg.norm(h) + sigma * rng.standard_normal((m, n)))
        value, error = diagnostics.reference_agreement(
            diagnostics.Reference(a.mean(0), 0.4, a), diagnostics.Reference(b.mean(0), 0.4, b)
        )
        if draw < 3:
            assert value == pytest.approx(_agreement_by_deletion(a, b), rel=1e-9)
        ma, mb = a.mean(0), b.mean(0)
        plain.append(ma @ mb / np.linalg.norm(ma) / np.linalg.norm(mb))
        values.append(value)
        covered.append(abs(value - 1 / np.sqrt(2)) < 1.96 * error)
    assert np.mean(plain) == pytest.approx(1 / np.sqrt(2) / (1 + 0.4**2), abs=0.02)
    assert np.mean(values) == pytest.approx(1 / np.sqrt(2), abs=0.02)
    assert 0.9 <= np.mean(covered) <= 0.99
    exact = diagnostics.Reference(g, 0.0)
    assert diagnostics.reference_agreement(exact, exact) == (pytest.approx(1.0), 0.0)
    # A reference that does not resolve |g| (relative standard error 3) gives no cosine,
    # but the inner product still reads g · h = 1 within its standard error.
    products, covered, unresolved = [], [], []
    for _ in range(200):
        a = g + np.sqrt(9 * m / n) * rng.standard_normal((m, n))
        b = h + sigma * rng.standard_normal((m, n))
        noisy, clear = (diagnostics.Reference(x.mean(0), 0.0, x) for x in (a, b))
        unresolved.append(np.isnan(diagnostics.reference_agreement(noisy, clear)[0]))
        value, error = diagnostics.inner_product(noisy, clear)
        products.append(value)
        covered.append(abs(value - 1) < 1.96 * error)
    assert np.mean(unresolved) > 0.9
    assert abs(np.mean(products) - 1) < 3 * np.std(products) / np.sqrt(200)
    assert 0.9 <= np.mean(covered) <= 0.99


@pytest.mark.parametrize("estimator", ["score", "pathwise"])
def test_both_sampled_references_are_unbiased_for_the_exact_lqg_gradient(estimator):
    """A reference of 1,024 episodes (64 chunks of 16) by either estimator against lqg's
    exact gradient g: its length along g (the chunks' mean projection ``ḡ·g / |g|²``) is 1,
    and its agreement with g is 1, each within 4 of its standard errors (measured on six
    seeds: |z| ≤ 2.1; the score reference's scale has a standard error of about 0.07, the
    pathwise one's 0.01). A score that missed the policy's spread or the discount would
    be off in one."""
    config = DiagnoseConfig(
        env="lqg", env_options=SIZES["large"], samples=16, horizon=20,
        reference_samples=1024, reference_estimator=estimator,
    )  # fmt: skip
    env = diagnostics.make_env(config)
    policy = diagnostics.make_policy(env, config, diagnostics.Keys.of(0).policy)
    exact = diagnostics.reference_gradient(env, policy, config, None)
    sampled = diagnostics.sampled_reference(env, policy, config, jax.random.key(3))
    g = np.asarray(exact.gradient, np.float64)
    lengths = np.asarray(sampled.chunks, np.float64) @ g / (g @ g)
    assert len(lengths) == 64
    assert abs(lengths.mean() - 1) < 4 * lengths.std(ddof=1) / np.sqrt(64), lengths.mean()
    value, standard_error = diagnostics.reference_agreement(sampled, exact)
    assert abs(value - 1) < 4 * standard_error, (value, standard_error)
    assert standard_error < 0.05


def test_squared_norm_is_unbiased_and_its_error_covers_the_truth():
    """Chunks around g with |g|² = 1 and a noise whose own share is 4 (relative standard
    error 2): over 300 draws |ḡ|² reads about 5, the estimate about 1, and ± 1.96
    standard errors covers 1 about 95% of the time."""
    rng = np.random.default_rng(4)
    n, m = 30, 64
    g = np.eye(n)[0]
    sigma = np.sqrt(4 * m / n)
    plain, values, covered = [], [], []
    for _ in range(300):
        chunks = g + sigma * rng.standard_normal((m, n))
        value, error = diagnostics.squared_norm(diagnostics.Reference(chunks.mean(0), 2, chunks))
        plain.append(chunks.mean(0) @ chunks.mean(0))
        values.append(value)
        covered.append(abs(value - 1) < 1.96 * error)
    assert np.mean(plain) == pytest.approx(5, abs=0.15)
    assert abs(np.mean(values) - 1) < 3 * np.std(values) / np.sqrt(300)  # ~0.09
    assert 0.9 <= np.mean(covered) <= 0.99
    assert diagnostics.squared_norm(diagnostics.Reference(2 * g, 0.0)) == (4.0, 0.0)


def test_the_norm_ratio_bounds_an_estimators_bias_when_the_reference_has_no_direction():
    """Estimates around 10 g against a reference of g whose noise hides its direction
    (relative standard error 3: no corrected cosine): the ratio's lower bound still says
    the estimator's mean is several times longer than any g the reference allows; against
    the exact g the ratio reads 10."""
    rng = np.random.default_rng(5)
    n, m = 20, 64
    g = np.eye(n)[0]
    grads = 10 * g + 0.5 * rng.standard_normal((8, n))
    chunks = g + np.sqrt(9 * m / n) * rng.standard_normal((m, n))
    noisy = diagnostics.summarise(grads, diagnostics.Reference(chunks.mean(0), 3.0, chunks), 0)
    assert 2 < noisy.norm_ratio_lower < 10  # measured: 2.97 (corrected cosine: −1.6 ± 1.7)
    exact = diagnostics.summarise(grads, diagnostics.Reference(g, 0.0), 0)
    assert exact.norm_ratio == pytest.approx(10, rel=0.05)
    assert 8 < exact.norm_ratio_lower < 10


@pytest.mark.parametrize("critic", ["exact", "fitted"])
def test_vmapped_seeds_equal_one_diagnosis_per_seed(critic):
    """diagnose_seeds runs each stage once over all seeds (vmapped); each seed's result is
    the one its own diagnosis gives: the same policy, reference, model, critic and batches
    (within float32 rounding of the batched programs)."""
    config = DiagnoseConfig(
        env="lqg", env_options=SIZES["small"], horizon=10, estimator="svg1",
        jacobians="learned", critic=critic, samples=16, batches=3, critic_samples=16,
        critic_steps=100, model_samples=8, model_steps=100,
    )  # fmt: skip
    together = diagnostics.diagnose_seeds(config, [0, 1, 2])
    for seed, result in zip([0, 1, 2], together, strict=True):
        alone = diagnose(dataclasses.replace(config, seed=seed))
        for name in ("cosine", "relative_bias", "variance", "reference_norm", "norm_ratio"):
            assert getattr(result, name) == pytest.approx(getattr(alone, name), rel=1e-3), name
    assert len({round(r.cosine, 6) for r in together}) == 3  # three seeds, not one thrice
    with pytest.raises(ValueError, match="2 policies for 3 seeds"):
        diagnostics.diagnose_seeds(config, [0, 1, 2], policies=[None, None])
