"""What the drivers (`loop`, `scaling`) share: the retriever a stage hands on, and running a
stage once, resumably, on every process.

    retriever = Retriever(query="models/q", passage="models/p")
    run_once("encode", folder / "embeddings" / "manifest.json", lambda: ..., runtime)

A stage's "done" marker (its manifest, index.json, results file, eval.json or DONE.json) is
written last, so its presence means the output is whole; a stage whose marker exists is
skipped, and a killed driver resumes at the first stage without one (the stages themselves
resume inside: encoding by shard, scoring by pair, training by checkpoint).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable

from umr_jax import storage
from umr_jax.errors import InputError


@dataclasses.dataclass(frozen=True)
class Retriever:
    """A retriever as HF folders: the query tower and the passage tower (the same when shared)."""

    query: str
    passage: str

    def to_json(self) -> dict:
        return {"query": self.query, "passage": self.passage}


def retriever_in(folder: str | Path) -> Retriever:
    """The towers an export folder holds (query_encoder/ and passage_encoder/, or one encoder/)."""
    folder = storage.local(folder)
    where = storage.location  # a folder in a bucket is recorded by its URL: any machine can load it
    if (folder / "query_encoder").is_dir():
        return Retriever(where(folder / "query_encoder"), where(folder / "passage_encoder"))
    if (folder / "encoder").is_dir():
        return Retriever(where(folder / "encoder"), where(folder / "encoder"))
    raise InputError("no exported towers (query_encoder/ and passage_encoder/, or encoder/)", folder)


def marker_exists(name: str, marker: Path, runtime) -> bool:
    """Whether `marker` exists, decided together: every process looks, then waits for the others
    before any of them acts on it. (Looking alone, a slow process would find the marker that a
    fast one has just written at the end of the stage, skip the stage, and leave the others
    waiting in its barriers.) Processes that saw different things fail at the barrier."""
    found = storage.exists(marker)
    runtime.barrier(f"umr-jax-{name}-{storage.location(marker)}-{'found' if found else 'absent'}")
    return found


def run_once(name: str, marker: Path, action: Callable[[], Any], runtime, on_stage: Callable[[str], None] | None = None) -> bool:
    """Run `action()` on every process unless `marker` exists (`marker_exists`); then wait for
    every process and check that the stage left its marker. Returns True when the stage ran."""
    if marker_exists(name, marker, runtime):
        return False
    if on_stage is not None:
        on_stage(name)
    action()
    runtime.barrier(f"umr-jax-{name}-{storage.location(marker)}")
    if not storage.exists(marker):
        raise RuntimeError(f"stage {name} finished without writing {marker}")
    return True
