"""The replay ring buffer (paper Alg. 2's database ``D``; docs/design.md, "Replay and
importance weights").

Every transition written for step ``k`` of environment ``e`` carries its identity
``id = 100 k + e`` in every field, so a sample can be traced back to the cell it
came from and checked against what was written.

* ``add`` / ``add_rows`` keep the last ``capacity`` rows; ``sample`` returns only
  those, each filled cell about equally often.
* ``valid_sequence_starts`` equals a brute-force loop over the write history, for
  random episode boundaries and lengths from 1 to past the capacity.
* ``sample_sequences`` returns consecutive steps of one environment that never cross
  an episode boundary nor the write position, from every valid start about equally.
* ``jax.vmap`` over a leading seed axis of buffers gives each seed's own result.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from svgx import replay
from svgx.replay import Transition

N_XI = 3


def make_row(step, n_envs, *, done=None, t=None, offset=0):
    """Row ``step`` of ``n_envs`` environments; each field encodes ``offset + 100 step + e``."""
    env = np.arange(n_envs)
    ident = (offset + 100 * step + env).astype(np.float32)
    done = np.zeros(n_envs, bool) if done is None else np.asarray(done, bool)
    t = np.full(n_envs, step) if t is None else np.asarray(t)
    return Transition(
        s=jnp.stack([ident, env.astype(np.float32)], axis=-1),
        a=jnp.asarray(-ident)[:, None],
        r=jnp.asarray(ident),
        s_next=jnp.stack([ident + 0.5, env.astype(np.float32)], axis=-1),
        t=jnp.asarray(t, jnp.int32),
        done=jnp.asarray(done),
        log_prob=jnp.asarray(-ident),
        noise=jnp.repeat(jnp.asarray(ident)[:, None], N_XI, axis=1),
    )


def ids(batch):
    return np.asarray(batch.s[..., 0]).astype(int)


def check_fields_agree(batch):
    """Every field of each sampled transition came from the same cell."""
    ident = np.asarray(batch.s[..., 0])
    np.testing.assert_array_equal(np.asarray(batch.a[..., 0]), -ident)
    np.testing.assert_array_equal(np.asarray(batch.r), ident)
    np.testing.assert_array_equal(np.asarray(batch.s_next[..., 0]), ident + 0.5)
    np.testing.assert_array_equal(np.asarray(batch.s_next[..., 1]), np.asarray(batch.s[..., 1]))
    np.testing.assert_array_equal(np.asarray(batch.log_prob), -ident)
    np.testing.assert_array_equal(np.asarray(batch.noise), np.repeat(ident[..., None], N_XI, -1))
    np.testing.assert_array_equal(ident.astype(int) % 100, np.asarray(batch.s[..., 1]).astype(int))


def assert_uniform(counts, n):
    """Each of ``len(counts)`` cells drawn with probability 1/len(counts): within 5 sd."""
    p = 1 / len(counts)
    sd = np.sqrt(n * p * (1 - p))
    assert np.all(np.abs(np.asarray(counts) - n * p) < 5 * sd), (counts, n * p, sd)


add = jax.jit(replay.add)
add_rows = jax.jit(replay.add_rows)
sample = jax.jit(replay.sample, static_argnums=2)
sample_sequences = jax.jit(replay.sample_sequences, static_argnums=(2, 3))


def test_init_shapes_and_dtypes():
    buffer = replay.init(6, make_row(0, 3))
    assert buffer.capacity == 6 and buffer.n_envs == 3
    assert buffer.data.s.shape == (6, 3, 2) and buffer.data.noise.shape == (6, 3, N_XI)
    assert buffer.data.t.dtype == jnp.int32 and buffer.data.done.dtype == jnp.bool_
    assert int(buffer.position) == 0 and int(buffer.size) == 0
    assert not np.any(np.asarray(buffer.data.s))


@pytest.mark.parametrize("capacity", [0, -3])
def test_init_rejects_capacity_below_one(capacity):
    with pytest.raises(ValueError, match="capacity"):
        replay.init(capacity, make_row(0, 2))


def test_bad_lengths_and_rows_raise():
    buffer = replay.init(4, make_row(0, 2))
    with pytest.raises(ValueError, match="length"):
        replay.valid_sequence_starts(buffer, 0)
    with pytest.raises(ValueError, match="length"):
        replay.sample_sequences(buffer, jax.random.key(0), 3, 5)
    with pytest.raises(ValueError, match=r"row\.s"):
        replay.add(buffer, make_row(0, 3))


def test_add_keeps_the_last_capacity_rows():
    capacity, n_envs = 5, 3
    buffer = replay.init(capacity, make_row(0, n_envs))
    for step in range(13):
        buffer = add(buffer, make_row(step, n_envs))
        assert int(buffer.position) == (step + 1) % capacity
        assert int(buffer.size) == min(step + 1, capacity)
        # Row i holds the newest step written there: the largest k <= step with k % capacity == i.
        for row in range(min(step + 1, capacity)):
            k = step - (step - row) % capacity
            np.testing.assert_array_equal(ids(buffer.data)[row], 100 * k + np.arange(n_envs))


def test_add_rows_equals_repeated_add():
    capacity, n_envs = 5, 2
    rows = [make_row(step, n_envs, done=[step % 3 == 0, step % 4 == 1]) for step in range(12)]
    for stop in (3, 12):  # partially filled; past a wrap-around
        one_by_one = replay.init(capacity, rows[0])
        for row in rows[:stop]:
            one_by_one = add(one_by_one, row)
        stacked = jax.tree.map(lambda *x: jnp.stack(x), *rows[:stop])
        at_once = add_rows(replay.init(capacity, rows[0]), stacked)
        for x, y in zip(jax.tree.leaves(one_by_one), jax.tree.leaves(at_once), strict=True):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("n_rows", [3, 8])  # partially filled; wrapped around
def test_sample_returns_written_cells_uniformly(n_rows):
    capacity, n_envs, n = 4, 3, 36_000
    buffer = replay.init(capacity, make_row(0, n_envs))
    for step in range(n_rows):
        buffer = add(buffer, make_row(step, n_envs))
    batch = sample(buffer, jax.random.key(n_rows), n)
    assert batch.s.shape == (n, 2) and batch.t.shape == (n,)
    check_fields_agree(batch)
    # Only the last `capacity` steps survive; every surviving cell is drawn, about equally.
    kept = range(max(0, n_rows - capacity), n_rows)
    surviving = {100 * k + e for k in kept for e in range(n_envs)}
    values, counts = np.unique(ids(batch), return_counts=True)
    assert set(values.tolist()) == surviving
    assert_uniform(counts, n)
    np.testing.assert_array_equal(np.asarray(batch.t), ids(batch) // 100)


def brute_force_starts(capacity, done_history, length):
    """Valid starts from the write history: step j went to row j % capacity."""
    n, n_envs = done_history.shape
    mask = np.zeros((capacity, n_envs), bool)
    for j in range(max(0, n - capacity), n):  # the steps still in the buffer
        if j + length - 1 >= n:  # would run past the newest step (into the oldest row)
            continue
        for e in range(n_envs):
            if not done_history[j : j + length - 1, e].any():
                mask[j % capacity, e] = True
    return mask


@pytest.mark.parametrize(
    "capacity,n_envs,n_rows",
    [
        (1, 2, 0),
        (1, 2, 3),
        (2, 1, 1),
        (3, 2, 7),
        (5, 3, 3),
        (5, 3, 5),
        (5, 3, 8),
        (7, 2, 13),
        (7, 2, 23),
    ],
)
def test_valid_sequence_starts_match_brute_force(capacity, n_envs, n_rows):
    rng = np.random.default_rng(1000 * capacity + 100 * n_envs + n_rows)
    lengths = sorted({1, 2, 3, capacity - 1, capacity, capacity + 1} - {0})
    for p_done in (0.0, 0.25, 0.6):
        done = rng.random((n_rows, n_envs)) < p_done
        buffer = replay.init(capacity, make_row(0, n_envs))
        for step in range(n_rows):
            buffer = add(buffer, make_row(step, n_envs, done=done[step]))
        for length in lengths:
            got = np.asarray(replay.valid_sequence_starts(buffer, length))
            expected = brute_force_starts(capacity, done, length)
            np.testing.assert_array_equal(got, expected, err_msg=f"p_done={p_done} length={length}")


def test_valid_sequence_starts_by_hand_after_wrap_around():
    # capacity 4, 6 steps: rows hold steps [4, 5, 2, 3]; position 2; oldest row 2.
    def buffer_with(done_steps):
        buffer = replay.init(4, make_row(0, 1))
        for step in range(6):
            buffer = add(buffer, make_row(step, 1, done=[step in done_steps]))
        return buffer

    def starts(buffer, length):
        return np.asarray(replay.valid_sequence_starts(buffer, length))[:, 0].tolist()

    no_done = buffer_with(set())
    assert starts(no_done, 1) == [True, True, True, True]
    assert starts(no_done, 2) == [True, False, True, True]  # row 1 (step 5) is the newest
    assert starts(no_done, 4) == [False, False, True, False]
    assert starts(no_done, 5) == [False] * 4
    done_at_3 = buffer_with({3})  # steps 2-3 may end on the done; 3-4 crosses it
    assert starts(done_at_3, 2) == [True, False, True, False]
    assert starts(done_at_3, 3) == [False, False, False, False]
    empty = replay.init(4, make_row(0, 1))
    assert int(replay.valid_sequence_starts(empty, 1).sum()) == 0


def test_sample_sequences_are_consecutive_within_one_episode():
    capacity, n_envs, n_rows, length, n = 9, 3, 23, 3, 30_000
    rng = np.random.default_rng(0)
    # Episodes of random lengths 1..5 per environment: t restarts after each done.
    t = np.zeros((n_rows, n_envs), int)
    done = np.zeros((n_rows, n_envs), bool)
    for e in range(n_envs):
        step = 0
        while step < n_rows:
            episode = rng.integers(1, 6)
            t[step : step + episode, e] = np.arange(min(episode, n_rows - step))
            done[step + episode - 1 : step + episode, e] = True
            step += episode
    buffer = replay.init(capacity, make_row(0, n_envs))
    for step in range(n_rows):
        buffer = add(buffer, make_row(step, n_envs, done=done[step], t=t[step]))

    batch = sample_sequences(buffer, jax.random.key(1), n, length)
    assert batch.s.shape == (n, length, 2) and batch.noise.shape == (n, length, N_XI)
    check_fields_agree(batch)
    step, env = ids(batch) // 100, ids(batch) % 100
    assert np.all(env == env[:, :1])  # one environment
    assert np.all(np.diff(step, axis=1) == 1)  # consecutive steps: never across the write position
    assert np.all(step >= n_rows - capacity) and np.all(step < n_rows)  # never overwritten ones
    assert np.all(np.diff(np.asarray(batch.t), axis=1) == 1)
    assert not np.asarray(batch.done)[:, :-1].any()  # may end on a done, never cross one
    np.testing.assert_array_equal(np.asarray(batch.done), done[step, env])
    np.testing.assert_array_equal(np.asarray(batch.t), t[step, env])

    # Starts are exactly the valid ones, each drawn about equally often.
    valid = np.asarray(replay.valid_sequence_starts(buffer, length))
    assert 5 < valid.sum() < valid.size  # the episodes make the check meaningful
    starts, counts = np.unique(step[:, 0] % capacity * n_envs + env[:, 0], return_counts=True)
    np.testing.assert_array_equal(starts, np.flatnonzero(valid))
    assert_uniform(counts, n)


def test_sequences_of_length_one_are_transitions():
    capacity, n_envs = 4, 2
    buffer = replay.init(capacity, make_row(0, n_envs))
    for step in range(6):
        buffer = add(buffer, make_row(step, n_envs, done=[step % 2 == 0, True]))
        filled = np.arange(capacity)[:, None] < min(step + 1, capacity)
        np.testing.assert_array_equal(
            np.asarray(replay.valid_sequence_starts(buffer, 1)),
            np.broadcast_to(filled, (capacity, n_envs)),
        )
    batch = sample_sequences(buffer, jax.random.key(2), 4000, 1)
    assert batch.s.shape == (4000, 1, 2)
    values, counts = np.unique(ids(batch), return_counts=True)
    assert set(values.tolist()) == {100 * k + e for k in range(2, 6) for e in range(n_envs)}
    assert_uniform(counts, 4000)


def test_length_one_sequences_are_sample_with_a_length_axis_and_counts_agree():
    """svg1_er samples length-1 sequences every update: they are `sample`'s draws (which
    never scan the whole buffer), and the cheap count equals the full one."""
    buffer = replay.init(6, make_row(0, 3))
    for step in range(8):
        buffer = add(buffer, make_row(step, 3, done=[step % 3 == 0, False, True]))
        for length in (1, 2, 3):
            assert int(replay.count_sequence_starts(buffer, length)) == int(
                replay.valid_sequence_starts(buffer, length).sum()
            ), (step, length)
    key = jax.random.key(5)
    got, expected = sample_sequences(buffer, key, 64, 1), sample(buffer, key, 64)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(x, np.asarray(y)[:, None])
    # The general path's running count over every cell (O(capacity) per update) is gone.
    jaxpr = str(jax.make_jaxpr(replay.sample_sequences, static_argnums=(2, 3))(buffer, key, 64, 1))
    assert "cumsum" not in jaxpr and "cumsum" in str(
        jax.make_jaxpr(replay.sample_sequences, static_argnums=(2, 3))(buffer, key, 64, 2)
    )


def test_vmap_over_seeds_matches_each_seed():
    capacity, n_envs, n_seeds, n_rows = 5, 2, 3, 7
    rng = np.random.default_rng(3)
    done = rng.random((n_seeds, n_rows, n_envs)) < 0.3

    # Seed s's ids are offset by 10_000 s, so the seeds' contents differ.
    def row(seed, step):
        return make_row(step, n_envs, done=done[seed, step], offset=10_000 * seed)

    def stack(trees):
        return jax.tree.map(lambda *x: jnp.stack(x), *trees)

    keys = jax.random.split(jax.random.key(4), n_seeds)

    examples = stack([row(s, 0) for s in range(n_seeds)])
    batched = jax.vmap(lambda example: replay.init(capacity, example))(examples)
    vadd = jax.jit(jax.vmap(replay.add))
    for step in range(n_rows):
        batched = vadd(batched, stack([row(s, step) for s in range(n_seeds)]))
    vsample = jax.jit(jax.vmap(functools.partial(replay.sample, batch_size=16)))
    vsequences = jax.jit(
        jax.vmap(functools.partial(replay.sample_sequences, batch_size=16, length=2))
    )
    vvalid = jax.jit(jax.vmap(functools.partial(replay.valid_sequence_starts, length=2)))
    results = (batched, vsample(batched, keys), vsequences(batched, keys), vvalid(batched))

    for seed in range(n_seeds):
        buffer = replay.init(capacity, row(seed, 0))
        for step in range(n_rows):
            buffer = add(buffer, row(seed, step))
        expected = (
            buffer,
            sample(buffer, keys[seed], 16),
            sample_sequences(buffer, keys[seed], 16, 2),
            replay.valid_sequence_starts(buffer, 2),
        )
        got = jax.tree.map(lambda x, seed=seed: x[seed], results)
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_array_equal(x, y)
        assert np.all(ids(got[1]) // 10_000 == seed)  # each seed samples its own buffer
