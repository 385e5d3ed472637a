"""svgx: Stochastic Value Gradients (Heess et al., 2015) in JAX on MuJoCo MJX."""

import os

# XLA:CPU logs an error-level line for every executable it loads from the
# persistent compilation cache (it mistakes two LLVM tuning flags for missing CPU
# features: jax-ml/jax#38445, openxla/xla#44565) although the load succeeds.
# Hush XLA's C++ logs unless the user set their level; this must happen before
# jaxlib is loaded, so it only takes effect when svgx (or envs) is imported first.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from svgx.cache import enable_compilation_cache

__all__ = ["enable_compilation_cache"]
__version__ = "0.1.0"
