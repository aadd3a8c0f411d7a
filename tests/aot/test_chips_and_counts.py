"""Topology names, and what is counted from compiled HLO (on the CPU backend here; the TPU
programs are in test_compile_tpu.py): matmul FLOPs with loops weighted by their trip counts,
slices counted by what they touch, collectives with their group sizes."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from umr_jax.aot.analysis import count_hlo, roofline
from umr_jax.aot.chips import CHIPS, parse_topology
from umr_jax.errors import UsageError


@pytest.mark.parametrize("name,topology,chips", [
    ("v5e-16", "v5e:4x4", 16), ("v5e-8", "v5e:2x4", 8), ("v5e-1", "v5e:1x1", 1), ("v6e-256", "v6e:16x16", 256),
    ("v4-8", "v4:2x2x1", 4), ("v4-32", "v4:2x2x4", 16), ("v4-128", "v4:4x4x4", 64), ("v5p-8", "v5p:2x2x1", 4),
    ("v5p-64", "v5p:2x4x4", 32), ("v5litepod-16", "v5e:4x4", 16), ("v5e:2x4", "v5e:2x4", 8), ("V4:2X2X2", "v4:2x2x2", 8),
])
def test_accelerator_types_map_to_topologies(name, topology, chips):
    t = parse_topology(name)
    assert (t.topology_name, t.chips) == (topology, chips)


def test_multislice_by_prefix_or_flag():
    assert parse_topology("2xv5e-16").chips == 32 and parse_topology("2xv5e-16").num_slices == 2
    assert parse_topology("v5p-8", num_slices=4).chips == 16


@pytest.mark.parametrize("name,message", [
    ("v9-8", "unknown TPU generation 'v9'"), ("tpu-16", "unknown topology 'tpu-16'"), ("v5e-12", "power-of-two"),
    ("v4-4", "smallest v4 slice has 4 chips"), ("v4-3", "count TensorCores"), ("v5e:4x4x4", "2-dimensional"),
    ("v5e-512", "at most 256 chips"),
])
def test_bad_topologies_are_refused_by_name(name, message):
    with pytest.raises(UsageError, match=message):
        parse_topology(name)


def _compiled_text(f, *args) -> str:
    return jax.jit(f).lower(*args).compile().as_text()


def test_scanned_matmuls_are_counted_once_per_iteration():
    def f(x, ws):
        return jax.lax.scan(lambda h, w: (jnp.tanh(h @ w), None), x, ws)[0]

    x, ws = jnp.ones((64, 128)), jnp.ones((7, 128, 128))
    counts = count_hlo(_compiled_text(f, x, ws), devices=1)
    assert counts.unknown_loops == 0
    assert counts.matmul_flops == 7 * 2 * 64 * 128 * 128  # XLA's cost analysis says 1/7 of this
    assert jax.jit(f).lower(x, ws).compile().cost_analysis()["flops"] < counts.matmul_flops / 3


def test_nested_loops_multiply_and_batched_dots_count_their_batch():
    def f(x, ws):
        def outer(h, w):
            return jax.lax.fori_loop(0, 3, lambda i, g: jnp.einsum("bij,bjk->bik", g, w), h), None

        return jax.lax.scan(outer, x, ws)[0]

    x, ws = jnp.ones((4, 16, 32)), jnp.ones((5, 4, 32, 32))
    assert count_hlo(_compiled_text(f, x, ws), devices=1).matmul_flops == 5 * 3 * 4 * 2 * 16 * 32 * 32


def test_a_scanned_stack_is_read_a_slice_per_iteration():
    """HBM traffic: each iteration reads one [128, 128] slice of the stack, not the stack."""
    def f(x, ws):
        return jax.lax.scan(lambda h, w: (h @ w, None), x, ws)[0]

    small = count_hlo(_compiled_text(f, jnp.ones((8, 128)), jnp.ones((4, 128, 128))), 1).hbm_bytes
    large = count_hlo(_compiled_text(f, jnp.ones((8, 128)), jnp.ones((64, 128, 128))), 1).hbm_bytes
    per_layer = 128 * 128 * 4
    # 16x the layers costs about 16x the traffic (linear), not 256x (the whole stack every iteration).
    assert large / small < 20 and large > 60 * per_layer


def test_roofline_names_the_bound_and_mfu():
    chip = CHIPS["v5e"]
    e = roofline(chip, flops_per_chip=197e12, bytes_accessed=819e9 / 2, collective_traffic=0, model_flops_per_chip=98.5e12)
    assert e["bound"] == "compute" and e["step_s"] == pytest.approx(1.0) and e["mfu"] == pytest.approx(0.5)
    e = roofline(chip, flops_per_chip=1e12, bytes_accessed=819e9, collective_traffic=400e9, model_flops_per_chip=1e12)
    assert e["bound"] == "HBM" and e["step_s"] == pytest.approx(2.0)


def test_collectives_are_counted_with_bytes_on_eight_devices():
    """On the 8 simulated CPU devices: a psum over 8 devices of a [1024] f32 (4 kB) vector."""
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

    devices = jax.devices()
    if len(devices) < 8:
        pytest.skip("needs XLA_FLAGS=--xla_force_host_platform_device_count=8")
    mesh = Mesh(np.array(devices[:8]), ("d",))
    x = jax.device_put(jnp.ones((8, 1024)), NamedSharding(mesh, P("d")))
    text = jax.jit(lambda x: x.sum(0), out_shardings=NamedSharding(mesh, P())).lower(x).compile().as_text()
    counts = count_hlo(text, devices=8)
    (kind, c), = counts.collectives.items()
    assert kind in ("all-reduce", "reduce-scatter", "all-gather") and c["count"] >= 1 and c["bytes"] >= 1024


def test_without_libtpu_the_error_says_how_to_install_it(monkeypatch):
    import importlib.util

    from umr_jax.aot import chips

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "libtpu" else real(name, *a))
    with pytest.raises(UsageError, match=r'pip install -e "\.\[tpu\]"'):
        chips.check_tpu_runtime()


def test_fit_candidates_shard_more_as_they_go():
    from umr_jax.aot.cli import candidates

    assert candidates(16, "score") == [("data=-1,fsdp=1,model=1", "data_parallel"), ("data=1,fsdp=-1,model=1", "fsdp"),
                                       ("data=1,fsdp=8,model=2", "fsdp_tp"), ("data=1,fsdp=4,model=4", "fsdp_tp"),
                                       ("data=1,fsdp=2,model=8", "fsdp_tp")]


def test_an_unwritable_json_output_is_refused_before_compiling(tmp_path, capsys):
    from umr_jax import cli

    folder = tmp_path / "a-folder"
    folder.mkdir()
    from pathlib import Path

    config = Path(__file__).resolve().parents[2] / "configs" / "demo.py"
    rc = cli.main(["compile", "--config", str(config), "--topology", "v5e-4", "--json", str(folder)])
    err = capsys.readouterr().err
    assert rc == 1 and "is a folder; expected a file path" in err and "Traceback" not in err and "compiling" not in err
