"""Maximum-inner-product indexes: exact on-device search and ScaNN.

  exact  brute force on the accelerator: the corpus lives on the devices in row chunks,
         each chunk split over every device of the mesh; a query batch is scored against a
         chunk with one matmul, each device keeps its own top-k (`shard_map`, no
         collective), and the host merges the per-device lists into a running top-k across
         chunks. It is also the reference that ANN recall is measured against.
  scann  tree partitioning + asymmetric hashing (anisotropic quantization) + exact
         re-ordering of the best candidates; defaults derived from the corpus size.

Index folder: `index.json` ({"backend", "dim", "rows", ...}), `ids.txt` (one id per line, or
absent when ids are row numbers), and for ScaNN the serialized searcher under `scann/`. The
exact index does not copy the embeddings: it records where the embedding store is. The index
stage (`stages.index.build_index`) writes the folder; `Index.open` reads it.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from umr_jax import storage
from umr_jax.errors import InputError, with_hint
from umr_jax.retrieval.embeddings import EmbeddingStore, read_ids

INDEX_FILE = "index.json"


# ---------------------------------------------------------------------------------------------
# Exact search on devices


def _device_mesh(devices=None):
    from jax.sharding import Mesh

    devices = list(jax.devices() if devices is None else devices)
    return Mesh(np.asarray(devices), ("rows",))


def _device_top_k(mesh, k: int):
    """A jitted function: per-device top-k of queries [B, D] against this device's rows of a
    chunk [C, D] split over the mesh's `rows` axis. Returns scores and global row numbers
    [S, B, k'] (one block per device, k' = min(k, C / S)), still on their devices.

    Written with `shard_map` so that no collective runs: each device reduces its own rows and
    the S partial lists are merged on the host (S x k candidates per query is small). XLA's
    CPU all-gather over many simulated devices can stall, and a device-side merge buys nothing.
    """
    from jax.sharding import PartitionSpec as P

    def local(queries, chunk, valid_rows, offset):
        per_shard = chunk.shape[0]
        first = jax.lax.axis_index("rows") * per_shard
        scores = jnp.einsum("bd,cd->bc", queries, chunk.astype(queries.dtype), preferred_element_type=jnp.float32)
        scores = jnp.where(first + jnp.arange(per_shard)[None, :] < valid_rows, scores, -jnp.inf)
        vals, idx = jax.lax.top_k(scores, min(k, per_shard))
        return vals[None], (idx + first + offset)[None]

    return jax.jit(jax.shard_map(local, mesh=mesh, in_specs=(P(), P("rows", None), P(), P()), out_specs=(P("rows"), P("rows"))))


def _merge_host(best_s: np.ndarray, best_r: np.ndarray, scores: np.ndarray, rows: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Running top-k [B, k] merged with candidates [B, m] on the host, best first (ties: lower row)."""
    all_s = np.concatenate([best_s, scores], axis=1)
    all_r = np.concatenate([best_r, rows], axis=1)
    order = np.lexsort((all_r, -all_s), axis=1)[:, :k]
    return np.take_along_axis(all_s, order, axis=1), np.take_along_axis(all_r, order, axis=1)


