"""The retrieve stage: the top-k passages of every question, written as a run file in the
field's formats. Every process encodes the questions on its own devices (the `encode` role) and
searches its own copy of the index, so no host waits on another; the writing process writes the
file atomically."""

from __future__ import annotations

import os

from umr_jax import storage
from umr_jax.data import formats
from umr_jax.errors import InputError
from umr_jax.retrieval.encode import TowerEncoder
from umr_jax.retrieval.index import Index
from umr_jax.retrieval.retrieve import retrieve as retrieve_results, write_results


def retrieve(model: str | os.PathLike, index: str | os.PathLike, questions: str | os.PathLike, passages: str | os.PathLike,
             output: str | os.PathLike, runtime, *, top_k: int = 100, max_length: int = 64, batch_size: int = 256,
             dtype: str = "bfloat16", pooling: str | None = None, as_tower: bool = False, passages_format: str = "auto",
             format: str = "retrieval", tag: str = "umr-jax", progress=None,
             scan_layers: bool = False) -> list[formats.RetrievalResult]:
    """Retrieve for every question of `questions` with the query tower in `model`; returns the
    results (on every process) after the writer has written them to `output`."""
    import jax

    records = list(formats.read_questions(questions))
    if not records:
        raise InputError("no questions; expected at least one to retrieve passages for", questions)
    encoder = TowerEncoder(model, mesh=runtime.mesh("encode"), rules=runtime.rules("encode"), pooling=pooling,
                           as_tower=as_tower, dtype=dtype, scan_layers=scan_layers)
    results = retrieve_results(encoder, Index.open(index, devices=jax.local_devices()), records, passages,
                               passages_format=passages_format, top_k=top_k, max_length=max_length, batch_size=batch_size,
                               progress=progress)
    if runtime.is_writer:
        write_results(output, results, format, tag=tag)
    runtime.barrier(f"umr-jax-retrieve-{storage.location(output)}")
    return results
