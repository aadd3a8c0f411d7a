"""A tiny sharded training job used by the runtime tests (run as a subprocess).

  python -m tests.parallel.train_worker --ckpt DIR --steps N [--sleep S] [--out FILE.npz]
      [--coordinator H:P --num-processes 2 --process-id I]

Prints one JSON line per step ({"step", "loss"}) and a final {"reason": ...} line.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


class StepBatches:
    """Deterministic host-local batches by position, with grain-style get/set_state."""

    def __init__(self, process_index: int, process_count: int, nan_at: int = -1):
        self.position = 0
        self.process_index, self.process_count = process_index, process_count
        self.nan_at = nan_at

    def __next__(self) -> dict:
        from tests.parallel import tiny

        batch = tiny.de_batch(self.position)
        # `poison` makes the loss NaN for one chosen batch (the NaN-handling test).
        batch["poison"] = np.full((len(batch["query_ids"]),), int(self.position == self.nan_at), np.int32)
        self.position += 1
        rows = len(batch["query_ids"]) // self.process_count
        sl = slice(self.process_index * rows, (self.process_index + 1) * rows)
        return {k: v[sl] for k, v in batch.items()}

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt", required=True)
    parser.add_argument("--steps", type=int, required=True)
    parser.add_argument("--sleep", type=float, default=0.0)
    parser.add_argument("--out")
    parser.add_argument("--save-every", type=int, default=1000)
    parser.add_argument("--coordinator")
    parser.add_argument("--num-processes", type=int)
    parser.add_argument("--process-id", type=int)
    parser.add_argument("--nan-at", type=int, default=-1)
    args = parser.parse_args()

    from umr_jax.parallel import mesh as mesh_lib

    mesh_lib.initialize_distributed(mesh_lib.DistributedConfig(args.coordinator, args.num_processes, args.process_id))

    import jax
    import jax.numpy as jnp

    from umr_jax.parallel import sharding as shd
    from umr_jax.parallel.checkpoint import Checkpointer
    from umr_jax.training.runner import NonFiniteLossError, train_loop
    from umr_jax.training.state import create_train_state, make_train_step
    from tests.parallel import tiny

    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": -1})
    state, shardings = create_train_state(tiny.de_init, tiny.OPTIMIZER, mesh, "fsdp")

    def loss_fn(params, batch, rng):
        loss, metrics = tiny.de_loss(params, batch, rng)
        poisoned = jnp.where(batch["poison"][0] > 0, jnp.nan, 0.0)
        return loss + poisoned, metrics

    step = make_train_step(loss_fn, tiny.OPTIMIZER, mesh, shardings, shd.batch_sharding(mesh), "fsdp")
    data = StepBatches(jax.process_index(), jax.process_count(), args.nan_at)

    def on_metrics(i, metrics):
        print(json.dumps({"step": i, "loss": metrics["loss"]}), flush=True)
        time.sleep(args.sleep)

    ckpt = Checkpointer(args.ckpt, save_interval_steps=args.save_every, max_to_keep=2)
    try:
        state, reason = train_loop(
            state=state, state_shardings=shardings, train_step=step, data=data,
            to_global=lambda b: shd.host_batch_to_global(b, mesh), total_steps=args.steps,
            checkpointer=ckpt, rng=jax.random.PRNGKey(3), config={"job": "tiny"}, on_metrics=on_metrics,
        )
    except NonFiniteLossError as err:
        print(json.dumps({"reason": "nan", "message": str(err)}), flush=True)
        ckpt.close()
        return 3
    ckpt.close()
    if args.out:
        from jax.experimental import multihost_utils

        leaves = [np.asarray(multihost_utils.process_allgather(x, tiled=True)) for x in jax.tree_util.tree_leaves(state.params)]
        if jax.process_index() == 0:
            np.savez(args.out, *leaves)
    print(json.dumps({"reason": reason, "step": int(state.step)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