@dataclass
class ExactSearcher:
    """Brute-force maximum inner product search with the corpus resident on the devices."""

    chunks: list[Any]  # device arrays [chunk_rows, dim], rows split over the devices
    valid_rows: list[int]
    top_k_fn: Any  # k -> jitted per-device top-k (see _device_top_k)
    ids: list[str] | None
    rows: int
    dim: int
    num_shards: int
    compute_dtype: Any = field(default=np.float32)

    @classmethod
    def from_store(cls, store: EmbeddingStore, *, chunk_rows: int = 1 << 18, devices=None, dtype: str = "float32",
                   use_ids: bool = True) -> "ExactSearcher":
        from jax.sharding import NamedSharding, PartitionSpec as P

        mesh = _device_mesh(devices)
        shards = mesh.devices.size
        chunk_rows = max(shards, int(math.ceil(min(chunk_rows, store.total_rows) / shards)) * shards)
        sharding = NamedSharding(mesh, P("rows", None))
        target = np.dtype(dtype)
        chunks, valid, ids = [], [], []
        buffer = np.zeros((chunk_rows, store.dim), target)
        filled = 0

        def flush():
            nonlocal filled, buffer
            if filled:
                buffer[filled:] = 0
                chunks.append(jax.device_put(buffer, sharding))
                valid.append(filled)
                filled = 0
                # A fresh buffer: on CPU, device_put may alias the host memory it was given.
                buffer = np.zeros((chunk_rows, store.dim), target)

        for matrix, shard_ids in store.iter_shards():
            ids.extend(shard_ids)
            start = 0
            while start < matrix.shape[0]:
                take = min(chunk_rows - filled, matrix.shape[0] - start)
                buffer[filled : filled + take] = matrix[start : start + take]
                filled += take
                start += take
                if filled == chunk_rows:
                    flush()
        flush()
        has_ids = use_ids and any(p is not None for _, p, _ in store.shards)
        kernels: dict[int, Any] = {}

        def top_k_fn(k: int):
            if k not in kernels:
                kernels[k] = _device_top_k(mesh, k)
            return kernels[k]

        return cls(chunks, valid, top_k_fn, ids if has_ids else None, store.total_rows, store.dim, shards, target)

    def search_rows(self, queries: np.ndarray, k: int, *, query_batch: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """fp32 scores [nq, k] (descending) and row numbers [nq, k] of the best k rows per query.

        Every chunk but the last is full, so positions in the padded chunk sequence are corpus rows.
        """
        queries = _check_queries(queries, self.dim)
        k = min(k, self.rows)
        kernel = self.top_k_fn(k)
        out_scores = np.empty((queries.shape[0], k), np.float32)
        out_rows = np.empty((queries.shape[0], k), np.int64)
        for start in range(0, queries.shape[0], query_batch):
            q = queries[start : start + query_batch]
            pad = query_batch - q.shape[0] if queries.shape[0] > query_batch else 0
            qd = np.pad(q, ((0, pad), (0, 0))).astype(self.compute_dtype)
            best_s = np.full((qd.shape[0], 0), -np.inf, np.float32)
            best_r = np.zeros((qd.shape[0], 0), np.int64)
            offset = 0
            for chunk, valid in zip(self.chunks, self.valid_rows):
                s, r = kernel(qd, chunk, np.int32(valid), np.int32(offset))  # [S, B, k'] per device
                s = np.asarray(s).transpose(1, 0, 2).reshape(qd.shape[0], -1)
                r = np.asarray(r).astype(np.int64).transpose(1, 0, 2).reshape(qd.shape[0], -1)
                best_s, best_r = _merge_host(best_s, best_r, s, r, k)
                offset += chunk.shape[0]
            n = q.shape[0]
            out_scores[start : start + n] = best_s[:n]
            out_rows[start : start + n] = best_r[:n]
        return out_scores, out_rows


def _check_queries(queries: np.ndarray, dim: int) -> np.ndarray:
    queries = np.asarray(queries)
    if queries.ndim != 2 or queries.shape[1] != dim:
        raise InputError(f"query embeddings must be [n, {dim}], got shape {queries.shape}")
    if not np.isfinite(queries).all():
        raise InputError("query embeddings hold NaN or inf")
    return queries.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# ScaNN


@dataclass(frozen=True)
class ScannOptions:
    """ScaNN settings. `None` fields are derived from the corpus size by `scann_defaults`."""

    num_leaves: int | None = None
    leaves_to_search: int | None = None
    training_sample_size: int | None = None
    dims_per_block: int = 2
    anisotropic_quantization_threshold: float = 0.2
    reorder_k: int | None = None
    brute_force_below: int = 20_000  # corpora smaller than this are scored exactly (no tree, no hashing)


def scann_defaults(rows: int, k: int = 100, options: ScannOptions = ScannOptions()) -> dict[str, Any]:
    """Settings that follow ScaNN's own guidance: about sqrt(n) leaves, search ~5% of them
    (at least 10), train on up to 250k points, AH with 2 dims per block, re-order 4k (>= 250)."""
    leaves = options.num_leaves or max(16, min(50_000, int(round(math.sqrt(rows)))))
    return {
        "brute_force": rows < options.brute_force_below,
        "num_leaves": leaves,
        "leaves_to_search": options.leaves_to_search or min(leaves, max(10, int(math.ceil(leaves * 0.05)))),
        "training_sample_size": options.training_sample_size or min(rows, 250_000),
        "dims_per_block": options.dims_per_block,
        "anisotropic_quantization_threshold": options.anisotropic_quantization_threshold,
        "reorder_k": options.reorder_k or max(250, 4 * k),
    }


def _import_scann():
    try:
        from scann.scann_ops.py import scann_ops_pybind
    except ImportError as err:
        raise with_hint(InputError(f"the scann backend needs the `scann` package ({err}); use the exact backend, or pip install scann"),
                        "--backend", "--backend exact needs nothing more") from None
    return scann_ops_pybind


def build_scann(database: np.ndarray, settings: dict[str, Any], k: int = 100):
    scann = _import_scann()
    database = np.ascontiguousarray(database, np.float32)
    builder = scann.builder(database, k, "dot_product")
    if settings["brute_force"]:
        return builder.score_brute_force().build()
    builder = builder.tree(
        num_leaves=settings["num_leaves"],
        num_leaves_to_search=settings["leaves_to_search"],
        training_sample_size=settings["training_sample_size"],
    )
    builder = builder.score_ah(
        settings["dims_per_block"], anisotropic_quantization_threshold=settings["anisotropic_quantization_threshold"]
    )
    return builder.reorder(settings["reorder_k"]).build()


# ---------------------------------------------------------------------------------------------
# Index folders


def _read_meta(path: Path) -> dict[str, Any]:
    """index.json, checked for the keys a search needs."""
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise InputError(f"not valid JSON ({err}); expected the index.json `umr-jax index build` writes: rebuild the index",
                         path) from None
    needed = {"backend": str, "dim": int, "rows": int}
    if isinstance(meta, dict) and meta.get("backend") == "exact":
        needed["embeddings"] = str
    for key, kind in needed.items():
        if not isinstance(meta, dict) or not isinstance(meta.get(key), kind) or isinstance(meta.get(key), bool):
            got = "not an object" if not isinstance(meta, dict) else f"{key}={meta.get(key)!r}"
            raise InputError(f"{got}; expected the index.json `umr-jax index build` writes, with {key!r}: "
                             "rebuild the index", path)
    return meta


@dataclass
class Index:
    """An opened index folder: `search(queries, k) -> (ids [nq, k], scores [nq, k])`."""

    folder: Path
    meta: dict[str, Any]
    ids: list[str] | None
    _exact: ExactSearcher | None = None
    _scann: Any = None

    @staticmethod
    def meta_of(folder: str | os.PathLike) -> dict[str, Any]:
        """The index folder's `index.json` (backend, rows, dim, the embeddings it was built from)."""
        folder = storage.fetch(folder)  # a gs:// index is read from its local mirror
        meta_path = folder / INDEX_FILE
        if not meta_path.is_file():
            raise InputError(f"no {INDEX_FILE}: not a finished index (build still running or killed?)", folder)
        return _read_meta(meta_path)

    @classmethod
    def open(cls, folder: str | os.PathLike, *, devices=None) -> "Index":
        folder = storage.fetch(folder)
        meta_path = folder / INDEX_FILE
        meta = cls.meta_of(folder)
        if meta.get("has_ids") and not (folder / "ids.txt").is_file():
            raise InputError(f"no such file, but {INDEX_FILE} says the index has ids; expected the ids.txt "
                             "`umr-jax index build` writes: rebuild the index", folder / "ids.txt")
        ids = read_ids(folder / "ids.txt", meta["rows"]) if meta.get("has_ids") else None
        index = cls(folder, meta, ids)
        if meta["backend"] == "exact":
            store = EmbeddingStore.open(meta["embeddings"], meta.get("embedding_ids"))
            if (store.total_rows, store.dim) != (meta["rows"], meta["dim"]):
                raise InputError(f"the index was built over {meta['rows']:,} x {meta['dim']} embeddings but "
                                 f"{meta['embeddings']} now holds {store.total_rows:,} x {store.dim}; expected the "
                                 "embeddings it was built from: rebuild the index", meta_path)
            index._exact = ExactSearcher.from_store(store, devices=devices, use_ids=False)
        elif meta["backend"] == "scann":
            index._scann = _import_scann().load_searcher(str(folder / "scann"))
        else:
            raise InputError(f"unknown backend {meta['backend']!r}", meta_path)
        return index

    def search_rows(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Row numbers [nq, k] (int64) and fp32 scores [nq, k], best first."""
        if self._exact is not None:
            scores, rows = self._exact.search_rows(queries, k)
            return rows, scores
        queries = _check_queries(queries, self.meta["dim"])
        k = min(k, self.meta["rows"])
        settings = self.meta["scann"]
        rows, scores = self._scann.search_batched_parallel(
            queries, final_num_neighbors=k, pre_reorder_num_neighbors=None if settings["brute_force"] else max(k, settings["reorder_k"])
        )
        return np.asarray(rows, np.int64), np.asarray(scores, np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Ids [nq, k] (strings from the ids file, else int64 row numbers) and fp32 scores [nq, k]."""
        rows, scores = self.search_rows(queries, k)
        if self.ids is None:
            return rows, scores
        return np.asarray(self.ids, dtype=object)[rows].astype(str), scores
