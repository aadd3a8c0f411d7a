"""grain input pipelines: tokenize, bucket by length, batch globally, slice per JAX process.

    records (random access) --seeded order--> tokenize (HF tokenizer, truncate)
        --> length buckets (a few fixed padded lengths) --> global batch --> this process's rows

Records are any random-access sequence (`len`, `records[i]`) of dicts or of record objects
with attributes (a grain `MapDataSource`, a list, a `formats` reader's records in
a list, a `passage_store.PassageStore`), so pipelines do not depend on how files are read. Output batches are dicts of numpy arrays:

    input_ids       [batch, length] int32   padded with the tokenizer's pad id
    attention_mask  [batch, length] int32   1 on real tokens
    example_mask    [batch]         int32   0 on rows that only pad the last batch to full size
    index           [batch]         int64   the record's index in `records` (-1 on padding rows)
    <metadata>      [batch]         str     e.g. `id`, `lang` (empty on padding rows)

where `batch = global_batch_size // process_count`; a featurizer with several fields prefixes
the token arrays (`query_input_ids`, `passage_attention_mask`, ...). `length` is one of the bucket lengths
(e.g. 16, 32, 64, 128, 256), so a jitted step compiles at most one program per bucket (per
bucket combination with several fields), and every batch, the last one included, has the full batch size.

Determinism and resumption: the record order is a function of the seed alone (grain's index
shuffle, reshuffled each epoch), and the iterator state (`get_state`/`set_state`) is a small
JSON-able dict of stream positions, identical on every process. A pipeline restored from a
saved state yields exactly the batches the original would still have yielded.

Multi-process: every process runs the same pipeline over the same global stream and keeps
rows `[p * batch, (p + 1) * batch)` of each global batch. Each process therefore tokenizes
whole global batches (it needs every row's length to agree on the bucket); the fast Rust
tokenizers make that cheap next to the model (bench/bench_pipeline.py measures it).

Around it: `buckets.LengthBuckets` (the padded lengths), `featurizers` (records -> token ids
per field: `QueryFeaturizer`, `PassageFeaturizer`), and for scaling studies
`subsets.nested_subsets`, subsets by language and size such that every smaller subset is
contained in every larger one.
"""

from __future__ import annotations

import sys
from typing import Any, Iterable, Mapping, Sequence

import grain
import numpy as np

from umr_jax.data.buckets import LengthBuckets
from umr_jax.data.featurizers import Featurizer, PassageFeaturizer, QueryFeaturizer, Records, record_field
from umr_jax.errors import InputError

# ---------------------------------------------------------------------------------------------
# The bucketed, globally batched, per-process sliced dataset


