"""The UMR iteration driver: encode -> index -> retrieve -> (evaluate) -> score -> train, repeated.

  umr-jax loop --config demo --iterations 2

Each iteration has its own folder, `OUTPUT/iter{i}/`, and each stage leaves a completion
marker (a manifest, an index.json, a finished file, a DONE file) only once its output is
whole, so a crashed or killed loop resumes at the stage it was in; the stages themselves
resume inside (encoding by shard, scoring by question-passage pair, training by checkpoint).
The driver only chains the stage functions of `umr_jax.stages` (`steps.run_once`): every
arrow is a file in an open format. Every process of a multi-host job runs the same loop; each
stage decides which process writes, and all of them meet after every stage.

iteration i (retriever R_i; R_0 = `loop.retriever`):
  embeddings/       passages encoded with R_i's passage tower
  index/            exact (or ScaNN) index over them
  retrieved_{split}.jsonl   top-k passages for the unlabelled train questions (and dev questions)
  eval.json         XOR-Retrieve R@2kt/R@5kt of R_i on the dev gold (when `loop.eval_gold` is set)
  pseudo_labels/    the scorer's question likelihoods for train (and dev) candidates   [i < N]
  train/            R_{i+1}, distilled from them, exported as HF folders               [i < N]

OUTPUT/tensorboard/ holds each iteration's R@kt tables at step i (`eval/r@2kt/average`,
`eval/r@2kt/<lang>`, ...) and its training's summary (`train/steps`, `train/best/<dev metric>`),
written once each is done, and the loop's key hyper-parameters (`HPARAMS`) for TensorBoard's
hparams view; each training run's own step-by-step metrics are in `iter{i}/train/tensorboard/`.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from umr_jax import storage
from umr_jax.stages import evaluate, index, retrieve, score, train
from umr_jax.stages.folder import LARGE, StageFolder, write_json
from umr_jax.stages.steps import Retriever, run_once

log = logging.getLogger(__name__)

STAGES = ("encode", "index", "retrieve", "evaluate", "score", "train")
# The config keys TensorBoard's hparams view shows for a loop run, when the config has them.
HPARAMS = ("loop.retriever", "loop.scorer", "loop.top_k", "loop.index_backend", "score.top_k", "score.reduction",
           "score.dtype", "model.separate_towers", "model.query_max_length", "model.passage_max_length",
           "data.candidates_per_question", "train.questions_per_batch", "train.epochs", "train.learning_rate",
           "train.warmup_steps", "train.temperature", "train.student_scale", "train.dropout", "train.seed")
HPARAM_METRICS = ("eval/r@2kt/average", "eval/r@5kt/average")


class UmrLoop:
    """Runs the UMR iterations a config describes (sections `loop`, `encode`, `score`, `model`,
    `data`, `train`, `runtime`) on `runtime` (default: the config's). `on_stage(iteration,
    stage)` is called before each stage runs (progress display, tests). `resume_anyway`: an
    interrupted training stage resumes its checkpoint even if the config changed since (see
    `training.runner.RESUMABLE_WITH_CHANGES`)."""

    def __init__(self, config, *, output_dir: str | Path | None = None, runtime=None,
                 on_stage: Callable[[int, str], None] | None = None, resume_anyway: bool = False):
        from umr_jax.runtime import Runtime

        self.config = config
        self.output = storage.local(output_dir or config.output_dir)
        self.runtime = runtime or Runtime.from_config(config)
        self.on_stage = on_stage or (lambda i, s: None)
        self.resume_anyway = resume_anyway
        self.timings: dict[str, float] = {}  # seconds per stage this run (iter{i}/{stage})
        self._scorer = None  # one scorer (and its compiled programs) for every split and iteration

    # ---- stages -------------------------------------------------------------------------------

    def encode(self, retriever: Retriever, folder: Path) -> None:
        from umr_jax.retrieval.encode import EncodeInput
        from umr_jax.stages.encode import encode

        e = self.config.encode
        encode(retriever.passage, EncodeInput.passages(self.config.loop.passages), folder, self.runtime, dtype=e.dtype,
               batch_size=e.batch_size, shard_size=e.shard_size, max_length=self.config.model.passage_max_length,
               output_dtype=e.get("output_dtype", "float32"), scan_layers=bool(e.get("scan_layers", False)))

    def index(self, embeddings: Path, folder: Path) -> None:
        index.build(embeddings, folder, self.runtime, backend=self.config.loop.index_backend, k=self.config.loop.top_k)

    def retrieve(self, retriever: Retriever, index_dir: Path, questions_path: str, output: Path) -> None:
        retrieve.retrieve(retriever.query, index_dir, questions_path, self.config.loop.passages, output, self.runtime,
                          top_k=self.config.loop.top_k, max_length=self.config.model.query_max_length,
                          batch_size=self.config.encode.batch_size, dtype=self.config.encode.dtype,
                          scan_layers=bool(self.config.encode.get("scan_layers", False)))

    def evaluate(self, retrieved: Path, output: Path) -> dict:
        return evaluate.xor_retrieve(retrieved, self.config.loop.eval_gold, output, self.runtime,
                                     tokenizer=self.config.loop.eval_tokenizer)

    def score(self, retrieved: Path, output: Path) -> None:
        s = self.config.score
        if self._scorer is None:
            self._scorer = score.load_scorer(self.config.loop.scorer, self.runtime, dtype=s.dtype, reduction=s.reduction,
                                             max_source_length=s.max_source_length, max_target_length=s.max_target_length,
                                             tokens_per_batch=s.tokens_per_batch, vocab_chunk_size=s.get("vocab_chunk_size"),
                                             scan_layers=bool(s.get("scan_layers", False)))
        score.score(retrieved, output, self._scorer, top_k=s.top_k, questions_per_chunk=s.questions_per_chunk)

    def release_scorer(self) -> None:
        """Free the scorer's device memory (mT5-XL: 7.5 GB in bf16) before the retriever trains;
        the next iteration's scoring loads it again."""
        if self._scorer is not None:
            self._scorer.release()
            self._scorer = None

    def train(self, retriever: Retriever, labels: Path, dev_labels: Path | None, folder: Path) -> Retriever:
        self.release_scorer()
        config = self.config.copy_and_resolve_references()
        with config.unlocked():
            config.model.init = retriever.query
            config.model.init_passage = retriever.passage
            config.data.pseudo_labels = str(labels / "pseudo_labels.jsonl")
            config.data.dev_pseudo_labels = str(dev_labels / "pseudo_labels.jsonl") if dev_labels else ""
        return train.train(config, folder, self.runtime, resume_anyway=self.resume_anyway).retriever

    # ---- driver -------------------------------------------------------------------------------

    def run(self, iterations: int) -> list[dict]:
        """Run (or resume) `iterations` UMR iterations; returns one record per iteration with the
        retriever used and its evaluation (iteration `iterations` is evaluated, not trained)."""
        # One loop at a time per output folder; each stage's folder has its own lock as well.
        with StageFolder(self.output, "loop", not_fetched=LARGE).session(writer=self.runtime.is_writer, remove_on_failure=False):
            if self.runtime.is_writer:  # what killed writes left in the loop's own files (stages sweep theirs)
                for folder in (self.output, *sorted(p for p in self.output.glob("iter*") if p.is_dir())):
                    StageFolder(folder, "loop").sweep_temporaries()
            return self._run(iterations)

    def hparams(self, iterations: int) -> dict[str, Any]:
        """The run's key hyper-parameters (`HPARAMS` the config has, and the iterations)."""
        from umr_jax.training.summaries import config_values

        return {"iterations": iterations, **config_values(self.config, HPARAMS)}

    def write_summaries(self, record: dict) -> None:
        """An iteration's evaluation and its training summary in OUTPUT/tensorboard (module
        docstring), each an event file of its own (`iter0001`, `iter0001-train`) written once:
        a rerun finds them and leaves them, and the last iteration of a run that a longer run
        trains later gets its training file then. The writing process writes."""
        if not self.runtime.is_writer:
            return
        from umr_jax.training.summaries import write_scalars

        i, board = record["iteration"], self.output / "tensorboard"
        if record.get("eval"):
            write_scalars(board, f"iter{i:04d}", step=i, values={"eval": record["eval"]})
        if record.get("train"):
            summary = record["train"]
            best = {k: v for k, v in (summary.get("best") or {}).items() if k != "step"}
            write_scalars(board, f"iter{i:04d}-train", step=i, values={"train": {"steps": summary.get("steps"), "best": best}})

    def _run(self, iterations: int) -> list[dict]:
        c = self.config.loop
        retriever = Retriever(c.retriever, c.get("retriever_passage") or c.retriever)
        history = []
        if self.runtime.is_writer:
            from umr_jax.training.summaries import write_hparams

            write_hparams(self.output / "tensorboard", self.hparams(iterations), HPARAM_METRICS)
        for i in range(iterations + 1):
            it = self.output / f"iter{i}"
            it.mkdir(parents=True, exist_ok=True)
            record: dict[str, Any] = {"iteration": i, "retriever": retriever.to_json()}
            self._stage(i, "encode", it / "embeddings" / "manifest.json", lambda: self.encode(retriever, it / "embeddings"))
            self._stage(i, "index", it / "index" / "index.json", lambda: self.index(it / "embeddings", it / "index"))
            self._stage(i, "retrieve", it / "retrieved_train.jsonl",
                        lambda: self.retrieve(retriever, it / "index", c.train_questions, it / "retrieved_train.jsonl"))
            if c.get("dev_questions"):
                self._stage(i, "retrieve", it / "retrieved_dev.jsonl",
                            lambda: self.retrieve(retriever, it / "index", c.dev_questions, it / "retrieved_dev.jsonl"))
            if c.get("eval_gold") and c.get("dev_questions"):
                self._stage(i, "evaluate", it / "eval.json", lambda: self.evaluate(it / "retrieved_dev.jsonl", it / "eval.json"))
                record["eval"] = json.loads((it / "eval.json").read_text())
            if i == iterations:
                history.append(record)
                self.write_summaries(record)
                break
            self._stage(i, "score", it / "pseudo_labels" / "manifest.json",
                        lambda: self.score(it / "retrieved_train.jsonl", it / "pseudo_labels"))
            dev_labels = None
            if c.get("dev_questions") and c.get("dev_pseudo_labels", True):
                dev_labels = it / "dev_pseudo_labels"
                self._stage(i, "score", dev_labels / "manifest.json", lambda: self.score(it / "retrieved_dev.jsonl", dev_labels))
            done = it / "train" / train.DONE
            self._stage(i, "train", done, lambda: self.train(retriever, it / "pseudo_labels", dev_labels, it / "train"))
            trained = train.finished(it / "train")
            record["train"] = trained.summary
            history.append(record)
            self.write_summaries(record)
            retriever = trained.retriever
        if self.runtime.is_writer:
            write_json(self.output / "history.json", history)
        return history

    def _stage(self, iteration: int, name: str, marker: Path, action: Callable[[], Any]) -> None:
        started = time.time()
        if not run_once(name, marker, action, self.runtime, on_stage=lambda n: self.on_stage(iteration, n)):
            log.info("iter%d %s: done already (%s)", iteration, name, marker)
            return
        key = f"iter{iteration}/{name}"
        self.timings[key] = self.timings.get(key, 0.0) + time.time() - started
