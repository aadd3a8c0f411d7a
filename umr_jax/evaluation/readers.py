"""What the metrics read, in the shapes they want, read through `umr_jax.data.formats`.

The data layer reads every file (JSON lines or one JSON list, told apart by the first
character; TREC runs and qrels; BEIR qrels; shards and `.gz` too) and reports every problem
as a `RecordError`/`InputError` naming the file, the line and what was expected, so the CLI
prints one line and exits non-zero. What stays here is how the official scripts read:

  - XOR-TyDi gold: JSON lines `{id, question, answers, lang}`; only `id` and `answers` are
    read for XOR-Retrieve (a repeated id keeps its last answers), `id`, `lang` and `answers`
    (a string or a non-empty list) for XOR-Full.
  - XOR-Retrieve predictions (`formats.XorPrediction`): the official JSON list
    `[{"id", "lang", "ctxs": [text, ...]}]`, or retrieval results (JSON lines or a DPR-style
    JSON list) whose `ctxs` are objects with a `text`. Any language; a repeated id is kept
    (the official script counts it again).
  - XOR-Full predictions: the official JSON object `{question id: answer string}`.
  - qrels: TREC (`qid 0 docid rel`) or BEIR TSV (`query-id corpus-id score`, header row),
    as query id -> {document id: relevance}; a repeated judgement: the last counts.
  - runs: TREC (`qid Q0 docid rank score tag`) or retrieval results, whose `lang` and
    passage texts are optional here.
  - queries: JSON lines `{id, lang, ...}` (`_id` is accepted for BEIR files).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Iterator, Sequence

from umr_jax.data import formats, reading
from umr_jax.data.formats import Fields, XorPrediction, type_name
from umr_jax.data.validation import DUPLICATE_ID, EMPTY_TEXT, UNKNOWN_LANGUAGE, WRONG_TYPE, validated
from umr_jax.errors import InputError

GOLD_SCHEMA = "{id, question, lang, answers}"
PREDICTION_SCHEMA = "{id, lang, ctxs: [passage text or {id, title, text, score}, ...]}"
RUN_SCHEMA = "{id, question, lang?, ctxs: [{id, title, text, score}, ...]}"
QUERY_SCHEMA = "{id, lang} (or BEIR's {_id, text, lang})"


@dataclasses.dataclass(frozen=True)
class XorFullGold:
    """One XOR-Full gold question. `answers` is a list (a bare string in the file becomes a
    one-element list, as the official script does)."""

    id: str
    lang: str
    answers: list[str]


def _read(path: str | os.PathLike, parse) -> Iterator[Any]:
    """`parse(obj, path, line)` of every object of a JSON-lines file or JSON list, in order; the
    first invalid one raises."""
    return validated(formats.json_items(path), parse, skip_invalid=None)


def read_xor_gold_answers(path: str | os.PathLike) -> dict[str, list[str]]:
    """Question id -> answers, from an XOR-TyDi gold JSON-lines file. A repeated id keeps its
    last answers, as the official script's dictionary does."""

    def parse(obj: dict, p: str, line: int) -> tuple[str, list[str]]:
        f = Fields(obj, p, line, GOLD_SCHEMA)
        return f.ident("id"), list(f.strings("answers"))

    return dict(_read(path, parse))


def read_xor_full_gold(path: str | os.PathLike, langs: Sequence[str] | None = None) -> list[XorFullGold]:
    """The XOR-Full gold questions in file order. `answers` may be a string or a non-empty
    list of strings; when `langs` is given, `lang` must be one of them."""

    def parse(obj: dict, p: str, line: int) -> XorFullGold:
        f = Fields(obj, p, line, GOLD_SCHEMA)
        question_id, lang = f.ident("id"), f.string("lang")
        if langs is not None and lang not in langs:
            raise f.error(UNKNOWN_LANGUAGE, f"language '{lang}' is not one of the official XOR-Full script's: {', '.join(langs)}")
        answers = list(f.strings("answers", bare_string_ok=True))
        if not answers:
            raise f.error(EMPTY_TEXT, "'answers' is empty; at least one answer is expected")
        return XorFullGold(question_id, lang, answers)

    return list(_read(path, parse))


def _ctxs(f: Fields) -> list:
    ctxs = f.raw("ctxs")
    if not isinstance(ctxs, list):
        raise f.error(WRONG_TYPE, f"field 'ctxs' must be a list, got {type_name(ctxs)}")
    return ctxs


def _prediction(obj: dict, path: str, line: int) -> XorPrediction:
    f = Fields(obj, path, line, PREDICTION_SCHEMA)
    question_id, lang = f.ident("id"), f.string("lang")
    texts = []
    for i, ctx in enumerate(_ctxs(f)):
        if isinstance(ctx, str):
            texts.append(ctx)
        elif isinstance(ctx, dict) and isinstance(ctx.get("text"), str):
            texts.append(ctx["text"])
        elif isinstance(ctx, dict):
            raise f.error(WRONG_TYPE, f"ctxs[{i}] has no string 'text'; expected a passage text or an object {{id, title, text, score}}")
        else:
            raise f.error(WRONG_TYPE, f"ctxs[{i}] must be a passage text or an object {{id, title, text, score}}, got {type_name(ctx)}")
    return XorPrediction(question_id, lang, tuple(texts))


