"""Readers and writers for every on-disk format of the UMR data flow, with validation.

Readers stream: they yield small typed records (frozen dataclasses) one at a time and never
hold a whole file, so an 18M-row passage TSV or a 47M-row WebFAQ dump reads in constant memory
(duplicate-id detection costs 16 bytes per id). Every record is validated; the first invalid
one raises `RecordError` (an `InputError`: `file:line: what was expected`), or, given
`skip_invalid=SkippedRecords()`, is skipped and counted there per reason.

Writers take any iterable of records and write atomically (temporary file, fsync, rename),
optionally sharded (`num_shards=N` round-robin or `records_per_shard=K` in order) as
`name-00000-of-00004.jsonl`. A reader given `name.jsonl` reads the file or its complete shard
set. Names ending in `.gz` are gzip-compressed (JSON lines and TSV formats).

| format            | file                                                    | record          |
|-------------------|---------------------------------------------------------|-----------------|
| `xor-questions`   | JSON lines `{id, question, lang, answers?}`             | `Question`      |
| `dpr-passages`    | TSV with header `id  text  title` (csv quoting)         | `Passage`       |
| `passages-jsonl`  | JSON lines `{id, title, text}`                          | `Passage`       |
| `webfaq`          | WebFAQ parquet, one language per file or folder         | `WebFaqRecord`  |
| `pairs`           | JSON lines or parquet `{query, positive, lang, negatives?}` | `Pair`      |
| `mkqa`            | MKQA JSON lines (`mkqa.jsonl.gz` as released)           | `MkqaExample`   |
| `beir-corpus`     | JSON lines `{_id, title, text}`                         | `Passage`       |
| `beir-queries`    | JSON lines `{_id, text}`                                | `Query`         |
| `beir-qrels`      | TSV with header `query-id  corpus-id  score`            | `Qrel`          |
| `retrieval`       | JSON lines `{id, question, lang, answers?, ctxs: [{id, title, text, score}]}` | `RetrievalResult` |
| `dpr-json`        | one JSON list of the same records (DPR's output format) | `RetrievalResult` |
| `xor-predictions` | JSON list `[{id, lang, ctxs: [passage text, ...]}]`     | `XorPrediction` |
| `trec-run`        | `qid Q0 docid rank score tag` lines                     | `TrecRunEntry`  |
"""

from __future__ import annotations

import csv
import dataclasses
import math
import os
from pathlib import Path
from typing import IO, Any, Callable, Collection, Iterable, Iterator, Sequence

from umr_jax.errors import InputError
from umr_jax.data import files
from umr_jax.data.files import PathLike, ShardedWriter, TextSink, expand_shards, iter_json_array, iter_jsonl, json_dumps
from umr_jax.data.languages import KNOWN_LANGUAGES, XOR_LANGUAGES, describe_codes, to_iso639_1
from umr_jax.data.validation import (
    DUPLICATE_ID,
    EMPTY_TEXT,
    INVALID_UTF8,
    MALFORMED,
    MISSING_FIELD,
    UNKNOWN_LANGUAGE,
    WRONG_TYPE,
    RecordError,
    SkippedRecords,
    validated,
)

# ----------------------------------------------------------------------------------------------
# Records


@dataclasses.dataclass(frozen=True, slots=True)
class Question:
    """A question (XOR-TyDi, MKQA, ...). `answers` is None when the file has none (test sets)."""

    id: str
    question: str
    lang: str
    answers: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Passage:
    """A passage of a collection (DPR TSV, passage JSON lines, BEIR corpus)."""

    id: str
    title: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Pair:
    """A training pair: a query, its positive passage, the language, optional hard negatives."""

    query: str
    positive: str
    lang: str
    negatives: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True, slots=True)
class WebFaqRecord:
    """One WebFAQ question-answer pair. `lang` comes from the file's path (WebFAQ files hold one
    language each and do not store it per row)."""

    id: str
    origin: str
    url: str
    question: str
    answer: str
    semantic_similarity_score: float
    lang: str
    topic: str | None = None
    question_type: str | None = None


MKQA_ANSWER_TYPES = ("entity", "long_answer", "unanswerable", "date", "number", "number_with_unit", "short_phrase", "binary")


@dataclasses.dataclass(frozen=True, slots=True)
class MkqaAnswer:
    """One MKQA answer; `text` is None for `unanswerable` and `long_answer` types."""

    type: str
    text: str | None
    entity: str | None = None
    aliases: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class MkqaExample:
    """One MKQA example: the English `query` and, per language, the question and its answers."""

    example_id: str
    query: str
    queries: dict[str, str]
    answers: dict[str, tuple[MkqaAnswer, ...]]


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    """A BEIR query."""

    id: str
    text: str


@dataclasses.dataclass(frozen=True, slots=True)
class Qrel:
    """One BEIR relevance judgement."""

    query_id: str
    corpus_id: str
    score: int


@dataclasses.dataclass(frozen=True, slots=True)
class Context:
    """A retrieved passage with its score (retriever score, or LM score for pseudo labels).
    `has_answer` is kept when DPR-style files carry it."""

    id: str
    title: str
    text: str
    score: float
    has_answer: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class RetrievalResult:
    """A question with its ranked passages. `scorer` names the LM for pseudo-label files."""

    id: str
    question: str
    lang: str
    ctxs: tuple[Context, ...]
    answers: tuple[str, ...] | None = None
    scorer: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class XorPrediction:
    """One entry of the official XOR-Retrieve prediction file: passage texts in rank order."""

    id: str
    lang: str
    ctxs: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class TrecRunEntry:
    """One line of a TREC run file."""

    query_id: str
    doc_id: str
    rank: int
    score: float
    tag: str


# ----------------------------------------------------------------------------------------------
# Field checks shared by the parsers. Each raises RecordError naming the file, line and field.


