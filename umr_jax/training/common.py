"""What the trainers share: the dual encoder from a HF folder, metric logging (JSONL +
TensorBoard, with the run's speed from `speed.StepMeter`), the resolved config.json, exporting
towers as HF folders, and the training run around a trainer's batches and loss. Their batches share `data.batches` (epoch/position state, per-process slicing,
padding)."""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any, Callable

import jax
import numpy as np

from umr_jax import storage
from umr_jax.errors import InputError
from umr_jax.models import BertEncoderTower, DualEncoder, T5EncoderTower, hf_io

log = logging.getLogger(__name__)


@dataclasses.dataclass
class DualEncoderSetup:
    """A dual encoder initialised from one HF tower folder (both towers from the same weights)."""

    module: DualEncoder
    params: dict  # host numpy: {"query_tower": ..., "passage_tower": ...} or {"query_tower": ...}
    tower_config: Any
    family: str  # "bert" or "t5-encoder"
    tokenizer: Any
    source: Path

    @property
    def separate(self) -> bool:
        return "passage_tower" in self.params


def build_dual_encoder(
    folder: str | Path,
    *,
    separate_towers: bool = True,
    pooling: str | None = None,
    dtype: str = "bfloat16",
    dropout: float = 0.1,
    similarity: str = "dot",
    scale: float = 1.0,
    passage_folder: str | Path | None = None,
    scan_layers: bool = False,
    remat: str = "none",
) -> DualEncoderSetup:
    """Load a BERT/XLM-R (or T5/mT5 encoder) tower folder and build the dual encoder around it.

    Both towers start from `folder`, unless `passage_folder` names another folder of the same
    architecture for the passage tower (a retriever trained with separate towers, resumed).
    Either may be a Hugging Face model ID (`facebook/mcontriever`), loaded from the HF cache."""
    folder = hf_io.resolve_model_dir(folder)
    passage_folder = hf_io.resolve_model_dir(passage_folder) if passage_folder else None
    family_type = hf_io.model_type_of(hf_io.read_hf_config(folder), folder)
    if family_type in hf_io.T5_TYPES:
        load = lambda f: hf_io.load_t5(f, encoder_only=True, pooling=pooling or "mean", dtype=dtype, dropout_rate=dropout,  # noqa: E731
                                       scan_layers=scan_layers, remat=remat)
    else:
        load = lambda f: hf_io.load_bert(f, pooling=pooling, dtype=dtype, hidden_dropout_prob=dropout,  # noqa: E731
                                         attention_probs_dropout_prob=dropout, scan_layers=scan_layers, remat=remat)
    loaded = load(folder)
    module = dual_encoder_module(loaded.config, loaded.family, separate_towers=separate_towers, pooling=pooling,
                                 similarity=similarity, scale=scale)
    params = {"query_tower": loaded.params}
    if separate_towers:
        if passage_folder and Path(passage_folder) != Path(folder):
            other = load(passage_folder)
            if other.config != loaded.config:
                raise hf_io.ModelLoadError(f"{passage_folder}: passage tower config differs from the query tower's ({folder})")
            params["passage_tower"] = other.params
        else:
            params["passage_tower"] = jax.tree_util.tree_map(np.copy, loaded.params)
    elif passage_folder and Path(passage_folder) != Path(folder):
        raise hf_io.ModelLoadError(f"{passage_folder}: a separate passage tower needs model.separate_towers=True")
    return DualEncoderSetup(module, params, loaded.config, loaded.family, hf_io.load_tokenizer(folder), Path(folder))


def dual_encoder_module(tower_config, family: str, *, separate_towers: bool, pooling: str | None = None,
                        similarity: str = "dot", scale: float = 1.0) -> DualEncoder:
    """The dual encoder around towers of `tower_config` (a BertConfig, or a T5Config for family
    "t5-encoder"): what `build_dual_encoder` trains, without weights (`umr-jax compile`)."""
    if family == "t5-encoder":
        make = lambda: T5EncoderTower(tower_config, pooling=pooling or "mean")  # noqa: E731
    else:
        make = lambda: BertEncoderTower(tower_config)  # noqa: E731
    return DualEncoder(make(), make() if separate_towers else None, similarity=similarity, scale=scale)


