"""JAX's persistent compilation cache, so a second run does not recompile (and, inside
it, the export cache of :mod:`svgx.export_cache`, so it does not retrace)."""

import gc
import hashlib
import os
import pathlib
import platform

import jax

ENV_VAR = "SVGX_CACHE_DIR"


def default_directory() -> pathlib.Path:
    """``$SVGX_CACHE_DIR``, else ``~/.cache/svgx/jax``."""
    return pathlib.Path(
        os.environ.get(ENV_VAR) or pathlib.Path.home() / ".cache" / "svgx" / "jax"
    ).expanduser()


# The x86 flags of /proc/cpuinfo that name instruction-set extensions (as prefixes), and
# so can change the code XLA generates; the others there (constant_tsc, hypervisor,
# md_clear, ...) describe the kernel, the hypervisor and mitigations, which differ
# between otherwise identical hosts and would split their cache for nothing.
X86_INSTRUCTION_FLAGS = tuple(
    """3dnow abm adx aes amx avx bmi cldemote clflushopt clwb cmov cx16 cx8 f16c fma fsgsbase
    fxsr gfni hle invpcid lahf_lm lzcnt mmx movbe movdir pclmulqdq pni popcnt prefetchw rdpid
    rdrand rdseed rtm serialize sha_ni sse ssse3 tbm tsxldtrk vaes vpclmulqdq waitpkg xop
    xsave""".split()
)


def cpu_fingerprint(cpuinfo: str | os.PathLike = "/proc/cpuinfo") -> str:
    """A name for this host's instruction set: the architecture and a hash of the CPU's
    instruction-set extensions (on x86 those of ``cpuinfo``'s ``flags`` that
    :data:`X86_INSTRUCTION_FLAGS` names, on ARM all its ``Features``; where that file is
    missing, as on macOS, the processor's name stands in for them).

    JAX's cache key holds the platform ("cpu"), its version and the compile options, not
    the CPU's features, while XLA compiles CPU code for the host's features. So a cache
    shared by hosts with different CPUs (a home directory shared across a cluster) can
    hand one host code built for another's instructions, which XLA can only warn about
    on loading ("could lead to SIGILL").
    """
    features = ""
    try:
        with open(cpuinfo) as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() == "flags":
                    isa = (f for f in value.split() if f.startswith(X86_INSTRUCTION_FLAGS))
                    features = " ".join(sorted(isa))
                    break
                if name.strip() == "Features":
                    features = " ".join(sorted(value.split()))
                    break
    except OSError:
        pass
    described = features or platform.processor() or "unknown"
    digest = hashlib.sha256(f"{platform.machine()} {described}".encode()).hexdigest()
    return f"{platform.machine() or 'cpu'}-{digest[:12]}"


def enable_compilation_cache(path: str | os.PathLike | None = None) -> pathlib.Path:
    """Turns on JAX's persistent compilation cache and returns its directory.

    That is a subdirectory of ``path``, else of ``$SVGX_CACHE_DIR``, else of
    ``~/.cache/svgx/jax``, named by :func:`cpu_fingerprint`, so hosts with different
    instruction sets never share compiled code. Every compiled program is cached,
    however quick its compilation. The export cache (:mod:`svgx.export_cache`: traced
    programs) lives in its ``exported/`` subdirectory.
    """
    base = pathlib.Path(path).expanduser() if path else default_directory()
    directory = base / cpu_fingerprint()
    directory.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(directory))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return directory


def release_compiled_programs() -> None:
    """Frees the programs JAX holds compiled in this process (``jax.clear_caches``, then a
    garbage collection), so that a long process that runs one program after another (a
    sweep's groups, a Brax baseline's seeds, an ablation grid's cells) does not keep them
    all; the next one is loaded again from the persistent cache.

    Each loaded CPU executable holds its own memory mappings, and a process may have
    ``vm.max_map_count`` of them (65,530 by default on Linux). Past that, LLVM aborts
    while it loads the next program ("Unable to allocate section memory", inside
    ``compilation_cache.get_executable_and_time``; earlier segfaults in long runs here
    fit the same cause, not proven). Measured: a Brax SAC baseline of 2 seeds on lqg
    left about 2,000 mappings behind per run (1,041 at the start, 9,688 after four
    runs), and 1,285 after each run once released; a Brax sweep died this way after 17
    SAC seeds of contact tasks in one process.
    """
    jax.clear_caches()
    gc.collect()