class BucketedBatches(grain.IterDataset):
    """Global batches of tokenized records, padded to length buckets, sliced for one process.

    Build it with `bucketed_batches` (or `query_batches`, `passage_batches`).
    Iterating yields this process's `[global_batch_size // process_count, ...]` slice of each
    global batch (see the module docstring for the arrays). With `group_by_length`, a global
    batch holds records of one bucket (least padding; for encoding a collection); without it,
    batches keep the shuffled order and are padded to the bucket of their longest record (for
    training, where batch composition matters for in-batch negatives).
    """

    def __init__(
        self,
        records: Records,
        featurizer: Featurizer,
        *,
        global_batch_size: int,
        buckets: Mapping[str, LengthBuckets],
        seed: int,
        shuffle: bool,
        num_epochs: int | None,
        group_by_length: bool,
        drop_remainder: bool,
        process_index: int,
        process_count: int,
        source_name: str | None,
    ):
        super().__init__()
        if global_batch_size < 1:
            raise ValueError(f"global_batch_size must be positive, got {global_batch_size}")
        if process_count < 1 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index={process_index} is not in [0, process_count={process_count})")
        if global_batch_size % process_count:
            raise ValueError(f"global_batch_size={global_batch_size} is not divisible by process_count={process_count}")
        if not 0 <= seed < 2**32:
            raise ValueError(f"seed must be in [0, 2**32), got {seed}")
        if num_epochs is not None and num_epochs < 1:
            raise ValueError(f"num_epochs must be positive or None (forever), got {num_epochs}")
        for field in featurizer.fields:
            if field not in buckets:
                raise ValueError(f"no length buckets for field {field!r}")
            if buckets[field].max_length < featurizer.max_lengths[field]:
                raise ValueError(
                    f"largest bucket of field {field!r} ({buckets[field].max_length}) is shorter than its "
                    f"truncation length ({featurizer.max_lengths[field]})"
                )
        self.records = records
        self.featurizer = featurizer
        self.global_batch_size = int(global_batch_size)
        self.buckets = {field: buckets[field] for field in featurizer.fields}
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.num_epochs = num_epochs
        self.group_by_length = bool(group_by_length)
        self.drop_remainder = bool(drop_remainder)
        self.process_index = int(process_index)
        self.process_count = int(process_count)
        self.source_name = source_name
        self.num_records = len(records)
        order = grain.MapDataset.range(self.num_records)
        if self.shuffle and self.num_records > 1:
            order = order.shuffle(seed=self.seed)
        self.order = order.repeat(num_epochs) if self.num_records else order
        self.stream_length = sys.maxsize if num_epochs is None and self.num_records else len(self.order)

    @property
    def process_batch_size(self) -> int:
        return self.global_batch_size // self.process_count

    def padded_lengths(self) -> dict[str, tuple[int, ...]]:
        """Per field, the lengths a batch can be padded to (the shapes a jitted step sees)."""
        return {field: b.lengths for field, b in self.buckets.items()}

    def fingerprint(self) -> dict[str, Any]:
        """What a saved iterator state must agree with to be restored into this pipeline."""
        return {
            "num_records": self.num_records,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "num_epochs": self.num_epochs,
            "global_batch_size": self.global_batch_size,
            "group_by_length": self.group_by_length,
            "drop_remainder": self.drop_remainder,
            "buckets": {field: list(b.lengths) for field, b in self.buckets.items()},
        }

    def __iter__(self) -> "BucketedBatchIterator":
        return BucketedBatchIterator(self)

    def __str__(self) -> str:
        return f"BucketedBatches(num_records={self.num_records}, global_batch_size={self.global_batch_size})"


