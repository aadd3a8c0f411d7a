"""What the trainers share: the dual encoder from a HF folder, metric logging (JSONL +
TensorBoard), exporting towers as HF folders, and the training run around a trainer's batches
and loss. Their batches share `data.batches` (epoch/position state, per-process slicing,
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
    architecture for the passage tower (a retriever trained with separate towers, resumed)."""
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
    output = Path(output)
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
        self.folder = Path(folder)
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

    def write(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        if not self.active:
            return
        record = {"step": step, "split": prefix, "time": round(time.time() - self._started, 3), **metrics}
        with open(self.folder / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        events = self._event_file()
        if events is not None:
            from tensorboardX.proto.event_pb2 import Event
            from tensorboardX.summary import scalar

            now = time.time()
            for key, value in metrics.items():
                events.write_event(Event(wall_time=now, step=step, summary=scalar(f"{prefix}/{key}", value)))
            events.flush()

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


def write_config(output: Path, config) -> None:
    """The config as `output/config.json` (atomically, process 0), written once the model and the
    data have loaded, so a run folder says how it was made without Orbax."""
    from umr_jax.data.files import AtomicFile

    if jax.process_index() == 0:
        with AtomicFile(output / "config.json") as f:
            f.write((json.dumps(config.to_dict(), indent=2, sort_keys=True) + "\n").encode("utf-8"))


def optimizer_for(t, *, total_steps: int, warmup_steps: int):
    """The optimizer of the config's `train` section (AdamW, warm-up then linear decay, clipping)."""
    from umr_jax.training.state import make_optimizer

    return make_optimizer(t.learning_rate, total_steps=total_steps, warmup_steps=warmup_steps,
                          weight_decay=t.weight_decay, eps=t.adam_eps, grad_clip_norm=t.grad_clip_norm,
                          eps_before_bias_correction=bool(t.get("adam_eps_before_bias_correction", False)))


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
) -> dict[str, Any]:
    """The part every dual-encoder trainer shares, around its own batches and loss.

    Builds the optimizer (AdamW, warm-up then linear decay, clipping) and the sharded state
    from `setup`'s params, one jitted step (gradient caching when `train.grad_cache`), metrics
    to JSONL/TensorBoard, checkpoints with exact resume (refused for a checkpoint made with another
    config unless `resume_anyway`, see `runner.train_loop`); `dev_metrics(params)` is logged at the
    steps `dev_schedule(total_steps)` measures (a `dev_selection` schedule; default: step 0, every
    `train.eval_every` steps and the end), and of the eligible ones the params with the lowest
    `selection_metric` are exported to `output/best`. The last params go to `output/final`.
    Returns a summary: reason ("done" or "preempted"), steps, total_steps, best, best_dir, final_dir.
    """
    from umr_jax.parallel import sharding as shd
    from umr_jax.parallel.checkpoint import Checkpointer
    from umr_jax.retrieval.embeddings import atomic_write_bytes
    from umr_jax.training.runner import train_loop
    from umr_jax.training.state import state_from_params

    t = config.train
    total_steps = max(1, int(math.ceil(t.epochs * batches.steps_per_epoch)))
    optimizer = optimizer_for(t, total_steps=total_steps, warmup_steps=warmup_steps)
    state, shardings = state_from_params(setup.params, boxed_abstract_params(setup.module), optimizer, mesh, rules)
    step = train_step_for(setup.module, t, optimizer, mesh, rules, shardings, loss_on_embeddings,
                          queries_per_batch=queries_per_batch, passages_per_batch=passages_per_batch)
    write_config(output, config)
    checkpointer = Checkpointer(output / "checkpoints", save_interval_steps=t.checkpoint_every, max_to_keep=t.keep_checkpoints)
    metrics_log = MetricsLog(output, resume_step=checkpointer.latest_step())
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
        if step_number % t.log_every == 0 or step_number == total_steps:
            metrics_log.write(step_number, metrics)
            log.info("step %d/%d %s", step_number, total_steps, {k: round(v, 4) for k, v in metrics.items()})

    def on_step(step_number: int, state_now) -> None:
        evaluate(step_number, state_now)

    if checkpointer.latest_step() is None:
        evaluate(0, state)  # the starting point (with EveryNSteps also a candidate for "best")
    state, reason = train_loop(
        state=state, state_shardings=shardings, train_step=step, data=batches,
        to_global=lambda b: shd.host_batch_to_global(b, mesh), total_steps=total_steps, checkpointer=checkpointer,
        rng=jax.random.PRNGKey(t.seed), config=config.to_dict(), on_metrics=on_metrics, on_step=on_step,
        resume_anyway=resume_anyway,
    )
    checkpointer.close()
    metrics_log.close()
    final = export_towers(output / "final", setup, state.params) if reason == "done" else None
    return {"reason": reason, "steps": int(state.step), "total_steps": total_steps, "best": best,
            "best_dir": str(output / "best") if dev_metrics is not None else None,
            "final_dir": str(output / "final") if final else None}
