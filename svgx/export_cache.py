"""The export cache: traced programs kept on disk, so a second run skips tracing.

JAX's persistent compilation cache (:mod:`svgx.cache`) saves XLA's compilation,
but a run still traces its programs in Python first (for a cart-pole chunk, MJX's
step under ``vmap``, ``scan`` and ``grad``: 16-17 s on 2 cores
beside other jobs, 31-35 s before the tasks jitted their physics). This cache keeps
the traced program itself, as the StableHLO of :func:`jax.export.export`, so a
second run of the same configuration loads it instead of tracing, and compiles it
from the compilation cache.

An entry is keyed by a hash of everything that fixes the program (:func:`key`): the
resolved :class:`~svgx.config.Config`, the shapes and dtypes of every input
(hyperparameters are inputs, so their values are not in the key), the source of
``svgx`` and ``envs`` (any code change is a miss) and of the algorithm's and task's
classes, the versions of jax, jaxlib, mujoco, MJX, equinox, optax and numpy, the
JAX settings that change traced programs, the backend and the device count. An entry
holds its key and a SHA-256 of its bytes; one that cannot be read, is damaged, or
holds another key is a miss, traced again and rewritten atomically. Cold or warm,
the program that runs is the one loaded from the cache's bytes, so results do not
depend on whether the entry was there.

Only single-device programs are cached (several devices or processes trace as
before). It is on by default on CPU only (``SVGX_EXPORT_CACHE=1`` turns it on elsewhere:
unchecked there, see :func:`enabled`). ``SVGX_EXPORT_CACHE=0`` turns the cache off
(do so when patching code at run time:
it is not in a file, so not in the key; the test suite does); its directory is
``$SVGX_EXPORT_CACHE_DIR``, else ``exported/`` inside the compilation cache's
directory (``~/.cache/svgx/jax/CPU/exported`` by default, ``CPU`` the name
:func:`svgx.cache.cpu_fingerprint` gives); deleting it clears the cache.
``SVGX_EXPORT_CACHE_SALT`` is added to every key (a code change without one).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import importlib.metadata
import inspect
import json
import os
import pathlib
import sys
import warnings
from collections.abc import Callable

import jax
from jax.export import Exported

from svgx.io import atomic_write_bytes

ENV_VAR = "SVGX_EXPORT_CACHE"
DIR_VAR = "SVGX_EXPORT_CACHE_DIR"
SALT_VAR = "SVGX_EXPORT_CACHE_SALT"
# Changes whenever the entry format below changes.
FORMAT = 2
MAGIC = b"svgx-exported\n"
PACKAGES = ("jax", "jaxlib", "mujoco", "mujoco-mjx", "equinox", "optax", "numpy")
# JAX settings that change what a traced function becomes.
JAX_SETTINGS = (
    "jax_enable_x64",
    "jax_default_prng_impl",
    "jax_threefry_partitionable",
    "jax_default_matmul_precision",
    "jax_numpy_rank_promotion",
    "jax_numpy_dtype_promotion",
)
ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ("svgx", "envs")

# What happened to each program this process looked up: ``(name, "hit" | "miss")``
# (tests and benchmarks read it).
EVENTS: list[tuple[str, str]] = []


def enabled() -> bool:
    """``SVGX_EXPORT_CACHE``: ``0`` off, ``1`` on; unset, on for the CPU backend only.
    On GPU and TPU it is off unless asked for: a loaded program skips the lazy set-up
    that jaxlib gives some kernels when it lowers them (on CPU, LAPACK's, which
    :func:`_load` does by hand), and that has only been checked on CPU. Code patched at
    run time (monkeypatching a task or an algorithm) is not in the key, which is made
    from source files: turn the cache off there (the test suite does, in
    tests/conftest.py)."""
    value = os.environ.get(ENV_VAR)
    if value is not None:
        return value != "0"
    return jax.default_backend() == "cpu"


def directory() -> pathlib.Path:
    """``$SVGX_EXPORT_CACHE_DIR``, else ``exported/`` in the compilation cache's directory."""
    if os.environ.get(DIR_VAR):
        return pathlib.Path(os.environ[DIR_VAR]).expanduser()
    from svgx.cache import cpu_fingerprint, default_directory

    compilation = jax.config.jax_compilation_cache_dir
    base = compilation or default_directory() / cpu_fingerprint()
    return pathlib.Path(base).expanduser() / "exported"


