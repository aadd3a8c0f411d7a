"""The index stage: an exact or ScaNN index folder over an embedding folder. The writing
process builds it (under the folder's lock, see `retrieval.index.build_index`); the others
wait for it."""

from __future__ import annotations

import os
from pathlib import Path

from umr_jax.retrieval.index import ScannOptions, build_index


def build(embeddings: str | os.PathLike, output: str | os.PathLike, runtime, *, backend: str = "scann", k: int = 100,
          ids: str | os.PathLike | None = None, scann_options: ScannOptions = ScannOptions()) -> Path:
    if runtime.is_writer:
        build_index(embeddings, output, backend=backend, ids_path=ids, k=k, scann_options=scann_options)
    runtime.barrier(f"umr-jax-index-{output}")
    return Path(output)
