"""umr-jax: unsupervised multilingual dense retrieval (UMR) in JAX/Flax."""

from umr_jax.xla_flags import apply_cpu_defaults as _apply_cpu_defaults

__version__ = "0.1.0"

# Before JAX opens a backend: XLA:CPU dot settings measured faster (see umr_jax/xla_flags.py).
_apply_cpu_defaults()
