"""The index stage: an exact or ScaNN index folder over an embedding folder (the searchers and
the folder's format: `retrieval.index`). The writing process builds it under the folder's lock
(`build_index`); the others wait for it. `index.json` is written last, atomically, so a folder
without it is an unfinished build."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from umr_jax import storage
from umr_jax.data.files import make_output_temp_dir
from umr_jax.errors import InputError
from umr_jax.retrieval.embeddings import EmbeddingStore, atomic_write_bytes, read_ids
from umr_jax.retrieval.index import INDEX_FILE, ScannOptions, build_scann, scann_defaults
from umr_jax.stages.folder import StageFolder


def build(embeddings: str | os.PathLike, output: str | os.PathLike, runtime, *, backend: str = "scann", k: int = 100,
          ids: str | os.PathLike | None = None, scann_options: ScannOptions = ScannOptions()) -> Path:
    if runtime.is_writer:
        build_index(embeddings, output, backend=backend, ids_path=ids, k=k, scann_options=scann_options)
    runtime.barrier(f"umr-jax-index-{storage.location(output)}")
    return storage.local(output)


def check_unique_ids(store: EmbeddingStore) -> None:
    """Raise `InputError` naming the first repeated id and the lines it is on (a search result
    could not say which passage it means). Sorts the ids as fixed-width bytes, so 20M ids take
    a few hundred MB, not a Python set."""
    files, blocks = [], []
    for _, ids_path, rows in store.shards:
        if ids_path is not None:  # None: row numbers
            files.append(ids_path)
            blocks.append(np.array([i.encode("utf-8") for i in read_ids(ids_path, rows)], dtype=bytes))
    if not blocks:
        return
    ids = np.concatenate(blocks)
    order = np.argsort(ids, kind="stable")  # equal ids stay in row order
    sorted_ids = ids[order]
    repeated = np.flatnonzero(sorted_ids[1:] == sorted_ids[:-1])
    if not len(repeated):
        return
    k = int(np.argmin(order[repeated + 1]))  # the repeat that comes first in the files
    starts = np.cumsum([0] + [len(b) for b in blocks])

    def place(row: int) -> tuple[Path, int]:
        block = int(np.searchsorted(starts, row, side="right")) - 1
        return files[block], row - int(starts[block]) + 1

    (first_file, first_line), (file, line) = place(int(order[repeated[k]])), place(int(order[repeated[k] + 1]))
    where = f"line {first_line}" if first_file == file else f"{first_file}:{first_line}"
    raise InputError(f"duplicate id {sorted_ids[repeated[k]].decode('utf-8')!r} (also on {where}); expected one id per row, "
                     "each unique", file, line)


def build_index(
    embeddings: str | os.PathLike,
    output: str | os.PathLike,
    *,
    backend: str = "scann",
    ids_path: str | os.PathLike | None = None,
    k: int = 100,
    scann_options: ScannOptions = ScannOptions(),
) -> Path:
    """Build an index folder from an embedding store (shard folder or .npy). Atomic: a killed
    build leaves no index.json, so nothing half-built looks usable. Ids must be unique. The
    folder is locked while the index is built (`StageFolder`); a failed build removes a folder
    it created."""
    store = EmbeddingStore.open(embeddings, ids_path)
    check_unique_ids(store)
    output = storage.local(output)
    if backend not in ("scann", "exact"):
        raise InputError(f"unknown index backend {backend!r}; choose scann or exact")
    stage = StageFolder(output, "index build")
    with stage.session():
        stage.sweep_temporaries()
        storage.remove(output / INDEX_FILE)
        _build_index(store, embeddings, output, backend, ids_path, k, scann_options)
    return output


def _build_index(store: EmbeddingStore, embeddings: str | os.PathLike, output: Path, backend: str,
                 ids_path: str | os.PathLike | None, k: int, scann_options: ScannOptions) -> None:
    ids, blocks = [], []
    for matrix, shard_ids in store.iter_shards():  # validates every shard (rank, dtype, NaN)
        ids.extend(shard_ids)
        if backend == "scann":
            blocks.append(np.asarray(matrix, np.float32))
    has_ids = any(p is not None for _, p, _ in store.shards)
    if has_ids:
        text = "".join(f"{i}\n" for i in ids).encode("utf-8")
        atomic_write_bytes(output / "ids.txt", lambda f: f.write(text))
    meta: dict[str, Any] = {"backend": backend, "dim": store.dim, "rows": store.total_rows, "has_ids": has_ids}
    if backend == "scann":
        settings = scann_defaults(store.total_rows, k, scann_options)
        searcher = build_scann(np.concatenate(blocks), settings, k)
        tmp = make_output_temp_dir(output, prefix=".scann.", suffix=".tmp")  # swept if a kill leaves it
        searcher.serialize(str(tmp), relative_path=True)  # the folder may move or be copied to a bucket
        shutil.rmtree(output / "scann", ignore_errors=True)
        storage.unpublish(output / "scann")
        os.replace(tmp, output / "scann")
        storage.publish(output / "scann")  # before index.json, which says the index is whole
        meta["scann"] = settings
    else:
        meta["embeddings"] = storage.location(storage.local(embeddings))  # a gs:// URL stays one
        meta["embedding_ids"] = storage.location(storage.local(ids_path)) if ids_path else None
    data = json.dumps(meta, indent=2, sort_keys=True).encode("utf-8")
    atomic_write_bytes(output / INDEX_FILE, lambda f: f.write(data))


# ---------------------------------------------------------------------------------------------
# Search: query embeddings (an encode folder or a .npy) -> the .npz of ids and scores, or a run file

SEARCH_FORMATS = ("npz", "trec-run", "retrieval")


def encoded_from(folder: str | os.PathLike) -> tuple[str, Path, str] | None:
    """(kind, input file, input format) an `umr-jax encode` folder was made from (its encode.json),
    or None for anything else (a .npy, a folder without the record)."""
    from umr_jax.stages.encode import SETTINGS_FILE

    folder = storage.fetch(folder)
    if not folder.is_dir():
        return None
    settings = StageFolder(folder, "encode", settings_file=SETTINGS_FILE).saved_settings() or {}
    if not settings.get("input") or settings.get("kind") not in ("passages", "queries"):
        return None
    return settings["kind"], storage.local(settings["input"]), str(settings.get("input_format", ""))


def read_query_embeddings(path: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """Query embeddings fp32 [nq, dim] and their ids: an `umr-jax encode --queries` folder
    (manifest + shards, ids from it) or a `.npy` matrix (ids: row numbers)."""
    from umr_jax.retrieval.embeddings import EmbeddingStore, load_matrix

    path = storage.fetch(path)
    if not path.is_dir():
        matrix = np.asarray(load_matrix(path), np.float32)
        return matrix, [str(i) for i in range(matrix.shape[0])]
    store = EmbeddingStore.open(path)
    blocks, ids = [], []
    for matrix, shard_ids in store.iter_shards():
        blocks.append(np.asarray(matrix, np.float32))
        ids.extend(shard_ids)
    return np.concatenate(blocks) if blocks else np.zeros((0, store.dim), np.float32), ids


def write_search_results(output: str | os.PathLike, format: str, query_ids: list[str], ids: np.ndarray, scores: np.ndarray, *,
                         questions: str | os.PathLike | None = None, passages: str | os.PathLike | None = None,
                         passages_format: str = "auto", known_languages=None, tag: str = "umr-jax") -> list[Path]:
    """Write a search's neighbours `ids` [nq, k] and `scores` [nq, k] for the queries `query_ids`:
    "npz" (arrays ids and scores), "trec-run" (`qid Q0 docid rank score tag`) or "retrieval"
    (JSON lines: each query's question and language from the question file `questions`, each
    passage's title and text from the collection `passages`). Atomic. Returns the paths written."""
    from umr_jax.data import formats
    from umr_jax.retrieval.encode import EncodeInput
    from umr_jax.retrieval.retrieve import attach_passages, fetch_passages

    output = Path(output)
    if format == "npz":
        atomic_write_bytes(output, lambda f: np.savez(f, ids=ids, scores=scores))
        return [output]
    if format == "trec-run":
        entries = [formats.TrecRunEntry(query_id=qid, doc_id=str(ids[i, r]), rank=r + 1, score=float(scores[i, r]), tag=tag)
                   for i, qid in enumerate(query_ids) for r in range(ids.shape[1])]
        return formats.write_trec_run(output, entries)
    if format != "retrieval":
        raise ValueError(f"format must be one of {SEARCH_FORMATS}, got {format!r}")
    if questions is None or passages is None:
        raise ValueError("the retrieval format needs the question file and the passage collection")
    by_id = {q.id: q for q in formats.read_questions(questions, known_languages=known_languages)}
    ordered = []
    for qid in query_ids:
        if qid not in by_id:
            raise InputError(f"no question with id {qid!r} (an encoded query); expected the question file the queries were "
                             "encoded from", questions)
        ordered.append(by_id[qid])
    collection = EncodeInput.passages(passages, passages_format)
    found = fetch_passages(collection.path, collection.format, np.unique(ids).tolist())
    return formats.write_retrieval(output, attach_passages(ordered, ids, scores, found))
