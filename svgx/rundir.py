"""A run directory: what ran, what it measured, and where to pick it up again.

Layout (every file written atomically, write-then-rename, so an interrupted
run never leaves a half-written file)::

    DIR/config.json       the resolved Config and Hyperparams, seeds, format version
    DIR/metrics.jsonl     one JSON object per chunk and seed
    DIR/checkpoint.eqx    the TrainState of every seed after the last chunk (Equinox serialisation)
    DIR/policies/steps-000030000.eqx
                          every seed's policy after the chunk that ended at 30,000
                          environment steps per seed: one small file per chunk, kept, so
                          that a policy along the run can be studied (``svgx ablate``)
    DIR/curve.png         learning curve (mean and 95% confidence band over seeds)
    DIR/stopped.json      only when the run went non-finite: where and why (it cannot be resumed)
    DIR/.lock             locked by the process that runs the directory (exclusive)

The metrics file is written before the checkpoint: after a crash between the
two, resuming drops the metrics of chunks the checkpoint does not hold and
recomputes them (runs are deterministic), so nothing is counted twice.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import os
import pathlib
import platform
import re

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from svgx.config import Config, Hyperparams
from svgx.divergence import Divergence, NonFiniteLimits
from svgx.io import atomic_write_bytes, atomic_write_text

FORMAT = 2  # bump when the layout or the TrainState changes incompatibly (2: svgx.algorithms)
CONFIG, METRICS, CHECKPOINT, CURVE = "config.json", "metrics.jsonl", "checkpoint.eqx", "curve.png"
POLICIES = "policies"  # policy snapshots, one per chunk (save_policies)
STOPPED = "stopped.json"  # written when the run went non-finite (svgx.divergence)
LOCK = ".lock"  # locked while a process runs the directory (exclusive)
# Metrics that are measured times: they differ between two runs of the same program.
TIMINGS = ("wall_time", "compile_time")


class RunDirError(ValueError):
    """A run directory that cannot be used (missing, corrupt, from another version)."""


class RunDirInUse(RunDirError):
    """A run directory that another process is running (it holds ``DIR/.lock``)."""


@contextlib.contextmanager
def exclusive(path: str | pathlib.Path):
    """Holds the run directory ``path`` (made if missing) for one process while the block
    runs: a second process that runs, resumes or overwrites it meanwhile gets
    :class:`RunDirInUse` instead of writing over its checkpoints. An advisory lock
    (``flock``) on ``DIR/.lock``, which the kernel releases when the process ends, however
    it ends; on a system without ``fcntl`` it holds nothing."""
    try:
        import fcntl
    except ImportError:  # not POSIX
        yield
        return
    path = pathlib.Path(path)
    path.mkdir(parents=True, exist_ok=True)
    with open(path / LOCK, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunDirInUse(
                f"{str(path)!r}: in use by {holder}; wait for it to finish, or stop it"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()} on {platform.node()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """What a run directory was created for: enough to rebuild and continue the run."""

    config: Config
    hparams: Hyperparams
    seeds: int
    seed: int
    limits: NonFiniteLimits = dataclasses.field(default_factory=NonFiniteLimits)

    def to_json(self) -> str:
        hp = {
            f.name: np.asarray(getattr(self.hparams, f.name)).tolist()
            for f in dataclasses.fields(Hyperparams)
        }
        config = dataclasses.asdict(self.config)
        return json.dumps(
            dict(
                format=FORMAT,
                config=config,
                hparams=hp,
                seeds=self.seeds,
                seed=self.seed,
                limits=dataclasses.asdict(self.limits),
            ),
            indent=2,
        )

    @staticmethod
    def from_json(text: str, where: str = CONFIG) -> RunSpec:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise RunDirError(f"{where}: not valid JSON ({error})") from None
        if isinstance(data, dict) and "baseline" in data:
            raise RunDirError(
                f"{where}: a Brax baseline run (svgx baseline); it cannot be resumed, run it again"
            )
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else None
            raise RunDirError(
                f"{where}: run directory format {found!r}, this svgx reads format {FORMAT}; "
                "start a new run (or use the svgx version that wrote it)"
            )
        try:
            config = dict(data["config"])
            for name in ("policy_hidden", "critic_hidden"):
                config[name] = tuple(config[name])
            hparams = Hyperparams(**{k: _array_or_float(v) for k, v in data["hparams"].items()})
            limits = NonFiniteLimits(**data.get("limits", {}))
            return RunSpec(Config(**config), hparams, int(data["seeds"]), int(data["seed"]), limits)
        except (
            KeyError,
            TypeError,
            ValueError,
        ) as error:  # ValueError: e.g. an algorithm not registered here
            raise RunDirError(f"{where}: missing or unexpected field ({error})") from None


def _array_or_float(value):
    return jnp.asarray(value) if isinstance(value, list) else float(value)


def create(path: str | pathlib.Path, spec: RunSpec, *, overwrite: bool = False) -> pathlib.Path:
    """Makes ``path`` a fresh run directory for ``spec``; refuses an existing run unless
    ``overwrite``."""
    path = pathlib.Path(path)
    if (path / CONFIG).exists() and not overwrite:
        raise RunDirError(
            f"--out {str(path)!r}: already holds a run; use `svgx resume {path}` to continue it, "
            "--overwrite to replace it, or another directory"
        )
    if overwrite:
        for name in (METRICS, CHECKPOINT, CURVE, STOPPED):
            (path / name).unlink(missing_ok=True)
        for snapshot in policy_snapshots(path).values():
            snapshot.unlink()
    atomic_write_text(path / CONFIG, spec.to_json())
    return path


def read_spec(path: str | pathlib.Path) -> RunSpec:
    path = pathlib.Path(path)
    if not (path / CONFIG).is_file():
        raise RunDirError(f"{str(path)!r}: not a run directory (no {CONFIG})")
    return RunSpec.from_json((path / CONFIG).read_text(), where=str(path / CONFIG))


def write_metrics(path: str | pathlib.Path, history: list[dict[str, np.ndarray]]) -> None:
    """All chunks so far, one line per chunk and seed."""
    lines = []
    for chunk, metrics in enumerate(history):
        n_seeds = len(next(iter(metrics.values())))
        for seed in range(n_seeds):
            row = {"chunk": chunk, "seed": seed}
            row.update({name: _json_number(values[seed]) for name, values in metrics.items()})
            lines.append(json.dumps(row))
    atomic_write_text(pathlib.Path(path) / METRICS, "".join(line + "\n" for line in lines))


def _json_number(x):
    x = np.asarray(x).item()
    return x if np.isfinite(x) else None  # JSON has no NaN; None reads back as NaN


def read_metrics(path: str | pathlib.Path) -> list[dict[str, np.ndarray]]:
    """The metrics file as one dict per chunk of ``name -> [n_seeds]`` arrays."""
    file = pathlib.Path(path) / METRICS
    if not file.exists():
        return []
    rows = []
    for number, line in enumerate(file.read_text().splitlines(), 1):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            raise RunDirError(
                f"{file}:{number}: not a JSON line; the metrics file is corrupt"
            ) from None
    history: list[dict[str, list]] = []
    for row in rows:
        chunk, seed = row.pop("chunk"), row.pop("seed")
        while len(history) <= chunk:
            history.append({})
        for name, value in row.items():
            history[chunk].setdefault(name, {})[seed] = np.nan if value is None else value
    return [{name: np.array([v[s] for s in sorted(v)]) for name, v in m.items()} for m in history]


# --- checkpoints -------------------------------------------------------------------


def _is_key(x) -> bool:
    """A typed PRNG key array (or its ``eval_shape``)."""
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct)) and jax.dtypes.issubdtype(
        x.dtype, jax.dtypes.prng_key
    )


def unwrap_keys(tree):
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def save_checkpoint(path: str | pathlib.Path, state, chunks_done: int) -> None:
    """``state`` (any pytree of arrays, e.g. a batched TrainState) after ``chunks_done`` chunks."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, (jnp.asarray(chunks_done, jnp.int32), unwrap_keys(state)))
    atomic_write_bytes(pathlib.Path(path) / CHECKPOINT, buffer.getvalue())


