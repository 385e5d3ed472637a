"""The replay database (paper Alg. 2's ``D``): a fixed-capacity ring buffer of transitions.

A replay database holding s, a, r, s', t, done, behaviour log-probability and
environment noise; uniform sampling of transitions and length-k sequences that
never cross an episode boundary.

The buffer is a pytree of arrays with static shapes, and every function here is
pure and free of Python control flow on traced values, so all of them can be
jitted and vmapped (e.g. across seeds: vmap over a leading axis of buffers).

Storage is time-major per parallel environment: a *row* holds one step of each
of ``n_envs`` environments, so every leaf of :attr:`ReplayBuffer.data` is
``[capacity, n_envs, ...]`` and a sequence read down a column never mixes
environments.
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int, PRNGKeyArray


class Transition(eqx.Module):
    """One environment step; every field may carry the same leading batch dims ``*batch``."""

    s: Float[Array, "*batch n_s"]
    a: Float[Array, "*batch n_a"]
    r: Float[Array, "*batch"]
    s_next: Float[Array, "*batch n_s"]
    t: Int[Array, "*batch"]
    """Time index of the step within its episode (int32)."""
    done: Bool[Array, "*batch"]
    """Whether this is the last step of its episode."""
    log_prob: Float[Array, "*batch"]
    """Behaviour policy's ``log p(a | s)``."""
    noise: Float[Array, "*batch n_xi"]
    """The environment noise the step reported."""


class ReplayBuffer(eqx.Module):
    """Ring buffer of rows of ``n_envs`` transitions; ``data`` leaves ``[capacity, n_envs, ...]``.

    Rows are written at ``position`` and ``position`` wraps modulo ``capacity``, so
    once full the oldest row is overwritten. While not yet full the filled rows are
    exactly ``0 .. size - 1``.
    """

    data: Transition
    position: Int[Array, ""]
    """Next row to write, in ``[0, capacity)``."""
    size: Int[Array, ""]
    """Number of filled rows, in ``[0, capacity]``."""

    @property
    def capacity(self) -> int:
        """Number of rows (static). On an unbatched buffer, e.g. inside ``vmap``."""
        return self.data.r.shape[0]

    @property
    def n_envs(self) -> int:
        """Number of parallel environments per row (static). On an unbatched buffer."""
        return self.data.r.shape[1]


def init(capacity: int, example: Transition) -> ReplayBuffer:
    """An empty buffer of ``capacity`` rows like ``example`` (one row: leaves ``[n_envs, ...]``).

    The storage is zeros of ``example``'s dtypes; ``position = size = 0``.
    """
    if not isinstance(capacity, numbers.Integral) or capacity < 1:
        raise ValueError(f"capacity must be an integer >= 1, got {capacity!r}")
    if jnp.ndim(example.r) != 1:
        raise ValueError(
            f"example must be one row with leaves [n_envs, ...], so example.r has shape "
            f"[n_envs]; got shape {jnp.shape(example.r)}"
        )
    n_envs = jnp.shape(example.r)[0]
    for name, leaf in _fields(example):
        if jnp.ndim(leaf) < 1 or jnp.shape(leaf)[0] != n_envs:
            raise ValueError(
                f"example.{name} must have leading dim n_envs = {n_envs} (that of example.r); "
                f"got shape {jnp.shape(leaf)}"
            )
    data = jax.tree.map(lambda x: jnp.zeros((capacity, *jnp.shape(x)), jnp.result_type(x)), example)
    zero = jnp.zeros((), jnp.int32)
    return ReplayBuffer(data=data, position=zero, size=zero)


def add(buffer: ReplayBuffer, row: Transition) -> ReplayBuffer:
    """Writes one row (leaves ``[n_envs, ...]``, cast to the buffer's dtypes) at ``position``.

    Advances ``position`` modulo ``capacity``; ``size = min(size + 1, capacity)``.
    """
    for (name, x), (_, y) in zip(_fields(buffer.data), _fields(row), strict=True):
        if jnp.shape(y) != x.shape[1:]:
            raise ValueError(
                f"row.{name} must have shape {x.shape[1:]} (the buffer's [n_envs, ...]); "
                f"got {jnp.shape(y)}"
            )
    data = jax.tree.map(
        lambda x, y: jax.lax.dynamic_update_index_in_dim(
            x, jnp.asarray(y, x.dtype), buffer.position, axis=0
        ),
        buffer.data,
        row,
    )
    return ReplayBuffer(
        data=data,
        position=(buffer.position + 1) % buffer.capacity,
        size=jnp.minimum(buffer.size + 1, buffer.capacity),
    )


def add_rows(buffer: ReplayBuffer, rows: Transition) -> ReplayBuffer:
    """Writes several rows in order; leaves of ``rows`` are ``[n_rows, n_envs, ...]``.

    Same as :func:`add` on ``rows[0], rows[1], ...``; with more rows than ``capacity``
    only the last ``capacity`` survive.
    """

    def body(b, row):
        return add(b, row), None

    return jax.lax.scan(body, buffer, rows)[0]


