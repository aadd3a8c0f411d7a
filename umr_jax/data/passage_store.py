"""Random access to a DPR passage TSV by id or by row, through a sidecar offset index.

The TSV (18M+ rows for DPR's English Wikipedia, 44M for XOR-Full's collection) is never loaded:
`PassageStore` keeps a memory-mapped index next to it (`passages.tsv.idx`, a `.npy` array) with,
per row in file order, the row's byte offset and its id, plus the permutation that sorts the ids.
A lookup by id is a binary search over the mapped index and one seek into the TSV. The index is
built once by one streaming pass (which also validates every row) and rebuilt when the TSV is
newer than it.
"""

from __future__ import annotations

import hashlib
import csv
import os
from pathlib import Path
from typing import IO, Iterator

import numpy as np

from umr_jax import storage
from umr_jax.errors import InputError
from umr_jax.data.files import AtomicFile, PathLike
from umr_jax.data.formats import DPR_HEADER, Passage, TSV_DIALECT, iter_tsv_records, parse_dpr_row
from umr_jax.data.validation import DUPLICATE_ID, RecordError

INDEX_SUFFIX = ".idx"
_CHUNK_ROWS = 1 << 16


def index_path_for(tsv_path: PathLike) -> Path:
    """`passages.tsv.idx` beside `passages.tsv` when that folder is writable (or the index is
    already there); otherwise (a read-only collection, or the demo corpus inside an installed
    package, or the local mirror of a `gs://` collection, whose bucket it would be uploaded to) a
    file under `$XDG_CACHE_HOME/umr-jax/passage-index/` named after the TSV's path."""
    tsv_path = storage.local(tsv_path)
    beside = tsv_path.with_name(tsv_path.name + INDEX_SUFFIX)
    mirrored = storage.url_of(tsv_path) is not None
    if not mirrored and (beside.is_file() or os.access(tsv_path.parent, os.W_OK) and not _inside_package(tsv_path)):
        return beside
    digest = hashlib.sha256(str(tsv_path.resolve()).encode("utf-8")).hexdigest()[:16]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "umr-jax" / "passage-index"
    cache.mkdir(parents=True, exist_ok=True)
    return cache / f"{tsv_path.name}-{digest}{INDEX_SUFFIX}"


def _inside_package(path: Path) -> bool:
    """True for files shipped inside the umr_jax package (never write into an installed package)."""
    package_root = Path(__file__).resolve().parents[1]
    try:
        path.resolve().relative_to(package_root)
        return True
    except ValueError:
        return False


def build_index(tsv_path: PathLike, index_path: PathLike | None = None) -> Path:
    """Validate every row of the DPR TSV and write its offset index atomically; returns the
    index path. Raises `InputError` (file:line) on the first invalid row or duplicate id.

    Index layout: a structured `.npy` array in file row order with fields `id` (UTF-8 bytes,
    fixed width), `offset` (int64 byte offset of the row) and `by_id` (int64: `by_id[k]` is the
    row with the k-th smallest id).
    """
    tsv_path = Path(tsv_path)
    if tsv_path.name.endswith(".gz"):
        raise InputError("a gzip-compressed TSV cannot be read by offset; decompress it first", tsv_path)
    index_path = Path(index_path) if index_path is not None else index_path_for(tsv_path)
    id_chunks: list[np.ndarray] = []
    offset_chunks: list[np.ndarray] = []
    line_chunks: list[np.ndarray] = []
    ids: list[bytes] = []
    offsets: list[int] = []
    lines: list[int] = []

    def flush() -> None:
        if ids:
            id_chunks.append(np.array(ids, dtype=bytes))
            offset_chunks.append(np.array(offsets, dtype=np.int64))
            line_chunks.append(np.array(lines, dtype=np.int64))
            ids.clear(), offsets.clear(), lines.clear()

    records = iter_tsv_records(tsv_path)
    header = next(records, None)
    if header is None or isinstance(header[2], RecordError) or tuple(header[2][:3]) != DPR_HEADER:
        raise InputError("expected the header row 'id<TAB>text<TAB>title'", tsv_path, 1)
    columns = len(header[2])
    name = os.fspath(tsv_path)
    for line, offset, row in records:
        if isinstance(row, RecordError):
            raise row
        passage = parse_dpr_row(row, columns, name, line)
        ids.append(passage.id.encode("utf-8"))
        offsets.append(offset)
        lines.append(line)
        if len(ids) >= _CHUNK_ROWS:
            flush()
    flush()
    if not id_chunks:
        raise InputError("no passages after the header row", tsv_path)
    all_ids = np.concatenate(id_chunks)
    all_lines = np.concatenate(line_chunks)
    by_id = np.argsort(all_ids, kind="stable")
    sorted_ids = all_ids[by_id]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if len(repeated):
        # Report the duplicate that appears earliest in the file.
        firsts, seconds = by_id[repeated], by_id[repeated + 1]
        k = int(np.argmin(all_lines[seconds]))
        dup_id = all_ids[seconds[k]].decode("utf-8")
        raise RecordError(
            DUPLICATE_ID,
            f"duplicate id {dup_id!r} (first at {name}:{all_lines[firsts[k]]}); ids must be unique within a file",
            tsv_path,
            int(all_lines[seconds[k]]),
        )
    table = np.empty(len(all_ids), dtype=[("id", all_ids.dtype), ("offset", "<i8"), ("by_id", "<i8")])
    table["id"] = all_ids
    table["offset"] = np.concatenate(offset_chunks)
    table["by_id"] = by_id
    with AtomicFile(index_path) as f:
        np.lib.format.write_array(f, table, allow_pickle=False)
    return index_path