class _Fields:
    """Typed access to the fields of one raw record, for error messages that say what was expected."""

    def __init__(self, obj: dict, path: str, line: int, schema: str):
        self.obj, self.path, self.line, self.schema = obj, path, line, schema

    def error(self, reason: str, message: str) -> RecordError:
        return RecordError(reason, message, self.path, self.line)

    def present(self, key: str) -> bool:
        return self.obj.get(key) is not None

    def raw(self, key: str) -> Any:
        value = self.obj.get(key)
        if value is None:
            raise self.error(MISSING_FIELD, f"missing field {key!r}; expected {self.schema}")
        return value

    def string(self, key: str, *, non_empty: bool = False, optional: bool = False) -> str | None:
        if optional and not self.present(key):
            return None
        value = self.raw(key)
        if not isinstance(value, str):
            raise self.error(WRONG_TYPE, f"field {key!r} must be a string, got {_type_name(value)}")
        if non_empty and not value.strip():
            raise self.error(EMPTY_TEXT, f"empty {key!r}; expected non-empty text")
        return value

    def ident(self, key: str) -> str:
        """An id: a non-empty string, or an integer (stored as its decimal string)."""
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(WRONG_TYPE, f"field {key!r} must be a string or integer id, got {_type_name(value)}")
        value = str(value)
        if not value.strip():
            raise self.error(EMPTY_TEXT, f"empty {key!r}; expected a non-empty id")
        return value

    def number(self, key: str, *, allow_numeric_string: bool = False) -> float:
        value = self.raw(key)
        if allow_numeric_string and isinstance(value, str):
            try:
                value = float(value)
            except ValueError:
                raise self.error(WRONG_TYPE, f"field {key!r} must be a number, got the string {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise self.error(WRONG_TYPE, f"field {key!r} must be a finite number, got {value!r}")
        return float(value)

    def strings(self, key: str, *, optional: bool = False, non_empty_items: bool = False, bare_string_ok: bool = False) -> tuple[str, ...] | None:
        if optional and not self.present(key):
            return None
        value = self.raw(key)
        if bare_string_ok and isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise self.error(WRONG_TYPE, f"field {key!r} must be a list of strings, got {_type_name(value)}")
        for item in value:
            if not isinstance(item, str):
                raise self.error(WRONG_TYPE, f"field {key!r} must be a list of strings, got a list holding {_type_name(item)} {item!r}")
        if non_empty_items and any(not v.strip() for v in value):
            raise self.error(EMPTY_TEXT, f"field {key!r} holds an empty text; expected non-empty texts")
        return tuple(value)

    def language(self, key: str, known: Collection[str]) -> str:
        code = self.string(key)
        return check_language(code, known, self.path, self.line)


def _type_name(value: Any) -> str:
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}.get(type(value), type(value).__name__)


def check_language(code: str, known: Collection[str], path: str | None = None, line: int | None = None) -> str:
    """`code` when it is in `known`; else `RecordError(unknown language)` naming the known codes."""
    if code not in known:
        raise RecordError(UNKNOWN_LANGUAGE, f"unknown language code {code!r}; expected one of {describe_codes(known)}", path, line)
    return code


def _known(languages: Collection[str] | None, default: Collection[str] = KNOWN_LANGUAGES) -> Collection[str]:
    return default if languages is None else frozenset(languages)


# ----------------------------------------------------------------------------------------------
# Questions (XOR-TyDi)

QUESTION_SCHEMA = "{id, question, lang, answers?}"
XOR_VARIANTS = ("retrieve", "full")


def parse_question(obj: dict, path: str, line: int, known: Collection[str]) -> Question:
    """A `Question` from one JSON object `{id, question, lang, answers?}`; `answers` may be a list
    of strings or (as the official XOR script accepts) one bare string."""
    f = _Fields(obj, path, line, QUESTION_SCHEMA)
    return Question(
        id=f.ident("id"),
        question=f.string("question", non_empty=True),
        lang=f.language("lang", known),
        answers=f.strings("answers", optional=True, bare_string_ok=True),
    )


def read_questions(
    path: PathLike,
    *,
    variant: str | None = None,
    known_languages: Collection[str] | None = None,
    skip_invalid: SkippedRecords | None = None,
) -> Iterator[Question]:
    """Questions from a JSON-lines file (or its shards), validated.

    `variant` "retrieve" or "full" (XOR-TyDi) accepts only the 7 XOR languages
    (ar bn fi ja ko ru te); None accepts every known code. `known_languages` replaces the
    accepted codes. Ids must be unique within the file.
    """
    if variant is not None and variant not in XOR_VARIANTS:
        raise ValueError(f"variant must be one of {XOR_VARIANTS} or None, got {variant!r}")
    known = _known(known_languages, XOR_LANGUAGES if variant else KNOWN_LANGUAGES)
    return validated(
        _jsonl_items(path),
        lambda obj, p, line: parse_question(obj, p, line, known),
        skip_invalid=skip_invalid,
        record_id=lambda q: q.id,
    )


def _question_json(q: Question) -> dict:
    obj = {"id": q.id, "question": q.question, "lang": q.lang}
    if q.answers is not None:
        obj["answers"] = list(q.answers)
    return obj


def write_questions(path: PathLike, questions: Iterable[Question], **sharding) -> list[Path]:
    """Write questions as JSON lines `{id, question, lang, answers?}`; returns the paths written.
    `sharding`: `num_shards=N` or `records_per_shard=K` (see `ShardedWriter`)."""
    return _write("xor-questions", path, questions, sharding)


# ----------------------------------------------------------------------------------------------
# Passages: DPR TSV, JSON lines, BEIR corpus

DPR_HEADER = ("id", "text", "title")
PASSAGE_SCHEMA = "{id, title, text}"
BEIR_CORPUS_SCHEMA = "{_id, title, text}"

# csv semantics of DPR TSVs: tab-separated, "-quoted fields with "" escapes, newline-terminated.
TSV_DIALECT = dict(delimiter="\t", quotechar='"', doublequote=True, strict=True, lineterminator="\n")


def iter_tsv_records(path: PathLike) -> Iterator[tuple[int, int, list[str] | RecordError]]:
    """(line where the record starts, its byte offset, its fields or a RecordError) for every
    record of a TSV with csv quoting (a quoted field may hold tabs, `""` escapes and newlines).
    Blank lines are not records."""
    with files.open_binary(path) as f:
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
    return _write("dpr-passages", path, passages, sharding)


def parse_passage(obj: dict, path: str, line: int) -> Passage:
    """A `Passage` from `{id, title, text}` (title may be empty or absent)."""
    f = _Fields(obj, path, line, PASSAGE_SCHEMA)
    return Passage(id=f.ident("id"), title=f.string("title", optional=True) or "", text=f.string("text", non_empty=True))