def boxed_abstract_params(module: DualEncoder) -> Any:
    """Logically-partitioned abstract params of the dual encoder (for shardings)."""
    ids = np.ones((1, 4), np.int32)
    return jax.eval_shape(lambda: module.init(jax.random.PRNGKey(0), ids, ids, ids, ids)["params"])


def host_params(params: Any) -> Any:
    """Device params (possibly sharded across processes) -> numpy on every host."""
    if jax.process_count() == 1:
        return jax.tree_util.tree_map(np.asarray, params)
    from jax.experimental import multihost_utils

    return jax.tree_util.tree_map(lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True)), params)


def export_towers(output: str | Path, setup: DualEncoderSetup, params: Any) -> dict[str, Path]:
    """Write the towers as HF folders: `query_encoder/` and `passage_encoder/` (or one `encoder/`
    when shared), each with weights, config, tokenizer and pooling files. Process 0 writes."""
    output = storage.local(output)
    params = host_params(params)
    folders = {"query": output / "query_encoder", "passage": output / "passage_encoder"}
    if jax.process_index() != 0:
        return folders if setup.separate else {"query": output / "encoder", "passage": output / "encoder"}
    # Cosine-trained towers say so (a Normalize module), so encode/retrieve use unit-length embeddings.
    options = dict(family=setup.family, tokenizer=setup.tokenizer, normalize=setup.module.similarity == "cosine")
    if setup.separate:
        hf_io.export_model(folders["query"], setup.tower_config, params["query_tower"], **options)
        hf_io.export_model(folders["passage"], setup.tower_config, params["passage_tower"], **options)
        return folders
    shared = output / "encoder"
    hf_io.export_model(shared, setup.tower_config, params["query_tower"], **options)
    return {"query": shared, "passage": shared}


class MetricsLog:
    """A run's metrics: `metrics.jsonl` lines and TensorBoard event files, written by process 0.

    `resume_step` is the checkpoint step the run restarts from (None: nothing is restored and the
    run starts at step 0). What an earlier, killed run logged after that step is about to be
    logged again, so it is removed first: metrics.jsonl keeps the lines with step <= resume_step
    only (none on a fresh start), rewritten atomically, and this run's TensorBoard event file
    begins with a restart marker at the first step it logs (a SessionLog START event, what
    tensorboardX's `purge_step` writes), which tells TensorBoard to discard the earlier files'
    events from that step on. Each record is flushed to both files as it is written, so a kill
    loses nothing logged before the checkpoint that the next run resumes from.
    """

    def __init__(self, folder: str | Path, resume_step: int | None = None):
        self.folder = storage.local(folder)
        self.active = jax.process_index() == 0
        self.first_step = 0 if resume_step is None else int(resume_step) + 1
        self._events = None
        self._started = time.time()
        if self.active:
            self.folder.mkdir(parents=True, exist_ok=True)
            truncate_metrics(self.folder / "metrics.jsonl", self.first_step)

    def _event_file(self):
        """The TensorBoard event file of this run, opened at the first write (None without tensorboardX)."""
        if self._events is None:
            # tensorboardX's SummaryWriter hands events to a thread that flushes every 2 minutes, so
            # a kill loses them; its EventsWriter writes in this thread and `write` flushes it.
            try:  # TensorBoard files are a convenience; the JSONL log is the record
                from tensorboardX.event_file_writer import EventsWriter
                from tensorboardX.proto.event_pb2 import Event, SessionLog
            except ImportError:
                self._events = False
                return None
            folder = self.folder / "tensorboard"
            folder.mkdir(parents=True, exist_ok=True)
            earlier = sorted(folder.glob("events.out.tfevents.*"))
            # Files are named by the second they were opened and the host; the run count breaks a tie
            # within one second (a same name would overwrite the earlier file), in the order TensorBoard
            # reads them.
            self._events = EventsWriter(str(folder / "events"), filename_suffix=f".run{len(earlier):04d}")
            if earlier:
                self._events.write_event(Event(wall_time=time.time(), step=self.first_step,
                                               session_log=SessionLog(status=SessionLog.START)))
        return self._events or None

    def write(self, step: int, metrics: dict[str, float], prefix: str = "train",
              speed: dict[str, float] | None = None) -> None:
        """One record: `metrics` under `prefix` (TensorBoard tags `prefix/key`), and the run's
        `speed` (`speed.StepMeter.report`: wall-clock measurements, which a rerun of the same
        step does not repeat) as the record's `speed` object and the tags `speed/key`."""
        if not self.active:
            return
        record = {"step": step, "split": prefix, "time": round(time.time() - self._started, 3), **metrics}
        if speed:
            record["speed"] = speed
        with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        storage.publish(self.folder / "metrics.jsonl")  # a gs:// run: the log reaches the bucket as it grows
        events = self._event_file()
        if events is not None:
            from tensorboardX.proto.event_pb2 import Event
            from tensorboardX.summary import scalar

            now = time.time()
            tags = [(f"{prefix}/{key}", value) for key, value in metrics.items()]
            tags += [(f"speed/{key}", value) for key, value in (speed or {}).items()]
            for tag, value in tags:
                events.write_event(Event(wall_time=now, step=step, summary=scalar(tag, value)))
            events.flush()
            storage.publish(events._file_name)

    def close(self) -> None:
        if self._events:
            self._events.close()
        self._events = None