class PassageStore:
    """Passages of a DPR TSV by id (`store.get(id)`, `id in store`) or by row (`store[row]`,
    `len(store)`), read from disk on demand.

    The offset index is built on first use, or rebuilt when missing, older than the TSV, or given
    `rebuild=True`. The store pickles without its open file (it reopens lazily), so it can serve
    as a random-access data source in worker processes.
    """

    def __init__(self, tsv_path: PathLike, *, index_path: PathLike | None = None, rebuild: bool = False):
        self.tsv_path = storage.fetch(tsv_path)
        self.index_path = Path(index_path) if index_path is not None else index_path_for(self.tsv_path)
        if not self.tsv_path.is_file():
            raise InputError("no such file; expected a DPR passage TSV", self.tsv_path)
        if rebuild or not self._index_is_fresh():
            build_index(self.tsv_path, self.index_path)
        self._table = np.load(self.index_path, mmap_mode="r")
        self._columns = self._read_header_columns()
        self._file: IO[bytes] | None = None

    def _index_is_fresh(self) -> bool:
        if not self.index_path.is_file():
            return False
        if self.index_path.stat().st_mtime_ns < self.tsv_path.stat().st_mtime_ns:
            return False
        try:
            table = np.load(self.index_path, mmap_mode="r")
        except (OSError, ValueError):
            return False
        names = table.dtype.names or ()
        return names == ("id", "offset", "by_id") and len(table) > 0 and int(table["offset"][-1]) < self.tsv_path.stat().st_size

    def _read_header_columns(self) -> int:
        with open(self.tsv_path, "rb") as f:
            return len(next(csv.reader([f.readline().decode("utf-8")], **TSV_DIALECT)))

    def __getstate__(self) -> dict:
        return {"tsv_path": self.tsv_path, "index_path": self.index_path}

    def __setstate__(self, state: dict) -> None:
        self.tsv_path, self.index_path = state["tsv_path"], state["index_path"]
        self._table = np.load(self.index_path, mmap_mode="r")
        self._columns = self._read_header_columns()
        self._file = None

    def __len__(self) -> int:
        return len(self._table)

    def row_of(self, passage_id: str) -> int | None:
        """The row (0-based, file order) of `passage_id`, or None when absent."""
        key = passage_id.encode("utf-8")
        ids = self._table["id"]
        if len(key) > ids.dtype.itemsize:
            return None
        by_id = self._table["by_id"]
        k = int(np.searchsorted(ids, np.array(key, dtype=ids.dtype), sorter=by_id))
        if k < len(by_id) and ids[by_id[k]] == key:
            return int(by_id[k])
        return None

    def __contains__(self, passage_id: str) -> bool:
        return self.row_of(passage_id) is not None

    def get(self, passage_id: str) -> Passage:
        """The passage with this id; `KeyError` when there is none."""
        row = self.row_of(passage_id)
        if row is None:
            raise KeyError(passage_id)
        return self[row]

    def __getitem__(self, row: int) -> Passage:
        if not -len(self) <= row < len(self):
            raise IndexError(f"row {row} out of range for {len(self)} passages")
        offset = int(self._table["offset"][row])
        if self._file is None:
            self._file = open(self.tsv_path, "rb")
        self._file.seek(offset)
        fields = next(csv.reader(_lines_from(self._file), **TSV_DIALECT))
        return parse_dpr_row(fields, self._columns, os.fspath(self.tsv_path), None)

    def __iter__(self) -> Iterator[Passage]:
        for row in range(len(self)):
            yield self[row]

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _lines_from(f: IO[bytes]) -> Iterator[str]:
    """Decoded lines from the current position, for as long as the csv reader asks (a quoted
    field may continue on the next line)."""
    while True:
        raw = f.readline()
        if not raw:
            return
        yield raw.decode("utf-8")
