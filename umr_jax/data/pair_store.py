"""Training pairs by row, from disk: the store the contrastive trainer draws its batches from.

A pairs source (WebFAQ parquet folders, pairs JSON lines or parquet) is converted once, by one
streaming pass (the readers of `data.formats`, in row batches; every row validated as they
validate it), into a folder of flat files:

  rows.bin       the pairs in source order, each `[query, positive, negatives]` as UTF-8 JSON
  offsets.i64    little-endian int64 [rows + 1]: row i is bytes offsets[i]:offsets[i + 1]
  langs.u16      little-endian uint16 [rows]: row i's language, an index into `languages`
  store.json     written last: rows, languages, rows per language, the fewest hard negatives
                 of any row, and the source it was made from (files with sizes and mtimes)

Nothing of it is held in memory: a row is two `pread`s (its offsets, then its bytes), so
reading a batch costs the same at 1k rows as at 47M, and the process's resident memory does not
grow with the source (no memory map, whose touched pages would count as resident).

The folder is `$UMR_JAX_CACHE/pair-stores/<kind>-<key>/` (default `~/.cache/umr-jax`), the key a
hash of the source's files (paths, sizes, mtimes) and the reading settings (languages, minimum
similarity): an unchanged source is converted once and then opened in milliseconds; a changed
file gives a new key, so a stale store is never read. The conversion is built in a temporary
folder beside it and renamed into place: an interrupted conversion leaves nothing that counts,
and the next run starts it again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any, Collection, Iterable, Sequence

import numpy as np

from umr_jax import storage
from umr_jax.data.files import AtomicFile, PathLike, expand_shards, make_output_temp_dir
from umr_jax.data.formats import DIRECTIONS, Pair, pair_direction, read_pairs, read_webfaq, webfaq_files, webfaq_to_pair
from umr_jax.errors import InputError

STORE_VERSION = 1
MANIFEST = "store.json"
ROWS, OFFSETS, LANGS = "rows.bin", "offsets.i64", "langs.u16"
SOURCES = ("pairs", "webfaq")
_FLUSH_ROWS = 1 << 16


def stores_root() -> Path:
    """Where converted stores live: `$UMR_JAX_CACHE/pair-stores` (default ~/.cache/umr-jax)."""
    return storage.cache_root() / "pair-stores"


def _fingerprint(files: Sequence[Path]) -> list[dict[str, Any]]:
    out = []
    for file in files:
        stat = file.stat()
        out.append({"path": os.fspath(file.resolve()), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    return out


def source_files(source: str, path: PathLike | Sequence[PathLike], *, languages: Collection[str] | None = None,
                 exclude: Collection[str] = ()) -> list[Path]:
    """The files a source is read from (remote ones fetched into the local mirror first)."""
    if source == "webfaq":
        return [file for file, _ in webfaq_files(path, languages=languages, exclude=exclude)]
    if source == "pairs":
        paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
        return [file for p in paths for file in expand_shards(p)]
    raise InputError(f"data.source must be one of {', '.join(repr(s) for s in SOURCES)}, got {source!r}")


def source_pairs(source: str, path: PathLike | Sequence[PathLike], *, languages: Collection[str] | None = None,
                 min_similarity: float | None = None, exclude: Collection[str] = (),
                 direction: str | None = None) -> Iterable[Pair]:
    """The source's pairs, streamed in reading order: WebFAQ records of `languages` (files of
    other languages, and of `exclude`, are not opened) with `semantic_similarity_score >=
    min_similarity`, as pairs; or pairs whose `lang` is one of `languages` and not of `exclude`,
    and with `direction` ("monolingual"/"cross-lingual": those whose passage is in the query's
    language / another; "both": all) only pairs that state their `passage_lang`, else InputError
    naming the file and record."""
    if source == "webfaq":
        return (webfaq_to_pair(r) for r in read_webfaq(path, languages=languages, min_similarity=min_similarity,
                                                        exclude=exclude))
    if direction is not None and direction not in DIRECTIONS:
        raise InputError(f"data.direction must be one of {', '.join(DIRECTIONS)} (or None), got {direction!r}")
    paths = [path] if isinstance(path, (str, os.PathLike)) else list(path)
    return _filtered_pairs(paths, None if languages is None else set(languages), set(exclude), direction)


def _filtered_pairs(paths: Sequence[PathLike], wanted: set[str] | None, unwanted: set[str],
                    direction: str | None) -> Iterable[Pair]:
    for one in paths:
        for file in expand_shards(one):
            for record, pair in enumerate(read_pairs(file), 1):
                if (wanted is not None and pair.lang not in wanted) or pair.lang in unwanted:
                    continue
                if direction is not None:
                    kind = pair_direction(pair)
                    if kind is None:
                        raise InputError(f"record {record}: data.direction={direction} needs every pair's passage_lang "
                                         "(the passage's language), and this pair has none", file)
                    if direction != "both" and kind != direction:
                        continue
                yield pair


def write_pair_store(pairs: Iterable[Pair], folder: PathLike, *, source: dict[str, Any] | None = None) -> Path:
    """Write `pairs` as a store in `folder` (the layout in the module docstring), streaming: a
    temporary folder beside it, renamed into place once complete (replacing an older store
    there). Raises InputError when there are no pairs. Returns the folder."""
    folder = storage.local(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = make_output_temp_dir(folder.parent, prefix=f".{folder.name}.", suffix=".tmp")
    try:
        manifest = _write_files(pairs, temp)
        manifest["source"] = source or {}
        with AtomicFile(temp / MANIFEST) as f:
            f.write((json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))
        if folder.exists():
            if _valid(folder, manifest["source"]):  # another process built the same store meanwhile
                shutil.rmtree(temp)
                return folder
            shutil.rmtree(folder, ignore_errors=True)
        try:
            os.replace(temp, folder)
        except OSError:  # another process renamed its copy into place first
            if not _valid(folder, manifest["source"]):
                raise
            shutil.rmtree(temp)
    except BaseException:
        shutil.rmtree(temp, ignore_errors=True)
        raise
    return folder


def _write_files(pairs: Iterable[Pair], folder: Path) -> dict[str, Any]:
    codes: dict[str, int] = {}
    counts: list[int] = []
    rows, position = 0, 0
    fewest_negatives, fewest_row = None, None
    offsets_chunk: list[int] = [0]
    langs_chunk: list[int] = []
    with open(folder / ROWS, "wb") as rows_file, open(folder / OFFSETS, "wb") as offsets_file, \
            open(folder / LANGS, "wb") as langs_file:
        def flush() -> None:
            np.asarray(offsets_chunk, dtype="<i8").tofile(offsets_file)
            np.asarray(langs_chunk, dtype="<u2").tofile(langs_file)
            offsets_chunk.clear(), langs_chunk.clear()

        for pair in pairs:
            data = json.dumps([pair.query, pair.positive, list(pair.negatives)], ensure_ascii=False).encode("utf-8")
            rows_file.write(data)
            position += len(data)
            code = codes.setdefault(pair.lang, len(codes))
            if code == len(counts):
                counts.append(0)
            counts[code] += 1
            offsets_chunk.append(position)
            langs_chunk.append(code)
            if fewest_negatives is None or len(pair.negatives) < fewest_negatives:
                fewest_negatives, fewest_row = len(pair.negatives), rows
            rows += 1
            if len(langs_chunk) >= _FLUSH_ROWS:
                flush()
        flush()
        for f in (rows_file, offsets_file, langs_file):
            f.flush()
            os.fsync(f.fileno())
    if rows == 0:
        raise InputError("no training pairs (check data.path, data.languages, data.min_similarity, data.direction)")
    if len(codes) > np.iinfo(np.uint16).max:
        raise InputError(f"{len(codes)} languages in one source; a store holds at most 65535")
    languages = sorted(codes, key=codes.get)
    return {"version": STORE_VERSION, "rows": rows, "bytes": position, "languages": languages,
            "rows_per_language": dict(zip(languages, counts)), "fewest_negatives": fewest_negatives,
            "fewest_negatives_row": fewest_row}


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def _valid(folder: Path, source: dict[str, Any] | None = None) -> bool:
    """A complete store of this version (and of `source`, when given), its files the sizes the
    manifest says."""
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("version") != STORE_VERSION or (source is not None and manifest.get("source") != source):
        return False
    rows = int(manifest.get("rows", -1))
    try:
        return ((folder / OFFSETS).stat().st_size == 8 * (rows + 1) and (folder / LANGS).stat().st_size == 2 * rows
                and (folder / ROWS).stat().st_size == int(manifest["bytes"]))
    except (OSError, KeyError, ValueError):
        return False


class PairStore:
    """The pairs of a store folder by row: `len(store)`, `store[i]`, `store.rows(indices)`;
    `store.row_languages()` the language index of every row (a read-only memory map, for
    selections by language). Files are opened lazily; the store pickles without them."""

    def __init__(self, folder: PathLike):
        self.folder = storage.local(folder)
        if not _valid(self.folder):
            raise InputError("not a complete pair store (store.json with rows.bin, offsets.i64, langs.u16)", self.folder)
        self.manifest = _read_manifest(self.folder)
        self.languages: list[str] = list(self.manifest["languages"])
        self._count = int(self.manifest["rows"])
        self._fds: tuple[int, int, int] | None = None

    def __len__(self) -> int:
        return self._count

    @property
    def rows_per_language(self) -> dict[str, int]:
        return dict(self.manifest["rows_per_language"])

    @property
    def fewest_negatives(self) -> int:
        """The fewest hard negatives any row has."""
        return int(self.manifest["fewest_negatives"])

    def row_languages(self) -> np.ndarray:
        """uint16 [rows]: each row's index into `languages` (memory-mapped, read-only)."""
        return np.memmap(self.folder / LANGS, dtype="<u2", mode="r", shape=(self._count,))

    def _open(self) -> tuple[int, int, int]:
        if self._fds is None:
            self._fds = tuple(os.open(self.folder / name, os.O_RDONLY) for name in (OFFSETS, ROWS, LANGS))
        return self._fds

    def rows(self, indices: Iterable[int]) -> list[Pair]:
        """The pairs at `indices`, in that order (read from disk)."""
        offsets_fd, rows_fd, langs_fd = self._open()
        out = []
        for index in indices:
            index = int(index)
            if not 0 <= index < self._count:
                raise IndexError(f"row {index} out of range for {self._count} pairs")
            start, end = np.frombuffer(os.pread(offsets_fd, 16, 8 * index), dtype="<i8").tolist()
            query, positive, negatives = json.loads(os.pread(rows_fd, end - start, start))
            lang = self.languages[int.from_bytes(os.pread(langs_fd, 2, 2 * index), "little")]
            out.append(Pair(query=query, positive=positive, lang=lang, negatives=tuple(negatives)))
        return out

    def __getitem__(self, index: int) -> Pair:
        return self.rows([index if index >= 0 else index + self._count])[0]

    def __iter__(self):
        for start in range(0, self._count, 4096):
            yield from self.rows(range(start, min(self._count, start + 4096)))

    def close(self) -> None:
        for fd in self._fds or ():
            os.close(fd)
        self._fds = None

    def __getstate__(self) -> dict:
        return {"folder": self.folder}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["folder"])

    def __del__(self) -> None:
        if getattr(self, "_fds", None):  # a store that failed to open has none
            self.close()


