"""The UMR iteration driver: encode -> index -> retrieve -> (evaluate) -> score -> train, repeated.

  umr-jax loop --config configs/demo.py --iterations 2

Each iteration has its own folder, `OUTPUT/iter{i}/`, and each stage leaves a completion
marker (a manifest, an index.json, a finished file, a DONE file) only once its output is
whole, so a crashed or killed loop resumes at the stage it was in; the stages themselves
resume inside (encoding by shard, scoring by question-passage pair, training by checkpoint).
The driver only chains stages: every arrow is a file in an open format.

iteration i (retriever R_i; R_0 = `loop.retriever`):
  embeddings/       passages encoded with R_i's passage tower
  index/            exact (or ScaNN) index over them
  retrieved_{split}.jsonl   top-k passages for the unlabelled train questions (and dev questions)
  eval.json         XOR-Retrieve R@2kt/R@5kt of R_i on the dev gold (when `loop.eval_gold` is set)
  pseudo_labels/    the scorer's question likelihoods for train (and dev) candidates   [i < N]
  train/            R_{i+1}, distilled from them, exported as HF folders               [i < N]
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from umr_jax.errors import InputError

log = logging.getLogger(__name__)

STAGES = ("encode", "index", "retrieve", "evaluate", "score", "train")


@dataclasses.dataclass(frozen=True)
class Retriever:
    """A retriever as HF folders: the query tower and the passage tower (the same when shared)."""

    query: str
    passage: str

    def to_json(self) -> dict:
        return {"query": self.query, "passage": self.passage}


def _done(path: Path) -> bool:
    return path.exists()


def _write_json(path: Path, obj: Any) -> None:
    from umr_jax.retrieval.embeddings import atomic_write_bytes

    data = json.dumps(obj, indent=2, sort_keys=True).encode("utf-8")
    atomic_write_bytes(path, lambda f: f.write(data))


class UmrLoop:
    """Runs the UMR iterations a config describes (sections `loop`, `encode`, `score`, `model`,
    `data`, `train`, `mesh`). `on_stage(iteration, stage)` is called before each stage runs
    (progress display, tests). `resume_anyway`: an interrupted training stage resumes its
    checkpoint even if the config changed since (see `training.runner.RESUMABLE_WITH_CHANGES`)."""

    def __init__(self, config, *, output_dir: str | Path | None = None, mesh=None, rules=None,
                 on_stage: Callable[[int, str], None] | None = None, resume_anyway: bool = False):
        from umr_jax.config import mesh_and_rules

        self.config = config
        self.output = Path(output_dir or config.output_dir)
        if mesh is None:
            mesh, rules = mesh_and_rules(config)
        self.mesh, self.rules = mesh, rules
        self.on_stage = on_stage or (lambda i, s: None)
        self.resume_anyway = resume_anyway
        self.timings: dict[str, float] = {}

    # ---- stages -------------------------------------------------------------------------------

    def encode(self, retriever: Retriever, folder: Path) -> None:
        from umr_jax.retrieval.encode import EncodeInput, TowerEncoder, encode_to_store

        e = self.config.encode
        encoder = TowerEncoder(retriever.passage, mesh=self.mesh, rules="data_parallel", dtype=e.dtype)
        encode_to_store(encoder, EncodeInput.passages(self.config.loop.passages), folder,
                        shard_size=e.shard_size, batch_size=e.batch_size, max_length=self.config.model.passage_max_length,
                        output_dtype="float32")

    def index(self, embeddings: Path, folder: Path) -> None:
        from umr_jax.retrieval.index import build_index

        build_index(embeddings, folder, backend=self.config.loop.index_backend, k=self.config.loop.top_k)

    def retrieve(self, retriever: Retriever, index_dir: Path, questions_path: str, output: Path) -> None:
        from umr_jax.data import formats
        from umr_jax.retrieval.encode import TowerEncoder
        from umr_jax.retrieval.index import Index
        from umr_jax.retrieval.retrieve import retrieve, write_results

        encoder = TowerEncoder(retriever.query, mesh=self.mesh, rules="data_parallel", dtype=self.config.encode.dtype)
        questions = list(formats.read_questions(questions_path))
        results = retrieve(encoder, Index.open(index_dir), questions, self.config.loop.passages,
                           top_k=self.config.loop.top_k, max_length=self.config.model.query_max_length,
                           batch_size=self.config.encode.batch_size)
        write_results(output, results)

    def evaluate(self, retrieved: Path, output: Path) -> dict:
        from umr_jax.data import formats
        from umr_jax.evaluation.readers import XorPrediction, read_xor_gold_answers
        from umr_jax.evaluation.xor import word_tokenizer, xor_retrieve_r_at_kt

        gold = read_xor_gold_answers(self.config.loop.eval_gold)
        predictions = (XorPrediction(r.id, r.lang, [c.text for c in r.ctxs]) for r in formats.read_retrieval(retrieved))
        report = xor_retrieve_r_at_kt(gold, predictions, word_tokenizer(self.config.loop.eval_tokenizer)).to_json()
        report["tokenizer"] = self.config.loop.eval_tokenizer
        _write_json(output, report)
        return report

    def score(self, retrieved: Path, output: Path) -> None:
        from umr_jax.labeling.run import score_retrieved
        from umr_jax.labeling.scorer import QuestionLikelihoodScorer

        s = self.config.score
        scorer = self._scorer or QuestionLikelihoodScorer(
            self.config.loop.scorer, mesh=self.mesh, rules="data_parallel", dtype=s.dtype, reduction=s.reduction,
            max_source_length=s.max_source_length, max_target_length=s.max_target_length, tokens_per_batch=s.tokens_per_batch,
        )
        self._scorer = scorer  # one scorer (and its compiled programs) for every split and iteration
        score_retrieved(retrieved, output, scorer, top_k=s.top_k, questions_per_chunk=s.questions_per_chunk)

    _scorer = None

    def train(self, retriever: Retriever, labels: Path, dev_labels: Path | None, folder: Path) -> Retriever:
        from umr_jax.training.distill import train

        config = self.config.copy_and_resolve_references()
        with config.unlocked():
            config.model.init = retriever.query
            config.model.init_passage = retriever.passage
            config.data.pseudo_labels = str(labels / "pseudo_labels.jsonl")
            config.data.dev_pseudo_labels = str(dev_labels / "pseudo_labels.jsonl") if dev_labels else ""
        summary = train(config, output_dir=folder, mesh=self.mesh, rules=self.rules, resume_anyway=self.resume_anyway)
        if summary["reason"] != "done":
            raise InterruptedError(f"training stopped ({summary['reason']}) in {folder}; run the loop again to resume")
        chosen = Path(summary["best_dir"]) if summary.get("best_dir") and (folder / "best").is_dir() else Path(summary["final_dir"])
        new = _retriever_in(chosen)
        _write_json(folder / "DONE.json", {"retriever": new.to_json(), "summary": summary})
        return new

    # ---- driver -------------------------------------------------------------------------------

    def run(self, iterations: int) -> list[dict]:
        """Run (or resume) `iterations` UMR iterations; returns one record per iteration with the
        retriever used and its evaluation (iteration `iterations` is evaluated, not trained)."""
        c = self.config.loop
        retriever = Retriever(c.retriever, c.get("retriever_passage") or c.retriever)
        history = []
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
                break
            self._stage(i, "score", it / "pseudo_labels" / "manifest.json",
                        lambda: self.score(it / "retrieved_train.jsonl", it / "pseudo_labels"))
            dev_labels = None
            if c.get("dev_questions") and c.get("dev_pseudo_labels", True):
                dev_labels = it / "dev_pseudo_labels"
                self._stage(i, "score", dev_labels / "manifest.json", lambda: self.score(it / "retrieved_dev.jsonl", dev_labels))
            done = it / "train" / "DONE.json"
            self._stage(i, "train", done, lambda: self.train(retriever, it / "pseudo_labels", dev_labels, it / "train"))
            record["train"] = json.loads(done.read_text())["summary"]
            history.append(record)
            retriever = Retriever(**json.loads(done.read_text())["retriever"])
        _write_json(self.output / "history.json", history)
        return history

    def _stage(self, iteration: int, name: str, marker: Path, action: Callable[[], Any]) -> None:
        if _done(marker):
            log.info("iter%d %s: done already (%s)", iteration, name, marker)
            return
        self.on_stage(iteration, name)
        started = time.time()
        action()
        if not _done(marker):
            raise RuntimeError(f"stage {name} of iteration {iteration} finished without writing {marker}")
        self.timings[f"iter{iteration}/{name}"] = self.timings.get(f"iter{iteration}/{name}", 0.0) + time.time() - started


def _retriever_in(folder: Path) -> Retriever:
    """The towers an export folder holds (query_encoder/passage_encoder, or one shared encoder/)."""
    if (folder / "query_encoder").is_dir():
        return Retriever(str(folder / "query_encoder"), str(folder / "passage_encoder"))
    if (folder / "encoder").is_dir():
        return Retriever(str(folder / "encoder"), str(folder / "encoder"))
    raise InputError("no exported towers (query_encoder/ and passage_encoder/, or encoder/)", folder)
