"""Trainer batches: deterministic, resumable global batches of examples, sliced per process.

What the trainers' batchers share (`training.distill.DistillBatches`,
`training.contrastive.PairBatches` are thin subclasses of `EpochBatches`):

  examples  a list, or any store read by row (`data.pair_store.PairStore`), with an optional
            `subset`: the rows to train on, an index array (`subsets.nested_subset_indices`);
            the batcher itself holds index arrays only, never the examples' contents
  order     epoch e visits the examples in the order of a permutation seeded by (seed, e),
            `examples_per_batch` at a time, and drops the last incomplete batch; the
            permutation (int32 below 2^31 examples) is made once per epoch, not per batch.
            With `languages` (each example's language), every batch holds one language, as
            WebFAQ trains (in-batch negatives cannot be told apart by language alone): each
            language's examples are permuted and cut into whole batches (its last incomplete
            one dropped), and the batches of all languages are visited in a seeded order
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


def _index_dtype(count: int):
    return np.int32 if count < 2**31 else np.int64


def rows_of(examples: Sequence[Any], indices: np.ndarray) -> list[Any]:
    """The examples at `indices`: read by row from a store (`examples.rows`), or from a list."""
    rows = getattr(examples, "rows", None)
    return rows(indices) if rows is not None else [examples[int(i)] for i in indices]


class EpochBatches:
    """Deterministic, resumable global batches of `examples`, sliced for one process (module
    docstring). Subclasses implement `build_batch(indices)`.

    `noun` names the examples in errors ("questions", "pairs"), `batch_name` the config key of
    `examples_per_batch` ("questions_per_batch", "batch_size").
    """

    def __init__(self, examples: Sequence[Any], tokenizer, *, examples_per_batch: int, passages_per_example: int,
                 seed: int, query_max_length: int, passage_max_length: int, process_index: int | None,
                 process_count: int | None, fixed_lengths: bool, noun: str = "examples",
                 batch_name: str = "examples_per_batch", subset: np.ndarray | None = None,
                 languages: np.ndarray | None = None):
        self.subset = None if subset is None else np.asarray(subset).astype(_index_dtype(len(examples)), copy=False)
        self.count = len(examples) if self.subset is None else len(self.subset)
        if self.count < examples_per_batch:
            raise InputError(f"{self.count} {noun} cannot fill one batch of {examples_per_batch}")
        self._groups: list[np.ndarray] | None = None  # per language, the positions of its examples
        if languages is not None:
            languages = np.asarray(languages)
            if len(languages) != self.count:
                raise ValueError(f"{len(languages)} languages for {self.count} {noun}")
            codes = np.unique(languages)  # a store's uint16 codes, or language names
            # per language its positions, 4 bytes each below 2^31 (never an int64 array of all)
            self._groups = [np.flatnonzero(languages == code).astype(_index_dtype(self.count)) for code in codes]
            if not any(len(g) >= examples_per_batch for g in self._groups):
                raise InputError(f"no language has {examples_per_batch} {noun} for one single-language batch "
                                 f"({', '.join(f'{c}: {len(g)}' for c, g in zip(codes.tolist(), self._groups))})")
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
        self._order: tuple[int, np.ndarray] | None = None  # (epoch, its permutation)

    # -- state ---------------------------------------------------------------------------------
    @property
    def steps_per_epoch(self) -> int:
        if self._groups is not None:
            return sum(len(g) // self.examples_per_batch for g in self._groups)
        return self.count // self.examples_per_batch

    def get_state(self) -> dict:
        return {"epoch": self.epoch, "position": self.position}

    def set_state(self, state: dict) -> None:
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The order in which `epoch` visits the examples (positions in the subset, or in
        `examples` without one): a permutation seeded by (seed, epoch), made once per epoch.

        `Generator.shuffle` of an `arange` draws exactly what `Generator.permutation(n)` draws,
        so the order is `default_rng([seed, epoch]).permutation(n)`, held as int32 below 2^31
        (half the memory: 190 MB at 47M examples, not 380 MB)."""
        if self._order is None or self._order[0] != epoch:
            self._order = None  # never two permutations at once
            if self._groups is not None:
                self._order = (epoch, self._language_order(epoch))
            else:
                order = np.arange(self.count, dtype=_index_dtype(self.count))
                np.random.default_rng([self.seed, epoch]).shuffle(order)
                self._order = (epoch, order)
        return self._order[1]

    def _language_order(self, epoch: int) -> np.ndarray:
        """Single-language batches (module docstring): each language's positions permuted and cut
        to whole batches, then the batches of every language in one seeded order."""
        rng, size = np.random.default_rng([self.seed, epoch, 1]), self.examples_per_batch
        blocks = np.concatenate([rng.permutation(g)[: len(g) // size * size] for g in self._groups]).reshape(-1, size)
        return blocks[rng.permutation(len(blocks))].reshape(-1)

    def next_indices(self) -> np.ndarray:
        """The examples of the next global batch (int64 indices into `examples`), advancing the
        state; `self.epoch` is then the epoch they belong to."""
        if self.position + self.examples_per_batch > self.steps_per_epoch * self.examples_per_batch:
            self.epoch, self.position = self.epoch + 1, 0
        chosen = self.epoch_order(self.epoch)[self.position : self.position + self.examples_per_batch]
        self.position += self.examples_per_batch
        return (chosen if self.subset is None else self.subset[chosen]).astype(np.int64)

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
