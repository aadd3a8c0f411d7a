"""The encode stage: a passage collection (or a question file) through a retriever tower into
an embedding folder, resumably, on the runtime's `encode` role (each host's own devices, whole
shards per host).

    report = encode("/models/mcontriever", EncodeInput.passages("psgs_w100.tsv"), "embeddings/", runtime)
    # embeddings/shard-00000.npy (float16 [100000, 768]) + shard-00000.ids.txt, ..., manifest.json

How it works (the tower, its batches and the inputs: `retrieval.encode`)
  Shards    fixed row ranges of the input: shard i holds rows [i * shard_size, (i+1) * shard_size)
            in file order, written atomically (`embeddings.write_shard`: temp file + rename).
  Resume    `encode.json`, written before the first shard, records the settings (input file,
            model folder and a fingerprint of its files, pooling, max length, compute and output
            dtypes, shard size). A rerun into the same folder skips every complete shard and
            refuses, naming what differs, when the settings are not the same. `manifest.json`
            is written last, so a folder without it is an unfinished encode.
  Hosts     no communication between hosts while encoding: each process builds its mesh from
            its own devices and encodes the shards i with i % process_count == process_index;
            after a barrier, process 0 checks that every shard is there and writes the manifest.
            The output folder must be on a filesystem every host sees.

A DPR TSV is read by row through its offset index, so a host reads only its own shards and a
resumed run reads nothing it skips.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from umr_jax import storage
from umr_jax.errors import InputError
from umr_jax.retrieval.embeddings import MANIFEST, shard_name, write_manifest, write_shard
from umr_jax.retrieval.encode import (DEFAULT_MAX_LENGTH, EncodeInput, TowerEncoder, count_rows, iter_input_shards,
                                      shard_rows)
from umr_jax.stages.folder import StageFolder

SETTINGS_FILE = "encode.json"
OUTPUT_DTYPES = ("float16", "float32")


def encode(model: str | os.PathLike, source: EncodeInput, output: str | os.PathLike, runtime, *, dtype: str = "bfloat16",
           pooling: str | None = None, as_tower: bool = False, batch_size: int = 256, shard_size: int = 100_000,
           max_length: int | None = None, output_dtype: str = "float16", progress=None,
           scan_layers: bool = False) -> "EncodeReport":
    """Encode `source` with the tower in `model` into `output` (every process runs this)."""
    encoder = TowerEncoder(model, mesh=runtime.mesh("encode"), rules=runtime.rules("encode"), pooling=pooling,
                           as_tower=as_tower, dtype=dtype, scan_layers=scan_layers)
    return encode_to_store(encoder, source, output, shard_size=shard_size, batch_size=batch_size, max_length=max_length,
                           output_dtype=output_dtype, progress=progress)


def shard_owner(shard_index: int, process_count: int) -> int:
    """The process that encodes shard `shard_index`: `shard_index % process_count`."""
    if process_count < 1 or shard_index < 0:
        raise ValueError(f"need shard_index >= 0 and process_count >= 1, got {shard_index}, {process_count}")
    return shard_index % process_count


def owned_shards(num_shards: int, process_index: int, process_count: int) -> list[int]:
    """The shards process `process_index` of `process_count` encodes (every shard has exactly one owner)."""
    return [i for i in range(num_shards) if shard_owner(i, process_count) == process_index]


class Progress(Protocol):
    """What `encode_to_store` reports to: `start(total rows to encode, or None)`, then `advance(n)`."""

    def start(self, total: int | None) -> None: ...

    def advance(self, rows: int) -> None: ...


@dataclasses.dataclass
class EncodeReport:
    """What one process did. `total_rows`/`num_shards` cover the whole input; `manifest` is True
    on the process that wrote the manifest (process 0)."""

    folder: Path
    total_rows: int
    num_shards: int
    dim: int
    dtype: str
    encoded_shards: list[int]
    skipped_shards: list[int]
    encoded_rows: int
    seconds: float
    manifest: bool

    @property
    def rows_per_second(self) -> float:
        return self.encoded_rows / self.seconds if self.seconds > 0 else 0.0


def _default_barrier(process_count: int) -> Callable[[str], None]:
    if process_count == 1:
        return lambda name: None

    def barrier(name: str) -> None:
        from umr_jax.parallel.mesh import barrier as job_barrier

        job_barrier(name)

    return barrier


_SETTING_LABELS = {"model_files": "the model folder's files changed since", "input_files": "the input file changed since"}


def shard_files(index: int) -> list[str]:
    """The files of shard `index`: its embeddings and its ids."""
    name = shard_name(index)
    return [f"{name}.npy", f"{name}.ids.txt"]


def _embedding_files(folder: Path) -> list[str]:
    names = sorted(p.name for p in folder.glob("shard-*")) if folder.is_dir() else []
    return names + ([MANIFEST] if (folder / MANIFEST).is_file() else [])


def encode_to_store(
    encoder: TowerEncoder,
    source: EncodeInput,
    output: str | os.PathLike,
    *,
    shard_size: int = 100_000,
    batch_size: int = 256,
    max_length: int | None = None,
    output_dtype: str = "float16",
    process_index: int | None = None,
    process_count: int | None = None,
    barrier: Callable[[str], None] | None = None,
    progress: Progress | None = None,
    on_shard_written: Callable[[int, dict], None] | None = None,
) -> EncodeReport:
    """Encode `source` into an embedding store folder (see the module docstring), resumably.

    Each process encodes the shards it owns (`shard_owner`) that are not complete yet, writes
    each atomically and calls `on_shard_written(index, manifest entry)`; after `barrier("...")`
    (default: `parallel.mesh.barrier` when there are several processes),
    process 0 checks every shard and writes `manifest.json`. `max_length` defaults to 256 for
    passages and 64 for queries. Raises `InputError` when the folder holds an encode with
    other settings, and when embeddings overflow `output_dtype`.
    """
    if output_dtype not in OUTPUT_DTYPES:
        raise ValueError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {output_dtype!r}")
    if shard_size < 1 or batch_size < 1 or (max_length is not None and max_length < 2):
        raise ValueError(f"need shard_size >= 1, batch_size >= 1, max_length >= 2; got {shard_size}, {batch_size}, {max_length}")
    if process_index is None or process_count is None:
        import jax

        process_index, process_count = jax.process_index(), jax.process_count()
    barrier = barrier or _default_barrier(process_count)
    folder = storage.local(output)
    max_length = max_length or DEFAULT_MAX_LENGTH[source.kind]
    settings = {
        **source.fingerprint(),
        **encoder.settings,
        "max_length": int(max_length),
        "output_dtype": output_dtype,
        "shard_size": int(shard_size),
    }
    stage = StageFolder(folder, "encode", settings_file=SETTINGS_FILE, labels=_SETTING_LABELS)
    with stage.session(writer=process_index == 0):
        return _encode(stage, encoder, source, settings, shard_size, batch_size, max_length, output_dtype, process_index,
                       process_count, barrier, progress, on_shard_written)


def _encode(stage: StageFolder, encoder: TowerEncoder, source: EncodeInput, settings: dict, shard_size: int, batch_size: int,
            max_length: int, output_dtype: str, process_index: int, process_count: int, barrier: Callable[[str], None],
            progress: Progress | None, on_shard_written: Callable[[int, dict], None] | None) -> EncodeReport:
    folder = stage.path
    if process_index == 0:
        resumed = stage.begin(settings, leftovers=_embedding_files(folder))
        total = count_rows(source)  # a DPR TSV: builds (validating every row) or opens its offset index
        if resumed:
            storage.remove(folder / MANIFEST)  # rewritten at the end; never stale meanwhile
    barrier("umr-jax-encode-start")
    if process_index != 0:
        stage.follow(settings)  # process 0 wrote them: every host agrees on the settings
        total = count_rows(source)  # after process 0 built the offset index

    dim = encoder.dim
    mine = lambda index: shard_owner(index, process_count) == process_index  # noqa: E731
    done = lambda index: stage.shard_is_recorded(shard_name(index), shard_files(index))  # noqa: E731
    if progress is not None:
        todo = None
        if total is not None:
            sizes = shard_rows(total, shard_size)
            todo = sum(rows for i, rows in enumerate(sizes) if mine(i) and not done(i))
        progress.start(todo)
    encoded, skipped, encoded_rows, rows_per_shard = [], [], 0, []
    started = time.perf_counter()
    for shard in iter_input_shards(source, shard_size, mine):
        rows_per_shard.append(shard.rows)
        if shard.records is None:
            continue
        if done(shard.index):
            skipped.append(shard.index)
            continue
        embeddings, ids = encoder.encode_records(
            shard.records, kind=source.kind, max_length=max_length, batch_size=batch_size,
            source_name=str(source.path), progress=None if progress is None else progress.advance,
        )
        stored = embeddings.astype(output_dtype)
        if not np.isfinite(stored).all():
            bad = int(np.argmax(~np.isfinite(stored).all(axis=1)))
            hint = "; use output dtype float32" if output_dtype == "float16" and np.isfinite(embeddings[bad]).all() else ""
            raise InputError(f"record {shard.start + bad + 1} (id {ids[bad]!r}): the embedding is not finite in "
                             f"{output_dtype} (max |x| {np.abs(embeddings[bad]).max():.3g}){hint}", source.path)
        entry = write_shard(folder, shard.index, stored, ids)
        stage.record_shard(shard_name(shard.index), shard_files(shard.index))
        encoded.append(shard.index)
        encoded_rows += shard.rows
        if on_shard_written is not None:
            on_shard_written(shard.index, entry)
    seconds = time.perf_counter() - started
    if not rows_per_shard:
        raise InputError(f"no {source.kind} to encode", source.path)
    barrier("umr-jax-encode-done")
    if process_index == 0:
        stage.refresh()  # a bucket folder: the other hosts' shards, to check them (and index them next)
    report = EncodeReport(folder, sum(rows_per_shard), len(rows_per_shard), dim, output_dtype, encoded, skipped,
                          encoded_rows, seconds, manifest=False)
    if process_index == 0:
        entries = []
        for index, rows in enumerate(rows_per_shard):
            if not done(index):
                raise InputError(f"{shard_name(index)} is missing, incomplete or unrecorded after every process finished; "
                                 "is the output folder on a filesystem all hosts share?", folder)
            matrix_file, ids_file = shard_files(index)
            entries.append({"embeddings": matrix_file, "ids": ids_file, "rows": rows})
        write_manifest(folder, entries, dim, output_dtype, extra={"encode": settings})
        report.manifest = True
    return report