def load_checkpoint(path: str | pathlib.Path, like):
    """``(state, chunks_done)`` from ``path``, shaped like ``like`` (a state or its
    ``eval_shape``)."""
    file = pathlib.Path(path) / CHECKPOINT
    if not file.is_file():
        raise RunDirError(f"{str(file)!r}: no checkpoint to resume from")
    chunks_done, state = _load_leaves(file, (np.zeros((), np.int32), like))
    return state, int(chunks_done)


def save_policies(path: str | pathlib.Path, policy, env_steps: int) -> None:
    """``policy`` (every seed's, batched) after the chunk that ended at ``env_steps``
    environment steps per seed, as ``DIR/policies/steps-NNNNNNNNN.eqx``."""
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, unwrap_keys(policy))
    folder = pathlib.Path(path) / POLICIES
    folder.mkdir(exist_ok=True)
    atomic_write_bytes(folder / f"steps-{env_steps:09d}.eqx", buffer.getvalue())


def policy_snapshots(path: str | pathlib.Path) -> dict[int, pathlib.Path]:
    """The policy snapshots of the run in ``path``: environment steps per seed -> file."""
    folder = pathlib.Path(path) / POLICIES
    found = (re.fullmatch(r"steps-(\d+)\.eqx", f.name) for f in folder.glob("steps-*.eqx"))
    return {int(m[1]): folder / m[0] for m in sorted(found, key=lambda m: int(m[1])) if m}


