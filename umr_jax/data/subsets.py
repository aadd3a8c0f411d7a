"""Nested subsets for scaling studies: subsets by language and size such that every smaller
subset is contained in every larger one (prefixes of one seeded order): `nested_subsets` over
records' languages, and `nested_subset`, the trainers' `data.subset_size` subsets of pairs or
scored questions."""

from __future__ import annotations

from typing import Any, Callable, Collection, Iterable, Sequence, TypeVar

import numpy as np

T = TypeVar("T")

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays: a fixed, version-independent bijective hash."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def subset_order(record_languages: Sequence[str] | np.ndarray, *, seed: int, languages: Collection[str] | None = None) -> np.ndarray:
    """Indices of the records whose language is in `languages` (all if None), in a seeded
    random order. Returns int64 `[n]`.

    A record's place is decided by a hash of (seed, its index) alone, so the order of any set
    of records is the restriction of one seeded order of all records: a language's records
    come in the same order whichever other languages a study includes. Any prefix is a
    uniformly random subset, and longer prefixes contain shorter ones.
    """
    langs = np.asarray(record_languages)
    if languages is None:
        candidates = np.arange(len(langs), dtype=np.int64)
    else:
        candidates = np.flatnonzero(np.isin(langs, list(languages))).astype(np.int64)
    key = _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]
    scores = _splitmix64(candidates.astype(np.uint64) ^ key)
    return candidates[np.argsort(scores, kind="stable")]


def nested_subsets(
    record_languages: Sequence[str] | np.ndarray,
    sizes: Iterable[int],
    *,
    seed: int,
    languages: Collection[str] | None = None,
    per_language: bool = False,
) -> dict[int, np.ndarray]:
    """Subsets of the records for a scaling study, by size: `{size: sorted int64 indices}`.

    With `per_language`, a subset holds `size` records of each language in `languages` (all
    languages present if None); otherwise `size` records drawn from those languages together.
    Subsets are nested: for sizes a <= b, subset(a) is contained in subset(b); and a
    language's records in a per-language subset do not depend on the other languages chosen.
    Raises ValueError if a size exceeds the records available, naming the language.
    """
    langs = np.asarray(record_languages)
    present = sorted(set(langs.tolist()))
    chosen = present if languages is None else sorted(set(languages))
    missing = [lang for lang in chosen if lang not in present]
    if missing:
        raise ValueError(f"no records of language(s) {missing}; present: {present}")
    sizes = sorted(set(int(s) for s in sizes))
    if not sizes or sizes[0] < 0:
        raise ValueError(f"sizes must be non-negative, got {sizes}")
    if per_language:
        orders = {lang: subset_order(langs, seed=seed, languages=[lang]) for lang in chosen}
        for lang, order in orders.items():
            if sizes[-1] > len(order):
                raise ValueError(f"size {sizes[-1]} exceeds the {len(order)} records of language {lang!r}")
        return {size: np.sort(np.concatenate([orders[lang][:size] for lang in chosen])) for size in sizes}
    order = subset_order(langs, seed=seed, languages=chosen)
    if sizes[-1] > len(order):
        raise ValueError(f"size {sizes[-1]} exceeds the {len(order)} records of languages {chosen}")
    return {size: np.sort(order[:size]) for size in sizes}


def _lang(item: Any) -> str:
    return item.lang


def nested_subset(items: Sequence[T], size: int | None, seed: int, *, language: Callable[[T], str] = _lang) -> list[T]:
    """A nested subset of `size` items (all of them when `size` is None or 0), drawn from every
    language together: for one seed, the subset of a smaller size lies inside that of a larger
    one (`nested_subsets` over the items' languages, `item.lang` by default), as scaling studies
    need. The trainers draw their `data.subset_size` subsets with it."""
    if not size or size >= len(items):
        return list(items)
    indices = nested_subsets([language(item) for item in items], [int(size)], seed=seed)[int(size)]
    return [items[i] for i in indices]
