"""Orbax checkpoints that hold the train state, the config and the data-iterator state, and
restore onto any mesh; plus the SIGTERM guard that turns a TPU preemption into a final save.

A folder in a bucket (`gs://...`, or the local mirror path standing for one: `umr_jax.storage`)
is written there directly by Orbax, whose tensorstore writes Cloud Storage itself.

Layout: `<dir>/<step>/{state, config, data}` managed by `ocp.CheckpointManager`: async saves
every `save_interval_steps`, the last `max_to_keep` kept, and a step directory only appears
once it is complete (Orbax commits atomically), so a killed save never looks finished.
"""

from __future__ import annotations

import atexit
import logging
import signal
import threading
from pathlib import Path
from typing import Any

import numpy as np
import jax
import orbax.checkpoint as ocp
from etils import epath

from umr_jax import storage

log = logging.getLogger(__name__)


class Checkpointer:
    """Save and restore `(state, config, data_state)` by step."""

    def __init__(self, directory: str | Path, *, save_interval_steps: int = 1000, max_to_keep: int = 3, async_save: bool = True):
        self.directory = epath.Path(storage.location(directory))  # a bucket folder by its URL: Orbax writes it
        options = ocp.CheckpointManagerOptions(
            save_interval_steps=save_interval_steps,
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            create=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "config", "data"))
        atexit.register(self.close)  # an async save in flight is finished before the process exits
        self._closed = False

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, *, config: dict | None = None, data_state: dict | None = None, force: bool = False) -> bool:
        """Start saving (asynchronously) if `step` is due or `force`; returns whether it saves."""
        return self.manager.save(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                config=ocp.args.JsonSave(config or {}),
                data=ocp.args.JsonSave(data_state or {}),
            ),
            force=force,
        )

    def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, dict, dict]:
        """Restore onto the shardings in `abstract_state` (a tree of `jax.ShapeDtypeStruct` with
        `.sharding`, see `abstract_like`), whatever mesh the checkpoint was saved from.

        Returns (state, config, data_state). Raises FileNotFoundError when there is no checkpoint.
        """
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        restored = self.manager.restore(
            int(step),
            args=ocp.args.Composite(
                state=ocp.args.StandardRestore(abstract_state),
                config=ocp.args.JsonRestore(),
                data=ocp.args.JsonRestore(),
            ),
        )
        return restored["state"], dict(restored["config"] or {}), dict(restored["data"] or {})

    def restore_config(self, step: int | None = None) -> dict:
        """The config saved with `step` (default: the latest), without restoring the state."""
        step = self.latest_step() if step is None else step
        if step is None:
            raise FileNotFoundError(f"{self.directory}: no checkpoint to restore")
        restored = self.manager.restore(int(step), args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return dict(restored["config"] or {})

    def wait_until_finished(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self.manager.wait_until_finished()
            self.manager.close()


def latest_saved_config(directory: str | Path) -> tuple[int, dict] | None:
    """(step, config) of the latest checkpoint in `directory`, read without creating or changing
    anything there and without restoring the state; None when there is no checkpoint."""
    directory = epath.Path(storage.location(directory))  # a bucket folder by its URL: Orbax writes it
    if not directory.is_dir():
        return None
    # Opened without `create` and never asked to save, it writes nothing there (Orbax's read_only
    # mode would do the same, with a warning on every resume).
    manager = ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(create=False),
                                    item_names=("state", "config", "data"))
    try:
        step = manager.latest_step()
        if step is None:
            return None
        restored = manager.restore(step, args=ocp.args.Composite(config=ocp.args.JsonRestore()))
        return int(step), dict(restored["config"] or {})
    finally:
        manager.close()


def abstract_like(shapes: Any, shardings: Any) -> Any:
    """A restore target: ShapeDtypeStructs of `shapes` (arrays or abstract values) carrying the new `shardings`."""
    return jax.tree_util.tree_map(
        lambda x, s: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), shapes, shardings
    )


class PreemptionGuard:
    """Turns SIGTERM (how TPU preemption arrives) into a request to save and stop cleanly.

    Use as a context manager around the training loop and ask `should_stop(step)` each step:
    on a multi-host job every process learns about the signal at the same step (an
    all-gather of the local flags), so all save the same step together.
    """

    def __init__(self, signals: tuple[int, ...] = (signal.SIGTERM,)):
        self.signals = signals
        self._requested = threading.Event()
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "PreemptionGuard":
        if threading.current_thread() is threading.main_thread():
            for sig in self.signals:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()

    def _handle(self, signum, frame) -> None:
        log.warning("received signal %d: saving a checkpoint and stopping", signum)
        self._requested.set()

    def request(self) -> None:
        self._requested.set()

    def should_stop(self, step: int) -> bool:
        local = self._requested.is_set()
        if jax.process_count() == 1:
            return local
        from jax.experimental import multihost_utils

        flags = multihost_utils.process_allgather(np.asarray([local], np.int32))
        return bool(np.any(flags))
