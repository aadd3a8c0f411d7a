"""Questions: XOR-TyDi JSON lines `{id, question, lang, answers?}`, and MKQA as released."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Collection, Iterable, Iterator

from umr_jax.data.files import PathLike
from umr_jax.data.formats.records import MKQA_ANSWER_TYPES, Fields, MkqaAnswer, MkqaExample, Question, check_language, known_codes, type_name
from umr_jax.data.formats.streams import jsonl_items, jsonl_sink, write_records
from umr_jax.data.languages import KNOWN_LANGUAGES, XOR_LANGUAGES
from umr_jax.data.validation import EMPTY_TEXT, MALFORMED, WRONG_TYPE, SkippedRecords, validated

# ----------------------------------------------------------------------------------------------
# Questions (XOR-TyDi)

QUESTION_SCHEMA = "{id, question, lang, answers?}"
XOR_VARIANTS = ("retrieve", "full")


def parse_question(obj: dict, path: str, line: int, known: Collection[str]) -> Question:
    """A `Question` from one JSON object `{id, question, lang, answers?}`; `answers` may be a list
    of strings or (as the official XOR script accepts) one bare string."""
    f = Fields(obj, path, line, QUESTION_SCHEMA)
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
    known = known_codes(known_languages, XOR_LANGUAGES if variant else KNOWN_LANGUAGES)
    return validated(
        jsonl_items(path),
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
    return write_records(path, questions, SINKS["xor-questions"], sharding)


# ----------------------------------------------------------------------------------------------
# MKQA

MKQA_SCHEMA = "{example_id, query, queries: {lang: text}, answers: {lang: [{type, text, entity?, aliases?}]}}"


def parse_mkqa(obj: dict, path: str, line: int, known: Collection[str]) -> MkqaExample:
    """An `MkqaExample` from one line of the released `mkqa.jsonl(.gz)`."""
    f = Fields(obj, path, line, MKQA_SCHEMA)
    example_id = f.ident("example_id")
    query = f.string("query", non_empty=True)
    queries_raw = f.raw("queries")
    if not isinstance(queries_raw, dict):
        raise f.error(WRONG_TYPE, f"field 'queries' must be an object {{lang: text}}, got {type_name(queries_raw)}")
    queries: dict[str, str] = {}
    for code, text in queries_raw.items():
        check_language(code, known, path, line)
        if not isinstance(text, str):
            raise f.error(WRONG_TYPE, f"queries[{code!r}] must be a string, got {type_name(text)}")
        if not text.strip():
            raise f.error(EMPTY_TEXT, f"empty queries[{code!r}]; expected non-empty text")
        queries[code] = text
    answers_raw = f.raw("answers")
    if not isinstance(answers_raw, dict):
        raise f.error(WRONG_TYPE, f"field 'answers' must be an object {{lang: [answer, ...]}}, got {type_name(answers_raw)}")
    answers: dict[str, tuple[MkqaAnswer, ...]] = {}
    for code, items in answers_raw.items():
        check_language(code, known, path, line)
        if not isinstance(items, list):
            raise f.error(WRONG_TYPE, f"answers[{code!r}] must be a list, got {type_name(items)}")
        parsed = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise f.error(WRONG_TYPE, f"answers[{code!r}][{i}] must be an object, got {type_name(item)}")
            a = Fields(item, path, line, "{type, text, entity?, aliases?}")
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
    known = known_codes(known_languages)
    return validated(
        jsonl_items(path),
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
    return write_records(path, examples, SINKS["mkqa"], sharding)


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


SINKS = {"xor-questions": jsonl_sink(_question_json), "mkqa": jsonl_sink(_mkqa_json)}