def load_policies(file: str | pathlib.Path, like):
    """Every seed's policy from a snapshot ``file`` (:func:`save_policies`), shaped like
    ``like`` (the batched policy or its ``eval_shape``)."""
    return _load_leaves(pathlib.Path(file), like)


def _load_leaves(file: pathlib.Path, like):
    """A pytree shaped like ``like`` (arrays, typed PRNG keys or their ``eval_shape``)
    from ``file``; a corrupt file or one of another shape is a :class:`RunDirError`."""
    keys = jax.tree.map(_is_key, like)
    template = jax.tree.map(
        lambda x: jax.eval_shape(jax.random.key_data, x) if _is_key(x) else x,
        like,
    )
    template = jax.tree.map(
        lambda x: np.zeros(x.shape, x.dtype) if _is_array_like(x) else x, template
    )
    try:
        with open(file, "rb") as f:
            tree = eqx.tree_deserialise_leaves(f, template)
            if f.read(1):
                raise ValueError("trailing bytes")
    except Exception as error:
        raise RunDirError(
            f"{str(file)!r}: corrupt or from another run configuration "
            f"({type(error).__name__}: {error})"
        ) from None
    return jax.tree.map(
        lambda x, is_key: jax.random.wrap_key_data(x) if is_key else jnp.asarray(x), tree, keys
    )


def _is_array_like(x) -> bool:
    return isinstance(x, (jax.Array, jax.ShapeDtypeStruct, np.ndarray))


# --- runs that went non-finite -------------------------------------------------------


def write_stopped(path: str | pathlib.Path, divergence: Divergence) -> None:
    """Records that the run in ``path`` stopped non-finite, where and why."""
    atomic_write_text(
        pathlib.Path(path) / STOPPED, json.dumps(dataclasses.asdict(divergence), indent=2)
    )


def read_stopped(path: str | pathlib.Path) -> Divergence | None:
    """Where and why the run in ``path`` stopped non-finite, or None if it did not."""
    file = pathlib.Path(path) / STOPPED
    if not file.is_file():
        return None
    try:
        return Divergence(**json.loads(file.read_text()))
    except (json.JSONDecodeError, TypeError) as error:
        raise RunDirError(f"{str(file)!r}: corrupt ({error})") from None


def check_resumable(path: str | pathlib.Path) -> None:
    """Raises :class:`RunDirError` when the run in ``path`` stopped non-finite:
    resuming would repeat the same chunk (runs are deterministic)."""
    if (divergence := read_stopped(path)) is not None:
        raise RunDirError(
            f"{str(path)!r}: the run stopped because {divergence}; resuming would repeat it, "
            "start a new run (e.g. with smaller learning rates)"
        )


# --- sweep groups --------------------------------------------------------------------

MEMBERS = "members.json"  # in a sweep group's directory: each member's hyperparameters and seed


def member_labels(path: str | pathlib.Path) -> list[tuple[str, np.ndarray]] | None:
    """For a sweep group directory: ``(label, member indices)`` per hyperparameter
    combination, from its ``members.json``; ``None`` for a plain run directory. A label
    names the values that vary within the group ("" when none does)."""
    file = pathlib.Path(path) / MEMBERS
    if not file.is_file():
        return None
    members = json.loads(file.read_text())
    varying = [k for k in members[0] if k != "seed" and len({repr(m[k]) for m in members}) > 1]
    combos: dict[str, list[int]] = {}
    for i, member in enumerate(members):
        label = ", ".join(f"{k}={member[k]}" for k in varying)
        combos.setdefault(label, []).append(i)
    return [(label, np.asarray(indices)) for label, indices in combos.items()]
