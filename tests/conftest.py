import os

import pytest

import svgx

# Tests share one persistent compilation cache (overridable with SVGX_CACHE_DIR), so a
# second run of the suite does not recompile.
svgx.enable_compilation_cache()


def pytest_report_header(config):
    import jax

    return f"jax {jax.__version__}, devices {jax.devices()}, cache {os.environ.get('SVGX_CACHE_DIR', '~/.cache/svgx/jax')}"


@pytest.fixture(scope="session")
def env_names():
    import envs

    return envs.names()
