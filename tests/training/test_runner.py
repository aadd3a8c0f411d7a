"""The shared training loop draws the next batch while the device runs the current step, and
its checkpoints still record the data position of the step they belong to."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from umr_jax.parallel.checkpoint import Checkpointer, abstract_like
from umr_jax.training.runner import train_loop


class Batches:
    """A checkpointable iterator that logs each draw."""

    def __init__(self, events: list):
        self.position, self.events = 0, events

    def __next__(self) -> dict:
        self.events.append(("draw", self.position))
        self.position += 1
        return {"x": np.full((4,), self.position - 1, np.float32)}

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])


class Loss:
    """A loss whose read (the loop's wait for the step) is logged."""

    def __init__(self, events: list, step: int):
        self.events, self.step = events, step

    def __float__(self) -> float:
        self.events.append(("wait", self.step))
        return 0.5


def _run(tmp_path, events, total_steps, start_state):
    steps_run = []

    def train_step(state, batch, rng):
        steps_run.append(int(batch["x"][0]))
        return {"w": state["w"] + batch["x"]}, {"loss": Loss(events, len(steps_run) - 1)}

    sharding = {"w": jax.sharding.SingleDeviceSharding(jax.devices()[0])}
    checkpointer = Checkpointer(tmp_path / "ckpt", save_interval_steps=2, max_to_keep=5, async_save=False)
    state, reason = train_loop(state=start_state, state_shardings=sharding, train_step=train_step, data=Batches(events),
                               to_global=lambda b: {k: jnp.asarray(v) for k, v in b.items()}, total_steps=total_steps,
                               checkpointer=checkpointer, rng=jax.random.PRNGKey(0))
    return state, reason, steps_run, checkpointer, sharding


def test_next_batch_is_drawn_before_waiting_for_the_step(tmp_path):
    events: list = []
    state, reason, steps_run, checkpointer, sharding = _run(tmp_path, events, 5, {"w": jnp.zeros(4)})
    assert reason == "done" and steps_run == [0, 1, 2, 3, 4]
    # draw 0, then per step: draw the next batch, then wait for the step; no draw past the end.
    assert events == [("draw", 0), ("draw", 1), ("wait", 0), ("draw", 2), ("wait", 1), ("draw", 3), ("wait", 2),
                      ("draw", 4), ("wait", 3), ("wait", 4)]
    # The checkpoint of step 2 holds the position after batch 1 (2), not after the prefetched batch 2 (3).
    _, _, data_state = checkpointer.restore(abstract_like({"w": jnp.zeros(4)}, sharding), 2)
    assert data_state["iterator"] == {"position": 2}
    np.testing.assert_array_equal(np.asarray(state["w"]), np.full(4, 0 + 1 + 2 + 3 + 4))
    checkpointer.close()


def test_resume_redraws_the_prefetched_batch(tmp_path):
    """Stopped after step 4 (a checkpoint at 4), a longer run resumes with batch 4 exactly."""
    events: list = []
    _run(tmp_path, events, 4, {"w": jnp.zeros(4)})[3].close()
    events.clear()
    state, reason, steps_run, checkpointer, _ = _run(tmp_path, events, 6, {"w": jnp.zeros(4)})
    assert reason == "done" and steps_run == [4, 5]
    np.testing.assert_array_equal(np.asarray(state["w"]), np.full(4, 0 + 1 + 2 + 3 + 4 + 5))
    checkpointer.close()
