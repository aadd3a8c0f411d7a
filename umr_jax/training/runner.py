"""The resumable training loop shared by every trainer.

It owns what is the same for all objectives: resume from the latest checkpoint (state, data
iterator position, config), step, log, checkpoint every N steps, stop on a non-finite loss
keeping the last good checkpoint, and turn SIGTERM into a final save and a clean exit.

A checkpoint is resumed only with the config it was made with: `config_differences` compares
the saved config with the requested one, key by key, leaving out `RESUMABLE_WITH_CHANGES`;
a config saved before the runtime object is migrated first (`migrate_config`).
"""

from __future__ import annotations

import json
import logging
import math
import time
from typing import Any, Callable, Protocol

import jax
import numpy as np

from umr_jax.errors import InputError
from umr_jax.parallel.checkpoint import Checkpointer, PreemptionGuard, abstract_like
from umr_jax.training.speed import BatchInfo, StepMeter

log = logging.getLogger(__name__)

# Config keys a resumed run may change without a word. None of them reaches what a step
# computes (the batches, the rng, the optimizer, the model): they say where the run writes (its
# metrics and TensorBoard files live in that folder, they have no keys of their own), how often
# progress is logged and the dev set evaluated (which steps can be chosen as `best`, not what any
# step computes), and how often checkpoints are saved and how many are kept. Any other difference
# changes what the resumed steps compute, so a resume with it is refused unless asked for
# (`--resume-anyway`).
RESUMABLE_WITH_CHANGES = frozenset({
    "output_dir",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
})

# Keys the trainers gained after checkpoints were made without them, with the value that trains as
# before: a checkpoint whose config lacks one resumes under a config that holds that value.
ADDED_WITH_DEFAULTS = {
    "train.steps": 0,
    "train.warmup_fraction": None,
    "train.early_stopping_patience": 0,
    "data.dev_split": 0,
    "data.batch_by_language": False,
    "data.stratify": False,
    "data.direction": None,
}

_ABSENT = object()


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists and other leaves stay whole."""
    if isinstance(tree, dict) and tree:
        out = {}
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    return {prefix[:-1]: tree}


def _show(value: Any) -> str:
    return "(absent)" if value is _ABSENT else repr(value)


def migrate_config(config: dict) -> dict:
    """A config as the current code spells it, for comparing a checkpoint's config with a run's.

    Configs from before the runtime object (umr_jax/runtime.py) kept the train mesh and rules at
    the top level: `mesh` (a dict of axis sizes, `{"data": -1}` when absent) and `sharding_rules`
    (a rule-set name or (logical axis, mesh axes) pairs, "data_parallel" when absent). Such a
    config (one with either key and no `runtime`) gets them as `runtime.train.mesh`/`rules` and
    the other roles at their defaults, as `runtime_config` writes them; any other config is
    returned as it is. Returns a new dict."""
    if "runtime" in config or not {"mesh", "sharding_rules"} & set(config):
        return config
    from umr_jax.runtime import runtime_config

    train = {"mesh": config.get("mesh", {"data": -1}), "rules": config.get("sharding_rules", "data_parallel")}
    migrated = {key: value for key, value in config.items() if key not in ("mesh", "sharding_rules")}
    migrated["runtime"] = runtime_config(train=train).to_dict()
    return migrated


def _mesh_spelling(mesh: Any) -> Any:
    """A mesh as `runtime_config` spells its defaults ("data=-1,fsdp=1,model=1": every axis, in
    mesh order, 1 where not given), so that meshes equal as `Runtime.mesh` builds them compare
    equal however they were written (a dict, another order, an axis of size 1 left out). A mesh
    that does not parse, or names unknown axes, is returned as it is."""
    from umr_jax.parallel.mesh import MESH_AXES
    from umr_jax.runtime import parse_mesh

    try:
        sizes = parse_mesh(mesh)
    except InputError:
        return mesh
    if set(sizes) - set(MESH_AXES):
        return mesh
    return ",".join(f"{axis}={sizes.get(axis, 1)}" for axis in MESH_AXES)


def _comparable(config: dict) -> dict:
    """`config` as JSON holds it (tuples are lists), migrated (`migrate_config`), with every
    role's mesh in one spelling (`_mesh_spelling`)."""
    config = migrate_config(json.loads(json.dumps(config)))
    runtime = config.get("runtime")
    if isinstance(runtime, dict):
        for role in runtime.values():
            if isinstance(role, dict) and "mesh" in role:
                role["mesh"] = _mesh_spelling(role["mesh"])
    return config


