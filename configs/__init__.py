"""The configs shipped with umr-jax, importable as `umr_jax.configs` (pyproject.toml maps this
folder into the package): `--config NAME` loads `NAME.py` from here (see umr_jax/config.py)."""
