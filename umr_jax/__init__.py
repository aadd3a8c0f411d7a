"""umr-jax: unsupervised multilingual dense retrieval (UMR) in JAX/Flax."""

__version__ = "0.1.0"