def config_differences(saved: dict, requested: dict) -> list[str]:
    """`key: saved -> requested` for every key whose value differs (or exists on one side only),
    sorted, leaving out `RESUMABLE_WITH_CHANGES` and keys of `ADDED_WITH_DEFAULTS` absent on one
    side and at their default on the other. Both sides are compared as JSON holds them
    (tuples are lists), since that is how a checkpoint keeps its config, after `migrate_config`
    (a checkpoint made before the runtime object resumes under the current spelling of its
    mesh and rules), with meshes compared as the axis sizes they give (`_mesh_spelling`)."""
    saved, requested = (_flatten(_comparable(c)) for c in (saved, requested))
    out = []
    for key in sorted(set(saved) | set(requested)):
        old, new = saved.get(key, _ABSENT), requested.get(key, _ABSENT)
        if key in ADDED_WITH_DEFAULTS and ADDED_WITH_DEFAULTS[key] in (old, new) and _ABSENT in (old, new):
            continue  # a key added since, at the value that trains as before
        if old != new and key not in RESUMABLE_WITH_CHANGES:
            out.append(f"{key}: {_show(old)} -> {_show(new)}")
    return out


def check_resumed_config(saved: dict, requested: dict, *, step: int, where: Any, resume_anyway: bool) -> None:
    """Raise a one-line InputError naming every differing key, unless `resume_anyway` (then log
    them as a warning). A checkpoint that holds no config (an empty one) cannot be checked."""
    if not saved or not requested:
        if requested and not saved:
            log.warning("%s: the checkpoint of step %d holds no config; resuming without checking it", where, step)
        return
    differences = config_differences(saved, requested)
    if not differences:
        return
    listed = "; ".join(differences)
    if not resume_anyway:
        raise InputError(f"the checkpoint of step {step} was made with another config ({listed}); rerun with the "
                         "saved config, or pass --resume-anyway to continue with this one", where)
    log.warning("%s: resuming step %d with a config that differs from the checkpoint's: %s", where, step, listed)


