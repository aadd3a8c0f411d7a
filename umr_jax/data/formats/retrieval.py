"""Retrieval results: JSON lines `{id, question, lang, answers?, ctxs: [{id, title, text, score}]}`
(pseudo labels too, with `scorer`), the DPR JSON list of the same records, and the official
XOR-Retrieve prediction file `[{id, lang, ctxs: [passage text, ...]}]`.

The released UMR code's files read as they are: its `dense_retriever.py` names the question id
`q_id` and writes scores as strings, its `upr-multi.py` (the reranker) writes `id` and the LM
scores as numbers, with the ctxs sorted by them."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Iterable, Iterator

from umr_jax.data.files import PathLike
from umr_jax.data.formats.records import Context, Fields, RetrievalResult, XorPrediction, known_codes, type_name
from umr_jax.data.formats.streams import json_list_items, json_list_sink, jsonl_items, jsonl_sink, write_records
from umr_jax.data.validation import DUPLICATE_ID, MALFORMED, WRONG_TYPE, RecordError, SkippedRecords, validated

RETRIEVAL_SCHEMA = "{id, question, lang, answers?, ctxs: [{id, title, text, score}]}"


def question_id(f: Fields) -> str:
    """The question id of a retrieval record: `id`, or `q_id` where `id` is absent (the released
    UMR / DPR `dense_retriever.py` writes `q_id`). Both present with different values is an error."""
    if not f.present("id") and f.present("q_id"):
        return f.ident("q_id")
    rid = f.ident("id")
    if f.present("q_id") and f.ident("q_id") != rid:
        raise f.error(MALFORMED, f"'id' {rid!r} and 'q_id' {f.ident('q_id')!r} differ; expected one question id")
    return rid


def parse_retrieval(obj: dict, path: str, line: int, known: Collection[str]) -> RetrievalResult:
    """A `RetrievalResult` from `{id (or q_id), question, lang, answers?, ctxs, scorer?}`. A
    context's score may be a number or a numeric string (DPR writes strings); `has_answer` is kept
    when present."""
    f = Fields(obj, path, line, RETRIEVAL_SCHEMA)
    rid = question_id(f)
    question = f.string("question", non_empty=True)
    lang = f.language("lang", known)
    answers = f.strings("answers", optional=True, bare_string_ok=True)
    ctxs_raw = f.raw("ctxs")
    if not isinstance(ctxs_raw, list):
        raise f.error(WRONG_TYPE, f"field 'ctxs' must be a list, got {type_name(ctxs_raw)}")
    ctxs = []
    seen: set[str] = set()
    for i, ctx in enumerate(ctxs_raw):
        if not isinstance(ctx, dict):
            raise f.error(WRONG_TYPE, f"ctxs[{i}] must be an object {{id, title, text, score}}, got {type_name(ctx)}")
        c = Fields(ctx, path, line, f"ctxs[{i}] = {{id, title, text, score}}")
        cid = c.ident("id")
        if cid in seen:
            raise f.error(DUPLICATE_ID, f"passage {cid!r} appears twice in ctxs of question {rid!r}")
        seen.add(cid)
        has_answer = ctx.get("has_answer")
        if has_answer is not None and not isinstance(has_answer, bool):
            raise f.error(WRONG_TYPE, f"ctxs[{i}].has_answer must be a boolean, got {type_name(has_answer)}")
        try:
            ctxs.append(Context(id=cid, title=c.string("title", optional=True) or "", text=c.string("text", non_empty=True), score=c.number("score", allow_numeric_string=True), has_answer=has_answer))
        except RecordError as err:
            raise f.error(err.reason, f"ctxs[{i}]: {err.message}") from None
    scorer = f.string("scorer", optional=True)
    return RetrievalResult(id=rid, question=question, lang=lang, ctxs=tuple(ctxs), answers=answers, scorer=scorer)


def read_retrieval(path: PathLike, *, known_languages: Collection[str] | None = None, skip_invalid: SkippedRecords | None = None) -> Iterator[RetrievalResult]:
    """Retrieval results (or pseudo labels) from JSON lines, one question per line."""
    known = known_codes(known_languages)
    return validated(jsonl_items(path), lambda obj, p, line: parse_retrieval(obj, p, line, known), skip_invalid=skip_invalid, record_id=lambda r: r.id)


def read_dpr_json(path: PathLike, *, known_languages: Collection[str] | None = None, skip_invalid: SkippedRecords | None = None) -> Iterator[RetrievalResult]:
    """Retrieval results from a DPR-style JSON list (streamed item by item)."""
    known = known_codes(known_languages)
    return validated(json_list_items(path), lambda obj, p, line: parse_retrieval(obj, p, line, known), skip_invalid=skip_invalid, record_id=lambda r: r.id)


def retrieval_json(r: RetrievalResult) -> dict:
    """The JSON object a retrieval result is written as."""
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
    return write_records(path, results, SINKS["retrieval"], sharding)


def write_dpr_json(path: PathLike, results: Iterable[RetrievalResult], **sharding) -> list[Path]:
    """Write retrieval results as one JSON list (DPR's format), streamed, one item per line."""
    return write_records(path, results, SINKS["dpr-json"], sharding)


def parse_xor_prediction(obj: dict, path: str, line: int, known: Collection[str]) -> XorPrediction:
    """An `XorPrediction` from `{id, lang, ctxs: [passage text, ...]}`."""
    f = Fields(obj, path, line, '{"id", "lang", "ctxs": [passage text, ...]}')
    return XorPrediction(id=f.ident("id"), lang=f.language("lang", known), ctxs=f.strings("ctxs"))


def read_xor_predictions(path: PathLike, *, known_languages: Collection[str] | None = None, skip_invalid: SkippedRecords | None = None) -> Iterator[XorPrediction]:
    """Entries of an official XOR-Retrieve prediction file (a JSON list), streamed."""
    known = known_codes(known_languages)
    return validated(json_list_items(path), lambda obj, p, line: parse_xor_prediction(obj, p, line, known), skip_invalid=skip_invalid, record_id=lambda x: x.id)


def write_xor_predictions(path: PathLike, predictions: Iterable[XorPrediction], **sharding) -> list[Path]:
    """Write the official XOR-Retrieve prediction file: a JSON list of `{id, lang, ctxs}`."""
    return write_records(path, predictions, SINKS["xor-predictions"], sharding)


def retrieval_to_xor_prediction(result: RetrievalResult) -> XorPrediction:
    """The official prediction entry: the passages' texts in rank order."""
    return XorPrediction(id=result.id, lang=result.lang, ctxs=tuple(c.text for c in result.ctxs))


def xor_prediction_json(x: XorPrediction) -> dict:
    """The JSON object an XOR-Retrieve prediction is written as."""
    return {"id": x.id, "lang": x.lang, "ctxs": list(x.ctxs)}


SINKS = {
    "retrieval": jsonl_sink(retrieval_json),
    "dpr-json": json_list_sink(retrieval_json),
    "xor-predictions": json_list_sink(xor_prediction_json),
}