class BucketedBatchIterator(grain.DatasetIterator):
    """Iterator of `BucketedBatches`; its state is stream positions only (JSON-able)."""

    def __init__(self, dataset: BucketedBatches):
        super().__init__()
        self._ds = dataset
        self._position = 0  # next position of the record stream to read
        self._pending: dict[tuple[int, ...], list[int]] = {}  # bucket key -> positions (grouping)
        self._ready: list[tuple[tuple[int, ...] | None, list[int]]] = []  # full batches to emit
        self._cache: dict[int, dict[str, list[int]]] = {}  # position -> token ids per field

    # -- reading -------------------------------------------------------------------------------
    def _read(self, positions: Sequence[int]) -> tuple[list[int], list[Any]]:
        indices = [int(self._ds.order[p]) for p in positions]
        return indices, [self._ds.records[i] for i in indices]

    def _tokenize(self, positions: Sequence[int]) -> None:
        missing = [p for p in positions if p not in self._cache]
        if not missing:
            return
        indices, records = self._read(missing)
        tokens = self._ds.featurizer.tokenize(records, indices, self._ds.source_name)
        for j, p in enumerate(missing):
            self._cache[p] = {field: tokens[field][j] for field in self._ds.featurizer.fields}

    def _key(self, position: int) -> tuple[int, ...]:
        tokens = self._cache[position]
        return tuple(self._ds.buckets[f].index(len(tokens[f])) for f in self._ds.featurizer.fields)

    def _intake(self) -> None:
        """Reads the next global-batch-sized chunk of the stream into full or pending batches."""
        ds = self._ds
        stop = min(self._position + ds.global_batch_size, ds.stream_length)
        positions = list(range(self._position, stop))
        self._tokenize(positions)
        self._position = stop
        if not ds.group_by_length:
            if len(positions) == ds.global_batch_size or not ds.drop_remainder:
                self._ready.append((None, positions))
            else:
                self._forget(positions)
            return
        for p in positions:
            key = self._key(p)
            group = self._pending.setdefault(key, [])
            group.append(p)
            if len(group) == ds.global_batch_size:
                self._ready.append((key, self._pending.pop(key)))

    def _flush(self) -> None:
        """At the end of the stream: the partial groups become (padded) last batches."""
        for key in sorted(self._pending):
            positions = self._pending[key]
            if self._ds.drop_remainder:
                self._forget(positions)
            else:
                self._ready.append((key, positions))
        self._pending = {}

    def _forget(self, positions: Iterable[int]) -> None:
        for p in positions:
            self._cache.pop(p, None)

    # -- batches -------------------------------------------------------------------------------
    def __next__(self) -> dict[str, np.ndarray]:
        while not self._ready:
            if self._position >= self._ds.stream_length:
                self._flush()
                if not self._ready:
                    raise StopIteration
                break
            self._intake()
        key, positions = self._ready.pop(0)
        try:
            return self._batch(key, positions)
        finally:
            self._forget(positions)

    def _batch(self, key: tuple[int, ...] | None, positions: list[int]) -> dict[str, np.ndarray]:
        ds = self._ds
        fields = ds.featurizer.fields
        if key is None:  # shuffled batch: the bucket of its longest record, per field
            self._tokenize(positions)
            key = tuple(max(self._key(p)[i] for p in positions) for i in range(len(fields)))
        rows = ds.process_batch_size
        mine = positions[ds.process_index * rows : (ds.process_index + 1) * rows]
        self._tokenize(mine)
        indices, records = self._read(mine) if mine else ([], [])
        batch: dict[str, np.ndarray] = {}
        for i, field in enumerate(fields):
            length = ds.buckets[field].lengths[key[i]]
            input_ids = np.full((rows, length), ds.featurizer.pad_id, dtype=np.int32)
            attention_mask = np.zeros((rows, length), dtype=np.int32)
            for r, p in enumerate(mine):
                ids = self._cache[p][field]
                input_ids[r, : len(ids)] = ids
                attention_mask[r, : len(ids)] = 1
            batch[f"{field}input_ids"] = input_ids
            batch[f"{field}attention_mask"] = attention_mask
        example_mask = np.zeros((rows,), dtype=np.int32)
        example_mask[: len(mine)] = 1
        batch["example_mask"] = example_mask
        index = np.full((rows,), -1, dtype=np.int64)
        index[: len(mine)] = indices
        batch["index"] = index
        for name in ds.featurizer.metadata:
            values = []
            for record, record_index in zip(records, indices):
                value = record_field(record, name)
                if value is None:
                    raise InputError(f"record {record_index}: metadata field {name!r} is missing", path=ds.source_name)
                values.append(str(value))
            batch[name] = np.array(values + [""] * (rows - len(mine)), dtype=np.str_)
        return batch

    # -- checkpointing -------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Stream positions only: identical on every process, JSON-serialisable."""
        return {
            "fingerprint": self._ds.fingerprint(),
            "position": self._position,
            "pending": [[list(key), list(positions)] for key, positions in sorted(self._pending.items())],
            "ready": [[None if key is None else list(key), list(positions)] for key, positions in self._ready],
        }

    def set_state(self, state: Mapping[str, Any]) -> None:
        """Restores a state from `get_state` of a pipeline with the same data, seed and shapes."""
        expected = self._ds.fingerprint()
        if state.get("fingerprint") != expected:
            raise ValueError(f"iterator state belongs to another pipeline: saved {state.get('fingerprint')}, this one {expected}")
        self._position = int(state["position"])
        self._pending = {tuple(int(k) for k in key): [int(p) for p in positions] for key, positions in state["pending"]}
        self._ready = [(None if key is None else tuple(int(k) for k in key), [int(p) for p in positions]) for key, positions in state["ready"]]
        self._cache = {}

    def __str__(self) -> str:
        return f"BucketedBatchIterator(position={self._position})"


