"""Scaling studies end to end: each (source, size) point is trained with the real trainers and
evaluated on XOR-Retrieve; `umr_jax.scaling.study` keeps the points on disk and fits the curves.

A study config is a training config (model, train, runtime sections; see configs/webfaq_scaling.py)
with three more sections:

  scaling      the plan and the fit (`study.scaling_config()`), plus `sources`: the names to run
  sources      per source, what to lay over the base config before training: its `objective`
               ("contrastive" on pairs, "distill" on UMR pseudo labels) and its `data` (and any
               `train`/`model` settings of its own), e.g.
                   sources.webfaq     = {objective: contrastive, data: {source: webfaq, path: ...}}
                   sources.translated = {objective: contrastive, data: {source: pairs, path: ...}}
                   sources.umr        = {objective: distill, data: {pseudo_labels: ...}, train: {...}}
  evaluation   the benchmark every point is scored on: passages (DPR TSV), questions and their
               gold answers (XOR-TyDi JSONL), the answer tokenizer, top_k and the index backend

A point's size counts training examples: pairs for a contrastive source, questions (each with
its scored candidates) for UMR. Its data are `subsets.nested_subsets(..., seed=scaling.subset_seed)`
of the source, so the subsets of one source are nested. Each point's folder holds

  train/          checkpoints, metrics.jsonl, best/ and final/ towers (resumes from its checkpoints)
  eval/           embeddings/ (float16), index/, retrieved.jsonl, eval.json (each stage resumes by
                  its marker); embeddings/ and index/ are deleted once result.json is written,
                  unless scaling.keep_embeddings=True (a 21M-passage corpus is 32 GB per point)

and result.json once both are done. A pairs source is converted once into a store read by row
(`data.pair_store`, in $UMR_JAX_CACHE/pair-stores) and counted by its row count; a point's subset
and epoch orders are index arrays over it. `--dry-run` prints per point its steps, pairs seen,
passages encoded, embedding bytes and, with `scaling.step_time_from=FILE` (a `umr-jax compile
--json-out` file), the roofline's time estimate. The starting model is evaluated once, in STUDY_DIR/baseline/,
and drawn as the n = 0 reference; it is not part of the fit (a power law has no value at 0).
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any, Callable, Mapping

import ml_collections

from umr_jax import storage
from umr_jax.errors import InputError
from umr_jax.stages import evaluate, index, retrieve, train
from umr_jax.stages.encode import encode
from umr_jax.stages.folder import LARGE, StageFolder
from umr_jax.stages.steps import Retriever, run_once

log = logging.getLogger(__name__)

OBJECTIVES = ("contrastive", "distill")
_MERGED_SECTIONS = ("model", "data", "train", "runtime")
# A point's settings that TensorBoard's hparams view shows (beside source, size and objective).
HPARAMS = ("model.init", "model.similarity", "model.separate_towers", "model.query_max_length",
           "model.passage_max_length", "data.source", "data.hard_negatives", "data.candidates_per_question",
           "data.dev_split", "data.batch_by_language", "data.languages", "data.stratify", "data.direction",
           "data.min_similarity", "train.batch_size", "train.questions_per_batch", "train.epochs", "train.steps",
           "train.learning_rate", "train.warmup_steps", "train.warmup_fraction", "train.early_stopping_patience",
           "train.scale", "train.temperature", "train.seed")
PROTOCOLS = ("epochs", "steps")


def source_names(config) -> list[str]:
    """The sources the study runs (`scaling.sources`), checked against the `sources` section."""
    names = config.scaling.get("sources")
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    names = list(names or [])
    if not names:
        raise InputError("scaling.sources is empty: name at least one section of `sources`")
    defined = sorted(config.get("sources", {}) or {})
    unknown = [n for n in names if n not in defined]
    if unknown:
        raise InputError(f"scaling.sources names {unknown}, which `sources` does not define (defined: {defined})")
    if len(set(names)) != len(names):
        raise InputError(f"scaling.sources lists a source twice: {names}")
    return names


def _merge(base: ml_collections.ConfigDict, overlay: Mapping[str, Any]) -> None:
    for key, value in overlay.items():
        if isinstance(value, Mapping) and key in base and isinstance(base[key], ml_collections.ConfigDict):
            _merge(base[key], value)
        else:
            with base.ignore_type():
                base[key] = copy.deepcopy(value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value)


def source_config(config, name: str) -> ml_collections.ConfigDict:
    """The training config of source `name`: the base config with `sources.<name>` laid over it."""
    overlay = config.sources[name]
    objective = overlay.get("objective")
    if objective not in OBJECTIVES:
        raise InputError(f"sources.{name}.objective must be one of {OBJECTIVES}, got {objective!r}")
    unknown = sorted(set(overlay) - set(_MERGED_SECTIONS) - {"objective"})
    if unknown:
        raise InputError(f"sources.{name}: unknown keys {unknown} (allowed: objective, {', '.join(_MERGED_SECTIONS)})")
    out = ml_collections.ConfigDict({k: v for k, v in config.to_dict().items() if k not in ("sources", "scaling", "evaluation")})
    protocol = config.scaling.get("protocol", "epochs")
    if protocol not in PROTOCOLS:
        raise InputError(f"scaling.protocol={protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    with out.unlocked():
        _merge(out, overlay.to_dict() if isinstance(overlay, ml_collections.ConfigDict) else dict(overlay))
        if not out.model.get("init"):  # `sources.<name>.model.init` None or "": the study's shared init
            out.model.init = config.model.get("init")
        out.objective = objective
        out.data.subset_seed = int(config.scaling.subset_seed)
        if protocol == "steps":  # fixed compute: every point of every source trains this many steps
            steps = int(config.scaling.get("steps") or 0)
            if steps < 1:
                raise InputError(f"scaling.protocol=steps trains every point for scaling.steps steps, which is {steps}: "
                                 "zero steps; set scaling.steps=N")
            out.train.steps = steps
            out.train.early_stopping_patience = 0  # a stop would break the fixed budget
        elif out.train.get("steps"):
            raise InputError(f"sources.{name}: train.steps={out.train.steps} fixes the steps, but scaling.protocol=epochs "
                             "trains train.epochs; use scaling.protocol=steps scaling.steps=N")
    if objective == "contrastive" and not out.data.get("path"):
        raise InputError(f"sources.{name}.data.path is not set (give it as sources.{name}.data.path=...)")
    if objective == "distill" and not out.data.get("pseudo_labels"):
        raise InputError(f"sources.{name}.data.pseudo_labels is not set (give it as sources.{name}.data.pseudo_labels=...)")
    if not out.model.get("init"):
        raise InputError("model.init is not set: the study trains the same starting model on every point (model.init=...)")
    return out


def arm_description(config, name: str) -> dict[str, Any]:
    """What arm `name` trains on, for the report: objective, data source, languages, their shares,
    the direction of its pairs, its native unit of size, and its epochs. Read from the
    config alone (the base sections with `sources.<name>` over them), so a report written
    without the data still says it."""
    overlay = config.sources[name]
    get = lambda section, key, default=None: (overlay.get(section) or {}).get(  # noqa: E731
        key, (config.get(section) or {}).get(key, default))
    objective = overlay.get("objective")
    if objective == "distill":
        candidates = int(get("data", "candidates_per_question", 0) or 0)
        return {"objective": "distill", "data": "UMR pseudo labels", "languages": "those of the scored questions",
                "shares": "as scored", "direction": "cross-lingual (a question with English passages, as scored)",
                "unit": f"questions, each with its {candidates} scored candidates", "epochs": get("train", "epochs")}
    source = get("data", "source", "pairs")
    languages = get("data", "languages")
    if isinstance(languages, (list, tuple)):
        languages = ",".join(map(str, languages))
    if not languages:
        languages = "every language but English" if source == "webfaq" else "every language"
    elif str(languages).lower() == "xor":
        languages = "XOR-TyDi's 7 (those the source has)"
    direction = get("data", "direction")
    if source == "webfaq":
        direction = "monolingual (a question and its answer)"
    elif not direction:
        direction = "not declared (data.direction)"
    minimum = get("data", "min_similarity")
    return {"objective": "contrastive", "data": "WebFAQ" if source == "webfaq" else "pairs file",
            "languages": str(languages) + (f", semantic similarity >= {minimum}" if minimum is not None else ""),
            "shares": "equal" if get("data", "stratify") else "as in the source", "direction": str(direction),
            "unit": "pairs", "epochs": get("train", "epochs")}


def source_size(config: ml_collections.ConfigDict) -> int:
    """The training examples of a source config, read as its trainer reads them, less its dev
    split. A pairs source is counted by its store's row count (`data.pair_store`: converted on
    first use, then read from its manifest), never by holding its pairs; with `data.stratify`,
    as the largest subset with equal shares of its languages."""
    if config.objective == "contrastive":  # (with data.stratify: the largest subset of equal language shares)
        from umr_jax.training.contrastive import training_pairs_available

        return training_pairs_available(config.data, int(config.data.get("subset_seed", config.train.seed)))
    from umr_jax.training.distill import load_pseudo_labels

    held_out = int(config.data.get("dev_split") or 0)
    count = len(load_pseudo_labels(config.data.pseudo_labels, top_k=config.data.top_k,
                                   file_format=config.data.get("pseudo_labels_format", "umr-jax")))
    if held_out and held_out >= count:
        raise InputError(f"data.dev_split={held_out} leaves none of the source's {count} training examples")
    return count - held_out  # the dev split is in no subset


def evaluation_settings(config) -> ml_collections.ConfigDict:
    """The config's `evaluation` section (passages, questions, gold, tokenizer, top_k,
    index_backend, and optionally dtype, batch_size, shard_size), checked."""
    e = config.get("evaluation")
    if e is None:
        raise InputError("the config has no `evaluation` section (passages, questions, gold, ...)")
    for key in ("passages", "questions", "gold"):
        if not e.get(key):
            raise InputError(f"evaluation.{key} is not set (give it as evaluation.{key}=...)")
    return e


def planned_steps(config: ml_collections.ConfigDict, size: int) -> int:
    """The optimizer steps a point of `size` examples trains for (0: too few for one batch),
    as the trainers count them (`common.total_steps_of`): `train.steps` under the fixed-compute
    protocol, else ceil(epochs x (size // examples per batch)), at least 1. With early stopping
    this is the most it trains."""
    from umr_jax.training.common import total_steps_of

    per_epoch = int(size) // examples_per_batch(config)
    return 0 if per_epoch == 0 else total_steps_of(config.train, per_epoch)


def check_trainable(config: ml_collections.ConfigDict, name: str, sizes: list[int]) -> None:
    """InputError when a planned point of source `name` trains for zero steps: its size cannot
    fill one batch."""
    per_batch = examples_per_batch(config)
    small = [size for size in sizes if size < per_batch]
    if small:
        key = "train.batch_size" if config.objective == "contrastive" else "train.questions_per_batch"
        raise InputError(f"sources.{name}: the point of {small[0]} examples cannot fill one batch of {per_batch} ({key}), "
                         "so it trains for zero steps; raise scaling.min_size or lower the batch")


def examples_per_batch(config: ml_collections.ConfigDict) -> int:
    return int(config.train.batch_size if config.objective == "contrastive" else config.train.questions_per_batch)


def passages_per_example(config: ml_collections.ConfigDict) -> int:
    """Passages each training example encodes: the positive and its hard negatives, or a question's candidates."""
    if config.objective == "contrastive":
        return 1 + int(config.data.get("hard_negatives", 0) or 0)
    return int(config.data.candidates_per_question)


def embedding_width(model_init: str) -> int | None:
    """The hidden size of the model at `model_init` (its config.json), when it is a local folder."""
    try:
        return int(json.loads((storage.local(model_init) / "config.json").read_text(encoding="utf-8"))["hidden_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def step_times(path: str | None) -> dict[str, dict]:
    """stage -> its report in a `umr-jax compile --json-out FILE` (`scaling.step_time_from`):
    the roofline estimate of a step (`estimate.step_s`) and the items per second. {} without one."""
    if not path:
        return {}
    file = storage.fetch(path)
    try:
        record = json.loads(file.read_text(encoding="utf-8"))
        return {str(r["stage"]): r for r in record["stages"] if r.get("estimate")}
    except OSError as err:
        raise InputError(f"scaling.step_time_from: cannot read ({err.strerror})", file) from None
    except (ValueError, KeyError, TypeError) as err:
        raise InputError(f"scaling.step_time_from: not a `umr-jax compile --json-out` file ({err})", file) from None


EMBEDDING_BYTES = 2  # float16 (`PointRunner.evaluate`)


class PointRunner:
    """The study's `train_and_evaluate`: trains a point with the source's trainer, then evaluates
    the retriever it selected (the dev-best one when the source has dev data, else the last).
    `resume_anyway`: a point's interrupted training resumes its checkpoint even if the config
    changed since (see `training.runner.RESUMABLE_WITH_CHANGES`)."""

    def __init__(self, config, *, runtime=None, on_stage: Callable[[str], None] | None = None, resume_anyway: bool = False):
        from umr_jax.runtime import Runtime

        self.config = config
        self.names = source_names(config)
        self.sources = {name: source_config(config, name) for name in self.names}
        self.runtime = runtime or Runtime.from_config(config)
        self.evaluation = evaluation_settings(config)
        self.on_stage = on_stage or (lambda s: None)
        self.resume_anyway = resume_anyway

    def available(self) -> dict[str, int]:
        """source -> training examples it holds (every source is read once, as its trainer reads it)."""
        out = {}
        for name in self.names:
            count = source_size(self.sources[name])
            out[name] = count
            log.info("source %s: %d training examples", name, count)
        return out

    def evaluate(self, retriever: Retriever, folder: Path) -> dict:
        """XOR-Retrieve on the evaluation questions, resumable stage by stage inside `folder`:
        the passages encoded with the passage tower, indexed, retrieved for and scored."""
        from umr_jax.retrieval.encode import EncodeInput

        e, m, rt = self.evaluation, self.config.model, self.runtime
        dtype, batch_size = e.get("dtype", "float32"), int(e.get("batch_size", 256))
        folder.mkdir(parents=True, exist_ok=True)
        steps = [
            ("encode", folder / "embeddings" / "manifest.json",
             lambda: encode(retriever.passage, EncodeInput.passages(e.passages), folder / "embeddings", rt, dtype=dtype,
                            batch_size=batch_size, shard_size=int(e.get("shard_size", 1_000_000)),
                            max_length=int(m.passage_max_length), output_dtype="float16")),
            ("index", folder / "index" / "index.json",
             lambda: index.build(folder / "embeddings", folder / "index", rt, backend=e.index_backend, k=int(e.top_k))),
            ("retrieve", folder / "retrieved.jsonl",
             lambda: retrieve.retrieve(retriever.query, folder / "index", e.questions, e.passages, folder / "retrieved.jsonl", rt,
                                       top_k=int(e.top_k), max_length=int(m.query_max_length), batch_size=batch_size,
                                       dtype=dtype)),
            ("evaluate", folder / "eval.json",
             lambda: evaluate.xor_retrieve(folder / "retrieved.jsonl", e.gold, folder / "eval.json", rt, tokenizer=e.tokenizer)),
        ]
        for name, marker, action in steps:
            run_once(name, marker, action, rt, on_stage=lambda n: self.on_stage(f"{n} ({folder})"))
        return json.loads((folder / "eval.json").read_text(encoding="utf-8"))

    def discard_embeddings(self, point, point_dir: Path) -> None:
        """After a point's result.json: delete its evaluation's embeddings/ and index/ (the
        index is built over them), which only its retrieval needed, unless
        `scaling.keep_embeddings`. retrieved.jsonl and eval.json stay."""
        if self.config.scaling.get("keep_embeddings", False):
            return
        for name in ("embeddings", "index"):
            folder = point_dir / "eval" / name
            if folder.exists():
                storage.remove(folder)  # a study in a bucket: the uploaded copy too
                log.info("%s: deleted (scaling.keep_embeddings=False)", folder)

    def estimates(self, points) -> list[dict[str, Any]]:
        """Per point, what it will cost: optimizer steps, training pairs seen (steps x examples
        per batch), passages encoded in training and in evaluation, bytes of its evaluation
        embeddings (float16), and the estimated seconds when `scaling.step_time_from` names a
        `umr-jax compile --json-out` file (the roofline's step time x steps, plus the corpus at
        its encode rate when the file has an encode stage), else None."""
        from umr_jax.retrieval.encode import EncodeInput, count_rows

        e = self.evaluation
        eval_passages = count_rows(EncodeInput.passages(e.passages))
        width = embedding_width(self.config.model.init)
        times = step_times(self.config.scaling.get("step_time_from"))
        out = []
        for point in points:
            config = self.sources[point.source]
            steps = planned_steps(config, point.size)
            stage = times.get(config.objective)
            seconds = None
            if stage is not None and stage["estimate"].get("step_s"):
                seconds = steps * float(stage["estimate"]["step_s"])
                encode_rate = (times.get("encode") or {}).get("items_per_s")
                if eval_passages is not None and encode_rate:
                    seconds += eval_passages / float(encode_rate)
            out.append({
                "source": point.source, "size": int(point.size), "seed": int(point.seed), "objective": config.objective,
                "steps": steps,
                "pairs_seen": steps * examples_per_batch(config),
                "train_passages": steps * examples_per_batch(config) * passages_per_example(config),
                "eval_passages": eval_passages,
                "embedding_bytes": None if eval_passages is None or width is None else eval_passages * width * EMBEDDING_BYTES,
                "seconds": seconds,
            })
        return out

    def baseline(self, study_dir: Path) -> dict:
        """The starting model's evaluation (STUDY_DIR/baseline/eval.json), the n = 0 reference."""
        m = self.config.model
        return self.evaluate(Retriever(m.init, m.get("init_passage") or m.init), storage.local(study_dir) / "baseline")

    def hparams(self, point) -> dict[str, Any]:
        """A point's key settings for TensorBoard's hparams view (`HPARAMS` its source's config has)."""
        from umr_jax.training.summaries import config_values

        return config_values(self.sources[point.source], HPARAMS)

    def __call__(self, source: str, size: int, point_dir: Path, seed: int = 0) -> dict:
        config = self.sources[source].copy_and_resolve_references()
        with config.unlocked():
            config.data.subset_size = int(size)
            config.output_dir = str(point_dir / "train")
            config.train.seed = int(config.train.seed) + int(seed)  # the subset keeps data.subset_seed
        train_dir = point_dir / "train"
        if not (train_dir / train.DONE).is_file():
            self.on_stage(f"train ({train_dir})")
        trained = train.train(config, train_dir, self.runtime, resume_anyway=self.resume_anyway)
        metrics = dict(self.evaluate(trained.retriever, point_dir / "eval"))
        best_record = trained.summary.get("best") or {}
        steps = int(trained.summary["steps"])
        metrics["train"] = {"objective": config.objective, "steps": steps, "examples": int(size),
                            "examples_seen": steps * examples_per_batch(config),
                            "total_steps": int(trained.summary.get("total_steps", steps)),
                            "reason": trained.summary.get("reason", "done"), "retriever": str(trained.folder),
                            "init": str(config.model.init)}
        if "step" in best_record:  # a dev-selected retriever (no dev data: the last one, nothing to record)
            metrics["train"]["dev_best"] = best_record
        return metrics


def run_scaling(config, study_dir: str | Path, *, report_only: bool = False, dry_run: bool = False,
                on_stage: Callable[[str], None] | None = None, runtime=None, resume_anyway: bool = False) -> dict:
    """Plan, run (or resume) and report a study. Returns {"points", "report"?, "plan"}.

    report_only: fit and plot the finished points without training anything.
    dry_run: read the sources and print the plan (which points are finished), train nothing.
    resume_anyway: resume a point's checkpoint even if it was made with another config.
    """
    import jax

    from umr_jax.scaling import study

    study_dir = storage.local(study_dir)  # a gs:// study: its local mirror
    scaling = config.scaling
    # The report compares arms by name: those the config defines (`sources.<name>`) are known even
    # when this study runs only some of them (`scaling.sources`).
    report_config = {**scaling.to_dict(), "defined_sources": sorted(config.get("sources", {}).keys()),
                     "base_init": str(config.model.get("init") or ""),
                     "arms": {name: arm_description(config, name) for name in source_names(config)}}
    if report_only:
        report = study.write_report(study_dir, report_config)
        return {"plan": study.read_plan(study_dir), "report": report}
    from umr_jax.scaling.report import check_x_axis

    check_x_axis(str(scaling.get("x_axis") or "size"), str(scaling.get("protocol", "epochs")))  # before anything trains
    runner = PointRunner(config, runtime=runtime, on_stage=on_stage, resume_anyway=resume_anyway)
    try:
        points = study.plan_study(scaling, runner.available())
    except ValueError as err:
        raise InputError(str(err)) from None
    for name in runner.names:
        check_trainable(runner.sources[name], name, [p.size for p in points if p.source == name])
    if dry_run:
        return {"plan": points, "finished": [p for p in points if p.is_finished(study_dir)],
                "estimates": runner.estimates(points), "arms": report_config["arms"]}
    writer = jax.process_index() == 0
    with StageFolder(study_dir, "scaling", not_fetched=LARGE).session(writer=writer, remove_on_failure=False):  # one study run at a time
        baseline = runner.baseline(study_dir) if config.evaluation.get("baseline", True) else None
        if baseline is not None and writer:
            study.write_baseline_summaries(study_dir, runner.names, baseline)
        results = study.run_study(study_dir, points, runner, config=scaling, write_results=writer, hparams=runner.hparams,
                                  after_result=runner.discard_embeddings)
        report = study.write_report(study_dir, report_config, baseline=baseline) if writer else None
    return {"plan": points, "points": results, "report": report, "baseline": baseline}
