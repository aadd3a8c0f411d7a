"""Fixtures the stage and loop tests share with the trainer tests."""

from tests.training.conftest import tiny_retriever  # noqa: F401
