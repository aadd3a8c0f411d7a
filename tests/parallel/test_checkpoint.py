"""Checkpoints restore onto other meshes; SIGTERM saves and resumes exactly; NaN keeps the last
good checkpoint; two local processes compute what one process computes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest

from umr_jax.parallel import mesh as mesh_lib
from umr_jax.parallel import sharding as shd
from umr_jax.parallel.checkpoint import Checkpointer, abstract_like
from umr_jax.training.state import create_train_state
from tests.multiprocess import finish, finish_all, free_port, join_flags, launch
from tests.parallel import tiny

ROOT = Path(__file__).resolve().parents[2]


def test_restore_onto_other_meshes(tmp_path):
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "model": 1})
    state, _ = create_train_state(tiny.t5_init, tiny.OPTIMIZER, mesh, "fsdp")
    ckpt = Checkpointer(tmp_path / "ckpt", save_interval_steps=1, max_to_keep=2)
    assert ckpt.save(5, state, config={"lr": 1e-3, "mesh": [2, 4, 1]}, data_state={"iterator": {"position": 17}})
    ckpt.close()
    reference = jax.tree_util.tree_map(np.asarray, state)

    for sizes, rules, devices in [
        ({"data": 1, "fsdp": 1, "model": 1}, "data_parallel", jax.devices()[:1]),
        ({"data": 4, "fsdp": 1, "model": 2}, "fsdp_tp", jax.devices()),
    ]:
        new_mesh = mesh_lib.make_mesh(sizes, devices)
        fresh, shardings = create_train_state(lambda: tiny.t5_init(jax.random.PRNGKey(99)), tiny.OPTIMIZER, new_mesh, rules)
        restored, config, data_state = Checkpointer(tmp_path / "ckpt").restore(abstract_like(fresh, shardings))
        assert config == {"lr": 1e-3, "mesh": [2, 4, 1]} and data_state == {"iterator": {"position": 17}}
        equal = jax.tree_util.tree_map(lambda a, b: bool(np.array_equal(np.asarray(a), b)), restored, reference)
        assert all(jax.tree_util.tree_leaves(equal))
        # The restored arrays live on the new mesh with the new shardings.
        expected = shd.shard_shapes(jax.tree_util.tree_map(lambda s, x: jax.ShapeDtypeStruct(np.shape(x), x.dtype, sharding=s), shardings, reference))
        assert shd.shard_shapes(restored) == expected
        if rules == "fsdp_tp":
            assert shd.shard_shapes(restored.params)["shared"]["embedding"] == (64, 32)


def test_interval_and_retention(tmp_path):
    mesh = mesh_lib.make_mesh({"data": 8})
    state, _ = create_train_state(tiny.de_init, tiny.OPTIMIZER, mesh, "data_parallel")
    ckpt = Checkpointer(tmp_path / "ckpt", save_interval_steps=3, max_to_keep=2)
    saved = [step for step in range(1, 10) if ckpt.save(step, state)]
    ckpt.close()
    assert saved == [1, 3, 6, 9]  # the first save, then every 3rd step
    assert Checkpointer(tmp_path / "ckpt").all_steps() == [6, 9]
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        Checkpointer(tmp_path / "empty").restore(None)


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _worker(*args: str, devices: int = 8, **popen) -> subprocess.Popen:
    return launch([sys.executable, "-m", "tests.parallel.train_worker", *args], cwd=ROOT, env=_env(devices), **popen)


def _lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def _finish(proc: subprocess.Popen, timeout: float = 240) -> tuple[int, str, str]:
    return finish(proc, timeout)


@pytest.mark.slow
def test_sigterm_saves_and_training_resumes_exactly(tmp_path):
    rc, out, err = _finish(_worker("--ckpt", str(tmp_path / "straight"), "--steps", "6", "--out", str(tmp_path / "straight.npz")))
    assert rc == 0, err[-2000:]
    straight = _lines(out)

    proc = _worker("--ckpt", str(tmp_path / "killed"), "--steps", "6", "--sleep", "1.0")
    try:
        seen = []
        deadline = time.time() + 180
        while time.time() < deadline:  # wait for two finished steps, then preempt
            line = proc.stdout.readline()
            if not line:
                break
            if line.startswith("{"):
                seen.append(json.loads(line))
                if len(seen) == 2:
                    proc.send_signal(signal.SIGTERM)
                    break
        rc, out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    records = seen + _lines(out)
    assert rc == 0, err[-2000:]
    assert records[-1]["reason"] == "preempted"
    stopped_at = records[-1]["step"]
    assert 2 <= stopped_at < 6
    assert stopped_at == max(r["step"] for r in records if "loss" in r)
    assert Checkpointer(tmp_path / "killed").latest_step() == stopped_at

    rc, out, err = _finish(_worker("--ckpt", str(tmp_path / "killed"), "--steps", "6", "--out", str(tmp_path / "resumed.npz")))
    assert rc == 0, err[-2000:]
    resumed = _lines(out)
    assert resumed[0]["step"] == stopped_at + 1  # nothing recomputed, nothing skipped
    by_step = {r["step"]: r["loss"] for r in straight if "loss" in r}
    for r in resumed:
        if "loss" in r:
            assert abs(r["loss"] - by_step[r["step"]]) <= 1e-6, (r, by_step)
    a, b = np.load(tmp_path / "straight.npz"), np.load(tmp_path / "resumed.npz")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a.files) <= 1e-6


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    rc, out, err = _finish(_worker("--ckpt", str(tmp_path / "ckpt"), "--steps", "8", "--save-every", "2", "--nan-at", "4"))
    assert rc == 3, err[-2000:]
    message = _lines(out)[-1]["message"]
    assert "loss is nan at step 5" in message and "step 4" in message
    assert Checkpointer(tmp_path / "ckpt").latest_step() == 4


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    rc, out, err = _finish(_worker("--ckpt", str(tmp_path / "one"), "--steps", "3", "--out", str(tmp_path / "one.npz")))
    assert rc == 0, err[-2000:]
    single = [r["loss"] for r in _lines(out) if "loss" in r]

    port = free_port()
    procs = [_worker("--ckpt", str(tmp_path / "two"), "--steps", "3", "--out", str(tmp_path / "two.npz"), *join_flags(port, i),
                     devices=4) for i in range(2)]
    results = finish_all(procs, timeout=240)
    for rc, out, err in results:
        assert rc == 0, err[-3000:]
    for _, out, _ in results:
        losses = [r["loss"] for r in _lines(out) if "loss" in r]
        np.testing.assert_allclose(losses, single, rtol=1e-6)
    a, b = np.load(tmp_path / "one.npz"), np.load(tmp_path / "two.npz")
    assert max(float(np.abs(a[k] - b[k]).max()) for k in a.files) <= 1e-5
