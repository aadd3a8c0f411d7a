"""BEIR queries `{_id, text}` and qrels (TSV with header `query-id  corpus-id  score`); the
BEIR corpus is read with the other passage formats."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from umr_jax.data import reading
from umr_jax.data.files import PathLike, TextSink, expand_shards
from umr_jax.data.formats.records import Fields, Qrel, Query
from umr_jax.data.formats.streams import jsonl_items, jsonl_sink, write_records
from umr_jax.data.validation import EMPTY_TEXT, MALFORMED, WRONG_TYPE, RecordError, SkippedRecords, validated
from umr_jax.errors import InputError

BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")


def parse_beir_query(obj: dict, path: str, line: int) -> Query:
    """A `Query` from a BEIR `queries.jsonl` line `{_id, text, metadata?}`."""
    f = Fields(obj, path, line, "{_id, text}")
    return Query(id=f.ident("_id"), text=f.string("text", non_empty=True))


def read_beir_queries(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Query]:
    """Queries of a BEIR `queries.jsonl`; ids must be unique."""
    return validated(jsonl_items(path), parse_beir_query, skip_invalid=skip_invalid, record_id=lambda q: q.id)


def write_beir_queries(path: PathLike, queries: Iterable[Query], **sharding) -> list[Path]:
    """Write a BEIR `queries.jsonl` `{_id, text}`."""
    return write_records(path, queries, SINKS["beir-queries"], sharding)


def _qrels_items(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    for shard in expand_shards(path):
        name = os.fspath(shard)
        header_seen = False
        for line, text in reading.iter_text_lines(shard):
            if isinstance(text, RecordError):
                if not header_seen:
                    raise InputError("invalid UTF-8; expected the header row 'query-id<TAB>corpus-id<TAB>score'", shard, line)
                yield name, line, text
                continue
            if not text.strip():
                continue
            if not header_seen:
                if tuple(text.split("\t")) != BEIR_QRELS_HEADER:
                    raise InputError(f"expected the header row 'query-id<TAB>corpus-id<TAB>score', got {text!r}", shard, line)
                header_seen = True
                continue
            yield name, line, text
        if not header_seen:
            raise InputError("empty file; expected the header row 'query-id<TAB>corpus-id<TAB>score'", shard, 1)


def parse_beir_qrel(text: str, path: str, line: int) -> Qrel:
    """A `Qrel` from one qrels row `query-id<TAB>corpus-id<TAB>score` (integer score)."""
    fields = text.split("\t")
    if len(fields) != 3:
        raise RecordError(MALFORMED, f"expected 3 tab-separated columns (query-id, corpus-id, score), got {len(fields)}", path, line)
    qid, cid, score = fields
    if not qid.strip() or not cid.strip():
        raise RecordError(EMPTY_TEXT, "empty query-id or corpus-id", path, line)
    try:
        value = int(score)
    except ValueError:
        raise RecordError(WRONG_TYPE, f"score must be an integer, got {score!r}", path, line) from None
    return Qrel(query_id=qid, corpus_id=cid, score=value)


def read_beir_qrels(path: PathLike, *, skip_invalid: SkippedRecords | None = None, unique: bool = True) -> Iterator[Qrel]:
    """Judgements of a BEIR qrels TSV (header `query-id corpus-id score`); a (query, document)
    pair may appear once, or with `unique=False` any number of times (all are yielded, in order)."""
    record_id = (lambda q: f"{q.query_id}\t{q.corpus_id}") if unique else None
    return validated(_qrels_items(path), parse_beir_qrel, skip_invalid=skip_invalid, record_id=record_id)


class _QrelsSink(TextSink):
    def __init__(self, raw: IO[bytes], path: Path):
        super().__init__(raw, path)
        self.text.write("\t".join(BEIR_QRELS_HEADER) + "\n")

    def write(self, qrel: Qrel) -> None:
        self.text.write(f"{qrel.query_id}\t{qrel.corpus_id}\t{qrel.score}\n")


def write_beir_qrels(path: PathLike, qrels: Iterable[Qrel], **sharding) -> list[Path]:
    """Write a BEIR qrels TSV with its header row."""
    return write_records(path, qrels, SINKS["beir-qrels"], sharding)


def _beir_query_json(q: Query) -> dict:
    return {"_id": q.id, "text": q.text}


SINKS = {"beir-queries": jsonl_sink(_beir_query_json), "beir-qrels": _QrelsSink}
