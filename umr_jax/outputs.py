"""The paths a command writes: refuse an unusable one before the work starts, and leave
nothing behind when the command fails.

    check_output(args.output, "folder")     # an InputError now, not after an hour of encoding
    with removed_on_failure(args.output):   # a failed run removes what it created there
        encode_to_store(...)

A failure is an exception (bad input, a model that does not load, a full disk). An interrupted
run (Ctrl-C, SIGTERM, a killed process) keeps what it wrote: the resumable stages resume from
it. What an earlier run left is never removed. Imports nothing heavy.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Iterator

from umr_jax import storage
from umr_jax.errors import InputError

KINDS = ("file", "folder")


def check_output(path: str | os.PathLike, kind: str) -> None:
    """Refuse an output path that cannot be written, without creating anything: a `kind` "file"
    that is an existing folder, a "folder" that is an existing file, a folder above it that is a
    file, or a nearest existing folder this process may not write (permissions, a read-only
    file system). Raises `InputError` naming the offending path."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if storage.is_remote(path):  # the bucket must exist; the work happens in its local mirror
        storage.check_remote_output(storage.normalize(path), kind)
    path = storage.local(path)
    if path.exists():
        if kind == "file" and path.is_dir():
            raise InputError("is a folder; expected a file path for the output", path)
        if kind == "folder" and not path.is_dir():
            raise InputError("exists and is not a folder; expected a folder for the output", path)
        holder = path if path.is_dir() else path.absolute().parent
    else:
        holder = next(p for p in path.absolute().parents if p.exists())
        if not holder.is_dir():
            raise InputError(f"is a file, not a folder; expected a folder to hold {path}", holder)
    if not os.access(holder, os.W_OK | os.X_OK):
        raise InputError(f"cannot be written (permissions or a read-only file system); expected a writable folder to hold {path}",
                         holder)


def _single_process() -> bool:
    """True unless this is one process of a multi-host job (where another process may be
    writing into the same folder)."""
    jax = sys.modules.get("jax")
    if jax is None:
        return True
    try:
        return jax.process_count() == 1
    except Exception:  # no backend: nothing ran on devices, and nothing is known about others
        return False


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    storage.unpublish(path)


def _entries(folder: Path) -> set[str] | None:
    try:
        return set(os.listdir(folder))
    except OSError:
        return None


@contextlib.contextmanager
def removed_on_failure(path: str | os.PathLike) -> Iterator[None]:
    """Run the block; when it raises an `Exception`, remove what it created at `path`:

    - `path` did not exist: `path` (file or folder) and the folders made above it;
    - `path` was a folder: the entries that were not in it before;
    - `path` was a file: nothing (outputs are renamed into place, so it was not replaced);
    - beside `path`: new temporary files and shards named after it (`.NAME.*`, `STEM-NNNNN-of-NNNNN*`).

    Only in a single-process job: on several hosts another process may be writing there. A
    `gs://` output is brought into its local mirror first, so what the bucket held before the
    run counts as there before (and is never removed), and removals reach the bucket."""
    remote = storage.is_remote(path)
    if remote:
        storage.fetch(path)
    path = storage.local(path).absolute()
    if remote:  # the mirror's folders above it say nothing of the bucket's: never remove above it
        path.parent.mkdir(parents=True, exist_ok=True)
    existed = os.path.lexists(path)
    before = _entries(path) if existed and path.is_dir() else None
    created_above = None  # the outermost missing folder above `path`: all of it will be this run's
    for parent in path.parents:
        if os.path.lexists(parent):
            break
        created_above = parent
    beside = _entries(path.parent) if created_above is None else None
    try:
        yield
    except Exception:
        if _single_process():
            if created_above is not None:
                _remove(created_above)
            elif not existed:
                _remove(path)
            elif before is not None:
                for name in (_entries(path) or set()) - before:
                    _remove(path / name)
            if beside is not None:
                stem = path.name.split(".", 1)[0]
                named_after = re.compile(rf"\.{re.escape(path.name)}\..*|{re.escape(stem)}-\d{{5}}-of-\d{{5}}.*")
                for name in (_entries(path.parent) or set()) - beside:
                    if named_after.fullmatch(name):
                        _remove(path.parent / name)
        raise
