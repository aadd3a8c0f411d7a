"""The format table the CLI and other stages use: every format by name (`FORMATS`), reading one
by name (`open_format`), and converting between them (`CONVERSIONS`, `convert`)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Sequence

from umr_jax.data.files import PathLike, ShardedWriter
from umr_jax.data.formats import beir, pairs, passages, questions, retrieval, trec
from umr_jax.data.formats.beir import read_beir_qrels, read_beir_queries, write_beir_qrels, write_beir_queries
from umr_jax.data.formats.pairs import read_pairs, read_webfaq, webfaq_to_pair, write_pairs, write_webfaq
from umr_jax.data.formats.passages import (
    read_beir_corpus,
    read_dpr_passages,
    read_passages_jsonl,
    write_beir_corpus,
    write_dpr_passages,
    write_passages_jsonl,
)
from umr_jax.data.formats.questions import mkqa_to_questions, read_mkqa, read_questions, write_mkqa, write_questions
from umr_jax.data.formats.records import Query, Question, check_language, known_codes
from umr_jax.data.formats.retrieval import (
    read_dpr_json,
    read_retrieval,
    read_xor_predictions,
    retrieval_to_xor_prediction,
    write_dpr_json,
    write_retrieval,
    write_xor_predictions,
)
from umr_jax.data.formats.trec import read_trec_run, retrieval_to_trec_run, write_trec_run
from umr_jax.data.validation import SkippedRecords
from umr_jax.errors import with_hint

_SINKS = {**questions.SINKS, **passages.SINKS, **beir.SINKS, **pairs.SINKS, **retrieval.SINKS, **trec.SINKS}


def sink_for(name: str, path: PathLike) -> Callable[[IO[bytes], Path], Any]:
    """The shard sink factory that writes format `name` (to files named like `path`: the suffix
    picks parquet or JSON lines for pairs, when the sink is made), for use with `ShardedWriter`."""
    return _SINKS[name]


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


# Old spellings the commands still accept, each for one name of the table above.
FORMAT_ALIASES: dict[str, str] = {"jsonl": "retrieval", "trec": "trec-run", "dpr-tsv": "dpr-passages"}


def canonical_format(name: str) -> str:
    """The format table's name for `name` (itself, or the name an old spelling stands for):
    the argparse type of every command's format option."""
    return FORMAT_ALIASES.get(name, name)


def aliases_of(names) -> str:
    """'old names: jsonl = retrieval, trec = trec-run' for the aliases of `names` ('' if none)."""
    pairs = [f"{old} = {new}" for old, new in FORMAT_ALIASES.items() if new in names]
    return f"old names: {', '.join(pairs)}" if pairs else ""


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
            raise with_hint(ValueError("BEIR queries carry no language: give lang, the questions' language"),
                            "--lang", "give it with --lang CODE")
        check_language(options["lang"], known_codes(options.get("known_languages")))
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
