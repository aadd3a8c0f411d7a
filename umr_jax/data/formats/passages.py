"""Passages: DPR TSV `id<TAB>text<TAB>title` (csv quoting), JSON lines `{id, title, text}`, and
the BEIR corpus `{_id, title, text}`."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import IO, Any, Iterable, Iterator

from umr_jax.data import reading
from umr_jax.data.files import PathLike, TextSink, expand_shards
from umr_jax.data.formats.records import Fields, Passage
from umr_jax.data.formats.streams import jsonl_items, jsonl_sink, write_records
from umr_jax.data.validation import EMPTY_TEXT, INVALID_UTF8, MALFORMED, RecordError, SkippedRecords, validated
from umr_jax.errors import InputError

DPR_HEADER = ("id", "text", "title")
PASSAGE_SCHEMA = "{id, title, text}"
BEIR_CORPUS_SCHEMA = "{_id, title, text}"

# csv semantics of DPR TSVs: tab-separated, "-quoted fields with "" escapes, newline-terminated.
TSV_DIALECT = dict(delimiter="\t", quotechar='"', doublequote=True, strict=True, lineterminator="\n")


def iter_tsv_records(path: PathLike) -> Iterator[tuple[int, int, list[str] | RecordError]]:
    """(line where the record starts, its byte offset, its fields or a RecordError) for every
    record of a TSV with csv quoting (a quoted field may hold tabs, `""` escapes and newlines).
    Blank lines are not records."""
    with reading.open_binary(path) as f:
        feed = _LineFeed(f)
        reader = csv.reader(feed, **TSV_DIALECT)
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as err:
                line, offset = feed.take_start()
                yield line, offset, RecordError(MALFORMED, f"malformed TSV ({err}); expected tab-separated fields with csv quoting", path, line)
                continue
            except _BadUtf8 as bad:
                feed.take_start()
                yield bad.line, bad.offset, RecordError(INVALID_UTF8, "invalid UTF-8", path, bad.line)
                continue
            line, offset = feed.take_start()
            if row:
                yield line, offset, row


class _BadUtf8(Exception):
    def __init__(self, line: int, offset: int):
        self.line, self.offset = line, offset


class _LineFeed:
    """Feeds decoded lines to `csv.reader` and remembers the line and byte offset where the
    record being parsed started."""

    def __init__(self, f: IO[bytes]):
        self._lines = iter(f)
        self._offset = 0
        self._line = 0
        self._start: tuple[int, int] | None = None

    def __iter__(self):
        return self

    def __next__(self) -> str:
        raw = next(self._lines)
        if self._start is None:
            self._start = (self._line + 1, self._offset)
        self._offset += len(raw)
        self._line += 1
        try:
            return raw.decode("utf-8-sig" if self._line == 1 else "utf-8")  # a leading byte-order mark is dropped
        except UnicodeDecodeError:
            raise _BadUtf8(self._line, self._offset - len(raw)) from None

    def take_start(self) -> tuple[int, int]:
        start = self._start if self._start is not None else (self._line, self._offset)
        self._start = None
        return start


def parse_dpr_row(row: list[str], columns: int, path: str, line: int | None) -> Passage:
    """A `Passage` from the fields of one DPR TSV row (id, text, title, then any extra columns)."""
    if len(row) != columns:
        raise RecordError(MALFORMED, f"expected {columns} tab-separated columns ({', '.join(DPR_HEADER)}), got {len(row)}", path, line)
    pid, text, title = row[0], row[1], row[2]
    if not pid.strip():
        raise RecordError(EMPTY_TEXT, "empty 'id'; expected a non-empty id", path, line)
    if not text.strip():
        raise RecordError(EMPTY_TEXT, "empty 'text'; expected non-empty passage text", path, line)
    return Passage(id=pid, title=title, text=text)


def _dpr_items(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    for shard in expand_shards(path):
        name = os.fspath(shard)
        records = iter_tsv_records(shard)
        header = next(records, None)
        if header is None:
            raise InputError("empty file; expected the header row 'id<TAB>text<TAB>title'", shard, 1)
        line, _, fields = header
        if isinstance(fields, RecordError):
            raise InputError(f"{fields.message}; expected the header row 'id<TAB>text<TAB>title'", shard, line)
        if tuple(fields[:3]) != DPR_HEADER:
            raise InputError(f"expected the header row 'id<TAB>text<TAB>title', got {fields!r}", shard, line)
        columns = len(fields)
        for line, _, row in records:
            yield name, line, row if isinstance(row, RecordError) else (row, columns)


def read_dpr_passages(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Passage]:
    """Passages from a DPR TSV (`id<TAB>text<TAB>title` header; extra named columns are ignored),
    streamed with csv quoting semantics. Ids must be unique. For random access by id use
    `umr_jax.data.passage_store.PassageStore`."""
    return validated(
        _dpr_items(path),
        lambda item, p, line: parse_dpr_row(item[0], item[1], p, line),
        skip_invalid=skip_invalid,
        record_id=lambda passage: passage.id,
    )


def tsv_field(value: str) -> str:
    """`value` as one csv-quoted TSV field: quoted (inner quotes doubled) when it holds a tab, a
    quote, or a line break (csv.writer would leave a lone carriage return unquoted)."""
    if any(ch in value for ch in '\t"\n\r'):
        return '"' + value.replace('"', '""') + '"'
    return value


class _DprSink(TextSink):
    def __init__(self, raw: IO[bytes], path: Path):
        super().__init__(raw, path)
        self.text.write("\t".join(DPR_HEADER) + "\n")

    def write(self, passage: Passage) -> None:
        self.text.write(f"{tsv_field(passage.id)}\t{tsv_field(passage.text)}\t{tsv_field(passage.title)}\n")


def write_dpr_passages(path: PathLike, passages: Iterable[Passage], **sharding) -> list[Path]:
    """Write a DPR TSV with header `id<TAB>text<TAB>title`, quoting fields with csv semantics
    (so DPR's own reader, `csv.reader(f, delimiter='\\t')`, reads it back)."""
    return write_records(path, passages, SINKS["dpr-passages"], sharding)


def parse_passage(obj: dict, path: str, line: int) -> Passage:
    """A `Passage` from `{id, title, text}` (title may be empty or absent)."""
    f = Fields(obj, path, line, PASSAGE_SCHEMA)
    return Passage(id=f.ident("id"), title=f.string("title", optional=True) or "", text=f.string("text", non_empty=True))


def read_passages_jsonl(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Passage]:
    """Passages from JSON lines `{id, title, text}`; ids must be unique."""
    return validated(jsonl_items(path), parse_passage, skip_invalid=skip_invalid, record_id=lambda p: p.id)


def write_passages_jsonl(path: PathLike, passages: Iterable[Passage], **sharding) -> list[Path]:
    """Write passages as JSON lines `{id, title, text}`."""
    return write_records(path, passages, SINKS["passages-jsonl"], sharding)


def parse_beir_document(obj: dict, path: str, line: int) -> Passage:
    """A `Passage` from a BEIR corpus line `{_id, title, text, metadata?}` (metadata is dropped)."""
    f = Fields(obj, path, line, BEIR_CORPUS_SCHEMA)
    return Passage(id=f.ident("_id"), title=f.string("title", optional=True) or "", text=f.string("text", non_empty=True))


def read_beir_corpus(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Passage]:
    """Documents of a BEIR `corpus.jsonl`; ids must be unique."""
    return validated(jsonl_items(path), parse_beir_document, skip_invalid=skip_invalid, record_id=lambda p: p.id)


def write_beir_corpus(path: PathLike, passages: Iterable[Passage], **sharding) -> list[Path]:
    """Write a BEIR `corpus.jsonl` `{_id, title, text}`."""
    return write_records(path, passages, SINKS["beir-corpus"], sharding)


def _passage_json(p: Passage) -> dict:
    return {"id": p.id, "title": p.title, "text": p.text}


def _beir_document_json(p: Passage) -> dict:
    return {"_id": p.id, "title": p.title, "text": p.text}


SINKS = {"dpr-passages": _DprSink, "passages-jsonl": jsonl_sink(_passage_json), "beir-corpus": jsonl_sink(_beir_document_json)}
