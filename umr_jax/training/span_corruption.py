"""T5's span-corruption objective (Raffel et al., 2020), on token id lists.

About `noise_density` of the tokens are masked in spans of mean length `mean_span_length`;
each masked span becomes one sentinel in the input, and the target lists every sentinel
followed by the tokens it replaced, then EOS:

  input:  The <X> walks in <Y> park </s>      target: <X> cute dog <Y> the </s>

Sentinels are the highest ids of the vocabulary (`<extra_id_0>` = vocab_size - 1, going down),
as in T5 and mT5 tokenizers; tokenizers without extra ids lose their top ids to sentinels.
"""

from __future__ import annotations

import numpy as np


def random_spans_noise_mask(length: int, noise_density: float, mean_span_length: float, rng: np.random.Generator) -> np.ndarray:
    """Bool [length]: True on masked tokens, in alternating non-noise/noise spans (T5's recipe)."""
    num_noise = int(round(length * noise_density))
    num_noise = min(max(num_noise, 1), length - 1)
    num_spans = max(1, int(round(num_noise / mean_span_length)))
    num_nonnoise = length - num_noise

    def segment(total: int, parts: int) -> np.ndarray:
        # `parts` positive integers summing to `total`, uniformly at random.
        cuts = np.sort(rng.choice(np.arange(1, total), size=parts - 1, replace=False)) if parts > 1 else np.array([], int)
        return np.diff(np.concatenate([[0], cuts, [total]]))

    num_spans = min(num_spans, num_noise, num_nonnoise)
    noise_lengths = segment(num_noise, num_spans)
    nonnoise_lengths = segment(num_nonnoise, num_spans)
    mask = np.zeros(length, bool)
    pos = 0
    for keep, noise in zip(nonnoise_lengths, noise_lengths):
        pos += keep
        mask[pos : pos + noise] = True
        pos += noise
    return mask


def span_corrupt(
    tokens: list[int] | np.ndarray,
    *,
    vocab_size: int,
    eos_id: int,
    rng: np.random.Generator,
    noise_density: float = 0.15,
    mean_span_length: float = 3.0,
) -> tuple[list[int], list[int]]:
    """(input ids, target ids) for one sequence of token ids (without EOS); both end with EOS."""
    tokens = np.asarray(tokens)
    if len(tokens) < 2:
        return list(tokens) + [eos_id], [vocab_size - 1, eos_id]
    mask = random_spans_noise_mask(len(tokens), noise_density, mean_span_length, rng)
    inputs, targets = [], []
    sentinel = vocab_size - 1
    previous = False
    for token, noisy in zip(tokens, mask):
        if noisy:
            if not previous:
                inputs.append(sentinel)
                targets.append(sentinel)
                sentinel -= 1
            targets.append(int(token))
        else:
            inputs.append(int(token))
        previous = noisy
    return inputs + [eos_id], targets + [eos_id]
