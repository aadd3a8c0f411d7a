"""Trainer batches: deterministic, resumable global batches of examples, sliced per process.

What the trainers' batchers share (`training.distill.DistillBatches`,
`training.contrastive.PairBatches` are thin subclasses of `EpochBatches`):

  order     epoch e visits the examples in the order of a permutation seeded by (seed, e),
            `examples_per_batch` at a time, and drops the last incomplete batch
  state     (epoch, position) only: `get_state()` is `{"epoch": e, "position": p}`, JSON-able
            and identical on every process; a batcher restored from it yields exactly the
            batches the original would still have yielded
  padding   queries and passages right-padded to a length bucket of the batch's longest row
            (`batch_buckets`: powers of two, or the maximum lengths only with `fixed_lengths`)
  slicing   every process builds the same global batch and keeps its own rows: query rows
            `[p * n, (p + 1) * n)` with `n = examples_per_batch // process_count`, and the
            `passages_per_example` passage rows of each of them

A subclass says how the chosen examples become a global batch (`build_batch`): a dict of
numpy arrays whose keys starting with "passage" have `passages_per_example` rows per example
and whose other arrays one row per example.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from umr_jax.data.buckets import LengthBuckets
from umr_jax.errors import InputError


def batch_buckets(query_max_length: int, passage_max_length: int, fixed_lengths: bool = False) -> tuple[LengthBuckets, LengthBuckets]:
    """(query, passage) `LengthBuckets` of a trainer's batches: powers of two (one compiled step
    per bucket pair), or with `fixed_lengths` the maximum lengths only, so the step compiles
    once (short runs, where compiling per bucket costs more than the padding)."""
    if fixed_lengths:
        return LengthBuckets((query_max_length,)), LengthBuckets((passage_max_length,))
    return LengthBuckets.powers_of_two(query_max_length), LengthBuckets.powers_of_two(passage_max_length, 32)


def pad_rows(rows: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-padded int32 ids and mask [len(rows), length]; rows longer than `length` are cut."""
    ids = np.full((len(rows), length), pad_id, np.int32)
    mask = np.zeros((len(rows), length), np.int32)
    for i, row in enumerate(rows):
        row = list(row)[:length]
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    return ids, mask


class EpochBatches:
    """Deterministic, resumable global batches of `examples`, sliced for one process (module
    docstring). Subclasses implement `build_batch(indices)`.

    `noun` names the examples in errors ("questions", "pairs"), `batch_name` the config key of
    `examples_per_batch` ("questions_per_batch", "batch_size").
    """

    def __init__(self, examples: Sequence[Any], tokenizer, *, examples_per_batch: int, passages_per_example: int,
                 seed: int, query_max_length: int, passage_max_length: int, process_index: int | None,
                 process_count: int | None, fixed_lengths: bool, noun: str = "examples",
                 batch_name: str = "examples_per_batch"):
        if len(examples) < examples_per_batch:
            raise InputError(f"{len(examples)} {noun} cannot fill one batch of {examples_per_batch}")
        self.examples, self.tokenizer = examples, tokenizer
        self.examples_per_batch, self.passages_per_example, self.seed = examples_per_batch, passages_per_example, seed
        self.query_buckets, self.passage_buckets = batch_buckets(query_max_length, passage_max_length, fixed_lengths)
        self.query_max_length, self.passage_max_length = query_max_length, passage_max_length
        if process_index is None or process_count is None:
            import jax

            process_index = jax.process_index() if process_index is None else process_index
            process_count = jax.process_count() if process_count is None else process_count
        self.process_index, self.process_count = process_index, process_count
        if examples_per_batch % self.process_count:
            raise ValueError(f"{batch_name} {examples_per_batch} must divide over {self.process_count} processes")
        self.epoch, self.position = 0, 0
        self.pad_id = tokenizer.pad_token_id

    # -- state ---------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        return len(self.examples) // self.examples_per_batch

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which `epoch` visits the examples (a permutation seeded by (seed, epoch))."""
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.examples))

    def next_indices(self) -> np.ndarray:
        """The examples of the next global batch (indices into `examples`), advancing the state;
        `self.epoch` is then the epoch they belong to."""
        if self.position + self.examples_per_batch > len(self.examples):
            self.epoch, self.position = self.epoch + 1, 0
        chosen = self.epoch_order(self.epoch)[self.position : self.position + self.examples_per_batch]
        self.position += self.examples_per_batch
        return chosen

    # -- batches -------------------------------------------------------------------------------
    def padded(self, tokens: Sequence[Sequence[int]], buckets: LengthBuckets) -> tuple[np.ndarray, np.ndarray]:
        """Token rows padded to the bucket of the longest: (ids, mask)."""
        return pad_rows(tokens, buckets.padded(max(map(len, tokens))), self.pad_id)

    def query_tokens(self, texts: Sequence[str]) -> list[list[int]]:
        return self.tokenizer(list(texts), max_length=self.query_max_length, truncation=True)["input_ids"]

    def build_batch(self, indices: np.ndarray) -> dict[str, np.ndarray]:
        """The global batch of the examples at `indices` (module docstring)."""
        raise NotImplementedError

    def global_batch(self) -> dict[str, np.ndarray]:
        """The next global batch (all processes' rows), advancing the state."""
        return self.build_batch(self.next_indices())

    def __next__(self) -> dict[str, np.ndarray]:
        batch = self.global_batch()
        rows = self.examples_per_batch // self.process_count
        lo, hi = self.process_index * rows, (self.process_index + 1) * rows
        group = self.passages_per_example
        return {k: (v[lo * group : hi * group] if k.startswith("passage") else v[lo:hi]) for k, v in batch.items()}
