"""The chunked runner: a run as jitted chunks, with evaluation and progress between them.

The pure run (:func:`svgx.train.make_train`) is split into ``config.chunks``
equal chunks; each is one call of ``jit(vmap(chunk))`` over seeds (and swept
hyperparameters), compiled once. Between chunks the runner evaluates the mean
action on a fixed set of evaluation episodes, records the metrics of every seed
and reports progress.

Seeds are sharded over devices: the seed axis is laid out over a 1-D mesh of as
many devices as split the seeds evenly (the largest divisor of the seed count up to
the device count; every device when the seed count is a multiple of it), and the
same code runs on one CPU, on several cores of one (:mod:`svgx.devices`), on several
GPUs, or on several hosts after ``jax.distributed.initialize()`` (every process
runs the same command; process 0 writes the files).

:func:`run_in_dir` adds a run directory (:mod:`svgx.rundir`): metrics, a
checkpoint and a snapshot of the policies after every chunk, a learning-curve PNG,
Ctrl-C stops after the current chunk with everything saved, and :func:`resume`
continues a run to the same final state, bit for bit, as if it had never stopped.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import os
import pathlib
import signal
import sys
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from svgx import export_cache, rundir
from svgx.config import Config, Hyperparams
from svgx.divergence import (
    NonFiniteError,
    NonFiniteLimits,
    all_finite,
    first_divergence,
    first_nonfinite_part,
)
from svgx.train import TrainState, make_train, parameters

# The default of ``run(limits=...)`` (a frozen dataclass, so one shared instance is safe).
DEFAULT_LIMITS = NonFiniteLimits()


@dataclasses.dataclass
class Run:
    """A finished (or interrupted) run.

    Attributes:
      config, hparams: what ran (``hparams`` leaves have a leading seed axis when swept).
      state: the final :class:`~svgx.train.TrainState` of every seed (leading axis);
        ``None`` for a finished run read back from a directory without its checkpoint.
      metrics: one dict per chunk of ``name -> [n_seeds]`` arrays.
      interrupted: the run stopped early (Ctrl-C) after ``len(metrics)`` chunks.
    """

    config: Config
    hparams: Hyperparams
    state: TrainState | None
    metrics: list[dict[str, np.ndarray]]
    interrupted: bool = False

    def series(self, name: str) -> np.ndarray:
        """Metric ``name`` as ``[chunks, n_seeds]``."""
        return np.stack([m[name] for m in self.metrics])


def hyperparams_axes(hparams: Hyperparams, n_seeds: int):
    """``vmap`` axes of ``hparams``: 0 for leaves with a leading seed axis, else None."""

    def axis(x):
        x = jnp.asarray(x)
        if x.ndim == 0:
            return None
        if x.ndim != 1 or x.shape[0] != n_seeds:
            raise ValueError(
                f"a swept hyperparameter has shape {x.shape} but there are {n_seeds} seeds; "
                "give one value per seed (or a scalar)"
            )
        return 0

    return jax.tree.map(axis, hparams)


FAST_COMPILE = "SVGX_FAST_COMPILE"


def compiler_options() -> dict | None:
    """With ``SVGX_FAST_COMPILE=1``, XLA compiles without LLVM's backend optimisations:
    about half the compile time, slower programs; for short runs (tests, debugging)."""
    return {"xla_backend_optimization_level": 0} if os.environ.get(FAST_COMPILE) == "1" else None


def _vmapped(config: Config, hparams: Hyperparams, n_seeds: int) -> dict[str, Callable]:
    """``init``, ``chunk`` (= ``iterate`` then ``diagnostics``), ``iterate``,
    ``diagnostics`` and ``evaluate`` of ``config``, ``vmap`` ped over seeds (not jitted)."""
    train = make_train(config)
    axes = hyperparams_axes(hparams, n_seeds)

    def evaluate_and_check(state, key):
        finite = {part: all_finite(tree) for part, tree in parameters(state).items()}
        return train.evaluate(state, key), finite

    return dict(
        init=jax.vmap(train.init, in_axes=(0, axes)),
        chunk=jax.vmap(train.chunk, in_axes=(0, axes)),
        iterate=jax.vmap(train.iterate, in_axes=(0, axes)),
        diagnostics=jax.vmap(train.diagnostics, in_axes=(0, axes)),
        evaluate=jax.vmap(evaluate_and_check),
    )


def _jit_options(mesh: Mesh | None) -> dict:
    sharded = None if mesh is None else NamedSharding(mesh, PartitionSpec("seeds"))
    return dict(compiler_options=compiler_options(), out_shardings=sharded)


def compiled(
    config: Config,
    hparams: Hyperparams,
    n_seeds: int,
    mesh: Mesh | None = None,
    *,
    diagnostics: bool = True,
):
    """``(init, chunk, evaluate)``, each ``jit(vmap(…))`` over seeds; ``evaluate``
    also reports, per part, whether each seed's parameters are all finite. With a
    ``mesh`` (:func:`seed_mesh`), every output stays sharded over seeds, so the state a
    chunk returns has the layout the next chunk was compiled for.

    ``diagnostics=False``: ``chunk`` is the training iterations alone, without the
    end-of-chunk diagnostics (the state it returns is the same). For timing: a run
    computes them once per chunk of thousands of iterations, and a benchmark's short
    chunk would count them many times over (the simulator's Jacobians of the model-error
    metrics cost as much as tens of learned-model iterations on the cheetah)."""
    vmapped = _vmapped(config, hparams, n_seeds)
    options = _jit_options(mesh)
    return (
        jax.jit(vmapped["init"], **options),
        jax.jit(vmapped["chunk" if diagnostics else "iterate"], donate_argnums=0, **options),
        jax.jit(vmapped["evaluate"], **options),
    )


def programs(config: Config, hparams: Hyperparams, n_seeds: int, mesh: Mesh):
    """``(init, iterate, diagnostics, evaluate)`` as :func:`run` uses them: a chunk
    is ``iterate`` then ``diagnostics`` (its learning metrics), two programs so that
    the second compiles while the first chunk trains. With the export cache
    (:mod:`svgx.export_cache`; on unless ``SVGX_EXPORT_CACHE=0``) on a one-device mesh,
    each is traced once and loaded from the cache by later runs. Each has
    ``lower(*args)`` (then ``.compile()``), as a jitted function does."""
    vmapped = _vmapped(config, hparams, n_seeds)
    options = _jit_options(mesh)
    if not (export_cache.enabled() and mesh.devices.size == 1 and jax.process_count() == 1):
        return (
            jax.jit(vmapped["init"], **options),
            jax.jit(vmapped["iterate"], donate_argnums=0, **options),
            jax.jit(vmapped["diagnostics"], **options),
            jax.jit(vmapped["evaluate"], **options),
        )
    init, iterate = vmapped["init"], vmapped["iterate"]
    diagnostics, evaluate = vmapped["diagnostics"], vmapped["evaluate"]

    def program(function, name, state_tree, returns, **extra):
        return export_cache.CachedProgram(
            function, name, config, state_tree, returns, dict(options, **extra)
        )

    return (
        program(
            lambda keys, hp: (init(keys, hp), None),
            "init",
            lambda keys, hp: jax.tree.structure(jax.eval_shape(init, keys, hp)),
            "state",
        ),
        program(
            iterate,
            "iterate",
            lambda state, hp: jax.tree.structure(state),
            "both",
            donate_argnums=0,
        ),
        program(
            lambda state, hp: (None, diagnostics(state, hp)),
            "diagnostics",
            lambda state, hp: None,
            "aux",
        ),
        program(
            lambda state, keys: (None, evaluate(state, keys)),
            "evaluate",
            lambda state, keys: None,
            "aux",
        ),
    )


def _compile(program, float64: bool, *args):
    """``program.lower(*args).compile()`` (``program.compile()`` without ``args``) under
    the run's precision: JAX's x64 switch is per thread, and this runs in one."""
    with jax.enable_x64(float64):
        return (program.lower(*args) if args else program).compile()


def _shape_of(x: jax.Array) -> jax.ShapeDtypeStruct:
    weak_type = getattr(x, "weak_type", False)  # PRNG key arrays have none
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding, weak_type=weak_type)


def seed_mesh(n_seeds: int, devices=None) -> Mesh:
    """A 1-D mesh (axis ``"seeds"``) over the first ``n`` devices, ``n`` the largest
    divisor of ``n_seeds`` up to their number (6 seeds on 4 devices: 3, each holding 2)."""
    devices = jax.devices() if devices is None else devices
    n = max(d for d in range(1, min(n_seeds, len(devices)) + 1) if n_seeds % d == 0)
    return Mesh(np.asarray(devices[:n]), ("seeds",))


def layout_note(n_seeds: int, used: int, available: int) -> str | None:
    """A line for the progress when the seeds, laid out on ``used`` of ``available``
    devices (:func:`seed_mesh`), leave some idle that they could use (5 seeds on 2
    devices run on one), else None."""
    if used >= min(n_seeds, available):
        return None
    return (
        f"note: {n_seeds} seeds run on {used} of {available} devices (the most that split "
        f"them evenly); a multiple of {available} seeds would use them all"
    )


def _put(tree, mesh: Mesh):
    """Host arrays onto the mesh: leading axis sharded over seeds (scalars replicated).

    Works with several processes (each holds the whole host array and gives the
    devices it owns their part).
    """

    def put(x):
        x = (
            np.asarray(x)
            if not jax.dtypes.issubdtype(getattr(x, "dtype", None), jax.dtypes.prng_key)
            else x
        )
        spec = PartitionSpec("seeds") if np.ndim(x) > 0 else PartitionSpec()
        sharding = NamedSharding(mesh, spec)
        if isinstance(x, jax.Array) and jax.process_count() == 1:
            return jax.device_put(x, sharding)
        return jax.make_array_from_callback(np.shape(x), sharding, lambda index: x[index])

    return jax.tree.map(put, tree)


def _gather(tree):
    """Every process gets the whole of each (seed-sharded) array, as numpy (PRNG keys
    as their raw ``uint32`` data)."""
    tree = rundir.unwrap_keys(tree)
    if jax.process_count() == 1:
        return jax.device_get(tree)
    return multihost_utils.process_allgather(tree, tiled=True)


def _keys(seed: int, n_seeds: int):
    return jax.random.split(jax.random.key(seed), n_seeds)


def evaluation_keys(seed: int, n_seeds: int):
    """Each seed's key for its evaluation episodes (the same after every chunk) in a run
    started from ``seed`` (``svgx render`` shows these episodes)."""
    return _keys(seed + 1, n_seeds)


def run(
    config: Config,
    hparams: Hyperparams | None = None,
    *,
    seeds: int = 1,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
    on_chunk: Callable[[int, TrainState, list], None] | None = None,
    start: tuple[TrainState, list] | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    devices=None,
    limits: NonFiniteLimits = DEFAULT_LIMITS,
) -> Run:
    """Trains ``seeds`` seeds of ``config`` in one program and returns the :class:`Run`.

    ``progress`` receives one line per chunk (default: print to stderr) and a
    summary per seed at the end; ``on_chunk(index, state, history)`` is called
    after each chunk (checkpoints); ``start=(state, history)`` continues from a
    saved state after ``len(history)`` chunks; ``should_stop()`` is asked after
    each chunk (Ctrl-C).

    Raises :class:`~svgx.divergence.NonFiniteError` at the end of the first chunk
    in which a seed's parameters stop being finite or its non-finite events pass
    ``limits`` (``on_chunk`` is not called for that chunk; the error carries the
    metrics of every seed up to it).
    """
    if not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds={seeds!r}: must be an integer >= 1")
    hparams = (Hyperparams() if hparams is None else hparams).check()
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    with jax.enable_x64(config.float64):
        dtype = jnp.float64 if config.float64 else jnp.float32
        hparams = hparams.as_arrays(dtype)
        mesh = seed_mesh(seeds, devices)
        available = len(jax.devices() if devices is None else devices)
        note = layout_note(seeds, mesh.devices.size, available)
        if note:
            progress(note)
        if start is not None and len(start[1]) >= config.chunks:  # complete: compile nothing
            result = Run(config, hparams, _put(start[0], mesh), list(start[1]))
            _summary(result, progress)
            return result
        init, iterate, diagnostics, evaluate = programs(config, hparams, seeds, mesh)
        hp = _put(hparams, mesh)
        eval_keys = _put(evaluation_keys(seed, seeds), mesh)  # the same episodes every time
        wall = time.perf_counter()
        if start is None:
            keys = _put(_keys(seed, seeds), mesh)
            init = init.lower(keys, hp).compile()
            compile_time = time.perf_counter() - wall
            state, history, offset, compile_offset = init(keys, hp), [], 0.0, 0.0
        else:
            state, history = start
            state, history = _put(state, mesh), list(history)
            offset = float(history[-1]["wall_time"][0]) if history else 0.0
            compile_offset = float(history[-1].get("compile_time", [0.0])[0]) if history else 0.0
            compile_time = 0.0
        # Compiled ahead of time, so that the compile time is measured, not guessed.
        # XLA compiles the iterations in a thread (it releases the GIL) while Python
        # traces and compiles the evaluation; the diagnostics are traced and compiled
        # in the background while the first chunk trains (waiting for them counts as
        # compile time).
        before = time.perf_counter()
        pool = concurrent.futures.ThreadPoolExecutor(1)
        iterate = pool.submit(_compile, iterate.lower(state, hp), config.float64)
        evaluate = evaluate.lower(state, eval_keys).compile()
        iterate = iterate.result()
        shapes = jax.tree.map(_shape_of, state)  # the thread must not read donated arrays
        diagnostics = pool.submit(_compile, diagnostics, config.float64, shapes, hp)
        pool.shutdown(wait=False)
        compile_time += time.perf_counter() - before
        progress(f"[{config.algo} {config.env}] compiled in {compile_time:.0f}s; training")
        interrupted, ends = False, [time.perf_counter()]
        for index in range(len(history), config.chunks):
            state, metrics = iterate(state, hp)
            if isinstance(diagnostics, concurrent.futures.Future):
                jax.block_until_ready(state)  # then only the wait beyond the chunk counts
                waited = time.perf_counter()
                diagnostics = diagnostics.result()
                compile_time += time.perf_counter() - waited
            metrics = {**metrics, **diagnostics(state, hp)}
            evaluation, finite = _gather(evaluate(state, eval_keys))
            metrics = {
                name: np.asarray(value)
                for name, value in {**_gather(metrics), **evaluation}.items()
            }
            elapsed = offset + time.perf_counter() - wall
            metrics["wall_time"] = np.full(seeds, elapsed)
            metrics["compile_time"] = np.full(seeds, compile_offset + compile_time)
            previous = history[-1] if history else None
            history.append(metrics)
            ends.append(time.perf_counter())
            per_chunk = (ends[-1] - ends[0]) / (len(ends) - 1)  # the ETA's rate
            eta = per_chunk * (config.chunks - index - 1)
            progress(_progress_line(config, index, metrics, previous, elapsed, eta))
            divergence = first_divergence(
                finite, metrics, previous, limits, index + 1, config.chunks
            )
            if divergence is not None:
                result = Run(config, hparams, state, history)
                progress(f"stopped: {divergence}")
                _summary(result, progress)
                raise NonFiniteError(divergence, result)
            if on_chunk is not None:
                on_chunk(index, state, history)
            if should_stop() and index + 1 < config.chunks:
                interrupted = True
                break
    result = Run(config, hparams, state, history, interrupted)
    _summary(result, progress)
    return result


def _progress_line(
    config: Config, index: int, metrics: dict, previous: dict | None, elapsed: float, eta: float
) -> str:
    done = index + 1
    ret = metrics["eval_return"]
    line = (
        f"[{config.algo} {config.env}] chunk {done}/{config.chunks}  "
        f"env steps {int(metrics['env_steps'].max()):,}  "
        f"eval return {ret.mean():+.3f} ± {ret.std():.3f}  "
        f"success {metrics['eval_success'].mean():.0%}  "
        f"{elapsed:.0f}s, ETA {eta:.0f}s"
    )
    counts = _nonfinite_counts(metrics, previous)
    if any(counts.values()):
        line += "  WARNING this chunk: " + ", ".join(f"{n} {what}" for what, n in counts.items())
    diverged = int(metrics["eval_diverged"].sum()) if "eval_diverged" in metrics else 0
    if diverged:
        line += f"  WARNING: {diverged} evaluation episode(s) diverged (ended early, no success)"
    return line


def _nonfinite_counts(metrics: dict, previous: dict | None) -> dict[str, int]:
    """Skipped updates and diverged environment steps, summed over seeds, since ``previous``."""

    def total(name):
        return int(metrics[name].sum() - (previous[name].sum() if previous is not None else 0))

    return {
        "skipped updates": total("nonfinite_updates"),
        "diverged env steps": total("nonfinite_env_steps"),
    }


def _summary(result: Run, progress: Callable[[str], None]) -> None:
    """One line per seed: its last evaluation and, when there were any, its
    non-finite events over the whole run."""
    if not result.metrics:
        return
    last = result.metrics[-1]
    for seed in range(len(last["env_steps"])):
        line = (
            f"seed {seed}: eval return {last['eval_return'][seed]:+.3f}, "
            f"success {last['eval_success'][seed]:.0%} "
            f"after {int(last['env_steps'][seed]):,} env steps"
        )
        skipped, diverged = (
            int(last["nonfinite_updates"][seed]),
            int(last["nonfinite_env_steps"][seed]),
        )
        if skipped or diverged:
            line += (
                f"; WARNING: {skipped} skipped updates, {diverged} diverged env steps in the run"
            )
        progress(line)


# --- run directories ------------------------------------------------------------------


@contextlib.contextmanager
def _stop_on_sigint(progress):
    """While inside: the first Ctrl-C asks the run to stop after the current chunk
    (which is then saved); a second one interrupts at once."""
    requested = []

    def handler(signum, frame):
        if requested:
            signal.signal(signal.SIGINT, signal.default_int_handler)
            raise KeyboardInterrupt
        requested.append(True)
        progress(
            "interrupt: stopping after the current chunk and saving (Ctrl-C again to abort now)"
        )

    if jax.process_index() != 0 or not _in_main_thread():
        yield lambda: False
        return
    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: bool(requested)
    finally:
        signal.signal(signal.SIGINT, previous)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# The learning curve is redrawn after a chunk at most this often (a plot costs about
# 0.25 s, as much as a whole chunk of a small task), and always when the run ends.
CURVE_EVERY_S = 30.0


def run_in_dir(
    out: str | pathlib.Path,
    spec: rundir.RunSpec | None = None,
    *,
    overwrite: bool = False,
    progress: Callable[[str], None] | None = None,
    devices=None,
) -> Run:
    """Runs ``spec`` into the run directory ``out`` (or, with ``spec=None``, resumes the
    run ``out`` holds from its last checkpoint). Writes metrics and a checkpoint after
    every chunk, and the learning curve every ``CURVE_EVERY_S`` seconds and at the end.

    Holds the directory while it runs (:func:`svgx.rundir.exclusive`): another process
    on the same directory raises :class:`~svgx.rundir.RunDirInUse`."""
    out = pathlib.Path(out)
    if spec is None:
        rundir.read_spec(out)  # not a run directory: say so before making anything
    writer = jax.process_index() == 0
    with rundir.exclusive(out) if writer else contextlib.nullcontext():
        return _run_in_dir(out, spec, overwrite, progress, devices, writer)


def _run_in_dir(out, spec, overwrite, progress, devices, writer) -> Run:
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    start = None
    if spec is None:
        spec = rundir.read_spec(out)
        rundir.check_resumable(out)
        if _finished_without_checkpoint(out, spec):
            progress(
                f"{out}: the run is complete ({spec.config.chunks} chunks); nothing to resume "
                "(its directory holds no checkpoint, so the returned run has no state)"
            )
            return Run(spec.config, spec.hparams, None, rundir.read_metrics(out))
        start = _restore(out, spec)
        if start is not None and len(start[1]) >= spec.config.chunks:
            progress(f"{out}: the run is complete ({spec.config.chunks} chunks); nothing to resume")
        elif start is not None:
            progress(f"{out}: resuming after chunk {len(start[1])}/{spec.config.chunks}")
    elif writer:
        rundir.create(out, spec, overwrite=overwrite)

    last_plot, saved = [time.perf_counter()], []

    def plot():
        from svgx.plot import plot_runs

        plot_runs([out], out / rundir.CURVE)
        last_plot[0] = time.perf_counter()

    def save(index, state, history):
        state = _gather(state)
        saved.append(index)
        if writer:
            rundir.write_metrics(out, history)
            rundir.save_policies(out, state.policy, int(np.max(history[-1]["env_steps"])))
            rundir.save_checkpoint(out, state, len(history))
            if time.perf_counter() - last_plot[0] >= CURVE_EVERY_S:
                plot()

    try:
        with _stop_on_sigint(progress) as should_stop:
            result = run(
                spec.config,
                spec.hparams,
                seeds=spec.seeds,
                seed=spec.seed,
                progress=progress,
                on_chunk=save,
                start=start,
                should_stop=should_stop,
                devices=devices,
                limits=spec.limits,
            )
    except NonFiniteError as error:
        # The metrics of every seed up to the bad chunk are kept; its state is not,
        # so the checkpoint stays the last finite one.
        if writer:
            rundir.write_metrics(out, error.run.metrics)
            rundir.write_stopped(out, error.divergence)
            plot()
        raise NonFiniteError(error.divergence, error.run, checkpoint=str(out)) from None
    if writer and saved:
        plot()
    if result.interrupted:
        progress(
            f"stopped after chunk {len(result.metrics)}/{spec.config.chunks}; "
            f"continue with `svgx resume {out}`"
        )
    return result


def state_shape(spec: rundir.RunSpec):
    """The batched TrainState of ``spec`` as shapes (no computation)."""
    with jax.enable_x64(spec.config.float64):
        dtype = jnp.float64 if spec.config.float64 else jnp.float32
        hparams = spec.hparams.as_arrays(dtype)
        init, _, _ = compiled(spec.config, hparams, spec.seeds)
        return jax.eval_shape(init, _keys(spec.seed, spec.seeds), hparams)


def _finished_without_checkpoint(out: pathlib.Path, spec: rundir.RunSpec) -> bool:
    """Whether ``out`` holds every chunk's metrics but no checkpoint: a finished run whose
    large files were left behind, as in the run files committed with a results file
    (``svgx report`` and ``svgx plot`` read them; a sweep resumed from such a copy
    skips them instead of calling them damaged)."""
    return (
        not (out / rundir.CHECKPOINT).exists()
        and len(rundir.read_metrics(out)) >= spec.config.chunks
    )


def _restore(out: pathlib.Path, spec: rundir.RunSpec):
    """``(state, history)`` of the last checkpoint, or None when the run never finished a chunk."""
    if not (out / rundir.CHECKPOINT).exists():
        if rundir.read_metrics(out):
            raise rundir.RunDirError(
                f"{str(out)!r}: metrics but no checkpoint; the run directory is damaged"
            )
        return None
    with jax.enable_x64(spec.config.float64):
        state, chunks_done = rundir.load_checkpoint(out, state_shape(spec))
    if (bad := first_nonfinite_part(parameters(state))) is not None:
        raise rundir.RunDirError(
            f"{str(out / rundir.CHECKPOINT)!r}: "
            f"seed {bad[0]}'s {bad[1]} parameters are not finite; refusing to resume from it"
        )
    history = rundir.read_metrics(out)[:chunks_done]
    if len(history) != chunks_done:
        raise rundir.RunDirError(
            f"{str(out)!r}: the checkpoint is after chunk {chunks_done} "
            f"but metrics hold {len(history)} chunks"
        )
    return state, history
