"""A retriever tower that embeds passages or questions, and the inputs it reads.

    encoder = TowerEncoder("/models/mcontriever", mesh=make_mesh({"data": -1}, jax.local_devices()))
    embeddings, ids = encoder.encode_records(passages)  # fp32 [len(passages), dim], record order

How it works
  Tower     a Hugging Face folder loaded through `hf_io` (BERT / XLM-R, or the encoder of a
            T5 / mT5 with `as_tower`), params placed sharded over the mesh (`data_parallel` by
            default: replicated, the batch split over every device), matmuls in bf16.
  Batches   `data.pipeline.passage_batches` (title + text as a pair, max 256 tokens) or
            `query_batches` (the question, max 64 tokens): file order, grouped by length
            bucket (16, 32, ..., max), so the jitted forward compiles one program per bucket;
            padding rows of the last batches are dropped. One batch is in flight on the
            devices while the host tokenizes the next.
  Inputs    `EncodeInput`: a DPR passage TSV (random access through `PassageStore`'s offset
            index, so a reader of some shards reads only those), passage JSON lines
            `{id, title, text}` or XOR-TyDi question JSON lines `{id, question, lang}` (both
            streamed; one shard's records are in memory at a time), cut into fixed row ranges
            by `iter_input_shards`.

The encode stage (`stages.encode`: the embedding folder, resume, several hosts) drives these.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from umr_jax import storage
from umr_jax.data import formats, pipeline
from umr_jax.data.files import expand_shards
from umr_jax.errors import InputError, ModelLoadError, with_hint
from umr_jax.models.locate import model_label

PASSAGE_FORMATS = ("dpr-tsv", "passages-jsonl")
QUESTION_FORMAT = "xor-questions"
DEFAULT_MAX_LENGTH = {"passages": 256, "queries": 64}
COMPUTE_DTYPES = ("bfloat16", "float32", "float16")

# ---------------------------------------------------------------------------------------------
# The tower


def jitted_embed(module, param_shardings, mesh, rules, normalize: bool):
    """The tower's one program: `(params, input_ids, attention_mask) -> fp32 [batch, dim]`,
    data parallel over the mesh's batch axes. `umr-jax compile` compiles this very function."""
    import jax
    import flax.linen as nn

    from umr_jax.numerics import l2_normalize
    from umr_jax.parallel import sharding as shd

    rule_list = list(shd.get_rules(rules))
    batch_sharding = shd.batch_sharding(mesh)

    def embed(params, input_ids, attention_mask):
        with nn.logical_axis_rules(rule_list):
            out = module.apply({"params": params}, input_ids, attention_mask).astype(jax.numpy.float32)
        if normalize:  # as in the cosine training loss (dual_encoder.similarity_matrix)
            out = l2_normalize(out)
        return out

    return shd.MeshJit(embed, mesh, in_shardings=(param_shardings, batch_sharding, batch_sharding), out_shardings=batch_sharding)


class TowerEncoder:
    """A retriever tower from a Hugging Face folder, placed on `mesh`, that embeds token batches.

    `encode_batch(input_ids, attention_mask) -> fp32 [batch, dim]`; `encode_records(records)`
    embeds passages or questions in record order through the bucketed pipeline.

    Args:
      folder: HF model folder (config.json, weights, tokenizer files), or a Hugging Face model ID.
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
        self.folder = hf_io.resolve_model_dir(folder)  # a model ID: its snapshot in the HF cache
        self.model = model_label(folder)
        model_type = hf_io.model_type_of(hf_io.read_hf_config(self.folder), self.folder)
        is_t5 = model_type in hf_io.T5_TYPES
        if is_t5 and not as_tower:
            raise with_hint(ModelLoadError(f"{self.folder}: a {model_type} folder is an encoder-decoder; load it as a tower "
                                           "(as_tower) to encode with its encoder"),
                            "--as-tower", "pass --as-tower to encode with its encoder")
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
        """What determines the embeddings: the model (its folder's absolute path, or its model ID,
        and a fingerprint of its files), the pooling and the compute dtype."""
        return {
            "model": self.model,
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
    known_languages: frozenset[str] | None = None  # questions: the language codes accepted (None: the known ones)

    @classmethod
    def passages(cls, path: str | os.PathLike, format: str = "auto") -> "EncodeInput":
        """A passage collection; `format` "dpr-passages" (or "dpr-tsv"), "passages-jsonl", or
        "auto", which decides by the suffix (.tsv / .jsonl, .json), else by the first line (`id<TAB>text<TAB>title` header or a JSON object). A gs:// input is read from
        its local mirror."""
        path = storage.fetch(path)
        if format == "dpr-passages":  # the format table's name; "dpr-tsv" is what encode.json records
            format = "dpr-tsv"
        if format == "auto":
            format = detect_passage_format(path)
        if format not in PASSAGE_FORMATS:
            raise ValueError(f"passage format must be one of {PASSAGE_FORMATS} or 'auto', got {format!r}")
        return cls("passages", path, format)

    @classmethod
    def queries(cls, path: str | os.PathLike, known_languages=None) -> "EncodeInput":
        """An XOR-TyDi question file (JSON lines `{id, question, lang, answers?}`), its languages
        among `known_languages` (default: the known codes)."""
        return cls("queries", storage.fetch(path), QUESTION_FORMAT, None if known_languages is None else frozenset(known_languages))

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
            "input": storage.location(self.path),  # a gs:// input by its URL: any machine resumes
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
        stream = formats.read_questions(source.path, known_languages=source.known_languages)
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
