import os

# Training tests are dominated by XLA compile time, not run time: the runner's
# programs compile without LLVM's backend optimisations (svgx.runner.FAST_COMPILE;
# measured 64 s -> 38 s for two training cases). Subprocesses inherit it.
os.environ.setdefault("SVGX_FAST_COMPILE", "1")
# Tests monkeypatch tasks and algorithms, which the export cache's key (made from source
# files) cannot see; tests/test_warm_start.py turns it on where it is the subject.
os.environ.setdefault("SVGX_EXPORT_CACHE", "0")

import pytest

import svgx

# Tests share one persistent compilation cache (overridable with SVGX_CACHE_DIR), so a
# second run of the suite does not recompile.
svgx.enable_compilation_cache()


def pytest_report_header(config):
    import jax

    cache = jax.config.jax_compilation_cache_dir
    return f"jax {jax.__version__}, devices {jax.devices()}, cache {cache}"


@pytest.fixture(scope="session")
def env_names():
    import envs

    return envs.names()
