"""Meshes, rule sets and the sharded train step: equal numbers on every mesh, really sharded params."""

from __future__ import annotations

import jax
import numpy as np
import pytest

from umr_jax.parallel import mesh as mesh_lib
from umr_jax.parallel import sharding as shd
from umr_jax.training.state import create_train_state, make_train_step
from tests.parallel import tiny


def test_resolve_axis_sizes():
    assert mesh_lib.resolve_axis_sizes({"data": -1, "fsdp": 2}, 8) == {"data": 4, "fsdp": 2, "model": 1}
    assert mesh_lib.resolve_axis_sizes({"data": 2, "fsdp": -1, "model": 2}, 8) == {"data": 2, "fsdp": 2, "model": 2}
    with pytest.raises(ValueError, match="at most one"):
        mesh_lib.resolve_axis_sizes({"data": -1, "fsdp": -1}, 8)
    with pytest.raises(ValueError, match="not divisible"):
        mesh_lib.resolve_axis_sizes({"data": -1, "fsdp": 3}, 8)
    with pytest.raises(ValueError, match="needs 4 devices"):
        mesh_lib.resolve_axis_sizes({"data": 2, "fsdp": 2}, 8)
    with pytest.raises(ValueError, match="unknown mesh axes"):
        mesh_lib.resolve_axis_sizes({"tensor": 2}, 8)


def test_make_mesh_shapes():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": -1, "model": 2})
    assert mesh.axis_names == ("data", "fsdp", "model")
    assert dict(mesh.shape) == {"data": 2, "fsdp": 2, "model": 2}
    one = mesh_lib.make_mesh({"data": 1}, jax.devices()[:1])
    assert one.devices.size == 1


def test_initialize_distributed_is_a_noop_on_one_host(monkeypatch):
    for var in ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "TPU_ACCELERATOR_TYPE", "MEGASCALE_COORDINATOR_ADDRESS"):
        monkeypatch.delenv(var, raising=False)
    assert mesh_lib.initialize_distributed() is False
    with pytest.raises(ValueError, match="together"):
        mesh_lib.initialize_distributed(mesh_lib.DistributedConfig(coordinator="127.0.0.1:1234"))


def test_unknown_rule_set():
    with pytest.raises(ValueError, match="unknown sharding rule set 'zero9'"):
        shd.get_rules("zero9")


MESHES = [
    ("1-device", {"data": 1}, "data_parallel"),
    ("dp-8", {"data": 8, "fsdp": 1, "model": 1}, "data_parallel"),
    ("fsdp-2x4", {"data": 2, "fsdp": 4, "model": 1}, "fsdp"),
    ("fsdp-tp-2x2x2", {"data": 2, "fsdp": 2, "model": 2}, "fsdp_tp"),
]
MODELS = {
    "dual-encoder": (tiny.de_init, tiny.de_loss, tiny.de_batch),
    "mt5": (tiny.t5_init, tiny.t5_loss, tiny.t5_batch),
}


def _one_step(model: str, sizes: dict, rules: str):
    init, loss_fn, make_batch = MODELS[model]
    devices = jax.devices()[:1] if sizes == {"data": 1} else jax.devices()
    mesh = mesh_lib.make_mesh(sizes, devices)
    state, shardings = create_train_state(init, tiny.OPTIMIZER, mesh, rules)
    batch = shd.host_batch_to_global(make_batch(), mesh)
    step = make_train_step(loss_fn, tiny.OPTIMIZER, mesh, shardings, shd.batch_sharding(mesh), rules)
    rng = jax.random.PRNGKey(7)
    state, m1 = step(state, batch, rng)
    state, m2 = step(state, shd.host_batch_to_global(make_batch(1), mesh), jax.random.fold_in(rng, 1))
    return state, (float(m1["loss"]), float(m2["loss"]), float(m1["grad_norm"]))


@pytest.fixture(scope="module")
def single_device_reference():
    return {model: _one_step(model, {"data": 1}, "data_parallel") for model in MODELS}


@pytest.mark.parametrize("model", sorted(MODELS))
@pytest.mark.parametrize("name,sizes,rules", MESHES[1:], ids=[m[0] for m in MESHES[1:]])
def test_step_equals_single_device(single_device_reference, model, name, sizes, rules):
    ref_state, ref_metrics = single_device_reference[model]
    state, metrics = _one_step(model, sizes, rules)
    np.testing.assert_allclose(metrics, ref_metrics, rtol=1e-5, atol=1e-5)
    diffs = jax.tree_util.tree_map(lambda a, b: float(np.abs(np.asarray(a) - np.asarray(b)).max()), state.params, ref_state.params)
    assert max(jax.tree_util.tree_leaves(diffs)) <= 1e-5
    assert int(state.step) == 2


def test_params_really_are_sharded():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4, "model": 1})
    state, _ = create_train_state(tiny.de_init, tiny.OPTIMIZER, mesh, "fsdp")
    shapes = shd.shard_shapes(state.params)
    words = shapes["query_tower"]["embeddings"]["word_embeddings"]
    assert words == (96, 8)  # embed 32 split over fsdp=4
    assert shapes["query_tower"]["layers_0"]["intermediate"]["kernel"] == (8, 48)
    # Adam moments are sharded exactly like the params they track.
    mu = state.opt_state[1][0].mu
    assert shd.shard_shapes(mu)["query_tower"]["embeddings"]["word_embeddings"] == (96, 8)

    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    state, _ = create_train_state(tiny.t5_init, tiny.OPTIMIZER, mesh, "fsdp_tp")
    shapes = shd.shard_shapes(state.params)
    assert shapes["shared"]["embedding"] == (64, 16)  # vocab over model, embed over fsdp
    assert shapes["lm_head"] == (64, 16)
    assert shapes["encoder"]["layers_0"]["self_attention"]["q"]["kernel"] == (16, 2, 8)  # heads over model
    assert shapes["encoder"]["layers_0"]["mlp"]["wi_0"]["kernel"] == (16, 24)  # mlp over model
    assert shapes["encoder"]["relpos_bias"]["embedding"] == (32, 2)

    mesh = mesh_lib.make_mesh({"data": 8})
    state, _ = create_train_state(tiny.t5_init, tiny.OPTIMIZER, mesh, "data_parallel")
    assert shd.shard_shapes(state.params)["shared"]["embedding"] == (128, 32)  # replicated


def test_host_params_placed_without_gathering():
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 2, "model": 2})
    host = jax.tree_util.tree_map(np.asarray, __import__("flax").linen.meta.unbox(tiny.t5_init()))
    shardings = shd.abstract_shardings(
        __import__("umr_jax.models", fromlist=["T5EncoderDecoder"]).T5EncoderDecoder(tiny.MT5),
        (np.ones((1, 4), np.int32), np.ones((1, 4), np.int32), np.ones((1, 4), np.int32)),
        mesh,
        "fsdp_tp",
    )
    placed = shd.place_host_params(host, shardings)
    assert shd.shard_shapes(placed)["shared"]["embedding"] == (64, 16)
    np.testing.assert_array_equal(np.asarray(placed["shared"]["embedding"]), host["shared"]["embedding"])