@functools.cache
def _source_hash() -> str:
    """SHA-256 over every file of ``svgx/`` and ``envs/`` (names and bytes)."""
    digest = hashlib.sha256()
    for package in SOURCES:
        for path in sorted((ROOT / package).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                digest.update(str(path.relative_to(ROOT)).encode() + b"\0")
                digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()


def _class_sources(*objects) -> list[str]:
    """Hashes of the files defining the classes of ``objects`` (with their bases) that
    lie outside ``svgx/`` and ``envs/`` (an algorithm registered by the user)."""
    hashes = set()
    for obj in objects:
        for cls in type(obj).__mro__:
            try:
                path = pathlib.Path(inspect.getsourcefile(cls)).resolve()
            except (TypeError, OSError):
                continue
            if not any(path.is_relative_to(ROOT / package) for package in SOURCES):
                hashes.add(f"{cls.__module__}.{cls.__qualname__}:{_file_hash(path)}")
    return sorted(hashes)


@functools.cache
def _file_hash(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _versions() -> dict[str, str]:
    versions = {"python": sys.version}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "absent"
    return versions


def _describe(aval) -> str:
    """Shape, dtype and weak type of an array, aval or ShapeDtypeStruct."""
    return f"{aval.dtype}{list(aval.shape)}{'~' if getattr(aval, 'weak_type', False) else ''}"


def key(name: str, config, leaves, *, n_devices: int) -> str:
    """The cache key of program ``name`` of ``config`` on inputs ``leaves`` (flattened
    arrays or ShapeDtypeStructs) over ``n_devices`` devices."""
    env = config.make_env()
    material = dict(
        format=FORMAT,
        name=name,
        config=json.dumps(dataclasses.asdict(config), sort_keys=True, default=repr),
        inputs=[_describe(leaf) for leaf in leaves],
        source=_source_hash(),
        classes=_class_sources(config.algorithm, env),
        versions=_versions(),
        settings={setting: str(getattr(jax.config, setting)) for setting in JAX_SETTINGS},
        backend=jax.default_backend(),
        device_kind=jax.devices()[0].device_kind,
        device_count=jax.device_count(),
        process_count=jax.process_count(),
        n_devices=n_devices,
        salt=os.environ.get(SALT_VAR, ""),
    )
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


# --- entries ---------------------------------------------------------------------------
#
# An entry is MAGIC, one line of JSON (the key, the SHA-256 of the rest, the inputs'
# shapes and the structure of the outputs' ``aux`` part), then the program as
# jax.export serialises it (Exported.serialize, a flatbuffer).


def _to_bytes(entry_key: str, exported: Exported, aux: object) -> bytes:
    body = exported.serialize()
    header = dict(
        key=entry_key,
        sha256=hashlib.sha256(body).hexdigest(),
        in_avals=[_describe(a) for a in exported.in_avals],
        aux=aux,
    )
    return MAGIC + json.dumps(header).encode() + b"\n" + body


def _from_bytes(data: bytes, entry_key: str, in_avals: list) -> tuple[Exported, object]:
    """The Exported and ``aux`` structure of an entry; raises if it is damaged, holds
    another key or takes other inputs."""
    if not data.startswith(MAGIC):
        raise ValueError("not an entry")
    line, _, body = data[len(MAGIC) :].partition(b"\n")
    header = json.loads(line)
    if header["key"] != entry_key:
        raise ValueError("an entry of another key")
    if hashlib.sha256(body).hexdigest() != header["sha256"]:
        raise ValueError("damaged")
    if header["in_avals"] != [_describe(a) for a in in_avals]:
        raise ValueError("other inputs")
    exported = jax.export.deserialize(bytearray(body))
    if exported.nr_devices != 1 or [_describe(a) for a in exported.in_avals] != header["in_avals"]:
        raise ValueError("not the program of these inputs")
    return exported, header["aux"]


def _skeleton(tree) -> object:
    """A JSON description of a tree of dicts (string keys) and tuples of arrays."""
    if isinstance(tree, dict):
        return {"dict": {k: _skeleton(v) for k, v in tree.items()}}
    if isinstance(tree, tuple):
        return {"tuple": [_skeleton(v) for v in tree]}
    if tree is None:
        return {"none": None}
    return {"leaf": None}


def _tree(skeleton):
    """The PyTreeDef of a :func:`_skeleton`."""

    def build(s):
        ((kind, value),) = s.items()
        if kind == "dict":
            return {k: build(v) for k, v in value.items()}
        if kind == "tuple":
            return tuple(build(v) for v in value)
        return None if kind == "none" else 0

    return jax.tree.structure(build(skeleton))


# --- programs --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CachedProgram:
    """``function`` (a jitted ``(state, aux)``-valued function), traced once and kept in
    the export cache. ``lower(*args)`` looks the program up (exporting it on a miss) and
    lowers the loaded program, called through ``jax.jit`` with ``jit_options``.

    ``state_tree(*args)`` gives the structure of the output's state part (None: the
    function returns no state); ``returns`` picks what the compiled function returns:
    ``"state"``, ``"aux"`` or ``"both"`` (the pair).
    """

    function: Callable
    name: str
    config: object
    state_tree: Callable
    returns: str
    jit_options: dict

    def lower(self, *args):
        leaves, in_tree = jax.tree.flatten(args)
        state_tree = self.state_tree(*args)
        n_state = 0 if state_tree is None else state_tree.num_leaves
        entry_key = key(self.name, self.config, leaves, n_devices=1)
        path = directory() / f"{self.name}-{entry_key}.bin"
        avals = [jax.ShapeDtypeStruct(leaf.shape, leaf.dtype) for leaf in leaves]
        loaded = _load(path, entry_key, avals)
        EVENTS.append((self.name, "miss" if loaded is None else "hit"))
        if loaded is None:
            loaded = _export_and_store(self.function, in_tree, avals, path, entry_key)
        exported, aux = loaded
        aux_tree = _tree(aux)

        def call(*args):
            out = exported.call(*jax.tree.leaves(args))
            state = None if state_tree is None else jax.tree.unflatten(state_tree, out[:n_state])
            aux = jax.tree.unflatten(aux_tree, out[n_state:])
            return {"state": state, "aux": aux, "both": (state, aux)}[self.returns]

        return jax.jit(call, **self.jit_options).lower(*args)


def _load(path: pathlib.Path, entry_key: str, avals) -> tuple[Exported, object] | None:
    try:
        exported, aux = _from_bytes(path.read_bytes(), entry_key, avals)
    except Exception:  # missing, damaged, stale or unreadable: a miss
        return None
    if b"lapack_" in exported.mlir_module_serialized and not _initialize_lapack():
        return None
    return exported, aux


def _initialize_lapack() -> bool:
    """Gives XLA:CPU's LAPACK kernels their routines. jax does it when it first lowers a
    linear-algebra op; a program loaded from the cache lowers none, and its Cholesky (in
    MJX's solver) would call a null pointer (a segmentation fault). False if this jaxlib
    has no such step (the entry is then a miss and is traced, which initialises them)."""
    try:
        from jaxlib import lapack

        lapack._lapack.initialize()
    except (ImportError, AttributeError):
        return False
    return True


def _export_and_store(function, in_tree, avals, path, entry_key) -> tuple[Exported, object]:
    """Traces ``function``, stores the entry, and returns it as read back from its bytes
    (so that a miss runs the very program a later hit will)."""
    aux_structure = []

    def flat(*leaves):
        state, aux = function(*jax.tree.unflatten(in_tree, leaves))
        aux_structure.append(_skeleton(aux))
        return tuple(jax.tree.leaves(state)) + tuple(jax.tree.leaves(aux))

    exported = jax.export.export(jax.jit(flat))(*avals)
    data = _to_bytes(entry_key, exported, aux_structure[-1])
    try:
        atomic_write_bytes(path, data)
    except OSError as error:
        warnings.warn(f"export cache: could not write {path}: {error}", stacklevel=2)
    return _from_bytes(data, entry_key, avals)