def iter_xor_predictions(path: str | os.PathLike) -> Iterator[XorPrediction]:
    """The predicted questions in file order, from the official prediction file (a JSON list
    whose `ctxs` are passage texts) or retrieval results (whose `ctxs` are objects with a
    `text`). Only the texts are kept, in the order given: the list order is the rank order."""
    return _read(path, _prediction)


def read_xor_full_predictions(path: str | os.PathLike) -> dict[str, str]:
    """Question id -> predicted answer, from the official XOR-Full prediction file (one JSON
    object). Like the official script, each key is cut to what follows its last `_`
    (`"ja_123"` -> `"123"`); a later key with the same cut wins."""
    predictions = reading.read_json(path, "a JSON object {question id: answer}")
    if not isinstance(predictions, dict):
        raise InputError(f"a JSON object {{question id: answer}} is expected, got {type_name(predictions)}", path)
    answers = {}
    for key, answer in predictions.items():
        if not isinstance(answer, str):
            raise InputError(f"the answer for '{key}' must be a string, got {type_name(answer)}", path)
        answers[key.split("_")[-1]] = answer
    return answers


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Query id -> {document id: relevance}, from TREC qrels (`qid iteration docid rel`,
    whitespace-separated) or a BEIR qrels TSV (`query-id<TAB>corpus-id<TAB>score`, with its
    header row), told apart by the number of columns of the first non-blank line."""
    first = next(formats.text_line_items(path), None)
    if first is None:
        raise InputError("no relevance judgements found", path)
    name, line, text = first
    if isinstance(text, InputError):
        raise text
    columns = len(text.split())
    if columns == 4:
        judgements = formats.read_trec_qrels(path, unique=False)
    elif columns == 3:
        judgements = formats.read_beir_qrels(path, unique=False)
    else:
        raise InputError(f"expected TREC qrels 'qid 0 docid relevance' (4 columns) or BEIR qrels 'query-id<TAB>corpus-id<TAB>score' (3 columns), got {columns} columns", name, line)
    qrels: dict[str, dict[str, int]] = {}
    for qrel in judgements:
        qrels.setdefault(qrel.query_id, {})[qrel.corpus_id] = qrel.score
    if not qrels:
        raise InputError("no relevance judgements found", path)
    return qrels


@dataclasses.dataclass(frozen=True)
class RankedRun:
    """Query id -> document ids, best first; and query id -> language where the run says it."""

    rankings: dict[str, list[str]]
    langs: dict[str, str]


def read_run(path: str | os.PathLike) -> RankedRun:
    """A TREC run (`qid Q0 docid rank score tag`) or retrieval results as JSON lines or a JSON
    list (told apart by the first non-blank character, `{` or `[`).

    TREC runs are ranked as trec_eval ranks them: by score, highest first, ties broken by
    document id in reverse string order; the rank column is not used. Retrieval results are
    ranked in list order. A query repeated, or a document repeated within one query, is an
    error."""
    if formats.first_char(path) in ("{", "["):
        return _read_retrieval_run(path)
    scored: dict[str, dict[str, float]] = {}
    for entry in formats.read_trec_run(path):
        scored.setdefault(entry.query_id, {})[entry.doc_id] = entry.score
    rankings = {}
    for query_id, docs in scored.items():
        # trec_eval's order: score descending, then document id descending.
        rankings[query_id] = [doc for doc, _ in sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)]
    return RankedRun(rankings, {})


def _ranking(obj: dict, path: str, line: int) -> tuple[str, str | None, list[str]]:
    f = Fields(obj, path, line, RUN_SCHEMA)
    query_id = formats.question_id(f)
    ctxs = _ctxs(f)
    lang = f.string("lang", optional=True)
    docs: list[str] = []
    seen = set()
    for i, ctx in enumerate(ctxs):
        if not isinstance(ctx, dict):
            raise f.error(WRONG_TYPE, f"ctxs[{i}] must be an object {{id, title, text, score}}, got {type_name(ctx)}")
        doc_id = Fields(ctx, path, line, f"ctxs[{i}] = {{id, title, text, score}}").ident("id")
        if doc_id in seen:
            raise f.error(DUPLICATE_ID, f"passage {doc_id!r} appears twice in ctxs of question {query_id!r}")
        seen.add(doc_id)
        docs.append(doc_id)
    return query_id, lang, docs


def _read_retrieval_run(path: str | os.PathLike) -> RankedRun:
    rankings: dict[str, list[str]] = {}
    langs: dict[str, str] = {}
    for query_id, lang, docs in validated(formats.json_items(path), _ranking, skip_invalid=None, record_id=lambda r: r[0]):
        rankings[query_id] = docs
        if lang is not None:
            langs[query_id] = lang
    return RankedRun(rankings, langs)


def read_query_langs(path: str | os.PathLike) -> dict[str, str]:
    """Query id -> language code, from JSON lines `{id, lang, ...}` (`_id` for BEIR files)."""

    def parse(obj: dict, p: str, line: int) -> tuple[str, str]:
        f = Fields(obj, p, line, QUERY_SCHEMA)
        return f.ident("id" if "id" in obj or "_id" not in obj else "_id"), f.string("lang")

    return dict(_read(path, parse))
