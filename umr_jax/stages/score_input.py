"""The score stage's input: a retrieval file's questions with their first top-k ctxs, validated.

Reads JSON lines `{id, question, lang, answers?, ctxs}` or a DPR JSON list (sniffed by the first
non-blank character), each as it streams; `inspect_retrieved` makes one validating pass to count
the questions and pairs and hash the (question id, passage id) keys the stage chunks by.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from typing import Any, Collection, Iterator

from umr_jax.data import files, formats, reading
from umr_jax.data.validation import RecordError, SkippedRecords, validated

NO_CTXS = "no ctxs"  # the skip reason (SkippedRecords) of a question without retrieved passages


def _items(path: str | os.PathLike) -> Iterator[tuple[str, int, Any]]:
    """Raw (path, line, object) items of a retrieval file: JSON lines, or a DPR JSON list when the
    first non-blank character is '['."""
    for shard in files.expand_shards(path):
        with reading.open_binary(shard) as f:
            head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
        yield from (reading.iter_json_array(shard) if head.startswith(b"[") else reading.iter_jsonl(shard))


def read_retrieved(path: str | os.PathLike, *, top_k: int, skip_invalid: SkippedRecords | None = None,
                   known_languages: Collection[str] | None = None) -> Iterator[formats.RetrievalResult]:
    """Validated retrieval results with ctxs cut to the first `top_k` (the retrieved order).
    `known_languages`: the language codes accepted (default: the known ones).

    A malformed record, a duplicate question id, or a question with no ctxs raises `RecordError`
    (`file:line: ...`), or, given `skip_invalid`, is skipped and counted there.
    """
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    known = formats.known_codes(known_languages)

    def parse(obj: dict, where: str, line: int) -> formats.RetrievalResult:
        result = formats.parse_retrieval(obj, where, line, known)
        if not result.ctxs:
            raise RecordError(NO_CTXS, f"question {result.id!r} has no ctxs; expected at least one retrieved passage to score", where, line)
        return dataclasses.replace(result, ctxs=result.ctxs[:top_k])

    return validated(_items(path), parse, skip_invalid=skip_invalid, record_id=lambda r: r.id)


@dataclasses.dataclass(frozen=True)
class RetrievedInput:
    """What a validating pass over the retrieval file found (the questions after `skip_invalid`).

    `keys_sha256` hashes every (question id, passage id) to score, in order: two inputs with the
    same hash and the same `questions_per_chunk` cut into the same chunks.
    """

    path: str
    top_k: int
    questions: int
    pairs: int
    keys_sha256: str
    skipped: dict[str, int]  # reason -> count, with skip_invalid
    skipped_summary: tuple[str, ...] = ()  # one line per reason, naming the first skipped record
    known_languages: frozenset[str] | None = None  # the codes accepted (None: the known ones)


def inspect_retrieved(path: str | os.PathLike, *, top_k: int, skip_invalid: bool = False,
                      known_languages: Collection[str] | None = None) -> RetrievedInput:
    """Read and validate the whole retrieval file once (constant memory): counts and key hash.
    Raises `InputError` on the first invalid record unless `skip_invalid`. `known_languages`:
    the language codes accepted (default: the known ones); the stage reads with them again."""
    known = None if known_languages is None else frozenset(known_languages)
    skipped = SkippedRecords() if skip_invalid else None
    digest = hashlib.sha256()
    questions = pairs = 0
    for result in read_retrieved(path, top_k=top_k, skip_invalid=skipped, known_languages=known):
        questions += 1
        pairs += len(result.ctxs)
        digest.update(json.dumps([result.id, [c.id for c in result.ctxs]], ensure_ascii=False).encode("utf-8"))
        digest.update(b"\n")
    return RetrievedInput(os.fspath(path), top_k, questions, pairs, digest.hexdigest(),
                          dict(skipped.counts) if skipped else {}, tuple(skipped.summary_lines()) if skipped else (), known)


def read_scored(path: str | os.PathLike, known_languages: Collection[str] | None = None) -> Iterator[formats.RetrievalResult]:
    """Retrieval results from JSON lines or a DPR JSON list (sniffed), validated."""
    known = formats.known_codes(known_languages)
    return validated(_items(path), lambda obj, where, line: formats.parse_retrieval(obj, where, line, known),
                     skip_invalid=None, record_id=lambda r: r.id)
