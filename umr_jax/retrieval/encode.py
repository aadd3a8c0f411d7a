"""Encode a passage collection or a question file with a retriever tower, into an embedding store.

    encoder = TowerEncoder("/models/mcontriever", mesh=make_mesh({"data": -1}, jax.local_devices()))
    report = encode_to_store(encoder, EncodeInput.passages("psgs_w100.tsv"), "embeddings/")
    # embeddings/shard-00000.npy (float16 [100000, 768]) + shard-00000.ids.txt, ..., manifest.json

How it works
  Tower     a Hugging Face folder loaded through `hf_io` (BERT / XLM-R, or the encoder of a
            T5 / mT5 with `as_tower`), params placed sharded over the mesh (`data_parallel` by
            default: replicated, the batch split over every device), matmuls in bf16.
  Batches   `data.pipeline.passage_batches` (title + text as a pair, max 256 tokens) or
            `query_batches` (the question, max 64 tokens): file order, grouped by length
            bucket (16, 32, ..., max), so the jitted forward compiles one program per bucket;
            padding rows of the last batches are dropped. One batch is in flight on the
            devices while the host tokenizes the next.
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

Inputs: a DPR passage TSV (random access through `PassageStore`'s offset index, so a host
reads only its own shards and a resumed run reads nothing it skips), passage JSON lines
`{id, title, text}` or XOR-TyDi question JSON lines `{id, question, lang}` (both streamed; one
shard's records are in memory at a time).
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from umr_jax.data import formats, pipeline
from umr_jax.data.files import expand_shards
from umr_jax.errors import InputError, ModelLoadError
from umr_jax.retrieval.embeddings import MANIFEST, shard_name, write_manifest, write_shard
from umr_jax.stages.folder import StageFolder

SETTINGS_FILE = "encode.json"
PASSAGE_FORMATS = ("dpr-tsv", "passages-jsonl")
QUESTION_FORMAT = "xor-questions"
DEFAULT_MAX_LENGTH = {"passages": 256, "queries": 64}
OUTPUT_DTYPES = ("float16", "float32")
COMPUTE_DTYPES = ("bfloat16", "float32", "float16")

# ---------------------------------------------------------------------------------------------
# The tower


def jitted_embed(module, param_shardings, mesh, rules, normalize: bool):
    """The tower's one program: `(params, input_ids, attention_mask) -> fp32 [batch, dim]`,
    data parallel over the mesh's batch axes. `umr-jax compile` compiles this very function."""
    import jax
    import flax.linen as nn

    from umr_jax.parallel import sharding as shd

    rule_list = list(shd.get_rules(rules))
    batch_sharding = shd.batch_sharding(mesh)

    def embed(params, input_ids, attention_mask):
        with nn.logical_axis_rules(rule_list):
            out = module.apply({"params": params}, input_ids, attention_mask).astype(jax.numpy.float32)
        if normalize:  # as in the cosine training loss (dual_encoder.similarity_matrix)
            out = out / jax.numpy.maximum(jax.numpy.linalg.norm(out, axis=-1, keepdims=True), 1e-12)
        return out

    return shd.MeshJit(embed, mesh, in_shardings=(param_shardings, batch_sharding, batch_sharding), out_shardings=batch_sharding)


