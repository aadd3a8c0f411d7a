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

These names are the one vocabulary of every command's format option (`retrieve --format`,
`encode --passages-format`, `index search --format`, `data convert --from/--to`); the old
spellings `jsonl`, `trec` and `dpr-tsv` are still accepted (`FORMAT_ALIASES`, `canonical_format`).

TREC qrels (`qid iteration docid relevance` lines, `read_trec_qrels` -> `Qrel`) are read for
evaluation only; they are not in the format table.

One module per family; this package re-exports their public names, so callers write
`from umr_jax.data import formats; formats.read_questions(path)`:

  records.py    the record dataclasses and `Fields`, the field checks every parser shares
  streams.py    raw items (JSON lines, JSON list, text lines, parquet) and writing (sinks)
  questions.py  XOR-TyDi questions, MKQA
  passages.py   DPR TSV, passage JSON lines, BEIR corpus
  beir.py       BEIR queries and qrels
  pairs.py      pairs (JSON lines or parquet), WebFAQ
  retrieval.py  retrieval results (JSON lines, DPR JSON list), XOR predictions
  trec.py       TREC runs, TREC qrels (read only: what evaluation reads)
  table.py      the format table: `FORMATS`, `open_format`, `CONVERSIONS`, `convert`
"""

from __future__ import annotations

from umr_jax.data.formats.beir import (
    BEIR_QRELS_HEADER,
    parse_beir_qrel,
    parse_beir_query,
    read_beir_qrels,
    read_beir_queries,
    write_beir_qrels,
    write_beir_queries,
)
from umr_jax.data.formats.pairs import (
    DIRECTIONS,
    PAIR_SCHEMA,
    PAIRS_PARQUET_COLUMNS,
    WEBFAQ_OPTIONAL,
    WEBFAQ_REQUIRED,
    WEBFAQ_SCHEMA,
    pair_direction,
    parse_pair,
    parse_webfaq_row,
    read_pairs,
    read_webfaq,
    webfaq_files,
    webfaq_language,
    webfaq_to_pair,
    write_pairs,
    write_webfaq,
)
from umr_jax.data.formats.passages import (
    BEIR_CORPUS_SCHEMA,
    DPR_HEADER,
    PASSAGE_SCHEMA,
    TSV_DIALECT,
    iter_tsv_records,
    parse_beir_document,
    parse_dpr_row,
    parse_passage,
    read_beir_corpus,
    read_dpr_passages,
    read_passages_jsonl,
    tsv_field,
    write_beir_corpus,
    write_dpr_passages,
    write_passages_jsonl,
)
from umr_jax.data.formats.questions import (
    MKQA_SCHEMA,
    QUESTION_SCHEMA,
    XOR_VARIANTS,
    mkqa_to_questions,
    parse_mkqa,
    parse_question,
    read_mkqa,
    read_questions,
    write_mkqa,
    write_questions,
)
from umr_jax.data.formats.records import (
    MKQA_ANSWER_TYPES,
    Context,
    Fields,
    MkqaAnswer,
    MkqaExample,
    Pair,
    Passage,
    Qrel,
    Query,
    Question,
    RetrievalResult,
    TrecRunEntry,
    WebFaqRecord,
    XorPrediction,
    check_language,
    known_codes,
    type_name,
)
from umr_jax.data.formats.retrieval import (
    RETRIEVAL_SCHEMA,
    parse_retrieval,
    parse_xor_prediction,
    question_id,
    read_dpr_json,
    read_retrieval,
    read_xor_predictions,
    retrieval_json,
    retrieval_to_xor_prediction,
    write_dpr_json,
    write_retrieval,
    write_xor_predictions,
    xor_prediction_json,
)
from umr_jax.data.formats.streams import first_char, json_items, json_list_items, jsonl_items, parquet_items, text_line_items, write_records
from umr_jax.data.formats.table import (CONVERSIONS, FORMAT_ALIASES, FORMATS, ConversionReport, Format, aliases_of, canonical_format,
                                        convert, open_format, sink_for)
from umr_jax.data.formats.trec import parse_trec_line, parse_trec_qrel, read_trec_qrels, read_trec_run, retrieval_to_trec_run, write_trec_run
from umr_jax.data.validation import RecordError, SkippedRecords
from umr_jax.errors import InputError

__all__ = [
    "aliases_of", "BEIR_CORPUS_SCHEMA", "BEIR_QRELS_HEADER", "canonical_format", "check_language", "Context", "ConversionReport",
    "CONVERSIONS", "convert", "DPR_HEADER", "Fields", "first_char", "Format", "FORMAT_ALIASES", "FORMATS",
    "InputError", "iter_tsv_records", "json_items", "json_list_items", "jsonl_items", "known_codes",
    "MKQA_ANSWER_TYPES", "MKQA_SCHEMA", "mkqa_to_questions", "MkqaAnswer", "MkqaExample",
    "open_format", "Pair", "PAIR_SCHEMA", "PAIRS_PARQUET_COLUMNS", "DIRECTIONS", "pair_direction", "parquet_items",
    "parse_beir_document", "parse_beir_qrel", "parse_beir_query", "parse_dpr_row", "parse_mkqa",
    "parse_pair", "parse_passage", "parse_question", "parse_retrieval", "parse_trec_line", "question_id",
    "parse_trec_qrel", "parse_webfaq_row", "parse_xor_prediction", "Passage", "PASSAGE_SCHEMA",
    "Qrel", "Query", "Question", "QUESTION_SCHEMA", "read_beir_corpus", "read_beir_qrels",
    "read_beir_queries", "read_dpr_json", "read_dpr_passages", "read_mkqa", "read_pairs",
    "read_passages_jsonl", "read_questions", "read_retrieval", "read_trec_qrels", "read_trec_run",
    "read_webfaq", "read_xor_predictions", "RecordError", "retrieval_json", "RETRIEVAL_SCHEMA",
    "retrieval_to_trec_run", "retrieval_to_xor_prediction", "RetrievalResult", "sink_for",
    "SkippedRecords", "text_line_items", "TrecRunEntry", "TSV_DIALECT", "tsv_field", "type_name",
    "webfaq_files", "webfaq_language", "WEBFAQ_OPTIONAL", "WEBFAQ_REQUIRED", "WEBFAQ_SCHEMA", "webfaq_to_pair",
    "WebFaqRecord", "write_beir_corpus", "write_beir_qrels", "write_beir_queries", "write_dpr_json",
    "write_dpr_passages", "write_mkqa", "write_pairs", "write_passages_jsonl", "write_questions",
    "write_records", "write_retrieval", "write_trec_run", "write_webfaq", "write_xor_predictions",
    "xor_prediction_json", "XOR_VARIANTS", "XorPrediction",
]
