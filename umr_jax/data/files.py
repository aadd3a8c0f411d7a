"""Files on disk: sharded atomic writing and shard discovery (raw reading, with line numbers,
is in `umr_jax.data.reading`).

Every output is written to a temporary file in the destination directory, fsynced, and only
then renamed into place (`os.replace`), so a crash never leaves a half-written file under a
final name. Sharded outputs are named `name-00000-of-00004.jsonl`; a reader given `name.jsonl`
finds the shards and refuses an incomplete set. A `.gz` suffix means gzip, for reading and
writing (MKQA is released as `mkqa.jsonl.gz`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import re
import tempfile
from pathlib import Path
from typing import IO, Any, Callable, Protocol

from umr_jax import storage
from umr_jax.errors import InputError

PathLike = str | os.PathLike

_SHARD_RE = re.compile(r"^(?P<stem>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})(?P<suffix>(\.[A-Za-z0-9]+)*)$")


def split_suffix(path: PathLike) -> tuple[str, str]:
    """(`name`, `.jsonl.gz`) for `dir/name.jsonl.gz`: the suffix is everything from the first dot
    of the file name that is followed only by short alphanumeric parts."""
    name = Path(path).name
    match = re.match(r"^(?P<stem>.+?)(?P<suffix>(\.[A-Za-z0-9]{1,8})*)$", name)
    return match["stem"], match["suffix"]


def shard_path(path: PathLike, index: int, count: int) -> Path:
    """`dir/name-00002-of-00004.jsonl` for `dir/name.jsonl`, shard 2 of 4."""
    path = Path(path)
    stem, suffix = split_suffix(path)
    return path.with_name(f"{stem}-{index:05d}-of-{count:05d}{suffix}")


def _shard_sets(path: Path) -> dict[int, list[Path]]:
    """Existing shards of `path`, grouped by their shard count."""
    stem, suffix = split_suffix(path)
    sets: dict[int, list[Path]] = {}
    if not path.parent.is_dir():
        return sets
    for candidate in path.parent.iterdir():
        match = _SHARD_RE.match(candidate.name)
        if match and match["stem"] == stem and match["suffix"] == suffix:
            sets.setdefault(int(match["count"]), []).append(candidate)
    return sets


def expand_shards(path: PathLike) -> list[Path]:
    """The files that make up `path`: the file itself when it exists, else its complete shard set
    (`name-00000-of-0000N...`, in order). Raises `InputError` when neither exists, when a shard is
    missing, or when shard sets with different counts are mixed. A remote location (`gs://`) is
    downloaded into the local mirror first (`storage.fetch`)."""
    path = storage.fetch(path)
    if path.is_file():
        return [path]
    if _SHARD_RE.match(path.name) is None:
        sets = _shard_sets(path)
        if len(sets) > 1:
            counts = ", ".join(str(c) for c in sorted(sets))
            raise InputError(f"shard sets of different sizes ({counts}) are mixed; remove the stale one", path)
        if sets:
            (count, shards), = sets.items()
            expected = [shard_path(path, i, count) for i in range(count)]
            missing = [p.name for p in expected if not p.is_file()]
            if missing:
                raise InputError(f"incomplete shard set: missing {', '.join(missing[:3])}", path)
            return expected
    raise InputError("no such file (nor shards name-NNNNN-of-NNNNN of it)", path)


def umask() -> int:
    """The process umask now: from /proc/self/status where Linux shows it, else by setting it and
    setting it back, the only way os.umask reads it (a swap other threads could see)."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# mkstemp creates files 0o600 and mkdtemp folders 0o700, private to their owner. Outputs renamed
# into place from them get what open() and mkdir() would have given instead: 0o666 and 0o777
# less the umask, so other users of a shared machine read them as they read any other output.
def output_file_mode() -> int:
    """The mode open() gives a new file under the current umask (0o644 under 0o022)."""
    return 0o666 & ~umask()


def output_dir_mode() -> int:
    """The mode mkdir() gives a new folder under the current umask (0o755 under 0o022)."""
    return 0o777 & ~umask()


def make_output_temp_dir(directory: PathLike, prefix: str, suffix: str = "") -> Path:
    """A new empty folder in `directory` (tempfile.mkdtemp) with mode `output_dir_mode()`, for an
    output that is built there and then renamed into place."""
    path = Path(tempfile.mkdtemp(prefix=prefix, suffix=suffix, dir=directory))
    os.chmod(path, output_dir_mode())
    return path


