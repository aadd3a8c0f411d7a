"""The records every format reads and writes, and the field checks their parsers share.

Records are small frozen dataclasses. `Fields` gives typed access to one raw record's fields;
every check raises `RecordError` naming the file, the line and what was expected.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Collection

from umr_jax.data.languages import KNOWN_LANGUAGES, describe_codes
from umr_jax.data.validation import EMPTY_TEXT, MISSING_FIELD, UNKNOWN_LANGUAGE, WRONG_TYPE, RecordError
from umr_jax.errors import with_hint


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
    """A training pair: a query, its positive passage, the query's language, optional hard
    negatives, and the passage's language when the source says it (`passage_lang`: "en" for a
    translated query with an English passage, the query's own for a translated pair; None:
    not stated)."""

    query: str
    positive: str
    lang: str
    negatives: tuple[str, ...] = ()
    passage_lang: str | None = None


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
    """One question's predicted passages, as texts in rank order: an entry of the official
    XOR-Retrieve prediction file, and what XOR-Retrieve R@kt scores."""

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


class Fields:
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
            raise self.error(WRONG_TYPE, f"field {key!r} must be a string, got {type_name(value)}")
        if non_empty and not value.strip():
            raise self.error(EMPTY_TEXT, f"empty {key!r}; expected non-empty text")
        return value

    def ident(self, key: str) -> str:
        """An id: a non-empty string, or an integer (stored as its decimal string)."""
        value = self.raw(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise self.error(WRONG_TYPE, f"field {key!r} must be a string or integer id, got {type_name(value)}")
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
            raise self.error(WRONG_TYPE, f"field {key!r} must be a list of strings, got {type_name(value)}")
        for item in value:
            if not isinstance(item, str):
                raise self.error(WRONG_TYPE, f"field {key!r} must be a list of strings, got a list holding {type_name(item)} {item!r}")
        if non_empty_items and any(not v.strip() for v in value):
            raise self.error(EMPTY_TEXT, f"field {key!r} holds an empty text; expected non-empty texts")
        return tuple(value)

    def language(self, key: str, known: Collection[str]) -> str:
        code = self.string(key)
        return check_language(code, known, self.path, self.line)


def type_name(value: Any) -> str:
    """The JSON name of a parsed value's type, for error messages: object, list, string, ..."""
    return {dict: "object", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}.get(type(value), type(value).__name__)


def check_language(code: str, known: Collection[str], path: str | None = None, line: int | None = None) -> str:
    """`code` when it is in `known`; else `RecordError(unknown language)` naming the known codes."""
    if code not in known:
        raise with_hint(RecordError(UNKNOWN_LANGUAGE, f"unknown language code {code!r}; expected one of {describe_codes(known)}", path, line),
                        "--known-language", f"accept it with --known-language {code}")
    return code


def known_codes(languages: Collection[str] | None, default: Collection[str] = KNOWN_LANGUAGES) -> Collection[str]:
    """The language codes a reader accepts: `languages` when given, else `default`."""
    return default if languages is None else frozenset(languages)