class CheckpointableIterator(Protocol):
    """What the loop needs from a data pipeline (grain's DatasetIterator fits)."""

    def __next__(self) -> dict: ...

    def get_state(self) -> Any: ...

    def set_state(self, state: Any) -> None: ...


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN/inf loss; the message names the step and the last good checkpoint."""


def _jsonable(state: Any) -> Any:
    if isinstance(state, bytes):
        return {"__bytes__": state.decode("latin-1")}
    return state


def _from_jsonable(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"__bytes__"}:
        return state["__bytes__"].encode("latin-1")
    return state


def train_loop(
    *,
    state: Any,
    state_shardings: Any,
    train_step: Callable[[Any, dict, jax.Array], tuple[Any, dict]],
    data: CheckpointableIterator,
    to_global: Callable[[dict], dict],
    total_steps: int,
    checkpointer: Checkpointer,
    rng: jax.Array,
    config: dict | None = None,
    on_metrics: Callable[[int, dict], None] | None = None,
    on_step: Callable[[int, Any], None] | None = None,
    guard: PreemptionGuard | None = None,
    resume_anyway: bool = False,
    meter: StepMeter | None = None,
    stop_early: Callable[[int], bool] | None = None,
) -> tuple[Any, str]:
    """Run `train_step` until `total_steps`, resuming from `checkpointer`'s latest step.

    `data` yields host-local batches (numpy); `to_global` turns them into global arrays.
    The rng for step i is `fold_in(rng, i)`, so a resumed run takes exactly the same steps.
    `on_metrics(step, metrics)` sees every step's metrics (host floats); `on_step(step, state)`
    runs after it (periodic evaluation, exports). `stop_early(step)`, asked after `on_step` (and
    at a resumed step), ends training there with a saved checkpoint. Returns (state, reason) with
    reason "done", "early_stopped" or "preempted". Raises NonFiniteLossError.

    A checkpoint saved with another `config` (other than `RESUMABLE_WITH_CHANGES`) is refused
    with an InputError listing the differences, before any state is restored; with
    `resume_anyway` the differences are logged as a warning and training continues.

    Input overlaps compute: once step i is dispatched (asynchronously), the loop draws and
    transfers batch i + 1 before it waits for step i's loss, so host-side batching and the
    host-to-device copy run while the device computes. Checkpoints record the data position
    after batch i, not after the prefetched one, so a resume redraws it.

    `meter` (a `speed.StepMeter`) is given each step's time from its dispatch to its loss on the
    host, which the loop waits for anyway, and its batch's shapes and token counts, read on the
    host when the batch is drawn: timing adds no device synchronisation. It is told before
    `on_metrics` runs.
    """
    start = checkpointer.latest_step()
    if start is not None:
        check_resumed_config(checkpointer.restore_config(start), config or {}, step=start,
                             where=checkpointer.directory, resume_anyway=resume_anyway)
        state, _, data_state = checkpointer.restore(abstract_like(state, state_shardings), start)
        if "iterator" in data_state:
            data.set_state(_from_jsonable(data_state["iterator"]))
        log.info("resumed from step %d (%s)", start, checkpointer.directory)
    step = int(start or 0)
    guard = guard or PreemptionGuard()

    def draw() -> tuple[Any, Any, BatchInfo | None]:
        """The next global batch, the data position just after it, and what the meter reads of it."""
        host = next(data)
        batch = to_global(host)
        return batch, data.get_state(), meter.batch_info(host, batch) if meter is not None else None

    def save(at: int, force: bool) -> None:
        checkpointer.save(at, state, config=config, data_state={"iterator": _jsonable(data_position)}, force=force)

    if start is not None and stop_early is not None and stop_early(step):
        return state, "early_stopped"  # killed after it stopped early, before it was recorded
    with guard:
        upcoming = draw() if step < total_steps else None
        while step < total_steps:
            batch, data_position, batch_info = upcoming
            dispatched = time.perf_counter()
            state, metrics = train_step(state, batch, jax.random.fold_in(rng, step))
            step += 1
            upcoming = draw() if step < total_steps else None  # while the device runs the step
            loss = float(metrics["loss"])
            if meter is not None:
                meter.record(step, time.perf_counter() - dispatched, batch_info)
            if not math.isfinite(loss):
                checkpointer.wait_until_finished()
                last = checkpointer.latest_step()
                raise NonFiniteLossError(
                    f"loss is {loss} at step {step}; stopped. The last good checkpoint is "
                    + (f"step {last} in {checkpointer.directory}" if last is not None else "none (no step was saved yet)")
                )
            if on_metrics is not None:
                on_metrics(step, {k: float(np.asarray(v)) for k, v in metrics.items()})
            if on_step is not None:
                on_step(step, state)
            if guard.should_stop(step):
                save(step, force=True)
                checkpointer.wait_until_finished()
                log.warning("preempted: saved step %d to %s", step, checkpointer.directory)
                return state, "preempted"
            if stop_early is not None and step < total_steps and stop_early(step):
                save(step, force=True)
                checkpointer.wait_until_finished()
                return state, "early_stopped"
            save(step, force=step == total_steps)
    checkpointer.wait_until_finished()
    return state, "done"
