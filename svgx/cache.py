"""JAX's persistent compilation cache, so a second run does not recompile (and, inside
it, the export cache of :mod:`svgx.export_cache`, so it does not retrace)."""

import os
import pathlib

import jax

ENV_VAR = "SVGX_CACHE_DIR"


def default_directory() -> pathlib.Path:
    """``$SVGX_CACHE_DIR``, else ``~/.cache/svgx/jax``."""
    return pathlib.Path(
        os.environ.get(ENV_VAR) or pathlib.Path.home() / ".cache" / "svgx" / "jax"
    ).expanduser()


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Turns on JAX's persistent compilation cache and returns its directory.

    The directory is ``path``, else ``$SVGX_CACHE_DIR``, else ``~/.cache/svgx/jax``.
    Every compiled program is cached, however quick its compilation. The export cache
    (:mod:`svgx.export_cache`: traced programs) lives in its ``exported/`` subdirectory.
    """
    directory = pathlib.Path(path).expanduser() if path else default_directory()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory
