"""Strict readers for the files evaluation consumes.

Every problem with an input file raises `InputError` naming the file, the line (JSON lines,
TSV) or the record (JSON list) and what was expected, so the CLI prints one line and exits
non-zero instead of a traceback.

Files read here:
  - XOR-TyDi gold: JSON lines `{id, question, answers, lang}`.
  - XOR-Retrieve predictions: the official JSON list `[{"id", "lang", "ctxs": [text, ...]}]`,
    or this project's retrieval JSON lines `{id, question, lang, answers?, ctxs: [{id, title,
    text, score}]}` (a DPR-style JSON list of such records is read too).
  - XOR-Full predictions: the official JSON object `{question id: answer string}`.
  - qrels: TREC (`qid 0 docid rel`) or BEIR TSV (`query-id corpus-id score`, header row).
  - runs: TREC (`qid Q0 docid rank score tag`) or retrieval JSON lines / JSON list.
  - queries: JSON lines `{id, lang, ...}` (`_id` is accepted for BEIR files).
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Iterator, Sequence

from umr_jax.errors import InputError, MissingDependencyError  # noqa: F401 (MissingDependencyError: re-exported)

QuestionId = str | int


@dataclasses.dataclass(frozen=True)
class Where:
    """Where a record came from: a line of a line-oriented file, or an item of a JSON list."""

    path: str
    line: int | None = None
    record: int | None = None

    def error(self, message: str) -> InputError:
        if self.line is not None:
            return InputError(message, self.path, self.line)
        if self.record is not None:
            return InputError(f"record {self.record}: {message}", self.path)
        return InputError(message, self.path)


@dataclasses.dataclass(frozen=True)
class XorPrediction:
    """One predicted question: its passages' texts in rank order."""

    id: QuestionId
    lang: str
    passage_texts: list[str]


@dataclasses.dataclass(frozen=True)
class XorFullGold:
    """One XOR-Full gold question. `answers` is a list (a bare string in the file becomes a
    one-element list, as the official script does)."""

    id: QuestionId
    lang: str
    answers: list[str]


def _open_text(path: str | os.PathLike):
    try:
        return open(path, encoding="utf-8")
    except OSError as err:
        raise InputError(f"cannot read ({err.strerror})", path) from None


def _read_all(path: str | os.PathLike) -> str:
    with _open_text(path) as f:
        try:
            return f.read()
        except UnicodeDecodeError as err:
            raise InputError(f"not UTF-8 text ({err.reason} at byte {err.start})", path) from None


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, line without its newline)."""
    with _open_text(path) as f:
        number = 0
        try:
            for number, line in enumerate(f, start=1):
                yield number, line.rstrip("\n").rstrip("\r")
        except UnicodeDecodeError as err:
            raise InputError(f"not UTF-8 text ({err.reason})", path, number + 1) from None


def _first_char(path: str | os.PathLike) -> str:
    with _open_text(path) as f:
        try:
            while True:
                chunk = f.read(4096)
                if not chunk:
                    return ""
                stripped = chunk.lstrip()
                if stripped:
                    return stripped[0]
        except UnicodeDecodeError as err:
            raise InputError(f"not UTF-8 text ({err.reason})", path) from None


def iter_json_records(path: str | os.PathLike, what: str) -> Iterator[tuple[Where, Any]]:
    """Yields (where, record) for every record of a JSON-lines file, or of a file holding one
    JSON list (detected by its first non-blank character `[`). Blank lines are skipped.
    `what` names the expected record in error messages."""
    path = os.fspath(path)
    if _first_char(path) == "[":
        try:
            records = json.loads(_read_all(path))
        except json.JSONDecodeError as err:
            raise InputError(f"not valid JSON ({err.msg} at column {err.colno}); a JSON list of {what} is expected", path, err.lineno) from None
        if not isinstance(records, list):
            raise InputError(f"a JSON list of {what} is expected", path)
        for index, record in enumerate(records, start=1):
            yield Where(path, record=index), record
        return
    for number, line in _lines(path):
        if not line.strip():
            continue
        where = Where(path, line=number)
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise where.error(f"not valid JSON ({err.msg} at column {err.colno}); one JSON object per line ({what}) is expected") from None
        yield where, record


def _object(record: Any, where: Where, what: str) -> dict:
    if not isinstance(record, dict):
        raise where.error(f"expected a JSON object ({what}), got {_json_type(record)}")
    return record


def _field(record: dict, key: str, kind: type | tuple[type, ...], where: Where, expected: str) -> Any:
    if key not in record:
        raise where.error(f"missing field '{key}'; expected {expected}")
    value = record[key]
    # bool is an int in Python; a JSON true/false is never a valid id or count here.
    if isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,)):
        raise where.error(f"field '{key}' is {json.dumps(value)}; expected {expected}")
    if not isinstance(value, kind):
        raise where.error(f"field '{key}' is {_json_type(value)}; expected {expected}")
    return value


def _json_type(value: Any) -> str:
    """The JSON type of a parsed value, as a noun with its article: 'an object', 'a list'."""
    names = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number", bool: "a boolean", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _string_list(value: list, key: str, where: Where) -> list[str]:
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise where.error(f"'{key}'[{i}] is {_json_type(item)}; expected a list of strings")
    return value


_ID = "'id' (a string or an integer)"


def read_xor_gold_answers(path: str | os.PathLike) -> dict[QuestionId, list[str]]:
    """Question id -> answers, from an XOR-TyDi gold JSON-lines file. A repeated id keeps its
    last answers, as the official script's dictionary does."""
    gold: dict[QuestionId, list[str]] = {}
    what = "an XOR-TyDi question {id, question, answers, lang}"
    for where, record in iter_json_records(path, what):
        record = _object(record, where, what)
        question_id = _field(record, "id", (str, int), where, _ID)
        answers = _field(record, "answers", list, where, "'answers' (a list of strings)")
        gold[question_id] = _string_list(answers, "answers", where)
    return gold


def read_xor_full_gold(path: str | os.PathLike, langs: Sequence[str] | None = None) -> list[XorFullGold]:
    """The XOR-Full gold questions in file order. `answers` may be a string or a non-empty
    list of strings; when `langs` is given, `lang` must be one of them."""
    questions = []
    what = "an XOR-TyDi question {id, question, answers, lang}"
    for where, record in iter_json_records(path, what):
        record = _object(record, where, what)
        question_id = _field(record, "id", (str, int), where, _ID)
        lang = _field(record, "lang", str, where, "'lang' (a language code string)")
        if langs is not None and lang not in langs:
            raise where.error(f"language '{lang}' is not one of the official XOR-Full script's: {', '.join(langs)}")
        answers = _field(record, "answers", (list, str), where, "'answers' (a string or a list of strings)")
        answers = [answers] if isinstance(answers, str) else _string_list(answers, "answers", where)
        if not answers:
            raise where.error("'answers' is empty; at least one answer is expected")
        questions.append(XorFullGold(question_id, lang, answers))
    return questions


def iter_xor_predictions(path: str | os.PathLike) -> Iterator[XorPrediction]:
    """The predicted questions in file order, from the official prediction file (a JSON list
    whose `ctxs` are passage texts) or retrieval JSON lines (whose `ctxs` are objects with a
    `text`). Only the texts are kept, in the order given: the list order is the rank order."""
    what = "a prediction {id, lang, ctxs}"
    for where, record in iter_json_records(path, what):
        record = _object(record, where, what)
        question_id = _field(record, "id", (str, int), where, _ID)
        lang = _field(record, "lang", str, where, "'lang' (a language code string)")
        ctxs = _field(record, "ctxs", list, where, "'ctxs' (a list of passage texts or of {id, title, text, score} objects)")
        texts = []
        for i, ctx in enumerate(ctxs):
            if isinstance(ctx, str):
                texts.append(ctx)
            elif isinstance(ctx, dict) and isinstance(ctx.get("text"), str):
                texts.append(ctx["text"])
            else:
                raise where.error(f"'ctxs'[{i}] is {_json_type(ctx)}{' without a string text' if isinstance(ctx, dict) else ''}; expected a passage text or an object with a string 'text'")
        yield XorPrediction(question_id, lang, texts)


def read_xor_full_predictions(path: str | os.PathLike) -> dict[str, str]:
    """Question id -> predicted answer, from the official XOR-Full prediction file (one JSON
    object). Like the official script, each key is cut to what follows its last `_`
    (`"ja_123"` -> `"123"`); a later key with the same cut wins."""
    path = os.fspath(path)
    try:
        predictions = json.loads(_read_all(path))
    except json.JSONDecodeError as err:
        raise InputError(f"not valid JSON ({err.msg} at column {err.colno}); a JSON object {{question id: answer}} is expected", path, err.lineno) from None
    if not isinstance(predictions, dict):
        raise InputError(f"a JSON object {{question id: answer}} is expected, got {_json_type(predictions)}", path)
    answers = {}
    for key, answer in predictions.items():
        if not isinstance(answer, str):
            raise InputError(f"the answer for '{key}' is {_json_type(answer)}; a string is expected", path)
        answers[key.split("_")[-1]] = answer
    return answers


def read_qrels(path: str | os.PathLike) -> dict[str, dict[str, int]]:
    """Query id -> {document id: relevance}, from TREC qrels (`qid iteration docid rel`,
    whitespace-separated) or a BEIR qrels TSV (`query-id<TAB>corpus-id<TAB>score`, with a
    header row). The format is detected from the first non-blank line."""
    path = os.fspath(path)
    qrels: dict[str, dict[str, int]] = {}
    columns = None
    for number, line in _lines(path):
        if not line.strip():
            continue
        fields = line.split()
        if columns is None:
            columns = len(fields)
            if columns not in (3, 4):
                raise InputError(f"expected TREC qrels 'qid 0 docid relevance' (4 columns) or BEIR qrels 'query-id<TAB>corpus-id<TAB>score' (3 columns), got {len(fields)} columns", path, number)
            if columns == 3 and not _is_int(fields[2]):
                continue  # the BEIR header row
        if len(fields) != columns:
            raise InputError(f"expected {columns} columns like the first line, got {len(fields)}", path, number)
        if not _is_int(fields[-1]):
            raise InputError(f"relevance '{fields[-1]}' is not an integer", path, number)
        qrels.setdefault(fields[0], {})[fields[-2]] = int(fields[-1])
    if not qrels:
        raise InputError("no relevance judgements found", path)
    return qrels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


@dataclasses.dataclass(frozen=True)
class RankedRun:
    """Query id -> document ids, best first; and query id -> language where the run says it."""

    rankings: dict[str, list[str]]
    langs: dict[str, str]


def read_run(path: str | os.PathLike) -> RankedRun:
    """A TREC run (`qid Q0 docid rank score tag`) or retrieval JSON lines / JSON list (detected
    by the first non-blank character `{` or `[`).

    TREC runs are ranked as trec_eval ranks them: by score, highest first, ties broken by
    document id in reverse string order; the rank column is not used. Retrieval JSON is ranked
    in list order. A document repeated within one query is an error."""
    path = os.fspath(path)
    if _first_char(path) in ("{", "["):
        return _read_retrieval_run(path)
    scored: dict[str, dict[str, float]] = {}
    for number, line in _lines(path):
        if not line.strip():
            continue
        fields = line.split()
        if len(fields) != 6:
            raise InputError(f"expected a TREC run line 'qid Q0 docid rank score tag' (6 columns), got {len(fields)} columns", path, number)
        query_id, _, doc_id, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise InputError(f"score '{score}' is not a number", path, number) from None
        docs = scored.setdefault(query_id, {})
        if doc_id in docs:
            raise InputError(f"document '{doc_id}' appears twice for query '{query_id}'", path, number)
        docs[doc_id] = value
    rankings = {}
    for query_id, docs in scored.items():
        # trec_eval's order: score descending, then document id descending.
        rankings[query_id] = [doc for doc, _ in sorted(docs.items(), key=lambda item: (item[1], item[0]), reverse=True)]
    return RankedRun(rankings, {})


def _read_retrieval_run(path: str) -> RankedRun:
    rankings: dict[str, list[str]] = {}
    langs: dict[str, str] = {}
    what = "a retrieval result {id, question, lang, ctxs: [{id, title, text, score}]}"
    for where, record in iter_json_records(path, what):
        record = _object(record, where, what)
        query_id = str(_field(record, "id", (str, int), where, _ID))
        ctxs = _field(record, "ctxs", list, where, "'ctxs' (a list of {id, title, text, score} objects)")
        if "lang" in record:
            langs[query_id] = _field(record, "lang", str, where, "'lang' (a language code string)")
        if query_id in rankings:
            raise where.error(f"query '{query_id}' appears twice")
        docs: list[str] = []
        seen = set()
        for i, ctx in enumerate(ctxs):
            doc_id = ctx.get("id") if isinstance(ctx, dict) else None
            if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
                raise where.error(f"'ctxs'[{i}] has no string or integer 'id'; expected {{id, title, text, score}} objects")
            doc_id = str(doc_id)
            if doc_id in seen:
                raise where.error(f"document '{doc_id}' appears twice in 'ctxs'")
            seen.add(doc_id)
            docs.append(doc_id)
        rankings[query_id] = docs
    return RankedRun(rankings, langs)


def read_query_langs(path: str | os.PathLike) -> dict[str, str]:
    """Query id -> language code, from JSON lines `{id, lang, ...}` (`_id` for BEIR files)."""
    langs = {}
    what = "a query {id, lang}"
    for where, record in iter_json_records(path, what):
        record = _object(record, where, what)
        key = "id" if "id" in record or "_id" not in record else "_id"
        query_id = _field(record, key, (str, int), where, _ID)
        langs[str(query_id)] = _field(record, "lang", str, where, "'lang' (a language code string)")
    return langs
