"""Nested subsets for scaling studies: subsets by language and size such that every smaller
subset is contained in every larger one (prefixes of one seeded order): `nested_subsets` over
records' languages, `nested_subset_indices`, the trainers' `data.subset_size` subsets as index
arrays over a store of any size (memory O(size), not O(source)), `stratified_subset_indices`,
the same with equal shares of every language (`data.stratify`), and `nested_subset`, the same
subset of a list (scored questions)."""

from __future__ import annotations

from typing import Collection, Iterable, Mapping, Sequence, TypeVar

import numpy as np

from umr_jax.errors import InputError

T = TypeVar("T")

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finalizer on uint64 arrays: a fixed, version-independent bijective hash."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def _seed_key(seed: int) -> np.uint64:
    """What a row's index is mixed with before hashing: the hash of the seed."""
    return _splitmix64(np.array([int(seed) & 0xFFFFFFFFFFFFFFFF], dtype=np.uint64))[0]


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
    key = _seed_key(seed)
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


_CHUNK = 1 << 18  # rows hashed at once (or `size`, when larger: fewer passes over the kept rows)


def nested_subset_indices(count: int, size: int | None, seed: int, *, noun: str = "examples",
                          held_out: int = 0) -> np.ndarray | None:
    """The rows of a nested subset of `size` out of `count` rows drawn from every language
    together: sorted int64 `[size]`, or None for all rows (`size` None, 0 or `count`, and
    nothing held out).

    The same subset as `nested_subsets([...], [size], seed=seed)` over the rows: the `size`
    rows whose (seed, row) hash is smallest. The hashes are made and cut to the smallest `size`
    a chunk of max(2^18, size) rows at a time, so memory is O(size), never O(count): a 100k
    subset of a 47M-row store takes a few MB. `held_out` rows (`held_out_indices`: those whose
    hash is largest) are never in a subset: `size` 0 then means every other row. Raises
    InputError when `size` exceeds the rows that are not held out.
    """
    count, held_out = int(count), int(held_out or 0)
    if held_out < 0 or held_out >= count:
        raise InputError(f"data.dev_split={held_out} must be >= 0 and leave training {noun} of the {count} of the source")
    available = count - held_out
    if not size:
        if not held_out:
            return None
        size = available
    size = int(size)
    if size < 0:
        raise InputError(f"data.subset_size must be >= 0, got {size}")
    if size > available:
        after = f" left after data.dev_split={held_out}" if held_out else ""
        raise InputError(f"data.subset_size={size} exceeds the {available} {noun} of the source{after}")
    if size == count:
        return None
    return _smallest_hashes(count, size, seed, largest=False)


def held_out_indices(count: int, n: int, seed: int) -> np.ndarray:
    """The `n` rows held out of every subset (a dev split): sorted int64, the rows whose (seed,
    row) hash is largest, so no subset of at most `count - n` rows (the smallest hashes) holds
    one, and the subsets stay those drawn without a split."""
    return _smallest_hashes(int(count), int(n), seed, largest=True) if n else np.empty(0, np.int64)


def _smallest_hashes(count: int, size: int, seed: int, *, largest: bool) -> np.ndarray:
    key = _seed_key(seed)
    # The hash is a bijection of distinct inputs, so scores never tie: "the smallest `size`"
    # is one set, whatever the chunking.
    chunk = max(_CHUNK, size)
    best_rows = np.empty(0, dtype=np.int64)
    best_scores = np.empty(0, dtype=np.uint64)
    for start in range(0, count, chunk):
        rows = np.arange(start, min(count, start + chunk), dtype=np.int64)
        rows_scores = _splitmix64(rows.astype(np.uint64) ^ key)
        if largest:
            rows_scores = ~rows_scores
        rows, rows_scores = np.concatenate([best_rows, rows]), np.concatenate([best_scores, rows_scores])
        if len(rows) > size:
            keep = np.argpartition(rows_scores, size - 1)[:size]
            rows, rows_scores = rows[keep], rows_scores[keep]
        best_rows, best_scores = rows, rows_scores
    return np.sort(best_rows)


def nested_subset(items: Sequence[T], size: int | None, seed: int, *, noun: str = "items",
                  held_out: int = 0) -> list[T]:
    """A nested subset of `size` items (all of them when `size` is None or 0), drawn from every
    language together: for one seed, the subset of a smaller size lies inside that of a larger
    one (`nested_subset_indices`; equal to `nested_subsets` over the items' languages), as
    scaling studies need. The distillation trainer draws its `data.subset_size` subsets with it.
    `held_out` items (`held_out_indices`) are in no subset. Raises InputError when `size`
    exceeds the items. (A subset drawn from every language together does not depend on the
    items' languages.)"""
    indices = nested_subset_indices(len(items), size, seed, noun=noun, held_out=held_out)
    if indices is None:
        return list(items)
    return [items[i] for i in indices]


