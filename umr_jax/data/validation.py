"""What makes a record invalid, how readers report it, and how they count what they skip.

Readers validate every record. By default the first invalid record raises `RecordError` (an
`InputError`: `file:line: what was expected`). Given a `SkippedRecords`, readers skip invalid
records instead and count them there per reason, so that nothing is dropped silently: the CLI
prints the counts.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import os
from typing import Iterable, Iterator

import numpy as np

from umr_jax.errors import InputError

logger = logging.getLogger(__name__)

# The reasons a record is invalid (the keys of `SkippedRecords.counts`).
MALFORMED = "malformed record"
MISSING_FIELD = "missing field"
WRONG_TYPE = "wrong type"
EMPTY_TEXT = "empty text"
DUPLICATE_ID = "duplicate id"
INVALID_UTF8 = "invalid UTF-8"
UNKNOWN_LANGUAGE = "unknown language"
REASONS = (MALFORMED, MISSING_FIELD, WRONG_TYPE, EMPTY_TEXT, DUPLICATE_ID, INVALID_UTF8, UNKNOWN_LANGUAGE)


class RecordError(InputError):
    """One invalid record: `file:line: message`, and the `reason` (one of `REASONS`)."""

    def __init__(self, reason: str, message: str, path: str | os.PathLike | None = None, line: int | None = None):
        self.reason = reason
        super().__init__(message, path, line)


@dataclasses.dataclass
class SkippedRecords:
    """Invalid records a reader skipped: a count per reason and the first error of each reason."""

    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    first: dict[str, RecordError] = dataclasses.field(default_factory=dict)

    def add(self, error: RecordError) -> None:
        if error.reason not in self.first:
            self.first[error.reason] = error
            logger.warning("skipping invalid record: %s", error)
        self.counts[error.reason] += 1

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __bool__(self) -> bool:
        return self.total > 0

    def summary_lines(self) -> list[str]:
        """One line per reason, most frequent first: `12 duplicate id (first: f.jsonl:7: ...)`."""
        return [
            f"{count} {reason} (first: {self.first[reason]})"
            for reason, count in sorted(self.counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]


def id_key(record_id: str) -> int:
    """A 64-bit key for duplicate detection. Canonical non-negative decimal ids (DPR's `1`..`21015324`)
    map to themselves, exactly; any other id maps to a 63-bit hash in the negative half, so the two
    kinds never collide and two distinct string ids collide with probability about 2**-63."""
    if record_id.isascii() and record_id.isdigit() and (record_id == "0" or record_id[0] != "0") and len(record_id) <= 18:
        return int(record_id)
    return (hash(record_id) & 0x7FFF_FFFF_FFFF_FFFF) - (1 << 63)


class SeenIds:
    """The set of ids seen so far in a stream, at 16 bytes per id (key and where it was seen).

    A Python set of 18M passage ids would take over a gigabyte; this keeps sorted numpy runs
    (merged like a binary counter, so there are O(log n) of them) and checks a whole batch of
    keys against them at once with `searchsorted`.
    """

    def __init__(self) -> None:
        self._keys: list[np.ndarray] = []
        self._lines: list[np.ndarray] = []

    def check_and_add(self, keys: np.ndarray, lines: np.ndarray) -> np.ndarray:
        """For each key, the (positive) line code where it was first seen, in an earlier batch or
        earlier in this batch, or 0 when it is new. New keys are added with their line codes.
        Shapes: [batch] int64."""
        first_line = np.zeros(len(keys), dtype=np.int64)
        for run_keys, run_lines in zip(self._keys, self._lines):
            pos = np.searchsorted(run_keys, keys)
            pos_clipped = np.minimum(pos, len(run_keys) - 1)
            hit = run_keys[pos_clipped] == keys
            first_line = np.where(hit & (first_line == 0), run_lines[pos_clipped], first_line)
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        repeat = np.zeros(len(keys), dtype=bool)
        repeat[1:] = sorted_keys[1:] == sorted_keys[:-1]
        # The first occurrence within the batch of each repeated key, per sorted position.
        group_start = np.maximum.accumulate(np.where(~repeat, np.arange(len(keys)), 0))
        within = np.zeros(len(keys), dtype=np.int64)
        within[order[repeat]] = lines[order[group_start[repeat]]]
        first_line = np.where(first_line == 0, within, first_line)
        new = first_line == 0
        if new.any():
            new_keys, new_lines = keys[new], lines[new]
            order = np.argsort(new_keys, kind="stable")
            self._keys.append(new_keys[order])
            self._lines.append(new_lines[order])
            while len(self._keys) > 1 and len(self._keys[-2]) <= 2 * len(self._keys[-1]):
                merged_keys = np.concatenate([self._keys.pop(-2), self._keys.pop()])
                merged_lines = np.concatenate([self._lines.pop(-2), self._lines.pop()])
                order = np.argsort(merged_keys, kind="stable")
                self._keys.append(merged_keys[order])
                self._lines.append(merged_lines[order])
        return first_line


def validated(
    items: Iterable[tuple[str, int, object]],
    parse,
    *,
    skip_invalid: SkippedRecords | None,
    record_id=None,
    batch_size: int = 2048,
) -> Iterator:
    """Parse and check a stream of `(path, line, raw item or RecordError)`, yielding valid records in order.

    `parse(raw, path, line)` returns a record or raises `RecordError`. `record_id(record)` (optional)
    gives the string whose repetition anywhere in the stream (all shards of a file) is a duplicate.
    The first invalid record raises, unless `skip_invalid` is given: then it is counted there and
    skipped.
    """
    seen = SeenIds() if record_id is not None else None
    paths: dict[str, int] = {}
    path_names: list[str] = []
    batch: list[tuple[str, int, object]] = []

    def where(code: int) -> str:
        return f"{path_names[code >> _LINE_BITS]}:{code & ((1 << _LINE_BITS) - 1)}"

    def flush() -> Iterator:
        results: list[tuple[str, int, object]] = []
        for path, line, raw in batch:
            if not isinstance(raw, RecordError):
                try:
                    raw = parse(raw, path, line)
                except RecordError as err:
                    raw = err
            results.append((path, line, raw))
        if seen is not None:
            valid = [i for i, (_, _, r) in enumerate(results) if not isinstance(r, RecordError)]
            if valid:
                ids = [record_id(results[i][2]) for i in valid]
                keys = np.fromiter((id_key(x) for x in ids), dtype=np.int64, count=len(ids))
                codes = np.empty(len(valid), dtype=np.int64)
                for j, i in enumerate(valid):
                    path, line, _ = results[i]
                    if path not in paths:
                        paths[path] = len(path_names)
                        path_names.append(path)
                    codes[j] = (paths[path] << _LINE_BITS) | line
                first = seen.check_and_add(keys, codes)
                for j in np.flatnonzero(first):
                    path, line, _ = results[valid[j]]
                    message = f"duplicate id {ids[j]!r} (first at {where(int(first[j]))}); ids must be unique within a file"
                    results[valid[j]] = (path, line, RecordError(DUPLICATE_ID, message, path, line))
        for _, _, record in results:
            if isinstance(record, RecordError):
                if skip_invalid is None:
                    raise record
                skip_invalid.add(record)
            else:
                yield record

    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            yield from flush()
            batch = []
    if batch:
        yield from flush()


# Line numbers and file indices share one int64 in `SeenIds` (lines below 2**40).
_LINE_BITS = 40
