"""TREC run files (`qid Q0 docid rank score tag` lines) and TREC qrels (`qid iteration docid
relevance` lines)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Iterator

from umr_jax.data.files import PathLike, TextSink
from umr_jax.data.formats.records import Qrel, RetrievalResult, TrecRunEntry
from umr_jax.data.formats.streams import text_line_items, write_records
from umr_jax.data.validation import MALFORMED, WRONG_TYPE, RecordError, SkippedRecords, validated


def parse_trec_line(text: str, path: str, line: int) -> TrecRunEntry:
    """A `TrecRunEntry` from `qid Q0 docid rank score tag` (whitespace-separated)."""
    fields = text.split()
    if len(fields) != 6:
        raise RecordError(MALFORMED, f"expected 6 fields 'qid Q0 docid rank score tag', got {len(fields)}", path, line)
    qid, _, docid, rank, score, tag = fields
    try:
        rank_value = int(rank)
    except ValueError:
        raise RecordError(WRONG_TYPE, f"rank must be an integer, got {rank!r}", path, line) from None
    try:
        score_value = float(score)
    except ValueError:
        raise RecordError(WRONG_TYPE, f"score must be a number, got {score!r}", path, line) from None
    if not math.isfinite(score_value):
        raise RecordError(WRONG_TYPE, f"score must be finite, got {score!r}", path, line)
    return TrecRunEntry(query_id=qid, doc_id=docid, rank=rank_value, score=score_value, tag=tag)


def read_trec_run(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[TrecRunEntry]:
    """Lines of a TREC run file; a (query, document) pair may appear once."""
    return validated(text_line_items(path), parse_trec_line, skip_invalid=skip_invalid, record_id=lambda e: f"{e.query_id}\t{e.doc_id}")


class _TrecSink(TextSink):
    def write(self, e: TrecRunEntry) -> None:
        self.text.write(f"{e.query_id} Q0 {e.doc_id} {e.rank} {e.score!r} {e.tag}\n")


def write_trec_run(path: PathLike, entries: Iterable[TrecRunEntry], **sharding) -> list[Path]:
    """Write a TREC run file `qid Q0 docid rank score tag` (scores printed exactly)."""
    return write_records(path, entries, SINKS["trec-run"], sharding)


def retrieval_to_trec_run(result: RetrievalResult, tag: str = "umr-jax") -> list[TrecRunEntry]:
    """TREC run lines for one question: ranks 1.. in the order of `ctxs`."""
    if not tag or any(ch.isspace() for ch in tag):
        raise ValueError(f"a TREC run tag must be one word, got {tag!r}")
    return [TrecRunEntry(query_id=result.id, doc_id=c.id, rank=rank, score=c.score, tag=tag) for rank, c in enumerate(result.ctxs, start=1)]


def parse_trec_qrel(text: str, path: str, line: int) -> Qrel:
    """A `Qrel` from `qid iteration docid relevance` (whitespace-separated, integer relevance; the
    iteration column, `0` or `Q0`, is not used)."""
    fields = text.split()
    if len(fields) != 4:
        raise RecordError(MALFORMED, f"expected 4 fields 'qid iteration docid relevance', got {len(fields)}", path, line)
    qid, _, docid, relevance = fields
    try:
        value = int(relevance)
    except ValueError:
        raise RecordError(WRONG_TYPE, f"relevance must be an integer, got {relevance!r}", path, line) from None
    return Qrel(query_id=qid, corpus_id=docid, score=value)


def read_trec_qrels(path: PathLike, *, skip_invalid: SkippedRecords | None = None, unique: bool = True) -> Iterator[Qrel]:
    """Judgements of TREC qrels; a (query, document) pair may appear once, or with `unique=False`
    any number of times (all are yielded, in order)."""
    record_id = (lambda q: f"{q.query_id}\t{q.corpus_id}") if unique else None
    return validated(text_line_items(path), parse_trec_qrel, skip_invalid=skip_invalid, record_id=record_id)


SINKS = {"trec-run": _TrecSink}
