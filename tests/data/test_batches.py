"""`data.batches.EpochBatches`, the trainers' batcher base: epoch/position state in the format
checkpoints hold, exact resume, per-process slices of the global batch, padding to buckets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from umr_jax.data.batches import EpochBatches, batch_buckets, pad_rows
from umr_jax.errors import InputError


class Tokenizer:
    """Token ids from the text's characters (one id per character, 2 + its code % 50)."""

    pad_token_id = 1

    def __call__(self, texts, max_length, truncation):
        return {"input_ids": [[2 + ord(ch) % 50 for ch in text][:max_length] for text in texts]}


class Toy(EpochBatches):
    """Example i is the query "q" * (1 + i % 7) with `passages_per_example` passages "p" * (i + slot)."""

    def build_batch(self, indices):
        passages = ["p" * (1 + int(i) + slot) for i in indices for slot in range(self.passages_per_example)]
        q_ids, q_mask = self.padded(self.query_tokens(["q" * (1 + int(i) % 7) for i in indices]), self.query_buckets)
        p_ids, p_mask = self.padded(self.tokenizer(passages, max_length=self.passage_max_length, truncation=True)["input_ids"],
                                    self.passage_buckets)
        return {"query_ids": q_ids, "query_mask": q_mask, "passage_ids": p_ids, "passage_mask": p_mask,
                "index": np.asarray(indices, np.int64)}


def toy(process_index=0, process_count=1, examples=23, **options):
    options = {"examples_per_batch": 8, "passages_per_example": 3, "seed": 5, "query_max_length": 16,
               "passage_max_length": 64, "fixed_lengths": False, **options}
    return Toy(list(range(examples)), Tokenizer(), process_index=process_index, process_count=process_count, **options)


def test_epochs_visit_a_seeded_permutation_and_drop_the_remainder():
    batches = toy()
    assert batches.steps_per_epoch == 2
    seen = [next(batches)["index"].tolist() for _ in range(4)]
    assert sorted(seen[0] + seen[1]) == sorted(np.random.default_rng([5, 0]).permutation(23)[:16].tolist())
    assert seen[2] + seen[3] == np.random.default_rng([5, 1]).permutation(23)[:16].tolist()
    assert batches.get_state() == {"epoch": 1, "position": 16}


def test_a_saved_state_resumes_exactly():
    reference = toy()
    expected = [next(reference) for _ in range(7)]
    first = toy()
    for _ in range(3):
        next(first)
    state = json.loads(json.dumps(first.get_state()))  # as a checkpoint holds it
    assert state == {"epoch": 1, "position": 8}  # the checkpoint format: these two keys, nothing else
    resumed = toy()
    resumed.set_state(state)
    for want in expected[3:]:
        got = next(resumed)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_processes_keep_their_rows_and_those_rows_passages():
    whole = [next(toy()) for _ in range(1)][0]
    parts = [next(toy(process_index=i, process_count=4)) for i in range(4)]
    for part in parts:
        assert part["query_ids"].shape[0] == 2 and part["passage_ids"].shape[0] == 6
    for key in whole:
        np.testing.assert_array_equal(np.concatenate([p[key] for p in parts]), whole[key])


def test_rows_are_padded_to_the_bucket_of_the_longest():
    batch = next(toy())
    q_longest = max(1 + int(i) % 7 for i in batch["index"])
    p_longest = max(1 + int(i) + 2 for i in batch["index"])
    assert batch["query_ids"].shape[1] == batch_buckets(16, 64)[0].padded(q_longest) == 16
    assert batch["passage_ids"].shape[1] == batch_buckets(16, 64)[1].padded(p_longest)
    np.testing.assert_array_equal(batch["query_mask"].sum(1), [1 + int(i) % 7 for i in batch["index"]])
    assert (batch["query_ids"][batch["query_mask"] == 0] == Tokenizer.pad_token_id).all()
    fixed = next(toy(fixed_lengths=True))
    assert fixed["query_ids"].shape[1] == 16 and fixed["passage_ids"].shape[1] == 64
    ids, mask = pad_rows([[5, 6, 7], [8]], 2, 0)
    assert ids.tolist() == [[5, 6], [8, 0]] and mask.tolist() == [[1, 1], [1, 0]]


def test_refusals():
    with pytest.raises(InputError, match="5 examples cannot fill one batch of 8"):
        toy(examples=5)
    with pytest.raises(ValueError, match="examples_per_batch 8 must divide over 3 processes"):
        toy(process_count=3)
