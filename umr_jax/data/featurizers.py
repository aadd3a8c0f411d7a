"""Featurizers: records -> token ids per field, for `pipeline.bucketed_batches`.

Records are any random-access sequence (`len`, `records[i]`) of dicts or of record objects
with attributes; `record_field` reads a field from either.
"""

from __future__ import annotations

from typing import Any, Mapping, Protocol, Sequence

from umr_jax.errors import InputError

# Random-access records: `len(records)` and `records[i]` -> a dict or an object with attributes.
Records = Sequence[Any]


class Featurizer(Protocol):
    """Turns records into token ids.

    `fields` are the output prefixes ("" for one sequence; "query_", "passage_" for pairs),
    `max_lengths` the truncation length of each field, `metadata` the record keys copied into
    batches as strings, `pad_id` the padding token id.
    """

    fields: tuple[str, ...]
    max_lengths: Mapping[str, int]
    metadata: tuple[str, ...]
    pad_id: int

    def tokenize(self, records: Records, indices: Sequence[int], source: str | None) -> dict[str, list[list[int]]]:
        """Token ids per field, one list per record, each at most `max_lengths[field]` long."""
        ...


def record_field(record: Any, key: str) -> Any:
    """`record[key]` for a mapping, `record.key` for an object (e.g. a `formats.Passage`);
    None if absent."""
    if isinstance(record, Mapping):
        return record.get(key)
    return getattr(record, key, None)


def _texts(records: Sequence[Any], indices: Sequence[int], key: str, source: str | None, optional: bool = False) -> list[str]:
    out = []
    for record, index in zip(records, indices):
        value = record_field(record, key)
        if value is None and optional:
            value = ""
        if not isinstance(value, str):
            what = "missing" if value is None else f"a {type(value).__name__}, not a string"
            raise InputError(f"record {index}: field {key!r} is {what}", path=source)
        out.append(value)
    return out


def _pad_id(tokenizer) -> int:
    if tokenizer.pad_token_id is None:
        raise ValueError(f"tokenizer {type(tokenizer).__name__} has no pad token")
    return int(tokenizer.pad_token_id)


class QueryFeaturizer:
    """One text per record (a question, a query), tokenized with special tokens and truncated."""

    def __init__(self, tokenizer, max_length: int = 64, text_key: str = "question", metadata: tuple[str, ...] = ("id", "lang")):
        self.tokenizer = tokenizer
        self.text_key = text_key
        self.fields = ("",)
        self.max_lengths = {"": max_length}
        self.metadata = tuple(metadata)
        self.pad_id = _pad_id(tokenizer)

    def tokenize(self, records, indices, source):
        texts = _texts(records, indices, self.text_key, source)
        ids = self.tokenizer(texts, truncation=True, max_length=self.max_lengths[""])["input_ids"]
        return {"": ids}


class PassageFeaturizer:
    """A passage as the pair (title, text): `<s> title </s></s> text </s>` for XLM-R,
    `[CLS] title [SEP] text [SEP]` for BERT, `title </s> text </s>` for T5. Truncation takes
    tokens from the longer of the two, so the title survives."""

    def __init__(self, tokenizer, max_length: int = 256, title_key: str = "title", text_key: str = "text", metadata: tuple[str, ...] = ("id",)):
        self.tokenizer = tokenizer
        self.title_key = title_key
        self.text_key = text_key
        self.fields = ("",)
        self.max_lengths = {"": max_length}
        self.metadata = tuple(metadata)
        self.pad_id = _pad_id(tokenizer)

    def tokenize(self, records, indices, source):
        titles = _texts(records, indices, self.title_key, source, optional=True)
        texts = _texts(records, indices, self.text_key, source)
        ids = self.tokenizer(titles, texts, truncation="longest_first", max_length=self.max_lengths[""])["input_ids"]
        return {"": ids}
