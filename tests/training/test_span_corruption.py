"""T5 span corruption: sentinels, densities and exact reconstruction."""

from __future__ import annotations

import numpy as np
import pytest

from umr_jax.training.span_corruption import random_spans_noise_mask, span_corrupt


@pytest.mark.parametrize("length", [10, 57, 110])
def test_noise_mask_density_and_spans(length):
    rng = np.random.default_rng(0)
    mask = random_spans_noise_mask(length, 0.15, 3.0, rng)
    assert mask.sum() == min(max(int(round(length * 0.15)), 1), length - 1)
    assert not mask[0]  # T5 starts with a non-noise span
    spans = np.sum(mask[1:] & ~mask[:-1]) + int(mask[0])
    assert spans == max(1, min(int(round(mask.sum() / 3.0)), mask.sum()))


def test_span_corrupt_reconstructs_the_original():
    rng = np.random.default_rng(1)
    tokens = list(range(10, 70))
    inputs, targets = span_corrupt(tokens, vocab_size=100, eos_id=1, rng=rng)
    assert inputs[-1] == 1 and targets[-1] == 1
    sentinels = [t for t in inputs if t >= 90]
    assert sentinels == list(range(99, 99 - len(sentinels), -1))  # <extra_id_0> is the top id, then down
    # Put every span back in place of its sentinel: the original sequence comes back.
    fills, current = {}, None
    for t in targets[:-1]:
        if t >= 90:
            current = t
            fills[t] = []
        else:
            fills[current].append(t)
    rebuilt = []
    for t in inputs[:-1]:
        rebuilt.extend(fills[t] if t >= 90 else [t])
    assert rebuilt == tokens
