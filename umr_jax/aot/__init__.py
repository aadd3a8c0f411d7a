"""Ahead-of-time compilation of the stages for TPU topologies (`umr-jax compile`)."""