def sample(buffer: ReplayBuffer, key: PRNGKeyArray, batch_size: int) -> Transition:
    """``batch_size`` transitions drawn uniformly, with replacement, from the filled
    ``(row, env)`` cells; leaves ``[batch_size, ...]``.

    On an empty buffer (``size == 0``) the result is arbitrary (a zero row).
    """
    n_envs = buffer.n_envs
    # The filled rows are 0 .. size - 1 (rows fill in order from 0 and only wrap once
    # full), so a uniform integer below size * n_envs is a uniform filled cell.
    cell = jax.random.randint(key, (batch_size,), 0, buffer.size * n_envs)
    return _gather(buffer.data, cell // n_envs, cell % n_envs)


def valid_sequence_starts(buffer: ReplayBuffer, length: int) -> Bool[Array, "capacity n_envs"]:
    """Which cells ``(row i, env e)`` start a valid sequence of ``length`` steps.

    Valid iff rows ``i, i + 1, ..., i + length - 1`` (modulo ``capacity``) are filled and
    consecutive in write order (never running from the newest row into the oldest),
    and none of ``done[i .. i + length - 2, e]`` is set: a sequence may end on the last
    step of an episode but never crosses into the next one. ``.sum()`` counts them.
    """
    _check_length(length)
    capacity, n_envs = buffer.capacity, buffer.n_envs
    if length > capacity:
        return jnp.zeros((capacity, n_envs), bool)
    # In age order (age 0 = oldest filled row) "consecutive in write order" is plain
    # index order, and the write position sits past the last filled age, so a
    # sequence that fits below `size` cannot cross it.
    oldest = (buffer.position - buffer.size) % capacity
    ages = jnp.arange(capacity)
    done = buffer.data.done[(oldest + ages) % capacity].astype(jnp.int32)
    # crossed[k] = number of done flags at ages < k, so the dones at ages
    # k .. k + length - 2 number crossed[k + length - 1] - crossed[k].
    crossed = jnp.concatenate([jnp.zeros((1, n_envs), jnp.int32), jnp.cumsum(done, axis=0)])
    last = ages + length - 1
    fits = last < buffer.size
    inside = crossed[jnp.minimum(last, capacity)] - crossed[ages]
    valid_by_age = fits[:, None] & (inside == 0)
    return valid_by_age[(ages - oldest) % capacity]


def count_sequence_starts(buffer: ReplayBuffer, length: int) -> Int[Array, ""]:
    """``valid_sequence_starts(buffer, length).sum()``; for ``length == 1`` (every filled
    cell) without touching the ``capacity``-sized storage."""
    _check_length(length)
    if length == 1:
        return buffer.size * buffer.n_envs
    return valid_sequence_starts(buffer, length).sum()


def sample_sequences(
    buffer: ReplayBuffer, key: PRNGKeyArray, batch_size: int, length: int
) -> Transition:
    """``batch_size`` sequences of ``length`` consecutive steps of one environment, their
    starts drawn uniformly, with replacement, from :func:`valid_sequence_starts`;
    leaves ``[batch_size, length, ...]``.

    This cannot raise under ``jit``: where no start is valid
    (``valid_sequence_starts(buffer, length).sum() == 0``) the result is arbitrary, so
    callers should check that count (:func:`count_sequence_starts`). With ``length == 1``
    this is :func:`sample` with a length axis (every filled cell is a valid start), which
    costs ``O(batch_size)``; longer sequences cost ``O(capacity · n_envs)`` per call.
    """
    _check_length(length)
    capacity, n_envs = buffer.capacity, buffer.n_envs
    if length > capacity:
        raise ValueError(
            f"length must be <= capacity = {capacity} for any sequence to fit; got {length}"
        )
    if length == 1:
        return jax.tree.map(lambda x: x[:, None], sample(buffer, key, batch_size))
    valid = valid_sequence_starts(buffer, length).reshape(-1)
    # Exact integer inverse-CDF sampling: the j-th valid cell (in flat order) is the
    # first whose running count of valid cells exceeds j.
    running = jnp.cumsum(valid.astype(jnp.int32))
    j = jax.random.randint(key, (batch_size,), 0, running[-1])
    cell = jnp.minimum(jnp.searchsorted(running, j, side="right"), capacity * n_envs - 1)
    rows = (cell[:, None] // n_envs + jnp.arange(length)) % capacity  # [batch_size, length]
    return _gather(buffer.data, rows, (cell % n_envs)[:, None])


def _gather(data: Transition, rows: Int[Array, " ..."], envs: Int[Array, " ..."]) -> Transition:
    # Broadcast rows against envs, keep each leaf's trailing feature dims.
    return jax.tree.map(lambda x: x[rows, envs], data)


def _fields(transition: Transition) -> list[tuple[str, Array]]:
    names = ("s", "a", "r", "s_next", "t", "done", "log_prob", "noise")
    return [(name, getattr(transition, name)) for name in names]


def _check_length(length: int) -> None:
    if not isinstance(length, numbers.Integral) or length < 1:
        raise ValueError(f"length must be an integer >= 1, got {length!r}")


def sample_n_step(
    buffer: ReplayBuffer, key: PRNGKeyArray, batch_size: int, n: int
) -> tuple[Transition, Bool[Array, "batch_size n"]]:
    """``batch_size`` runs of up to ``n`` consecutive steps of one environment, their
    starts drawn uniformly from the filled cells (as :func:`sample`); leaves
    ``[batch_size, n, ...]``, and a mask of the steps that belong to the run: step
    ``i`` does iff it is filled and no earlier step of the run ended its episode
    (step 0 always does). ``O(batch_size · n)``.
    """
    _check_length(n)
    key_row, key_env = jax.random.split(key)
    oldest = (buffer.position - buffer.size) % buffer.capacity
    age = jax.random.randint(key_row, (batch_size,), 0, buffer.size)
    env = jax.random.randint(key_env, (batch_size,), 0, buffer.n_envs)
    ages = age[:, None] + jnp.arange(n)
    runs = _gather(buffer.data, (oldest + ages) % buffer.capacity, env[:, None])
    ended_before = jnp.cumsum(runs.done, axis=1) - runs.done
    return runs, (ages < buffer.size) & (ended_before == 0)