class TowerEncoder:
    """A retriever tower from a Hugging Face folder, placed on `mesh`, that embeds token batches.

    `encode_batch(input_ids, attention_mask) -> fp32 [batch, dim]`; `encode_records(records)`
    embeds passages or questions in record order through the bucketed pipeline.

    Args:
      folder: HF model folder (config.json, weights, tokenizer files).
      mesh: the device mesh (usually this process's devices: `make_mesh(sizes, jax.local_devices())`).
      rules: sharding rule set name or list (see `parallel.sharding`).
      pooling: "mean", "cls" or (BERT with a pooler) "pooler"; None: what the folder declares
        (sentence-transformers files), else mean.
      as_tower: required for T5/mT5 folders: encode with the encoder stack (the decoder is ignored).
      dtype: compute dtype of the matmuls ("bfloat16", "float32", "float16"); params stay fp32.
      normalize: L2-normalise the embeddings (dot product = cosine); None: what the folder
        declares (a sentence-transformers Normalize module in modules.json), else no.
      scan_layers: one scanned layer stack (compiles once for any depth; same embeddings).
    """

    def __init__(self, folder: str | os.PathLike, *, mesh, rules: Any = "data_parallel", pooling: str | None = None,
                 as_tower: bool = False, dtype: str = "bfloat16", normalize: bool | None = None, scan_layers: bool = False):
        from umr_jax.models import hf_io
        from umr_jax.parallel import sharding as shd

        if dtype not in COMPUTE_DTYPES:
            raise ValueError(f"dtype must be one of {COMPUTE_DTYPES}, got {dtype!r}")
        self.folder = Path(folder)
        model_type = hf_io.model_type_of(hf_io.read_hf_config(self.folder), self.folder)
        is_t5 = model_type in hf_io.T5_TYPES
        if is_t5 and not as_tower:
            raise ModelLoadError(
                f"{self.folder}: a {model_type} folder is an encoder-decoder; pass --as-tower to encode with its encoder"
            )
        allowed = ("mean", "cls") if is_t5 else ("mean", "cls", "pooler")
        if pooling is not None and pooling not in allowed:
            raise ModelLoadError(f"{self.folder}: pooling {pooling!r} is not available for a {model_type} tower; choose {', '.join(allowed)}")
        loaded = hf_io.load_model(self.folder, as_tower=True if is_t5 else None, pooling=pooling, dtype=dtype,
                                  scan_layers=scan_layers)
        if loaded.family == "bert" and loaded.config.pooling == "pooler" and not loaded.config.has_pooler:
            raise ModelLoadError(f"{self.folder}: pooling 'pooler' needs a checkpoint with a pooler layer; this one has none")
        try:
            self.tokenizer = hf_io.load_tokenizer(self.folder)
        except (OSError, ValueError) as err:
            raise ModelLoadError(f"{self.folder}: no usable tokenizer files ({type(err).__name__}: {err})") from None
        if self.tokenizer.pad_token_id is None:
            raise ModelLoadError(f"{self.folder}: the tokenizer has no pad token")
        self.family = loaded.family
        self.normalize = hf_io.normalize_from_folder(self.folder) if normalize is None else bool(normalize)
        self.model_type = model_type
        self.pooling = loaded.config.pooling if loaded.family == "bert" else loaded.module.pooling
        self.dim = int(loaded.config.hidden_size if loaded.family == "bert" else loaded.config.d_model)
        self.config = loaded.config
        self.dtype = dtype
        self.mesh = mesh
        self.batch_devices = int(np.prod([mesh.shape[a] for a in shd.BATCH_AXES]))
        module = loaded.module
        self.module = module
        example = (np.ones((1, 4), np.int32), np.ones((1, 4), np.int32))
        shardings = shd.abstract_shardings(module, example, mesh, rules)
        self.params = shd.place_host_params(loaded.params, shardings)
        self._embed = jitted_embed(module, shardings, mesh, rules, self.normalize)
        self._to_global = lambda batch: shd.host_batch_to_global(batch, mesh)

    @property
    def settings(self) -> dict[str, Any]:
        """What determines the embeddings: the model (folder and a fingerprint of its files),
        the pooling and the compute dtype."""
        return {
            "model": str(self.folder.absolute()),
            "model_files": model_fingerprint(self.folder),
            "family": self.family,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "dtype": self.dtype,
        }

    def round_batch(self, batch_size: int) -> int:
        """`batch_size` rounded up to a multiple of the devices the batch is split over."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        return int(math.ceil(batch_size / self.batch_devices)) * self.batch_devices

    def _dispatch(self, input_ids: np.ndarray, attention_mask: np.ndarray):
        batch = self._to_global({"input_ids": np.asarray(input_ids, np.int32), "attention_mask": np.asarray(attention_mask, np.int32)})
        return self._embed(self.params, batch["input_ids"], batch["attention_mask"])

    def encode_batch(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        """Pooled embeddings fp32 [batch, dim] of int [batch, length] token ids and 0/1 mask.
        `batch` must be a multiple of `batch_devices`."""
        return np.asarray(self._dispatch(input_ids, attention_mask))

    def batches(self, records: Sequence[Any], *, kind: str, max_length: int | None = None, batch_size: int = 256,
                source_name: str | None = None):
        """The bucketed pipeline over `records` (file order, grouped by length, every record once)."""
        max_length = max_length or DEFAULT_MAX_LENGTH[kind]
        options = dict(global_batch_size=self.round_batch(batch_size), max_length=max_length, metadata=("id",),
                       process_index=0, process_count=1, source_name=source_name)
        if kind == "passages":
            return pipeline.passage_batches(records, self.tokenizer, **options)
        if kind == "queries":
            return pipeline.query_batches(records, self.tokenizer, shuffle=False, group_by_length=True, **options)
        raise ValueError(f"kind must be 'passages' or 'queries', got {kind!r}")

    def encode_records(self, records: Sequence[Any], *, kind: str = "passages", max_length: int | None = None,
                       batch_size: int = 256, source_name: str | None = None,
                       progress: Callable[[int], None] | None = None) -> tuple[np.ndarray, list[str]]:
        """Embeddings fp32 [len(records), dim] and ids, in record order.

        `records`: random-access passages (`{id, title, text}` dicts or `formats.Passage`) for
        kind "passages", questions (`{id, question}` or `formats.Question`) for "queries".
        `max_length` defaults to 256 (passages) or 64 (queries). `progress(n)` is called with
        the number of records of each finished batch.
        """
        out = np.zeros((len(records), self.dim), np.float32)
        ids: list[str | None] = [None] * len(records)
        pending = None

        def collect(item) -> None:
            embeddings, batch = item
            keep = batch["example_mask"] == 1
            rows = batch["index"][keep]
            out[rows] = np.asarray(embeddings)[keep]
            for row, record_id in zip(rows.tolist(), batch["id"][keep].tolist()):
                ids[row] = record_id
            if progress is not None:
                progress(int(keep.sum()))

        for batch in self.batches(records, kind=kind, max_length=max_length, batch_size=batch_size, source_name=source_name):
            mask = batch["attention_mask"].copy()
            mask[batch["example_mask"] == 0, 0] = 1  # padding rows attend to one token: no all-masked softmax
            in_flight = (self._dispatch(batch["input_ids"], mask), batch)
            if pending is not None:  # fetch the previous batch while this one runs
                collect(pending)
            pending = in_flight
        if pending is not None:
            collect(pending)
        missing = [i for i, record_id in enumerate(ids) if record_id is None]
        if missing:
            raise AssertionError(f"the pipeline skipped {len(missing)} records (first: {missing[0]})")
        return out, ids  # type: ignore[return-value]


def model_fingerprint(folder: str | os.PathLike) -> str:
    """A short hash of the names, sizes and modification times of a model folder's config and
    weight files: changes when the model is re-exported or replaced."""
    folder = Path(folder)
    parts = []
    for path in sorted(folder.iterdir()):
        if path.name == "config.json" or path.name.startswith(("model.safetensors", "pytorch_model.bin", "model-", "pytorch_model-")):
            stat = path.stat()
            parts.append([path.name, stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclasses.dataclass(frozen=True)
class EncodeInput:
    """What to encode: `kind` "passages" (format "dpr-tsv" or "passages-jsonl") or "queries"
    (format "xor-questions")."""

    kind: str
    path: Path
    format: str

    @classmethod
    def passages(cls, path: str | os.PathLike, format: str = "auto") -> "EncodeInput":
        """A passage collection; `format` "auto" decides by the suffix (.tsv / .jsonl, .json),
        else by the first line (`id<TAB>text<TAB>title` header or a JSON object)."""
        path = Path(path)
        if format == "auto":
            format = detect_passage_format(path)
        if format not in PASSAGE_FORMATS:
            raise ValueError(f"passage format must be one of {PASSAGE_FORMATS} or 'auto', got {format!r}")
        return cls("passages", path, format)

    @classmethod
    def queries(cls, path: str | os.PathLike) -> "EncodeInput":
        """An XOR-TyDi question file (JSON lines `{id, question, lang, answers?}`)."""
        return cls("queries", Path(path), QUESTION_FORMAT)

    def files(self) -> list[Path]:
        """The files that make up the input (a file, or a complete shard set of JSON lines)."""
        if self.format == "dpr-tsv":
            if not self.path.is_file():
                raise InputError("no such file; expected a DPR passage TSV", self.path)
            return [self.path]
        return expand_shards(self.path)

    def fingerprint(self) -> dict[str, Any]:
        """The input as recorded in `encode.json`: path, format, and a hash of its files' sizes
        and modification times."""
        parts = [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in self.files()]
        return {
            "kind": self.kind,
            "input": str(self.path.absolute()),
            "input_format": self.format,
            "input_files": hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16],
        }


def detect_passage_format(path: Path) -> str:
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] == ".tsv":
        return "dpr-tsv"
    if any(s in (".jsonl", ".json") for s in suffixes):
        return "passages-jsonl"
    if not path.is_file():
        expand_shards(path)  # raises "no such file" unless a shard set exists: those are JSON lines
        return "passages-jsonl"
    with open(path, "rb") as f:
        head = f.readline(4096).lstrip(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"{"):
        return "passages-jsonl"
    if head.startswith(b"id\t"):
        return "dpr-tsv"
    raise InputError("cannot tell the passage format: expected a DPR TSV (header 'id<TAB>text<TAB>title') "
                     "or JSON lines {id, title, text}; name it .tsv or .jsonl", path, 1)


@dataclasses.dataclass
class InputShard:
    """Rows [start, start + rows) of the input; `records` is None for a shard this process skips."""

    index: int
    start: int
    rows: int
    records: Sequence[Any] | None


def shard_owner(shard_index: int, process_count: int) -> int:
    """The process that encodes shard `shard_index`: `shard_index % process_count`."""
    if process_count < 1 or shard_index < 0:
        raise ValueError(f"need shard_index >= 0 and process_count >= 1, got {shard_index}, {process_count}")
    return shard_index % process_count


def owned_shards(num_shards: int, process_index: int, process_count: int) -> list[int]:
    """The shards process `process_index` of `process_count` encodes (every shard has exactly one owner)."""
    return [i for i in range(num_shards) if shard_owner(i, process_count) == process_index]


def shard_rows(total_rows: int, shard_size: int) -> list[int]:
    """Rows of each shard when `total_rows` rows are cut into shards of `shard_size`."""
    return [min(shard_size, total_rows - start) for start in range(0, total_rows, shard_size)]


class _RowRange(Sequence):
    """Rows [start, stop) of a random-access source, as a random-access sequence."""

    def __init__(self, source, start: int, stop: int):
        self.source, self.start, self.stop = source, start, stop

    def __len__(self) -> int:
        return self.stop - self.start

    def __getitem__(self, i):
        if not 0 <= i < len(self):
            raise IndexError(i)
        return self.source[self.start + i]


def iter_input_shards(source: EncodeInput, shard_size: int, wanted: Callable[[int], bool]) -> Iterator[InputShard]:
    """The input cut into shards of `shard_size` rows in file order. Records are read only for
    shards where `wanted(index)`: from a DPR TSV by row through the offset index (nothing else
    is read), from JSON lines by streaming (other shards are parsed and dropped)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be positive, got {shard_size}")
    if source.format == "dpr-tsv":
        from umr_jax.data.passage_store import PassageStore

        store = PassageStore(source.path)
        try:
            for index, rows in enumerate(shard_rows(len(store), shard_size)):
                start = index * shard_size
                yield InputShard(index, start, rows, _RowRange(store, start, start + rows) if wanted(index) else None)
        finally:
            store.close()
        return
    if source.format == "passages-jsonl":
        stream = formats.read_passages_jsonl(source.path)
    elif source.format == QUESTION_FORMAT:
        stream = formats.read_questions(source.path)
    else:
        raise ValueError(f"unknown input format {source.format!r}")
    for index in itertools.count():
        records = list(itertools.islice(stream, shard_size))
        if not records:
            return
        yield InputShard(index, index * shard_size, len(records), records if wanted(index) else None)


def count_rows(source: EncodeInput) -> int | None:
    """Rows of the input when known without reading it (DPR TSV: from the offset index), else None."""
    if source.format == "dpr-tsv":
        from umr_jax.data.passage_store import PassageStore

        return len(PassageStore(source.path))
    return None


# ---------------------------------------------------------------------------------------------
# The embedding store, resumable and multi-host


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
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)

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
    (default: `multihost_utils.sync_global_devices` when there are several processes),
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
    folder = Path(output)
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
            (folder / MANIFEST).unlink(missing_ok=True)  # rewritten at the end; never stale meanwhile
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
