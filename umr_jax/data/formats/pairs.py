"""Training pairs: JSON lines or parquet `{query, positive, lang, negatives?, passage_lang?}`
(translated datasets such as mMARCO; `passage_lang` says which language the passage is in, so a
translated arm can declare its direction), and WebFAQ parquet as published (one language per
file or folder)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Collection, Iterable, Iterator, Sequence

from umr_jax import storage
from umr_jax.data.files import PathLike, expand_shards
from umr_jax.data.formats.records import Fields, Pair, WebFaqRecord, check_language, known_codes
from umr_jax.data.formats.streams import jsonl_items, jsonl_sink, parquet_items, parquet_sink, write_records
from umr_jax.data.languages import KNOWN_LANGUAGES, to_iso639_1
from umr_jax.data.validation import RecordError, SkippedRecords, validated
from umr_jax.errors import InputError

# ----------------------------------------------------------------------------------------------
# Pairs

PAIR_SCHEMA = "{query, positive, lang, negatives?, passage_lang?}"
PAIRS_PARQUET_COLUMNS = ("query", "positive", "lang", "negatives", "passage_lang")
# How a translated arm pairs its languages (`data.direction`): a translated query with its
# translated passage, a translated query with the English (original) passage, or both kinds.
DIRECTIONS = ("monolingual", "cross-lingual", "both")


def parse_pair(obj: dict, path: str, line: int, known: Collection[str]) -> Pair:
    """A `Pair` from `{query, positive, lang, negatives?, passage_lang?}`."""
    f = Fields(obj, path, line, PAIR_SCHEMA)
    return Pair(
        query=f.string("query", non_empty=True),
        positive=f.string("positive", non_empty=True),
        lang=f.language("lang", known),
        negatives=f.strings("negatives", optional=True, non_empty_items=True) or (),
        passage_lang=f.language("passage_lang", known) if f.present("passage_lang") else None,
    )


def pair_direction(pair: Pair) -> str | None:
    """"monolingual" (the passage in the query's language), "cross-lingual" (in another), or
    None when the pair does not say (no `passage_lang`)."""
    if pair.passage_lang is None:
        return None
    return "monolingual" if pair.passage_lang == pair.lang else "cross-lingual"


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
    known = known_codes(known_languages)
    items = (parquet_items(path, ("query", "positive", "lang"), ("negatives", "passage_lang"), batch_size)
             if _is_parquet(path) else jsonl_items(path))
    return validated(items, lambda obj, p, line: parse_pair(obj, p, line, known), skip_invalid=skip_invalid)


def write_pairs(path: PathLike, pairs: Iterable[Pair], **sharding) -> list[Path]:
    """Write pairs as JSON lines, or as parquet when `path` ends in `.parquet`
    (columns query, positive, lang: string; negatives: list<string>; passage_lang: string, null
    when not stated)."""
    return write_records(path, pairs, SINKS["pairs"], sharding)


def _pair_json(p: Pair) -> dict:
    obj: dict[str, Any] = {"query": p.query, "positive": p.positive, "lang": p.lang}
    if p.negatives:
        obj["negatives"] = list(p.negatives)
    if p.passage_lang is not None:
        obj["passage_lang"] = p.passage_lang
    return obj


def _pair_row(p: Pair) -> dict:
    return {"query": p.query, "positive": p.positive, "lang": p.lang, "negatives": list(p.negatives),
            "passage_lang": p.passage_lang}


def _pairs_schema():
    import pyarrow as pa

    return pa.schema([("query", pa.string()), ("positive", pa.string()), ("lang", pa.string()), ("negatives", pa.list_(pa.string())),
                      ("passage_lang", pa.string())])


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
        p = storage.fetch(p)  # a gs:// folder or file: read from its local mirror
        if p.is_dir():
            parquet = sorted(p.rglob("*.parquet"))
            if not parquet:
                raise InputError("no .parquet files in this folder; expected WebFAQ parquet files", p)
            found.extend(parquet)
        else:
            found.extend(expand_shards(p))
    return found


def webfaq_files(
    paths: PathLike | Sequence[PathLike],
    *,
    languages: Collection[str] | None = None,
    lang: str | None = None,
    known_languages: Collection[str] | None = None,
    exclude: Collection[str] = (),
) -> list[tuple[Path, str]]:
    """The (file, language) pairs `read_webfaq` reads, in reading order: every parquet file of
    `paths` (folders searched recursively) whose language (`webfaq_language`, or `lang`) is one
    of `languages` (ISO 639-1 or 639-3; all when None) and not one of `exclude`."""
    known = known_codes(known_languages)
    wanted = None if languages is None else {to_iso639_1(code) for code in languages}
    unwanted = {to_iso639_1(code) for code in exclude}
    chosen: list[tuple[Path, str]] = []
    for file in _webfaq_files(paths):
        file_lang = lang if lang is not None else webfaq_language(file, known)
        if file_lang is None:
            raise InputError("cannot tell the language of this WebFAQ file: name it or its folder by the language code (e.g. ara/ or ara.parquet), or pass lang", file)
        check_language(file_lang, known, os.fspath(file))
        if (wanted is None or to_iso639_1(file_lang) in wanted) and to_iso639_1(file_lang) not in unwanted:
            chosen.append((file, file_lang))
    return chosen


def parse_webfaq_row(row: dict, path: str, line: int, lang: str) -> WebFaqRecord:
    """A `WebFaqRecord` from one parquet row; `lang` is the file's language."""
    f = Fields(row, path, line, WEBFAQ_SCHEMA)
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
    exclude: Collection[str] = (),
) -> Iterator[WebFaqRecord]:
    """WebFAQ records from parquet files or folders of them, in row batches (never a whole file).

    Each file's language comes from its path (see `webfaq_language`), or from `lang` for all
    files. `languages` keeps only those languages (ISO 639-1 or 639-3 codes both match:
    `ar` selects `ara` files); files of other languages are not opened. `min_similarity` keeps rows
    with `semantic_similarity_score >= min_similarity` (filtered in arrow before rows become
    Python objects). Files of the languages in `exclude` are not read. Ids must be unique across
    all files read.
    """
    chosen = webfaq_files(paths, languages=languages, lang=lang, known_languages=known_languages, exclude=exclude)

    def items() -> Iterator[tuple[str, int, Any]]:
        for file, file_lang in chosen:
            for p, line, row in parquet_items(file, WEBFAQ_REQUIRED, WEBFAQ_OPTIONAL, batch_size, min_similarity=min_similarity):
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
    return write_records(path, records, SINKS["webfaq"], sharding)


def _webfaq_row(r: WebFaqRecord) -> dict:
    return {k: getattr(r, k) for k in WEBFAQ_REQUIRED + WEBFAQ_OPTIONAL}


def webfaq_to_pair(record: WebFaqRecord) -> Pair:
    """A training pair (question -> answer); the language becomes ISO 639-1 where one exists
    (`ara` -> `ar`), so WebFAQ pairs share codes with XOR-TyDi and translated pairs."""
    return Pair(query=record.question, positive=record.answer, lang=to_iso639_1(record.lang))


def _pairs_sink(raw, path: Path):
    # The suffix of the file being written picks the format.
    if _is_parquet(path):
        return parquet_sink(_pairs_schema, _pair_row)(raw, path)
    return jsonl_sink(_pair_json)(raw, path)


SINKS = {"pairs": _pairs_sink, "webfaq": parquet_sink(_webfaq_schema, _webfaq_row)}
