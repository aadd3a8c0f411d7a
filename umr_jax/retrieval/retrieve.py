"""Top-k retrieval for a question file: encode the questions, search an index, attach passages.

    encoder = TowerEncoder("/models/mcontriever", mesh=mesh)            # the query tower
    results = retrieve(encoder, Index.open("index/"), questions, "psgs_w100.tsv", top_k=100)
    write_results("dev_run.jsonl", results, "retrieval")                # or dpr-json, xor-predictions, trec-run

Questions are encoded with the same code as `umr-jax encode --queries` (bucketed batches over
the mesh, fp32 embeddings); the index returns passage ids (or row numbers, for an index built
from a bare `.npy`) and fp32 scores; titles and texts come from the collection: a DPR TSV through
`PassageStore` (offset index, one seek per passage), or passage JSON lines streamed once while
keeping only the retrieved passages in memory.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from umr_jax.data import formats
from umr_jax.errors import InputError

OUTPUT_FORMATS = ("retrieval", "dpr-json", "xor-predictions", "trec-run")  # the format table's names


def fetch_passages(path: str | os.PathLike, format: str, keys: Iterable[str | int]) -> dict[str | int, formats.Passage]:
    """The passages named by `keys` (ids as strings, or row numbers as ints) from a DPR TSV
    ("dpr-tsv") or passage JSON lines ("passages-jsonl"). Raises `InputError` naming the first
    key the collection does not hold."""
    path = Path(path)
    wanted = set(keys)
    found: dict[str | int, formats.Passage] = {}
    if format == "dpr-tsv":
        from umr_jax.data.passage_store import PassageStore

        store = PassageStore(path)
        try:
            for key in wanted:
                if isinstance(key, str):
                    row = store.row_of(key)
                    if row is not None:
                        found[key] = store[row]
                elif 0 <= key < len(store):
                    found[key] = store[key]
        finally:
            store.close()
    elif format == "passages-jsonl":
        for row, passage in enumerate(formats.read_passages_jsonl(path)):
            if passage.id in wanted:
                found[passage.id] = passage
            if row in wanted:
                found[row] = passage
    else:
        raise ValueError(f"passage format must be 'dpr-tsv' or 'passages-jsonl', got {format!r}")
    missing = sorted((k for k in wanted if k not in found), key=str)
    if missing:
        what = f"passage id {missing[0]!r}" if isinstance(missing[0], str) else f"row {missing[0]}"
        raise InputError(f"{what} returned by the index is not in this collection ({len(missing)} missing); "
                         "was the index built from another collection?", path)
    return found


def search_questions(encoder, index, questions: Sequence[formats.Question], *, top_k: int = 100, max_length: int = 64,
                     batch_size: int = 256, progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Encode `questions` with `encoder` (a `TowerEncoder`, the query tower) and search `index`
    (an opened `index.Index`). Returns ids [n, k] (str, or int64 rows when the index has no ids)
    and fp32 scores [n, k], best first, with k = min(top_k, index rows)."""
    if top_k < 1:
        raise ValueError(f"top_k must be positive, got {top_k}")
    embeddings, ids = encoder.encode_records(questions, kind="queries", max_length=max_length, batch_size=batch_size, progress=progress)
    if encoder.dim != index.meta["dim"]:
        raise InputError(f"the index holds {index.meta['dim']}-dimensional embeddings but the model "
                         f"{encoder.folder} makes {encoder.dim}-dimensional ones", index.folder)
    return index.search(embeddings, top_k)


def attach_passages(questions: Sequence[formats.Question], ids: np.ndarray, scores: np.ndarray,
                    passages: dict[str | int, formats.Passage]) -> list[formats.RetrievalResult]:
    """One `RetrievalResult` per question: its ranked passages (id, title, text) with their scores.
    `ids` [n, k] are passage ids or row numbers (keys of `passages`); `scores` [n, k]."""
    results = []
    for question, row_ids, row_scores in zip(questions, ids, scores):
        ctxs = []
        for key, score in zip(row_ids.tolist(), row_scores.tolist()):
            passage = passages[key]
            ctxs.append(formats.Context(id=passage.id, title=passage.title, text=passage.text, score=float(score)))
        results.append(formats.RetrievalResult(id=question.id, question=question.question, lang=question.lang,
                                               ctxs=tuple(ctxs), answers=question.answers))
    return results


def retrieve(encoder, index, questions: Sequence[formats.Question], passages_path: str | os.PathLike, *,
             passages_format: str = "auto", top_k: int = 100, max_length: int = 64, batch_size: int = 256,
             progress: Callable[[int], None] | None = None) -> list[formats.RetrievalResult]:
    """Top-k passages with titles, texts and scores for each question, in question order."""
    from umr_jax.retrieval.encode import detect_passage_format

    passages_path = Path(passages_path)
    if passages_format == "auto":
        passages_format = detect_passage_format(passages_path)
    ids, scores = search_questions(encoder, index, questions, top_k=top_k, max_length=max_length,
                                   batch_size=batch_size, progress=progress)
    passages = fetch_passages(passages_path, passages_format, np.unique(ids).tolist())
    return attach_passages(questions, ids, scores, passages)


def write_results(path: str | os.PathLike, results: Sequence[formats.RetrievalResult], format: str = "retrieval",
                  *, tag: str = "umr-jax") -> list[Path]:
    """Write `results` atomically as our JSON lines ("retrieval"), DPR's JSON list ("dpr-json"),
    the official XOR-Retrieve prediction file ("xor-predictions") or a TREC run ("trec-run", run
    `tag`); the old names "jsonl" and "trec" are accepted. Returns the paths written."""
    format = formats.canonical_format(format)
    if format == "retrieval":
        return formats.write_retrieval(path, results)
    if format == "dpr-json":
        return formats.write_dpr_json(path, results)
    if format == "xor-predictions":
        return formats.write_xor_predictions(path, (formats.retrieval_to_xor_prediction(r) for r in results))
    if format == "trec-run":
        entries: list[Any] = []
        for r in results:
            entries.extend(formats.retrieval_to_trec_run(r, tag))
        return formats.write_trec_run(path, entries)
    raise ValueError(f"format must be one of {OUTPUT_FORMATS}, got {format!r}")