def fsync_directory(directory: Path) -> None:
    """Make a rename in `directory` durable (a no-op where directories cannot be opened)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class AtomicFile:
    """A binary file written under a temporary name in the destination's directory and renamed to
    `path` only by `commit()` (after flush and fsync); `discard()` removes the temporary file.

    Used as a context manager it commits on success and discards on an exception.
    """

    def __init__(self, path: PathLike):
        self.path = storage.local(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent)
        self.tmp_path = Path(tmp)
        os.fchmod(fd, output_file_mode())
        self.file: IO[bytes] = os.fdopen(fd, "wb")

    def _finish(self) -> None:
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def finish(self) -> None:
        """Flush and fsync the temporary file and close it, without renaming yet."""
        if not self.file.closed:
            self._finish()

    def rename_into_place(self, path: PathLike | None = None) -> Path:
        """Rename the finished temporary file to `path` (default: the path given at creation)."""
        target = Path(path) if path is not None else self.path
        os.replace(self.tmp_path, target)
        return target

    def commit(self) -> Path:
        try:
            self.finish()
            target = self.rename_into_place()
        except BaseException:  # e.g. the target is a folder: no temporary file stays behind
            self.discard()
            raise
        fsync_directory(self.path.parent)
        storage.publish(target)  # in the mirror of a bucket: uploaded before the commit returns
        return target

    def discard(self) -> None:
        with contextlib.suppress(OSError):
            self.file.close()
        with contextlib.suppress(FileNotFoundError):
            self.tmp_path.unlink()

    def __enter__(self) -> IO[bytes]:
        return self.file

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.discard()


def atomic_write_bytes(path: PathLike, writer: Callable[[IO[bytes]], Any]) -> None:
    """Run `writer(file_object)` into an `AtomicFile` for `path`: renamed into place only when
    `writer` returns, removed when it raises."""
    with AtomicFile(path) as f:
        writer(f)


class ShardSink(Protocol):
    """Writes records of one format into one open binary file (one shard)."""

    def write(self, record: Any) -> None: ...

    def close(self) -> None:
        """Write any trailer and flush; the binary file itself stays open."""


class TextSink:
    """Base for text formats: UTF-8 text over the shard's binary file, gzip when the name ends in
    `.gz`. Subclasses write a header in `__init__`, lines in `write`, a trailer in `close`."""

    def __init__(self, raw: IO[bytes], path: Path):
        self._gzip = gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) if path.name.endswith(".gz") else None
        self.text = io.TextIOWrapper(self._gzip or raw, encoding="utf-8", newline="\n", write_through=False)

    def close(self) -> None:
        self.text.flush()
        self.text.detach()
        if self._gzip is not None:
            self._gzip.close()


class ShardedWriter:
    """Writes records to `path`, or to shards of it, atomically.

    - neither `num_shards` nor `records_per_shard`: one file at `path`;
    - `num_shards=N`: N shards, record i goes to shard i mod N (balanced, e.g. one per host);
    - `records_per_shard=K`: consecutive runs of K records per shard (order kept); the number of
      shards is known, and the names are given, only at the end.

    Nothing appears under a final name before `close()`; on an exception (or `abort()`) the
    temporary files are removed. `close()` also removes an earlier output at the same path (the
    plain file or a shard set of another size), so readers never see two versions.
    """

    def __init__(
        self,
        path: PathLike,
        make_sink: Callable[[IO[bytes], Path], ShardSink],
        *,
        num_shards: int | None = None,
        records_per_shard: int | None = None,
    ):
        if num_shards is not None and records_per_shard is not None:
            raise ValueError("give num_shards or records_per_shard, not both")
        if num_shards is not None and num_shards < 1:
            raise ValueError(f"num_shards must be >= 1, got {num_shards}")
        if records_per_shard is not None and records_per_shard < 1:
            raise ValueError(f"records_per_shard must be >= 1, got {records_per_shard}")
        self.path = storage.local(path)
        self._make_sink = make_sink
        self._num_shards = num_shards
        self._records_per_shard = records_per_shard
        self._files: list[AtomicFile] = []
        self._sinks: list[ShardSink] = []
        self.count = 0
        self.paths: list[Path] = []  # the final paths, once closed
        if records_per_shard is None:
            for _ in range(num_shards or 1):
                self._open_shard()

    def _open_shard(self) -> None:
        atomic = AtomicFile(self.path)
        self._files.append(atomic)
        try:
            self._sinks.append(self._make_sink(atomic.file, self.path))
        except BaseException:
            self.abort()
            raise

    def write(self, record: Any) -> None:
        try:
            if self._records_per_shard is not None:
                if self.count % self._records_per_shard == 0:
                    self._open_shard()
                sink = self._sinks[-1]
            else:
                sink = self._sinks[self.count % len(self._sinks)]
            sink.write(record)
        except BaseException:
            self.abort()
            raise
        self.count += 1

    def write_all(self, records) -> "ShardedWriter":
        for record in records:
            self.write(record)
        return self

    def close(self) -> list[Path]:
        """Finish every shard and rename them into place; returns the final paths."""
        try:
            if not self._files:  # records_per_shard and no records: one empty shard
                self._open_shard()
            for sink, atomic in zip(self._sinks, self._files):
                sink.close()
                atomic.finish()
        except BaseException:
            self.abort()
            raise
        sharded = self._num_shards is not None or self._records_per_shard is not None
        count = len(self._files)
        targets = [shard_path(self.path, i, count) for i in range(count)] if sharded else [self.path]
        stale = [p for n, ps in _shard_sets(self.path).items() if not sharded or n != count for p in ps]
        if sharded and self.path.is_file():
            stale.append(self.path)
        for old in stale:
            with contextlib.suppress(FileNotFoundError):
                old.unlink()
            storage.unpublish(old)
        try:
            for atomic, target in zip(self._files, targets):
                atomic.rename_into_place(target)
        except BaseException:  # e.g. a target is a folder: no temporary file stays behind
            self.abort()
            raise
        fsync_directory(self.path.parent)
        for target in targets:
            storage.publish(target)
        self._files, self._sinks = [], []
        self.paths = targets
        return targets

    def abort(self) -> None:
        for atomic in self._files:
            atomic.discard()
        self._files, self._sinks = [], []

    def __enter__(self) -> "ShardedWriter":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def json_dumps(obj: Any) -> str:
    """Compact JSON with non-ASCII text kept readable (UTF-8), one line."""
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": "))
