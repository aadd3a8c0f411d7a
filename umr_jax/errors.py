"""Errors shared by every stage.

`InputError` is what bad input raises: it names the file, the line or record, and what was
expected, so the CLI can print one line (`file:line: message`) and exit non-zero instead of
a traceback.
"""

from __future__ import annotations

import os


class InputError(ValueError):
    """Bad input: `file:line: what was expected`.

    Attributes:
      path: the offending file (or None when the input is not a file).
      line: 1-based line or record number, or None.
      message: what was wrong and what was expected.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else os.fspath(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return where + self.message


class ModelLoadError(ValueError):
    """A model folder could not be loaded: unknown architecture, or missing, extra or
    mis-shaped tensors. The message lists the offending names."""