def _process(process_index: int | None, process_count: int | None) -> tuple[int, int]:
    if process_index is None or process_count is None:
        import jax

        process_index = jax.process_index() if process_index is None else process_index
        process_count = jax.process_count() if process_count is None else process_count
    return int(process_index), int(process_count)


def bucketed_batches(
    records: Records,
    featurizer: Featurizer,
    *,
    global_batch_size: int,
    buckets: LengthBuckets | Mapping[str, LengthBuckets] | None = None,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = 1,
    group_by_length: bool = False,
    drop_remainder: bool = False,
    process_index: int | None = None,
    process_count: int | None = None,
    source_name: str | None = None,
) -> BucketedBatches:
    """The general pipeline: `records` featurized, bucketed, batched and sliced per process.

    Args:
      records: random-access records (`len` and `records[i]` -> dict).
      featurizer: `QueryFeaturizer`, `PassageFeaturizer` or any `Featurizer`.
      global_batch_size: rows of a global batch (all processes together).
      buckets: lengths per field; one `LengthBuckets` for single-field featurizers; default
        powers of two from 16 up to each field's truncation length.
      seed: the shuffle seed, in [0, 2**32) (epochs are reshuffled from it).
      shuffle: False keeps the records' order (e.g. to encode a collection).
      num_epochs: passes over the records; None repeats forever.
      group_by_length: batch records of equal bucket together (see `BucketedBatches`).
      drop_remainder: drop the last, incomplete batch(es) instead of padding them with
        `example_mask == 0` rows.
      process_index, process_count: this process and how many; default `jax.process_index()`
        and `jax.process_count()`.
      source_name: the file the records came from, named in errors.
    """
    if buckets is None:
        buckets = {f: LengthBuckets.powers_of_two(featurizer.max_lengths[f]) for f in featurizer.fields}
    elif isinstance(buckets, LengthBuckets):
        if len(featurizer.fields) != 1:
            raise ValueError(f"featurizer has fields {featurizer.fields}: give buckets per field")
        buckets = {featurizer.fields[0]: buckets}
    process_index, process_count = _process(process_index, process_count)
    if source_name is None:
        source_name = getattr(records, "path", None) or getattr(records, "source_name", None)
    return BucketedBatches(
        records,
        featurizer,
        global_batch_size=global_batch_size,
        buckets=buckets,
        seed=seed,
        shuffle=shuffle,
        num_epochs=num_epochs,
        group_by_length=group_by_length,
        drop_remainder=drop_remainder,
        process_index=process_index,
        process_count=process_count,
        source_name=None if source_name is None else str(source_name),
    )


def query_batches(questions: Records, tokenizer, *, global_batch_size: int, max_length: int = 64, text_key: str = "question", metadata: tuple[str, ...] = ("id", "lang"), **options) -> BucketedBatches:
    """Questions (`{id, question, lang}`) -> `input_ids`/`attention_mask` `[batch, <=max_length]`
    plus `id`, `lang`. Options as in `bucketed_batches` (shuffled, one epoch by default)."""
    return bucketed_batches(questions, QueryFeaturizer(tokenizer, max_length, text_key, metadata), global_batch_size=global_batch_size, **options)


def passage_batches(passages: Records, tokenizer, *, global_batch_size: int, max_length: int = 256, metadata: tuple[str, ...] = ("id",), shuffle: bool = False, group_by_length: bool = True, **options) -> BucketedBatches:
    """Passages (`{id, title, text}`) -> (title, text) pair encodings `[batch, <=max_length]`
    plus `id`. By default in collection order, grouped by length, one epoch, the last batches
    padded (for encoding a collection: every passage appears exactly once)."""
    featurizer = PassageFeaturizer(tokenizer, max_length, metadata=metadata)
    return bucketed_batches(passages, featurizer, global_batch_size=global_batch_size, shuffle=shuffle, group_by_length=group_by_length, **options)
