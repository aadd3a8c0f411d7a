"""Errors shared by every stage.

`InputError` is what bad input raises: it names the file, the line or record, and what was
expected, so the CLI can print one line (`file:line: message`) and exit non-zero instead of
a traceback. `ModelLoadError` is a model folder that does not load. `describe_os_error` turns
the OS errors a command can meet on the paths it is given (an unwritable output folder, a file
where a folder is expected, a full disk) into the same kind of line. `umr_jax.cli.main` is the
one place that prints them; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import errno
import os
import sys
from typing import NamedTuple


class FlagHint(NamedTuple):
    """Advice that names a command-line flag (`FlagHint("--known-language", "accept others with
    --known-language CODE")`). Code below the commands cannot know which command runs it, so it
    attaches the advice to the error instead of writing the flag into the message; `umr_jax.cli`
    appends it only when the running command has that flag. A message itself names no flag."""

    flag: str
    text: str


def with_hint(err: Exception, flag: str, text: str) -> Exception:
    """`err` with one more `FlagHint` (returned, for `raise with_hint(InputError(...), ...)`)."""
    err.hints = (*getattr(err, "hints", ()), FlagHint(flag, text))  # type: ignore[attr-defined]
    return err


def hints_for(err: Exception, options) -> list[str]:
    """The texts of `err`'s hints whose flag is among `options` (a command's option strings)."""
    return [hint.text for hint in getattr(err, "hints", ()) if hint.flag in options]


class InputError(ValueError):
    """Bad input: `file:line: what was expected`.

    Attributes:
      path: the offending file (or None when the input is not a file).
      line: 1-based line or record number, or None.
      message: what was wrong and what was expected.
    """

    def __init__(self, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.path = None if path is None else _shown(path)
        self.line = line
        self.message = message
        super().__init__(str(self))

    def __str__(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path if self.line is None else f"{self.path}:{self.line}"
            where += ": "
        return where + self.message


def _shown(path: str | os.PathLike) -> str:
    """A path as a user should read it: the `gs://` URL a local mirror path stands for."""
    storage = sys.modules.get("umr_jax.storage")  # no mirror path exists before it is imported
    return storage.shown(path) if storage is not None else os.fspath(path)


class ModelLoadError(ValueError):
    """A model folder could not be loaded: unknown architecture, or missing, extra or
    mis-shaped tensors. The message lists the offending names."""


class MissingDependencyError(RuntimeError):
    """An optional tool or data file that a metric needs is not installed; the message says
    how to install it."""


class JobFailed(RuntimeError):
    """Another process of a multi-process job failed (it says why in its own log), or the
    processes ran different code: this process stops with one line instead of waiting forever."""


class UsageError(ValueError):
    """Arguments that do not go together (a conversion that does not exist): exit status 2,
    like argparse's own usage errors."""


# OS errors a command can meet on a path it was given (an output folder that cannot be written,
# a file where a folder is expected, a full disk): what went wrong; what is expected. Any other
# OS error is not anticipated and keeps its traceback.
_OS_ERRORS = {
    errno.EACCES: "permission denied; expected a path this user can read and write",
    errno.EPERM: "permission denied (operation not permitted); expected a path this user can write",
    errno.EROFS: "on a read-only file system; expected a writable location",
    errno.ENOTDIR: "a part of this path is a file, not a folder; expected folders up to the last part",
    errno.EISDIR: "is a folder; expected a file",
    errno.EEXIST: "already exists and is not a folder; expected a folder, or a path that does not exist yet",
    errno.ENOSPC: "no space left on the device; free some space or write elsewhere",
    errno.EDQUOT: "disk quota exceeded; free some space or write elsewhere",
    errno.ENAMETOOLONG: "file name too long; expected a shorter path",
}


def describe_os_error(err: OSError) -> str | None:
    """`path: what is wrong; what is expected` for an anticipated OS error on a path, else None.

    For a rename (`os.replace(temp, target)`) the target is the path named: the temporary file
    is the program's own, the target is the one the user gave."""
    what = _OS_ERRORS.get(err.errno)
    if what is None:
        return None
    path = err.filename2 if err.filename2 is not None else err.filename
    if path is None:
        return what
    return f"{os.fsdecode(path)}: {what}"