def read_passages_jsonl(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Passage]:
    """Passages from JSON lines `{id, title, text}`; ids must be unique."""
    return validated(_jsonl_items(path), parse_passage, skip_invalid=skip_invalid, record_id=lambda p: p.id)


def write_passages_jsonl(path: PathLike, passages: Iterable[Passage], **sharding) -> list[Path]:
    """Write passages as JSON lines `{id, title, text}`."""
    return _write("passages-jsonl", path, passages, sharding)


def parse_beir_document(obj: dict, path: str, line: int) -> Passage:
    """A `Passage` from a BEIR corpus line `{_id, title, text, metadata?}` (metadata is dropped)."""
    f = _Fields(obj, path, line, BEIR_CORPUS_SCHEMA)
    return Passage(id=f.ident("_id"), title=f.string("title", optional=True) or "", text=f.string("text", non_empty=True))


def read_beir_corpus(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Passage]:
    """Documents of a BEIR `corpus.jsonl`; ids must be unique."""
    return validated(_jsonl_items(path), parse_beir_document, skip_invalid=skip_invalid, record_id=lambda p: p.id)


def write_beir_corpus(path: PathLike, passages: Iterable[Passage], **sharding) -> list[Path]:
    """Write a BEIR `corpus.jsonl` `{_id, title, text}`."""
    return _write("beir-corpus", path, passages, sharding)


# ----------------------------------------------------------------------------------------------
# BEIR queries and qrels

BEIR_QRELS_HEADER = ("query-id", "corpus-id", "score")


def parse_beir_query(obj: dict, path: str, line: int) -> Query:
    """A `Query` from a BEIR `queries.jsonl` line `{_id, text, metadata?}`."""
    f = _Fields(obj, path, line, "{_id, text}")
    return Query(id=f.ident("_id"), text=f.string("text", non_empty=True))


def read_beir_queries(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Query]:
    """Queries of a BEIR `queries.jsonl`; ids must be unique."""
    return validated(_jsonl_items(path), parse_beir_query, skip_invalid=skip_invalid, record_id=lambda q: q.id)


def write_beir_queries(path: PathLike, queries: Iterable[Query], **sharding) -> list[Path]:
    """Write a BEIR `queries.jsonl` `{_id, text}`."""
    return _write("beir-queries", path, queries, sharding)