def truncate_metrics(path: Path, first_step: int) -> int:
    """Drop the lines of `path` (metrics JSONL) with step >= `first_step`, and any line a kill cut
    short, rewriting the file atomically; returns how many were dropped."""
    from umr_jax.data.files import AtomicFile

    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for number, line in enumerate(path.read_bytes().splitlines(keepends=True), 1):
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError):
            if line.strip():
                log.warning("%s:%d: not a metrics record (cut short by a kill?); dropped", path, number)
                dropped += 1
            continue
        if not line.endswith(b"\n"):  # a whole record whose newline was cut off
            line += b"\n"
        if step >= first_step:
            dropped += 1
        else:
            kept.append(line)
    if dropped:
        with AtomicFile(path) as f:
            f.writelines(kept)
        log.info("%s: dropped %d lines logged after step %d by an earlier run (it is resumed from there)",
                 path, dropped, first_step - 1)
    return dropped


def check_resume(output: Path, config, *, resume_anyway: bool = False) -> None:
    """What a trainer does before it loads anything: refuse a checkpoint in `output/checkpoints`
    made with another config (`runner.check_resumed_config`; with `resume_anyway` the loop warns
    instead when it resumes). Writes nothing."""
    from umr_jax.parallel.checkpoint import latest_saved_config
    from umr_jax.training.runner import check_resumed_config

    found = latest_saved_config(output / "checkpoints")
    if found is not None and not resume_anyway:
        step, saved = found
        check_resumed_config(saved, config.to_dict(), step=step, where=(output / "checkpoints").absolute(), resume_anyway=False)


def resolved_config(config, output: str | Path, runtime):
    """The config a training run records (config.json, its checkpoints) and is compared by on
    resume: `config` with every override the command applied, including those that are not
    `key=value` overrides: `output_dir` is the folder the run writes (`--output`, or the
    loop's/study's folder for this training), and `runtime.train` the mesh and rules the runtime
    trains with (`--mesh`/`--rules` set those keys). Returns a copy."""
    from umr_jax.runtime import Runtime, runtime_config

    resolved = config.copy_and_resolve_references()
    layout, configured = runtime.layouts["train"], Runtime.from_config(config).layouts["train"]
    with resolved.unlocked(), resolved.ignore_type():
        resolved.output_dir = storage.url_of(output) or str(output)
        if (layout.mesh, layout.rules) != (configured.mesh, configured.rules):  # flags changed the train role
            if resolved.get("runtime", None) is None:
                resolved.runtime = runtime_config()
            if "train" not in resolved.runtime:
                resolved.runtime.train = {}
            resolved.runtime.train.mesh = layout.mesh
            resolved.runtime.train.rules = layout.rules
    return resolved


