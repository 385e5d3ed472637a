"""experiments/time_iteration.py: which variants it times, and that a timed chunk is the
configured iterations of training alone."""

import numpy as np

from experiments import time_iteration


def test_the_variants_in_order_with_a_clip_and_one_source():
    assert time_iteration.variants() == [
        ("simulator", "dynamics", 0.0),
        ("simulator", "replayed", 0.0),
        ("learned", "dynamics", 0.0),
    ]
    assert time_iteration.variants(10.0, only="simulator") == [
        ("simulator", "dynamics", 0.0),
        ("simulator", "dynamics", 10.0),
        ("simulator", "replayed", 0.0),
    ]
    assert time_iteration.variants(10.0, only="learned") == [("learned", "dynamics", 0.0)]
    clipped = time_iteration.config("cheetah", "simulator", "dynamics", 10.0, 20)
    assert clipped.algo_options == {
        "actions": "fresh",
        "targets": "dynamics",
        "transition_clip": 10.0,
    }
    assert clipped.iterations // clipped.chunks == 20


def test_a_timed_chunk_is_its_iterations_without_diagnostics():
    config = time_iteration.config("lqg", "learned", "dynamics", 0.0, 2)
    compile_s, per_iteration, metrics = time_iteration.time_chunk(config)
    assert compile_s > 0 and per_iteration > 0
    # warm-up and two timed chunks of 2 iterations, one update and n_envs steps each
    np.testing.assert_array_equal(metrics["updates"], [6] * time_iteration.SEEDS)
    np.testing.assert_array_equal(metrics["env_steps"], [6 * config.n_envs] * time_iteration.SEEDS)
    assert "model_nll" in metrics and "jacobian_error_a" not in metrics
