"""The encode stage: a passage collection (or a question file) through a retriever tower into
an embedding folder, on the runtime's `encode` role (each host's own devices, whole shards per
host; see `retrieval.encode` for the folder and how it resumes)."""

from __future__ import annotations

import os

from umr_jax.retrieval.encode import EncodeInput, EncodeReport, TowerEncoder, encode_to_store


def encode(model: str | os.PathLike, source: EncodeInput, output: str | os.PathLike, runtime, *, dtype: str = "bfloat16",
           pooling: str | None = None, as_tower: bool = False, batch_size: int = 256, shard_size: int = 100_000,
           max_length: int | None = None, output_dtype: str = "float16", progress=None) -> EncodeReport:
    """Encode `source` with the tower in `model` into `output` (every process runs this)."""
    encoder = TowerEncoder(model, mesh=runtime.mesh("encode"), rules=runtime.rules("encode"), pooling=pooling,
                           as_tower=as_tower, dtype=dtype)
    return encode_to_store(encoder, source, output, shard_size=shard_size, batch_size=batch_size, max_length=max_length,
                           output_dtype=output_dtype, progress=progress)