def write_config(output: Path, config, *, resumed_step: int | None = None) -> Path | None:
    """The config as `output/config.json` (atomically, process 0): written once the model and
    the data have loaded, before the first step, so a run folder says how it was made without
    Orbax (and `stages.train.locked` keeps a folder that has one). Pass the resolved config
    (`resolved_config`), the one the checkpoints hold.

    On a resume (`resumed_step`, the checkpoint's step) config.json is the config the run goes on
    with. When that differs from the one it replaces in keys other than
    `runner.RESUMABLE_WITH_CHANGES` (a resume with --resume-anyway), the replaced file is kept as
    `config.until-step-<N>.json`: the steps up to N were made with it. Returns that file's path,
    if one was kept."""
    from umr_jax.data.files import AtomicFile
    from umr_jax.training.runner import config_differences

    if jax.process_index() != 0:
        return None
    path, kept = output / "config.json", None
    current = config.to_dict()
    if resumed_step is not None and path.is_file():
        try:
            earlier = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, UnicodeDecodeError):
            earlier = None
        if isinstance(earlier, dict) and config_differences(earlier, current):
            kept = output / f"config.until-step-{int(resumed_step)}.json"
            data = path.read_bytes()
            with AtomicFile(kept) as f:
                f.write(data)
    with AtomicFile(path) as f:
        f.write((json.dumps(current, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return kept


def optimizer_for(t, *, total_steps: int, warmup_steps: int):
    """The optimizer of the config's `train` section (AdamW, warm-up then linear decay, clipping)."""
    from umr_jax.training.state import make_optimizer

    return make_optimizer(t.learning_rate, total_steps=total_steps, warmup_steps=warmup_steps,
                          weight_decay=t.weight_decay, eps=t.adam_eps, grad_clip_norm=t.grad_clip_norm,
                          eps_before_bias_correction=bool(t.get("adam_eps_before_bias_correction", False)))


def total_steps_of(t, steps_per_epoch: int) -> int:
    """The optimizer steps of a run (the config's `train` section): `train.steps` when set (a
    fixed compute budget, the same whatever the data size; the batches go round the data as
    often as it takes), else ceil(`train.epochs` x `steps_per_epoch`); at least 1."""
    steps = int(t.get("steps") or 0)
    if steps < 0:
        raise InputError(f"train.steps={steps}; expected a number of optimizer steps >= 1, or 0 to train train.epochs")
    if steps:
        return steps
    if float(t.epochs) <= 0:
        raise InputError(f"train.epochs={t.epochs} trains for zero steps; expected epochs > 0 (or train.steps=N)")
    return max(1, int(math.ceil(float(t.epochs) * steps_per_epoch)))


def warmup_steps_of(t, total_steps: int, default: int) -> int:
    """The warm-up steps of a run of `total_steps`: `train.warmup_fraction` of them (rounded)
    when set, in the spirit of big_vision's `warmup_percent`, so that a study's small and large
    points warm up over the same share of their run; else `default` (the trainer's own rule)."""
    fraction = t.get("warmup_fraction")
    if fraction is None:
        return int(default)
    if not 0.0 <= float(fraction) < 1.0:
        raise InputError(f"train.warmup_fraction={fraction}; expected a fraction of the run in [0, 1)")
    return int(round(float(fraction) * total_steps))


def train_step_for(module: DualEncoder, t, optimizer, mesh, rules, state_shardings, loss_on_embeddings: Callable, *,
                   queries_per_batch: int, passages_per_batch: int):
    """The trainers' one jitted step `(state, batch, rng) -> (state, metrics)` for the config's
    `train` section: dropout on, gradient caching when `train.grad_cache` (chunks of
    `train.query_chunk` / `train.passage_chunk` rows), `loss_on_embeddings(q, p, batch)` on
    top. `umr-jax compile` compiles this very step."""
    from umr_jax.parallel import sharding as shd
    from umr_jax.training.gradcache import grad_cached_value_and_grad, plain_value_and_grad
    from umr_jax.training.state import make_train_step

    def enc_q(params, ids, mask, rng):
        return module.apply({"params": params}, ids, mask, False, method="encode_queries", rngs={"dropout": rng})

    def enc_p(params, ids, mask, rng):
        return module.apply({"params": params}, ids, mask, False, method="encode_passages", rngs={"dropout": rng})

    make_vg = grad_cached_value_and_grad if t.grad_cache else plain_value_and_grad
    query_chunk, passage_chunk = min(t.query_chunk, queries_per_batch), min(t.passage_chunk, passages_per_batch)
    shards = mesh.shape["data"] * mesh.shape["fsdp"]
    for name, chunk in (("query_chunk", query_chunk), ("passage_chunk", passage_chunk)):
        if chunk % shards:
            log.warning("train.%s=%d is not a multiple of the %d batch shards (data x fsdp): each chunk runs on "
                        "part of the devices, and XLA moves rows between devices inside the loop", name, chunk, shards)
    value_and_grad = make_vg(enc_q, enc_p, loss_on_embeddings, query_chunk=query_chunk, passage_chunk=passage_chunk)
    return make_train_step(None, optimizer, mesh, state_shardings, shd.batch_sharding(mesh), rules,
                           value_and_grad_fn=value_and_grad)


class EarlyStopping:
    """Stop when `patience` eligible dev measurements in a row (those `schedule` measures and
    allows as the best) came after the best one without beating it. Decided from the step of the
    best (kept in best.json) alone, so a resumed run stops where the uninterrupted one did."""

    def __init__(self, schedule, patience: int):
        self.schedule, self.patience = schedule, int(patience)

    def should_stop(self, step: int, best_step: int | None) -> bool:
        if best_step is None or not self.schedule.eligible(step):
            return False
        since = sum(1 for k in range(int(best_step) + 1, step + 1) if self.schedule.measures(k) and self.schedule.eligible(k))
        return since >= self.patience


def run_dual_encoder_training(
    *,
    config,
    setup: DualEncoderSetup,
    batches,
    loss_on_embeddings: Callable,
    queries_per_batch: int,
    passages_per_batch: int,
    warmup_steps: int,
    output: Path,
    mesh,
    rules,
    dev_metrics: Callable[[Any], dict[str, float]] | None = None,
    selection_metric: str = "",
    dev_schedule: Callable[[int], Any] | None = None,
    resume_anyway: bool = False,
    progress=None,
) -> dict[str, Any]:
    """The part every dual-encoder trainer shares, around its own batches and loss.

    Builds the optimizer (AdamW, warm-up then linear decay, clipping) and the sharded state
    from `setup`'s params, one jitted step (gradient caching when `train.grad_cache`), metrics
    to JSONL/TensorBoard, checkpoints with exact resume (refused for a checkpoint made with another
    config unless `resume_anyway`, see `runner.train_loop`); `dev_metrics(params)` is logged at the
    steps `dev_schedule(total_steps)` measures (a `dev_selection` schedule; default: step 0, every
    `train.eval_every` steps and the end), and of the eligible ones the params with the lowest
    `selection_metric` are exported to `output/best`. The last params go to `output/final`.
    With `train.early_stopping_patience` = P > 0 (and dev metrics), training stops once P
    eligible measurements in a row have not improved on the best (`EarlyStopping`); the
    summary's reason is then "early_stopped" and the best params are the run's retriever.
    `config` is the resolved config (`resolved_config`): written to `output/config.json` before
    the first step, and kept with every checkpoint.

    Every `train.log_every` steps the log line, metrics.jsonl and TensorBoard get the loss and the
    run's speed (`speed.StepMeter`: steps/s, examples/s = steps/s x `queries_per_batch`, tokens/s,
    MFU where the devices have a published peak, the time left, seconds spent compiling);
    `progress` (a `progress.TrainingProgress`, or None) is updated after every step.
    Returns a summary: reason ("done" or "preempted"), steps, total_steps, best, best_dir, final_dir.
    """
    from umr_jax.models.flops import dual_encoder_step_flops
    from umr_jax.parallel import sharding as shd
    from umr_jax.parallel.checkpoint import Checkpointer
    from umr_jax.parallel.peaks import peak_flops
    from umr_jax.retrieval.embeddings import atomic_write_bytes
    from umr_jax.training.runner import train_loop
    from umr_jax.training.speed import StepMeter, describe
    from umr_jax.training.state import state_from_params

    t = config.train
    patience = int(t.get("early_stopping_patience") or 0)
    if patience < 0:
        raise InputError(f"train.early_stopping_patience={patience}; expected 0 (off) or a number of dev measurements")
    if patience and dev_metrics is None:
        raise InputError("train.early_stopping_patience needs dev data (data.dev_split=N, or the trainer's dev file)")
    total_steps = total_steps_of(t, batches.steps_per_epoch)
    optimizer = optimizer_for(t, total_steps=total_steps, warmup_steps=warmup_steps)
    state, shardings = state_from_params(setup.params, boxed_abstract_params(setup.module), optimizer, mesh, rules)
    step = train_step_for(setup.module, t, optimizer, mesh, rules, shardings, loss_on_embeddings,
                          queries_per_batch=queries_per_batch, passages_per_batch=passages_per_batch)
    checkpointer = Checkpointer(output / "checkpoints", save_interval_steps=t.checkpoint_every, max_to_keep=t.keep_checkpoints)
    write_config(output, config, resumed_step=checkpointer.latest_step())
    metrics_log = MetricsLog(output, resume_step=checkpointer.latest_step())
    peaks = [peak_flops(device) for device in mesh.devices.flat]

    def step_flops(shapes: dict[str, tuple]) -> float | None:
        if "query_ids" not in shapes or "passage_ids" not in shapes:
            return None
        return dual_encoder_step_flops(setup.tower_config, *shapes["query_ids"], *shapes["passage_ids"])

    meter = StepMeter(total_steps=total_steps, examples_per_step=queries_per_batch, step_flops=step_flops,
                      peak_flops=sum(peaks) if all(peaks) else None, processes=jax.process_count())
    best_file = output / "best.json"
    best = json.loads(best_file.read_text()) if best_file.is_file() else {selection_metric: math.inf}

    from umr_jax.training.dev_selection import EveryNSteps

    schedule = dev_schedule(total_steps) if dev_schedule else EveryNSteps(t.eval_every, total_steps)

    def evaluate(step_number: int, state_now) -> None:
        nonlocal best
        if dev_metrics is None or not schedule.measures(step_number):
            return
        scores = dev_metrics(state_now.params)
        metrics_log.write(step_number, scores, prefix="dev")
        if schedule.eligible(step_number) and scores[selection_metric] < best[selection_metric]:
            best = {"step": step_number, **scores}
            export_towers(output / "best", setup, state_now.params)
            if jax.process_index() == 0:
                data = json.dumps(best, indent=2).encode()
                atomic_write_bytes(best_file, lambda f: f.write(data))

    def on_metrics(step_number: int, metrics: dict) -> None:
        if progress is not None:
            progress.update(step_number, metrics.get("loss"), meter.steps_per_second(), meter.eta_seconds(step_number))
        if step_number % t.log_every == 0 or step_number == total_steps:
            speed = meter.report(step_number)
            metrics_log.write(step_number, metrics, speed=speed)
            log.info("step %d/%d %s %s", step_number, total_steps, {k: round(v, 4) for k, v in metrics.items()},
                     describe(speed))

    def on_step(step_number: int, state_now) -> None:
        evaluate(step_number, state_now)

    stopping = EarlyStopping(schedule, patience) if patience else None

    def stop_early(step_number: int) -> bool:
        if stopping is None or not schedule.eligible(step_number):
            return False
        decision = stopping.should_stop(step_number, best.get("step"))
        if jax.process_count() > 1:  # process 0's: it alone is sure to hold best.json after a resume
            from jax.experimental import multihost_utils

            decision = bool(multihost_utils.broadcast_one_to_all(np.asarray(decision)))
        return decision

    if checkpointer.latest_step() is None:
        evaluate(0, state)  # the starting point (with EveryNSteps also a candidate for "best")
    if progress is not None:
        progress.start(total_steps, checkpointer.latest_step() or 0)
    try:
        state, reason = train_loop(
            state=state, state_shardings=shardings, train_step=step, data=batches,
            to_global=lambda b: shd.host_batch_to_global(b, mesh), total_steps=total_steps, checkpointer=checkpointer,
            rng=jax.random.PRNGKey(t.seed), config=config.to_dict(), on_metrics=on_metrics, on_step=on_step,
            resume_anyway=resume_anyway, meter=meter, stop_early=stop_early,
        )
    finally:
        if progress is not None:
            progress.close()
    checkpointer.close()
    metrics_log.close()
    if reason == "early_stopped":
        log.info("early stopping at step %d: %d dev measurements without a better %s than step %s's", int(state.step),
                 patience, selection_metric, best.get("step"))
    final = export_towers(output / "final", setup, state.params) if reason in ("done", "early_stopped") else None
    return {"reason": reason, "steps": int(state.step), "total_steps": total_steps, "best": best,
            "best_dir": storage.location(output / "best") if dev_metrics is not None else None,
            "final_dir": storage.location(output / "final") if final else None}
