"""svgx: Stochastic Value Gradients (Heess et al., 2015) in JAX on MuJoCo MJX."""

from svgx.cache import enable_compilation_cache

__all__ = ["enable_compilation_cache"]
__version__ = "0.1.0"
