"""Fixtures the stage and loop tests share with the trainer and scorer tests."""

from tests.labeling.conftest import tiny_scorer_folder  # noqa: F401
from tests.training.conftest import tiny_retriever  # noqa: F401