def equal_shares(size: int, languages: Sequence[str]) -> dict[str, int]:
    """How a stratified subset of `size` examples splits over `languages`: size // k each, and
    one more for each of the first size % k languages in sorted order. Shares only grow with
    `size`, so stratified subsets stay nested."""
    names = sorted(languages)
    base, extra = divmod(int(size), len(names))
    return {name: base + (i < extra) for i, name in enumerate(names)}


def largest_stratified_size(available: Mapping[str, int]) -> int:
    """The largest size whose equal shares (`equal_shares`) every language can fill, given the
    examples `available` in each: min over the sorted languages i of available_i * k + i."""
    names = sorted(available)
    return min(int(available[name]) * len(names) + i for i, name in enumerate(names))


def available_by_language(row_languages: np.ndarray, languages: Sequence[str], seed: int, *,
                          held_out: int = 0) -> dict[str, int]:
    """{language: rows a subset may draw from}: each language's rows (`row_languages[i]` indexes
    `languages`; read a chunk at a time), less those of the `held_out` dev rows
    (`held_out_indices`). Languages without rows are left out."""
    available = np.zeros(len(languages), dtype=np.int64)
    for start in range(0, len(row_languages), _CHUNK):
        chunk = np.asarray(row_languages[start : start + _CHUNK])
        available += np.bincount(chunk, minlength=len(languages))[: len(languages)]
    if held_out:
        held = held_out_indices(len(row_languages), held_out, seed)
        available -= np.bincount(np.asarray(row_languages[held]), minlength=len(languages))[: len(languages)]
    return {languages[c]: int(n) for c, n in enumerate(available) if n > 0}


def stratified_subset_indices(row_languages: np.ndarray, languages: Sequence[str], size: int | None, seed: int, *,
                              noun: str = "examples", held_out: int = 0) -> np.ndarray:
    """A nested subset of `size` rows with equal shares of every language (`equal_shares`):
    sorted int64 `[size]`. `row_languages[i]` is row i's index into `languages` (a store's
    memory-mapped column; read a chunk at a time, so memory is O(size), never O(rows)).

    Each language's share is the rows of that language whose (seed, row) hash is smallest, so
    it is a prefix of one seeded order of the language's rows (as `nested_subsets(...,
    per_language=True)`): the subset of a smaller size lies inside that of a larger one, and a
    language's rows do not depend on the other languages. `held_out` rows (`held_out_indices`,
    drawn from all rows) are in no subset. `size` None or 0: the largest stratified subset.
    Raises InputError when a language cannot fill its share, naming it and the largest size
    that can be stratified.
    """
    count = len(row_languages)
    held = held_out_indices(count, held_out, seed) if held_out else np.empty(0, np.int64)
    codes = np.arange(len(languages))
    present = available_by_language(row_languages, languages, seed, held_out=held_out)
    if not present:
        raise InputError(f"no {noun} to stratify over")
    largest = largest_stratified_size(present)
    size = largest if not size else int(size)
    if size < 0:
        raise InputError(f"data.subset_size must be >= 0, got {size}")
    shares = equal_shares(size, list(present))
    short = [(name, share) for name, share in shares.items() if share > present[name]]
    if short:
        name, share = short[0]
        after = f" left after data.dev_split={held_out}" if held_out else ""
        raise InputError(f"data.stratify: a subset of {size} {noun} takes {share} of each of its {len(present)} languages, "
                         f"but {name} has {present[name]}{after}; the largest stratified subset is {largest} "
                         "(or drop data.stratify)")
    quota = np.zeros(len(languages), dtype=np.int64)
    for c in codes:
        quota[c] = shares.get(languages[c], 0)
    key = _seed_key(seed)
    best_rows = [np.empty(0, np.int64) for _ in codes]
    best_scores = [np.empty(0, np.uint64) for _ in codes]
    step = max(_CHUNK, size)  # (as `_smallest_hashes`: fewer passes over the kept rows when the subset is large)
    for start in range(0, count, step):
        chunk = np.asarray(row_languages[start : start + step])
        rows = np.arange(start, start + len(chunk), dtype=np.int64)
        if len(held):
            keep = ~np.isin(rows, held)
            rows, chunk = rows[keep], chunk[keep]
        scores = _splitmix64(rows.astype(np.uint64) ^ key)
        for c in codes:
            if not quota[c]:
                continue
            mine = chunk == c
            r = np.concatenate([best_rows[c], rows[mine]])
            s = np.concatenate([best_scores[c], scores[mine]])
            if len(r) > quota[c]:
                keep = np.argpartition(s, quota[c] - 1)[: quota[c]]
                r, s = r[keep], s[keep]
            best_rows[c], best_scores[c] = r, s
    return np.sort(np.concatenate(best_rows))
