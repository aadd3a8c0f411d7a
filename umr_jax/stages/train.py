"""The train stage (stage 2, or contrastive training on pairs): the config's trainer on the
runtime's `train` role, resumable from its checkpoints. When training finishes, the writing
process records `DONE.json` (the summary and the retriever chosen: the dev-best export when
there was dev data, else the last), which is what says the stage is done."""

from __future__ import annotations

import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Iterator

from umr_jax import storage
from umr_jax.errors import InputError
from umr_jax.stages.folder import StageFolder, write_json
from umr_jax.stages.steps import Retriever, marker_exists, retriever_in

DONE = "DONE.json"


@dataclasses.dataclass(frozen=True)
class Trained:
    """What the train stage hands on: the chosen retriever, the export folder it came from, and
    the training summary (steps, best step and metric, export folders)."""

    retriever: Retriever
    folder: Path
    summary: dict


def _chosen_folder(summary: dict, output: Path) -> Path:
    best = summary.get("best_dir")
    return storage.local(best) if best and (output / "best").is_dir() else storage.local(summary["final_dir"])


@contextlib.contextmanager
def locked(output: str | Path, runtime) -> Iterator[StageFolder]:
    """Hold the train folder's lock (the writing process) and sweep what killed writes left
    (best.json, export folders). A run that fails before training starts (bad input: the model
    or the data did not load) removes what it created; once `config.json` is written, training
    has started and its checkpoints are kept whatever happens (Orbax removes its own unfinished
    steps)."""
    output = storage.local(output)
    stage = StageFolder(output, "train", not_fetched=("checkpoints",))  # Orbax reads those from the bucket
    with stage.session(writer=runtime.is_writer, keep_if=lambda: (output / "config.json").is_file()):
        if runtime.is_writer:
            stage.sweep_temporaries()
        yield stage


def train(config, output: str | Path, runtime, *, resume_anyway: bool = False) -> Trained:
    """Train (or resume) into `output` and return what it chose. A finished folder is returned
    as it is. Raises `InterruptedError` when training stopped before its last step (a SIGTERM):
    run again to resume. `resume_anyway`: resume a checkpoint made with another config (see
    `training.runner.RESUMABLE_WITH_CHANGES`)."""
    output = storage.local(output)
    done = output / DONE
    if not marker_exists("train", done, runtime):
        objective = config.get("objective", "distill")
        if objective == "distill":
            from umr_jax.training.distill import train as run
        elif objective == "contrastive":
            from umr_jax.training.contrastive import train as run
        else:
            raise InputError(f"objective must be 'distill' or 'contrastive', got {objective!r}")
        with locked(output, runtime):
            summary = run(config, output_dir=output, runtime=runtime, resume_anyway=resume_anyway)
        if summary["reason"] not in ("done", "early_stopped"):
            raise InterruptedError(f"training stopped ({summary['reason']}) in {output}; run again to resume")
        if runtime.is_writer:
            write_json(done, {"retriever": retriever_in(_chosen_folder(summary, output)).to_json(), "summary": summary})
        runtime.barrier(f"umr-jax-train-{storage.location(output)}")
    return finished(output)


def finished(output: str | Path) -> Trained:
    """What a finished train folder recorded in its `DONE.json`."""
    output = storage.local(output)
    storage.fetch(output, skip=("checkpoints",))  # a bucket folder finished elsewhere: its record and exports
    record = json.loads((output / DONE).read_text(encoding="utf-8"))
    folder = _chosen_folder(record["summary"], output)
    # Folders of earlier versions of the scaling study hold only the summary.
    retriever = Retriever(**record["retriever"]) if "retriever" in record else retriever_in(folder)
    return Trained(retriever, folder, record["summary"])