def open_pair_store(source: str, path: PathLike | Sequence[PathLike], *, languages: Collection[str] | None = None,
                    min_similarity: float | None = None, root: PathLike | None = None,
                    exclude: Collection[str] = (), direction: str | None = None) -> PairStore:
    """The store of a pairs source (`source` "pairs" or "webfaq", as `data.source`), converted
    on first use and reused while the source's files are unchanged (module docstring).
    `exclude`: languages left out; `direction`: translated pairs of one direction
    (`source_pairs`). `root`: where stores live (default `stores_root()`)."""
    files = source_files(source, path, languages=languages, exclude=exclude)
    described = {"kind": source, "files": _fingerprint(files),
                 "languages": None if languages is None else sorted(languages),
                 "min_similarity": None if min_similarity is None else float(min_similarity)}
    if exclude:  # (absent otherwise: the stores made before it stay valid)
        described["exclude"] = sorted(exclude)
    if direction:  # (likewise)
        described["direction"] = direction
    key = hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8")).hexdigest()[:20]
    folder = storage.local(root) if root is not None else stores_root()
    folder = folder / f"{source}-{key}"
    if not _valid(folder, described):
        try:
            write_pair_store(source_pairs(source, path, languages=languages, min_similarity=min_similarity,
                                          exclude=exclude, direction=direction), folder, source=described)
        except InputError as err:
            if err.path is None and isinstance(path, (str, os.PathLike)):  # name the source
                raise InputError(err.message, path) from None
            raise
    return PairStore(folder)
