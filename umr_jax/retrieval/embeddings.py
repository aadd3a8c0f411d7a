"""Embedding stores on disk: a folder of shards, or a single `.npy` matrix.

Folder layout (written by `umr-jax encode`, read by `umr-jax index build`):
  manifest.json                     {"format": "umr-jax-embeddings", "version": 1, "dim", "dtype",
                                     "total_rows", "shards": [{"embeddings", "ids", "rows"}], ...}
  shard-00000.npy + shard-00000.ids.txt   float16/float32 [rows, dim] and one id per line
Shards are written atomically (temp file + rename) and the manifest last, so a crash never
leaves a shard that looks complete. A single `.npy` may come with an ids file (one id per
line); without one, ids are row numbers.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np

from umr_jax import storage
from umr_jax.data.files import atomic_write_bytes  # noqa: F401  (index and run files are written with it too)
from umr_jax.errors import InputError

MANIFEST = "manifest.json"
FORMAT = "umr-jax-embeddings"
ALLOWED_DTYPES = (np.dtype(np.float16), np.dtype(np.float32))


def shard_name(index: int) -> str:
    return f"shard-{index:05d}"


def write_shard(folder: str | os.PathLike, index: int, embeddings: np.ndarray, ids: Sequence[str]) -> dict:
    """Write one shard (embeddings then ids, each atomically). Returns its manifest entry."""
    folder = Path(folder)
    embeddings = np.asarray(embeddings)
    if embeddings.ndim != 2 or len(ids) != embeddings.shape[0]:
        raise ValueError(f"shard {index}: embeddings {embeddings.shape} and {len(ids)} ids do not match")
    name = shard_name(index)
    atomic_write_bytes(folder / f"{name}.npy", lambda f: np.save(f, embeddings, allow_pickle=False))
    text = "".join(f"{_check_id(i)}\n" for i in ids).encode("utf-8")
    atomic_write_bytes(folder / f"{name}.ids.txt", lambda f: f.write(text))
    return {"embeddings": f"{name}.npy", "ids": f"{name}.ids.txt", "rows": int(embeddings.shape[0])}


def _check_id(value: str) -> str:
    value = str(value)
    if "\n" in value or "\r" in value:
        raise ValueError(f"ids cannot contain line breaks: {value!r}")
    return value


def write_manifest(folder: str | os.PathLike, shards: list[dict], dim: int, dtype: str, extra: dict | None = None) -> None:
    manifest = {
        "format": FORMAT,
        "version": 1,
        "dim": int(dim),
        "dtype": str(np.dtype(dtype)),
        "total_rows": int(sum(s["rows"] for s in shards)),
        "shards": shards,
        **(extra or {}),
    }
    data = json.dumps(manifest, indent=2, sort_keys=True).encode("utf-8")
    atomic_write_bytes(Path(folder) / MANIFEST, lambda f: f.write(data))


def read_ids(path: Path, expected_rows: int | None = None) -> list[str]:
    try:
        ids = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise InputError("no such file; expected the ids file (one id per line) beside the embeddings", path) from None
    except UnicodeDecodeError as err:
        raise InputError(f"ids file is not valid UTF-8 ({err.reason} at byte {err.start})", path) from None
    if expected_rows is not None and len(ids) != expected_rows:
        raise InputError(f"has {len(ids)} ids but the embeddings have {expected_rows} rows", path)
    return ids


def load_matrix(path: str | os.PathLike, *, check_finite: bool = True) -> np.ndarray:
    """A validated [rows, dim] float16/float32 matrix from a `.npy` file (memory-mapped)."""
    path = storage.fetch(path)  # a gs:// file: its local mirror
    try:
        matrix = np.load(path, mmap_mode="r", allow_pickle=False)
    except FileNotFoundError:
        raise InputError("no such file", path) from None
    except ValueError as err:
        raise InputError(f"not a plain numeric .npy array ({err})", path) from None
    if matrix.ndim != 2:
        raise InputError(f"expected a 2-D [rows, dim] embedding matrix, got shape {matrix.shape}", path)
    if matrix.dtype not in ALLOWED_DTYPES:
        raise InputError(f"expected float16 or float32 embeddings, got dtype {matrix.dtype}", path)
    if matrix.shape[0] == 0:
        raise InputError("the embedding matrix has no rows", path)
    if check_finite:
        for start in range(0, matrix.shape[0], 65536):  # in blocks: the file may be larger than memory
            block = np.asarray(matrix[start : start + 65536])
            bad = ~np.isfinite(block).all(axis=1)
            if bad.any():
                row = start + int(np.argmax(bad))
                raise InputError(f"row {row} holds NaN or inf", path)
    return matrix


@dataclass
class EmbeddingStore:
    """Shards of embeddings with their ids: `iter_shards()` yields (matrix, ids) in order."""

    root: Path
    dim: int
    total_rows: int
    shards: list[tuple[Path, Path | None, int]]  # (matrix file, ids file or None, rows)

    @classmethod
    def open(cls, path: str | os.PathLike, ids_path: str | os.PathLike | None = None) -> "EmbeddingStore":
        """A shard folder (with manifest.json) or a single .npy (with an optional ids file); a gs://
        one is read from its local mirror."""
        path = storage.fetch(path)
        ids_path = storage.fetch(ids_path) if ids_path else None
        if path.is_dir():
            manifest_path = path / MANIFEST
            if not manifest_path.is_file():
                raise InputError(f"no {MANIFEST}: not a finished embeddings folder (an encode still running or killed?)", path)
            try:
                manifest = json.loads(manifest_path.read_text())
                shards = [(path / s["embeddings"], path / s["ids"], int(s["rows"])) for s in manifest["shards"]]
                dim, total = int(manifest["dim"]), int(manifest["total_rows"])
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise InputError(f"invalid manifest ({type(err).__name__}: {err})", manifest_path) from None
            if manifest.get("format") != FORMAT:
                raise InputError(f"format is {manifest.get('format')!r}, expected {FORMAT!r}", manifest_path)
            return cls(path, dim, total, shards)
        matrix = load_matrix(path, check_finite=False)
        return cls(path, int(matrix.shape[1]), int(matrix.shape[0]), [(path, Path(ids_path) if ids_path else None, int(matrix.shape[0]))])

    def iter_shards(self) -> Iterator[tuple[np.ndarray, list[str]]]:
        offset = 0
        for matrix_path, ids_path, rows in self.shards:
            matrix = load_matrix(matrix_path)
            if matrix.shape[0] != rows or matrix.shape[1] != self.dim:
                raise InputError(f"shape {matrix.shape} disagrees with the manifest ({rows} x {self.dim})", matrix_path)
            ids = read_ids(ids_path, rows) if ids_path else [str(offset + i) for i in range(rows)]
            offset += rows
            yield matrix, ids