def _qrels_items(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    for shard in expand_shards(path):
        name = os.fspath(shard)
        header_seen = False
        for line, text in files.iter_text_lines(shard):
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


def read_beir_qrels(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[Qrel]:
    """Judgements of a BEIR qrels TSV (header `query-id corpus-id score`); a (query, document)
    pair may appear once."""
    return validated(_qrels_items(path), parse_beir_qrel, skip_invalid=skip_invalid, record_id=lambda q: f"{q.query_id}\t{q.corpus_id}")


class _QrelsSink(TextSink):
    def __init__(self, raw: IO[bytes], path: Path):
        super().__init__(raw, path)
        self.text.write("\t".join(BEIR_QRELS_HEADER) + "\n")

    def write(self, qrel: Qrel) -> None:
        self.text.write(f"{qrel.query_id}\t{qrel.corpus_id}\t{qrel.score}\n")


def write_beir_qrels(path: PathLike, qrels: Iterable[Qrel], **sharding) -> list[Path]:
    """Write a BEIR qrels TSV with its header row."""
    return _write("beir-qrels", path, qrels, sharding)


# ----------------------------------------------------------------------------------------------
# Pairs (translated datasets such as mMARCO, WebFAQ as pairs)

PAIR_SCHEMA = "{query, positive, lang, negatives?}"
PAIRS_PARQUET_COLUMNS = ("query", "positive", "lang", "negatives")


def parse_pair(obj: dict, path: str, line: int, known: Collection[str]) -> Pair:
    """A `Pair` from `{query, positive, lang, negatives?}`."""
    f = _Fields(obj, path, line, PAIR_SCHEMA)
    return Pair(
        query=f.string("query", non_empty=True),
        positive=f.string("positive", non_empty=True),
        lang=f.language("lang", known),
        negatives=f.strings("negatives", optional=True, non_empty_items=True) or (),
    )


def _is_parquet(path: PathLike) -> bool:
    return str(path).endswith(".parquet")


def read_pairs(
    path: PathLike,
    *,
    known_languages: Collection[str] | None = None,
    skip_invalid: SkippedRecords | None = None,
    batch_size: int = 8192,
) -> Iterator[Pair]:
    """Pairs from JSON lines or (by the `.parquet` suffix) parquet, read in row batches. Pairs
    have no ids, so repeated pairs are not errors."""
    known = _known(known_languages)
    items = _parquet_items(path, ("query", "positive", "lang"), ("negatives",), batch_size) if _is_parquet(path) else _jsonl_items(path)
    return validated(items, lambda obj, p, line: parse_pair(obj, p, line, known), skip_invalid=skip_invalid)


def write_pairs(path: PathLike, pairs: Iterable[Pair], **sharding) -> list[Path]:
    """Write pairs as JSON lines, or as parquet when `path` ends in `.parquet`
    (columns query, positive, lang: string; negatives: list<string>)."""
    return _write("pairs", path, pairs, sharding)


def _pair_json(p: Pair) -> dict:
    obj: dict[str, Any] = {"query": p.query, "positive": p.positive, "lang": p.lang}
    if p.negatives:
        obj["negatives"] = list(p.negatives)
    return obj


def _pair_row(p: Pair) -> dict:
    return {"query": p.query, "positive": p.positive, "lang": p.lang, "negatives": list(p.negatives)}


def _pairs_schema():
    import pyarrow as pa

    return pa.schema([("query", pa.string()), ("positive", pa.string()), ("lang", pa.string()), ("negatives", pa.list_(pa.string()))])


# ----------------------------------------------------------------------------------------------
# WebFAQ

WEBFAQ_REQUIRED = ("id", "origin", "url", "question", "answer", "semantic_similarity_score")
WEBFAQ_OPTIONAL = ("topic", "question_type")
WEBFAQ_SCHEMA = "{id, origin, url, question, answer, semantic_similarity_score, topic?, question_type?}"


def webfaq_language(path: PathLike, known: Collection[str] = KNOWN_LANGUAGES) -> str | None:
    """The language a WebFAQ file holds, from its path: the nearest enclosing folder named by a
    known code (`webfaq/ara/train-00000.parquet`), else the first `-`/`_`/`.`-separated part of the
    file name (`ara.parquet`, `ara-00000.parquet`). None when neither is a known code."""
    path = Path(path)
    for folder in list(path.parents)[:3]:
        if folder.name in known:
            return folder.name
    head = path.name.replace("_", "-").split("-")[0].split(".")[0]
    return head if head in known else None


def _webfaq_files(paths: PathLike | Sequence[PathLike]) -> list[Path]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    found: list[Path] = []
    for p in paths:
        p = Path(p)
        if p.is_dir():
            parquet = sorted(p.rglob("*.parquet"))
            if not parquet:
                raise InputError("no .parquet files in this folder; expected WebFAQ parquet files", p)
            found.extend(parquet)
        else:
            found.extend(expand_shards(p))
    return found


def parse_webfaq_row(row: dict, path: str, line: int, lang: str) -> WebFaqRecord:
    """A `WebFaqRecord` from one parquet row; `lang` is the file's language."""
    f = _Fields(row, path, line, WEBFAQ_SCHEMA)
    return WebFaqRecord(
        id=f.ident("id"),
        origin=f.string("origin"),
        url=f.string("url"),
        question=f.string("question", non_empty=True),
        answer=f.string("answer", non_empty=True),
        semantic_similarity_score=f.number("semantic_similarity_score"),
        lang=lang,
        topic=f.string("topic", optional=True),
        question_type=f.string("question_type", optional=True),
    )


def read_webfaq(
    paths: PathLike | Sequence[PathLike],
    *,
    languages: Collection[str] | None = None,
    min_similarity: float | None = None,
    lang: str | None = None,
    known_languages: Collection[str] | None = None,
    skip_invalid: SkippedRecords | None = None,
    batch_size: int = 8192,
) -> Iterator[WebFaqRecord]:
    """WebFAQ records from parquet files or folders of them, in row batches (never a whole file).

    Each file's language comes from its path (see `webfaq_language`), or from `lang` for all
    files. `languages` keeps only those languages (ISO 639-1 or 639-3 codes both match:
    `ar` selects `ara` files); files of other languages are not opened. `min_similarity` keeps rows
    with `semantic_similarity_score >= min_similarity` (filtered in arrow before rows become
    Python objects). Ids must be unique across all files read.
    """
    known = _known(known_languages)
    wanted = None if languages is None else {to_iso639_1(code) for code in languages}
    chosen: list[tuple[Path, str]] = []
    for file in _webfaq_files(paths):
        file_lang = lang if lang is not None else webfaq_language(file, known)
        if file_lang is None:
            raise InputError("cannot tell the language of this WebFAQ file: name it or its folder by the language code (e.g. ara/ or ara.parquet), or pass lang", file)
        check_language(file_lang, known, os.fspath(file))
        if wanted is None or to_iso639_1(file_lang) in wanted:
            chosen.append((file, file_lang))

    def items() -> Iterator[tuple[str, int, Any]]:
        for file, file_lang in chosen:
            for p, line, row in _parquet_items(file, WEBFAQ_REQUIRED, WEBFAQ_OPTIONAL, batch_size, min_similarity=min_similarity):
                yield p, line, row if isinstance(row, RecordError) else (row, file_lang)

    return validated(
        items(),
        lambda item, p, line: parse_webfaq_row(item[0], p, line, item[1]),
        skip_invalid=skip_invalid,
        record_id=lambda r: r.id,
    )


def _webfaq_schema():
    import pyarrow as pa

    return pa.schema(
        [
            ("id", pa.string()), ("origin", pa.string()), ("url", pa.string()), ("question", pa.string()),
            ("answer", pa.string()), ("semantic_similarity_score", pa.float64()), ("topic", pa.string()),
            ("question_type", pa.string()),
        ]
    )


def write_webfaq(path: PathLike, records: Iterable[WebFaqRecord], **sharding) -> list[Path]:
    """Write WebFAQ records as parquet with the published columns (no language column: name the
    file or its folder by the language, as WebFAQ does, e.g. `ara/subset.parquet`)."""
    return _write("webfaq", path, records, sharding)


def _webfaq_row(r: WebFaqRecord) -> dict:
    return {k: getattr(r, k) for k in WEBFAQ_REQUIRED + WEBFAQ_OPTIONAL}


def webfaq_to_pair(record: WebFaqRecord) -> Pair:
    """A training pair (question -> answer); the language becomes ISO 639-1 where one exists
    (`ara` -> `ar`), so WebFAQ pairs share codes with XOR-TyDi and translated pairs."""
    return Pair(query=record.question, positive=record.answer, lang=to_iso639_1(record.lang))


# ----------------------------------------------------------------------------------------------
# MKQA

MKQA_SCHEMA = "{example_id, query, queries: {lang: text}, answers: {lang: [{type, text, entity?, aliases?}]}}"


def parse_mkqa(obj: dict, path: str, line: int, known: Collection[str]) -> MkqaExample:
    """An `MkqaExample` from one line of the released `mkqa.jsonl(.gz)`."""
    f = _Fields(obj, path, line, MKQA_SCHEMA)
    example_id = f.ident("example_id")
    query = f.string("query", non_empty=True)
    queries_raw = f.raw("queries")
    if not isinstance(queries_raw, dict):
        raise f.error(WRONG_TYPE, f"field 'queries' must be an object {{lang: text}}, got {_type_name(queries_raw)}")
    queries: dict[str, str] = {}
    for code, text in queries_raw.items():
        check_language(code, known, path, line)
        if not isinstance(text, str):
            raise f.error(WRONG_TYPE, f"queries[{code!r}] must be a string, got {_type_name(text)}")
        if not text.strip():
            raise f.error(EMPTY_TEXT, f"empty queries[{code!r}]; expected non-empty text")
        queries[code] = text
    answers_raw = f.raw("answers")
    if not isinstance(answers_raw, dict):
        raise f.error(WRONG_TYPE, f"field 'answers' must be an object {{lang: [answer, ...]}}, got {_type_name(answers_raw)}")
    answers: dict[str, tuple[MkqaAnswer, ...]] = {}
    for code, items in answers_raw.items():
        check_language(code, known, path, line)
        if not isinstance(items, list):
            raise f.error(WRONG_TYPE, f"answers[{code!r}] must be a list, got {_type_name(items)}")
        parsed = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise f.error(WRONG_TYPE, f"answers[{code!r}][{i}] must be an object, got {_type_name(item)}")
            a = _Fields(item, path, line, "{type, text, entity?, aliases?}")
            kind = a.string("type")
            if kind not in MKQA_ANSWER_TYPES:
                raise f.error(MALFORMED, f"answers[{code!r}][{i}]: unknown answer type {kind!r}; expected one of {', '.join(MKQA_ANSWER_TYPES)}")
            parsed.append(
                MkqaAnswer(
                    type=kind,
                    text=a.string("text", optional=True),
                    entity=a.string("entity", optional=True),
                    aliases=a.strings("aliases", optional=True) or (),
                )
            )
        answers[code] = tuple(parsed)
    return MkqaExample(example_id=example_id, query=query, queries=queries, answers=answers)


def read_mkqa(path: PathLike, *, known_languages: Collection[str] | None = None, skip_invalid: SkippedRecords | None = None) -> Iterator[MkqaExample]:
    """MKQA examples from the released JSON lines (gzip when the name ends in `.gz`)."""
    known = _known(known_languages)
    return validated(
        _jsonl_items(path),
        lambda obj, p, line: parse_mkqa(obj, p, line, known),
        skip_invalid=skip_invalid,
        record_id=lambda e: e.example_id,
    )


def _mkqa_json(e: MkqaExample) -> dict:
    def answer(a: MkqaAnswer) -> dict:
        obj: dict[str, Any] = {"type": a.type}
        if a.entity is not None:
            obj["entity"] = a.entity
        obj["text"] = a.text
        if a.aliases:
            obj["aliases"] = list(a.aliases)
        return obj

    # The release stores example ids as JSON integers.
    example_id: Any = int(e.example_id) if e.example_id.lstrip("-").isdigit() else e.example_id
    return {
        "example_id": example_id,
        "queries": dict(e.queries),
        "query": e.query,
        "answers": {code: [answer(a) for a in items] for code, items in e.answers.items()},
    }


def write_mkqa(path: PathLike, examples: Iterable[MkqaExample], **sharding) -> list[Path]:
    """Write MKQA examples in the released JSON-lines layout."""
    return _write("mkqa", path, examples, sharding)


def mkqa_to_questions(example: MkqaExample, languages: Collection[str] | None = None) -> list[Question]:
    """One `Question` per language of `example` (all, or those in `languages`), with id
    `{example_id}-{lang}` so ids stay unique across languages. Answers are the texts and aliases
    of answers that have text (MKQA's `unanswerable` and `long_answer` have none)."""
    questions = []
    for code, text in example.queries.items():
        if languages is not None and code not in languages:
            continue
        answers: list[str] = []
        for a in example.answers.get(code, ()):
            if a.text is not None:
                answers.append(a.text)
                answers.extend(a.aliases)
        questions.append(Question(id=f"{example.example_id}-{code}", question=text, lang=code, answers=tuple(answers)))
    return questions


# ----------------------------------------------------------------------------------------------
# Retrieval results (our JSON lines, DPR JSON list), XOR predictions, TREC runs

RETRIEVAL_SCHEMA = "{id, question, lang, answers?, ctxs: [{id, title, text, score}]}"


def parse_retrieval(obj: dict, path: str, line: int, known: Collection[str]) -> RetrievalResult:
    """A `RetrievalResult` from `{id, question, lang, answers?, ctxs, scorer?}`. A context's score
    may be a number or a numeric string (DPR writes strings); `has_answer` is kept when present."""
    f = _Fields(obj, path, line, RETRIEVAL_SCHEMA)
    rid = f.ident("id")
    question = f.string("question", non_empty=True)
    lang = f.language("lang", known)
    answers = f.strings("answers", optional=True, bare_string_ok=True)
    ctxs_raw = f.raw("ctxs")
    if not isinstance(ctxs_raw, list):
        raise f.error(WRONG_TYPE, f"field 'ctxs' must be a list, got {_type_name(ctxs_raw)}")
    ctxs = []
    seen: set[str] = set()
    for i, ctx in enumerate(ctxs_raw):
        if not isinstance(ctx, dict):
            raise f.error(WRONG_TYPE, f"ctxs[{i}] must be an object {{id, title, text, score}}, got {_type_name(ctx)}")
        c = _Fields(ctx, path, line, f"ctxs[{i}] = {{id, title, text, score}}")
        cid = c.ident("id")
        if cid in seen:
            raise f.error(DUPLICATE_ID, f"passage {cid!r} appears twice in ctxs of question {rid!r}")
        seen.add(cid)
        has_answer = ctx.get("has_answer")
        if has_answer is not None and not isinstance(has_answer, bool):
            raise f.error(WRONG_TYPE, f"ctxs[{i}].has_answer must be a boolean, got {_type_name(has_answer)}")
        try:
            ctxs.append(Context(id=cid, title=c.string("title", optional=True) or "", text=c.string("text", non_empty=True), score=c.number("score", allow_numeric_string=True), has_answer=has_answer))
        except RecordError as err:
            raise f.error(err.reason, f"ctxs[{i}]: {err.message}") from None
    scorer = f.string("scorer", optional=True)
    return RetrievalResult(id=rid, question=question, lang=lang, ctxs=tuple(ctxs), answers=answers, scorer=scorer)


def read_retrieval(path: PathLike, *, known_languages: Collection[str] | None = None, skip_invalid: SkippedRecords | None = None) -> Iterator[RetrievalResult]:
    """Retrieval results (or pseudo labels) from JSON lines, one question per line."""
    known = _known(known_languages)
    return validated(_jsonl_items(path), lambda obj, p, line: parse_retrieval(obj, p, line, known), skip_invalid=skip_invalid, record_id=lambda r: r.id)


def read_dpr_json(path: PathLike, *, known_languages: Collection[str] | None = None, skip_invalid: SkippedRecords | None = None) -> Iterator[RetrievalResult]:
    """Retrieval results from a DPR-style JSON list (streamed item by item)."""
    known = _known(known_languages)
    return validated(_json_list_items(path), lambda obj, p, line: parse_retrieval(obj, p, line, known), skip_invalid=skip_invalid, record_id=lambda r: r.id)


def _retrieval_json(r: RetrievalResult) -> dict:
    obj: dict[str, Any] = {"id": r.id, "question": r.question, "lang": r.lang}
    if r.answers is not None:
        obj["answers"] = list(r.answers)
    ctxs = []
    for c in r.ctxs:
        ctx: dict[str, Any] = {"id": c.id, "title": c.title, "text": c.text, "score": c.score}
        if c.has_answer is not None:
            ctx["has_answer"] = c.has_answer
        ctxs.append(ctx)
    obj["ctxs"] = ctxs
    if r.scorer is not None:
        obj["scorer"] = r.scorer
    return obj


def write_retrieval(path: PathLike, results: Iterable[RetrievalResult], **sharding) -> list[Path]:
    """Write retrieval results as JSON lines, one question per line."""
    return _write("retrieval", path, results, sharding)


def write_dpr_json(path: PathLike, results: Iterable[RetrievalResult], **sharding) -> list[Path]:
    """Write retrieval results as one JSON list (DPR's format), streamed, one item per line."""
    return _write("dpr-json", path, results, sharding)


def parse_xor_prediction(obj: dict, path: str, line: int, known: Collection[str]) -> XorPrediction:
    """An `XorPrediction` from `{id, lang, ctxs: [passage text, ...]}`."""
    f = _Fields(obj, path, line, '{"id", "lang", "ctxs": [passage text, ...]}')
    return XorPrediction(id=f.ident("id"), lang=f.language("lang", known), ctxs=f.strings("ctxs"))


def read_xor_predictions(path: PathLike, *, known_languages: Collection[str] | None = None, skip_invalid: SkippedRecords | None = None) -> Iterator[XorPrediction]:
    """Entries of an official XOR-Retrieve prediction file (a JSON list), streamed."""
    known = _known(known_languages)
    return validated(_json_list_items(path), lambda obj, p, line: parse_xor_prediction(obj, p, line, known), skip_invalid=skip_invalid, record_id=lambda x: x.id)


def write_xor_predictions(path: PathLike, predictions: Iterable[XorPrediction], **sharding) -> list[Path]:
    """Write the official XOR-Retrieve prediction file: a JSON list of `{id, lang, ctxs}`."""
    return _write("xor-predictions", path, predictions, sharding)


def retrieval_to_xor_prediction(result: RetrievalResult) -> XorPrediction:
    """The official prediction entry: the passages' texts in rank order."""
    return XorPrediction(id=result.id, lang=result.lang, ctxs=tuple(c.text for c in result.ctxs))


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


def _text_line_items(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    for shard in expand_shards(path):
        name = os.fspath(shard)
        for line, text in files.iter_text_lines(shard):
            if isinstance(text, RecordError) or text.strip():
                yield name, line, text


def read_trec_run(path: PathLike, *, skip_invalid: SkippedRecords | None = None) -> Iterator[TrecRunEntry]:
    """Lines of a TREC run file; a (query, document) pair may appear once."""
    return validated(_text_line_items(path), parse_trec_line, skip_invalid=skip_invalid, record_id=lambda e: f"{e.query_id}\t{e.doc_id}")


class _TrecSink(TextSink):
    def write(self, e: TrecRunEntry) -> None:
        self.text.write(f"{e.query_id} Q0 {e.doc_id} {e.rank} {e.score!r} {e.tag}\n")


def write_trec_run(path: PathLike, entries: Iterable[TrecRunEntry], **sharding) -> list[Path]:
    """Write a TREC run file `qid Q0 docid rank score tag` (scores printed exactly)."""
    return _write("trec-run", path, entries, sharding)


def retrieval_to_trec_run(result: RetrievalResult, tag: str = "umr-jax") -> list[TrecRunEntry]:
    """TREC run lines for one question: ranks 1.. in the order of `ctxs`."""
    if not tag or any(ch.isspace() for ch in tag):
        raise ValueError(f"a TREC run tag must be one word, got {tag!r}")
    return [TrecRunEntry(query_id=result.id, doc_id=c.id, rank=rank, score=c.score, tag=tag) for rank, c in enumerate(result.ctxs, start=1)]


# ----------------------------------------------------------------------------------------------
# Raw items, sinks, writing


def _jsonl_items(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    for shard in expand_shards(path):
        yield from iter_jsonl(shard)


def _json_list_items(path: PathLike) -> Iterator[tuple[str, int, Any]]:
    for shard in expand_shards(path):
        yield from iter_json_array(shard)


def _parquet_items(
    path: PathLike,
    required: Sequence[str],
    optional: Sequence[str],
    batch_size: int,
    *,
    min_similarity: float | None = None,
) -> Iterator[tuple[str, int, Any]]:
    """(path, row number from 1, row dict or RecordError) for the rows of a parquet file or its
    shards, read in batches of `batch_size` rows. With `min_similarity`, rows whose
    `semantic_similarity_score` is below it are dropped in arrow (null scores are kept, to fail
    validation)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    for shard in expand_shards(path):
        name = os.fspath(shard)
        try:
            parquet = pq.ParquetFile(shard)
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"not a readable parquet file ({' '.join(str(err).split())})", shard) from None
        columns = parquet.schema_arrow.names
        missing = [c for c in required if c not in columns]
        if missing:
            raise InputError(f"missing column(s) {', '.join(missing)}; expected columns {', '.join(required)} (and optionally {', '.join(optional)})", shard)
        wanted = list(required) + [c for c in optional if c in columns]
        first_row = 1
        for batch in _checked_batches(parquet.iter_batches(batch_size=batch_size, columns=wanted), shard):
            rows_in_batch = batch.num_rows
            row_numbers = range(first_row, first_row + rows_in_batch)
            if min_similarity is not None:
                scores = batch.column("semantic_similarity_score")
                keep = pc.or_kleene(pc.greater_equal(scores, pa.scalar(float(min_similarity))), pc.is_null(scores))
                keep = pc.fill_null(keep, True)
                indices = pc.indices_nonzero(keep).to_pylist()
                batch = batch.take(pa.array(indices, type=pa.int64()))
                row_numbers = [first_row + i for i in indices]
            first_row += rows_in_batch
            try:
                rows = batch.to_pylist()
            except UnicodeDecodeError:
                rows = []
                for i in range(batch.num_rows):
                    try:
                        rows.extend(batch.slice(i, 1).to_pylist())
                    except UnicodeDecodeError:
                        rows.append(RecordError(INVALID_UTF8, "invalid UTF-8 in a text column", name, row_numbers[i]))
            for number, row in zip(row_numbers, rows):
                yield name, number, row


def _checked_batches(batches, path: PathLike):
    """The record batches of a parquet file; a corrupt file raises `InputError`, not an arrow error."""
    import pyarrow as pa

    while True:
        try:
            batch = next(batches)
        except StopIteration:
            return
        except (OSError, pa.ArrowException) as err:
            raise InputError(f"corrupt parquet file ({' '.join(str(err).split())})", path) from None
        yield batch


class _JsonlSink(TextSink):
    def __init__(self, raw: IO[bytes], path: Path, to_json: Callable[[Any], dict]):
        super().__init__(raw, path)
        self.to_json = to_json

    def write(self, record: Any) -> None:
        self.text.write(json_dumps(self.to_json(record)) + "\n")


def _jsonl_sink(to_json: Callable[[Any], dict]):
    return lambda raw, path: _JsonlSink(raw, path, to_json)


class _JsonListSink(TextSink):
    def __init__(self, raw: IO[bytes], path: Path, to_json: Callable[[Any], dict]):
        super().__init__(raw, path)
        self.to_json = to_json
        self.first = True
        self.text.write("[")

    def write(self, record: Any) -> None:
        self.text.write(("\n" if self.first else ",\n") + json_dumps(self.to_json(record)))
        self.first = False

    def close(self) -> None:
        self.text.write("]\n" if self.first else "\n]\n")
        super().close()


def _json_list_sink(to_json: Callable[[Any], dict]):
    return lambda raw, path: _JsonListSink(raw, path, to_json)


class _ParquetSink:
    """Rows buffered into row groups of `rows_per_group` and written with pyarrow."""

    def __init__(self, raw: IO[bytes], schema, to_row: Callable[[Any], dict], rows_per_group: int = 65536):
        import pyarrow.parquet as pq

        self.schema, self.to_row, self.rows_per_group = schema, to_row, rows_per_group
        self.writer = pq.ParquetWriter(raw, schema)
        self.rows: list[dict] = []

    def _flush(self) -> None:
        import pyarrow as pa

        if self.rows:
            self.writer.write_table(pa.Table.from_pylist(self.rows, schema=self.schema))
            self.rows = []

    def write(self, record: Any) -> None:
        self.rows.append(self.to_row(record))
        if len(self.rows) >= self.rows_per_group:
            self._flush()

    def close(self) -> None:
        self._flush()
        self.writer.close()


def _parquet_sink(schema, to_row: Callable[[Any], dict]):
    return lambda raw, path: _ParquetSink(raw, schema, to_row)


def _passage_json(p: Passage) -> dict:
    return {"id": p.id, "title": p.title, "text": p.text}


def _beir_document_json(p: Passage) -> dict:
    return {"_id": p.id, "title": p.title, "text": p.text}


def _beir_query_json(q: Query) -> dict:
    return {"_id": q.id, "text": q.text}


def _xor_prediction_json(x: XorPrediction) -> dict:
    return {"id": x.id, "lang": x.lang, "ctxs": list(x.ctxs)}


def sink_for(name: str, path: PathLike) -> Callable[[IO[bytes], Path], Any]:
    """The shard sink factory that writes format `name` to files named like `path` (the suffix
    picks parquet or JSON lines for pairs), for use with `ShardedWriter`."""
    if name == "pairs":
        return _parquet_sink(_pairs_schema(), _pair_row) if _is_parquet(path) else _jsonl_sink(_pair_json)
    if name == "webfaq":
        return _parquet_sink(_webfaq_schema(), _webfaq_row)
    sinks = {
        "xor-questions": _jsonl_sink(_question_json),
        "dpr-passages": _DprSink,
        "passages-jsonl": _jsonl_sink(_passage_json),
        "beir-corpus": _jsonl_sink(_beir_document_json),
        "beir-queries": _jsonl_sink(_beir_query_json),
        "beir-qrels": _QrelsSink,
        "mkqa": _jsonl_sink(_mkqa_json),
        "retrieval": _jsonl_sink(_retrieval_json),
        "dpr-json": _json_list_sink(_retrieval_json),
        "xor-predictions": _json_list_sink(_xor_prediction_json),
        "trec-run": _TrecSink,
    }
    return sinks[name]


def _write(name: str, path: PathLike, records: Iterable[Any], sharding: dict) -> list[Path]:
    unknown = set(sharding) - {"num_shards", "records_per_shard"}
    if unknown:
        raise TypeError(f"unexpected keyword argument(s): {', '.join(sorted(unknown))}")
    with ShardedWriter(path, sink_for(name, path), **sharding) as writer:
        writer.write_all(records)
    return writer.paths


# ----------------------------------------------------------------------------------------------
# The format table the CLI and other stages use


@dataclasses.dataclass(frozen=True)
class Format:
    """One on-disk format: how to read and write it, and what to count when validating."""

    name: str
    description: str
    read: Callable[..., Iterator[Any]]
    write: Callable[..., list[Path]]
    # The language(s) a record holds, for counts per language.
    record_languages: Callable[[Any], Iterable[str]] | None = None
    # The query a record belongs to, for counts of distinct queries (qrels, runs).
    query_of: Callable[[Any], str] | None = None
    # Keyword options `read` accepts besides `skip_invalid`.
    read_options: tuple[str, ...] = ()


def _lang(record: Any) -> tuple[str]:
    return (record.lang,)


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("xor-questions", "JSON lines {id, question, lang, answers?} (XOR-TyDi)", read_questions, write_questions, _lang, read_options=("variant", "known_languages")),
        Format("dpr-passages", "TSV with header id<TAB>text<TAB>title (DPR)", read_dpr_passages, write_dpr_passages),
        Format("passages-jsonl", "JSON lines {id, title, text}", read_passages_jsonl, write_passages_jsonl),
        Format("webfaq", "WebFAQ parquet, language from the file or folder name", read_webfaq, write_webfaq, _lang, read_options=("languages", "min_similarity", "lang", "known_languages")),
        Format("pairs", "JSON lines or parquet {query, positive, lang, negatives?}", read_pairs, write_pairs, _lang, read_options=("known_languages",)),
        Format("mkqa", "MKQA JSON lines as released (mkqa.jsonl.gz)", read_mkqa, write_mkqa, lambda e: tuple(e.queries), read_options=("known_languages",)),
        Format("beir-corpus", "BEIR corpus.jsonl {_id, title, text}", read_beir_corpus, write_beir_corpus),
        Format("beir-queries", "BEIR queries.jsonl {_id, text}", read_beir_queries, write_beir_queries),
        Format("beir-qrels", "BEIR qrels TSV with header query-id<TAB>corpus-id<TAB>score", read_beir_qrels, write_beir_qrels, query_of=lambda q: q.query_id),
        Format("retrieval", "retrieval results, JSON lines {id, question, lang, answers?, ctxs}", read_retrieval, write_retrieval, _lang, read_options=("known_languages",)),
        Format("dpr-json", "retrieval results as one JSON list (DPR)", read_dpr_json, write_dpr_json, _lang, read_options=("known_languages",)),
        Format("xor-predictions", "official XOR-Retrieve prediction file, JSON list {id, lang, ctxs: [text]}", read_xor_predictions, write_xor_predictions, _lang, read_options=("known_languages",)),
        Format("trec-run", "TREC run: qid Q0 docid rank score tag", read_trec_run, write_trec_run, query_of=lambda e: e.query_id),
    )
}


def open_format(name: str, source: PathLike | Sequence[PathLike], *, skip_invalid: SkippedRecords | None = None, **options: Any) -> Iterator[Any]:
    """Records of `source` read as format `name`. Of `options`, those the format's reader accepts
    (`Format.read_options`) are passed on; the rest are ignored. Only `webfaq` reads several files
    at once."""
    fmt = FORMATS[name]
    kwargs = {k: options[k] for k in fmt.read_options if options.get(k) is not None}
    if name != "webfaq" and not isinstance(source, (str, os.PathLike)):
        raise ValueError(f"{name} reads one file (or one shard set) at a time")
    return fmt.read(source, skip_invalid=skip_invalid, **kwargs)


def _beir_query_to_question(query: Query, options: dict) -> Iterable[Question]:
    return (Question(id=query.id, question=query.text, lang=options["lang"]),)


def _same(record: Any, options: dict) -> Iterable[Any]:
    return (record,)


# (from, to) -> function(record, options) -> the output records. Options used: `tag` (TREC run
# tag), `lang` (language of BEIR queries), `languages` (MKQA languages to keep).
CONVERSIONS: dict[tuple[str, str], Callable[[Any, dict], Iterable[Any]]] = {
    ("retrieval", "dpr-json"): _same,
    ("dpr-json", "retrieval"): _same,
    ("retrieval", "xor-predictions"): lambda r, o: (retrieval_to_xor_prediction(r),),
    ("dpr-json", "xor-predictions"): lambda r, o: (retrieval_to_xor_prediction(r),),
    ("retrieval", "trec-run"): lambda r, o: retrieval_to_trec_run(r, o.get("tag") or "umr-jax"),
    ("dpr-json", "trec-run"): lambda r, o: retrieval_to_trec_run(r, o.get("tag") or "umr-jax"),
    ("dpr-passages", "passages-jsonl"): _same,
    ("passages-jsonl", "dpr-passages"): _same,
    ("dpr-passages", "beir-corpus"): _same,
    ("beir-corpus", "dpr-passages"): _same,
    ("passages-jsonl", "beir-corpus"): _same,
    ("beir-corpus", "passages-jsonl"): _same,
    ("webfaq", "pairs"): lambda r, o: (webfaq_to_pair(r),),
    ("pairs", "pairs"): _same,
    ("mkqa", "xor-questions"): lambda e, o: mkqa_to_questions(e, o.get("languages")),
    ("beir-queries", "xor-questions"): _beir_query_to_question,
    ("xor-questions", "beir-queries"): lambda q, o: (Query(id=q.id, text=q.question),),
}


@dataclasses.dataclass
class ConversionReport:
    """What `convert` did: records read and written, the files written, the records skipped."""

    read: int
    written: int
    paths: list[Path]
    skipped: SkippedRecords | None


def convert(
    source_format: str,
    target_format: str,
    source: PathLike | Sequence[PathLike],
    target: PathLike,
    *,
    skip_invalid: bool = False,
    num_shards: int | None = None,
    records_per_shard: int | None = None,
    **options: Any,
) -> ConversionReport:
    """Read `source` as `source_format`, convert each record, write `target` as `target_format`
    (atomically, sharded on request).

    `options`: reader options (`variant`, `known_languages`, `languages`, `min_similarity`,
    `lang`) and conversion options (`tag`, `lang`, `languages`; see `CONVERSIONS`). Raises
    `ValueError` for a pair of formats with no conversion.
    """
    key = (source_format, target_format)
    if key not in CONVERSIONS:
        possible = ", ".join(f"{a} -> {b}" for a, b in CONVERSIONS)
        raise ValueError(f"no conversion from {source_format} to {target_format}; possible: {possible}")
    if key == ("beir-queries", "xor-questions"):
        if not options.get("lang"):
            raise ValueError("BEIR queries carry no language: give lang (--lang) for the questions")
        check_language(options["lang"], _known(options.get("known_languages")))
    skipped = SkippedRecords() if skip_invalid else None
    records = open_format(source_format, source, skip_invalid=skipped, **options)
    fn = CONVERSIONS[key]
    count = 0

    def converted() -> Iterator[Any]:
        nonlocal count
        for record in records:
            count += 1
            yield from fn(record, options)

    sharding = {k: v for k, v in (("num_shards", num_shards), ("records_per_shard", records_per_shard)) if v is not None}
    with ShardedWriter(target, sink_for(target_format, target), **sharding) as writer:
        writer.write_all(converted())
    return ConversionReport(read=count, written=writer.count, paths=writer.paths, skipped=skipped)
