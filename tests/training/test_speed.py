"""A training run's speed: the meter's rates on hand-made timings (compile steps apart, examples
and tokens per step, MFU against a peak, the time left), what the loop hands it, the chips'
peaks, the FLOP count, the log record, the resolved config.json and the progress bar."""

from __future__ import annotations

import io
import json
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from umr_jax.models import BertConfig
from umr_jax.models.flops import dual_encoder_step_flops, tower_forward_flops
from umr_jax.parallel.checkpoint import Checkpointer
from umr_jax.parallel.peaks import peak_flops
from umr_jax.runtime import Runtime, runtime_config
from umr_jax.training import common, summaries
from umr_jax.training.progress import TrainingProgress
from umr_jax.training.runner import train_loop
from umr_jax.training.speed import StepMeter, describe


class Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _batch(q_len: int, p_len: int, q_tokens: int, p_tokens: int) -> tuple[dict, dict]:
    """A host batch of 2 queries and 4 passages with `q_tokens` / `p_tokens` non-pad tokens in
    all, and the 'global' arrays (only their shapes matter to the meter)."""
    q_mask, p_mask = np.zeros((2, q_len), np.int32), np.zeros((4, p_len), np.int32)
    q_mask.flat[:q_tokens], p_mask.flat[:p_tokens] = 1, 1
    host = {"query_ids": q_mask * 7, "query_mask": q_mask, "passage_ids": p_mask * 7, "passage_mask": p_mask}
    return host, {k: np.zeros_like(v) for k, v in host.items()}


def test_meter_rates_leave_compile_steps_out_and_eta_runs_down_to_zero():
    clock = Clock()
    flops_seen = []

    def step_flops(shapes):
        flops_seen.append(shapes)
        return 1e9 * shapes["query_ids"][1]

    meter = StepMeter(total_steps=6, examples_per_step=2, step_flops=step_flops, peak_flops=1e10, clock=clock)
    short, long = _batch(8, 16, 10, 40), _batch(16, 16, 20, 50)
    # step seconds: 5.0 (compiles), 0.5, 0.5, 3.0 (a new shape: compiles), 0.25, 0.25
    timeline = [(short, 5.0), (short, 0.5), (short, 0.5), (long, 3.0), (long, 0.25), (long, 0.25)]
    reports = []
    for step, ((host, glob), seconds) in enumerate(timeline, 1):
        info = meter.batch_info(host, glob)
        clock.now += seconds
        meter.record(step, seconds, info)  # as the loop does: once the step's loss is on the host
        if step in (1, 3, 4, 6):
            reports.append(meter.report(step))
        clock.now += 0.1  # then 0.1 s of callbacks (evaluation, checkpoint)
    assert len(flops_seen) == 2  # counted once per shape
    first, second, third, last = reports
    # Step 1 compiled: no rate yet, no time left known, its seconds counted apart.
    assert first == {"compile_s": 5.0}
    assert second["steps_per_s"] == pytest.approx(2 / 1.0)
    assert second["examples_per_s"] == pytest.approx(second["steps_per_s"] * 2)
    assert second["tokens_per_s"] == pytest.approx(2 * 50 / 1.0)
    assert second["padded_tokens_per_s"] == pytest.approx(2 * (2 * 8 + 4 * 16) / 1.0)
    assert second["mfu"] == pytest.approx(2 * 8e9 / 1.0 / 1e10)
    # Steps 2-3 took 1.1 s of wall time (with step 2's 0.1 s of callbacks): 3 steps left at 0.55 s.
    assert second["eta_s"] == pytest.approx(3 * 0.55)
    # Step 4 alone compiled: no rate for that interval, but the time left and compile time move on.
    assert "steps_per_s" not in third and third["compile_s"] == pytest.approx(8.0)
    # The wall-clock pace includes step 4's compile: 2 steps left at (1.1 + 0.1 + 3.0) / 3 s.
    assert third["eta_s"] == pytest.approx(2 * 4.2 / 3)
    assert last["steps_per_s"] == pytest.approx(4.0) and last["eta_s"] == 0.0
    assert last["examples_per_s"] == pytest.approx(8.0)
    assert last["tokens_per_s"] == pytest.approx(2 * 70 / 0.5)
    assert meter.steps_per_second() == pytest.approx(4 / 1.5)
    line = describe(second)
    assert line.startswith("2 steps/s, 4.0 examples/s, 100 tokens/s (160 padded), MFU 160.0%, ETA 0:00:02")
    assert describe(first) == "compiling: 5.0 s so far"


def test_meter_without_masks_or_peak_reports_no_tokens_and_no_mfu():
    meter = StepMeter(total_steps=3, examples_per_step=4, clock=Clock())
    for step in (1, 2, 3):
        meter.record(step, 0.5, meter.batch_info({"x": np.zeros(4)}, {"x": np.zeros(4)}))
    report = meter.report(3)
    assert report["steps_per_s"] == pytest.approx(2.0) and report["examples_per_s"] == pytest.approx(8.0)
    assert not {"tokens_per_s", "padded_tokens_per_s", "mfu"} & set(report)


def test_the_loop_times_every_step_from_dispatch_to_loss_and_sees_each_batch():
    """The loop hands the meter every step (1, 2, ...), its batch's shapes and tokens, and a
    time that includes the step's own work; the first step of each shape is a compile step."""
    lengths = [4, 4, 8, 8, 8]

    class Batches:
        position = 0

        def __next__(self):
            mask = np.ones((2, lengths[self.position]), np.int32)
            mask[:, -1] = 0  # one pad token per row
            self.position += 1
            return {"query_ids": mask, "query_mask": mask}

        def get_state(self):
            return {"position": self.position}

        def set_state(self, state):
            self.position = state["position"]

    recorded = []

    class Meter(StepMeter):
        def record(self, step, seconds, info):
            recorded.append((step, seconds, info))
            super().record(step, seconds, info)

    @jax.jit
    def train_step(state, batch, rng):
        return {"w": state["w"] + 1}, {"loss": jnp.sum(batch["query_mask"]).astype(jnp.float32)}

    meter = Meter(total_steps=5, examples_per_step=2)
    sharding = {"w": jax.sharding.SingleDeviceSharding(jax.devices()[0])}
    import tempfile

    with tempfile.TemporaryDirectory() as folder:
        checkpointer = Checkpointer(folder, save_interval_steps=100, async_save=False)
        train_loop(state={"w": jnp.zeros(())}, state_shardings=sharding, train_step=train_step, data=Batches(),
                   to_global=lambda b: {k: jnp.asarray(v) for k, v in b.items()}, total_steps=5,
                   checkpointer=checkpointer, rng=jax.random.PRNGKey(0), meter=meter)
        checkpointer.close()
    assert [step for step, _, _ in recorded] == [1, 2, 3, 4, 5]
    assert all(seconds > 0 for _, seconds, _ in recorded)
    assert [info.tokens for _, _, info in recorded] == [2 * (n - 1) for n in lengths]
    assert [info.padded_tokens for _, _, info in recorded] == [2 * n for n in lengths]
    assert meter.compiled_steps == 2  # lengths 4 and 8
    assert meter.compile_seconds >= recorded[0][1] + recorded[2][1] - 1e-9


def test_peaks_of_device_kinds():
    device = lambda platform, kind: types.SimpleNamespace(platform=platform, device_kind=kind)  # noqa: E731
    assert peak_flops(device("tpu", "TPU v5 lite")) == 197e12
    assert peak_flops(device("tpu", "TPU v4")) == 275e12
    assert peak_flops(device("tpu", "TPU v5")) == 459e12
    assert peak_flops(device("tpu", "TPU v6 lite")) == 918e12
    assert peak_flops(device("tpu", "TPU v3")) is None  # no published figure here: no MFU
    assert peak_flops(device("gpu", "NVIDIA H100 80GB HBM3")) == 989e12
    assert peak_flops(device("gpu", "NVIDIA H100 PCIe")) == 756e12
    assert peak_flops(device("gpu", "NVIDIA A100-SXM4-80GB")) == 312e12
    assert peak_flops(jax.devices()[0]) is None  # the tests' CPU devices


def test_step_flops_are_three_forwards_of_both_towers():
    cfg = BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=48)
    # Per layer and token: q, k, v, out projections (4 d^2) and the MLP (2 d ff), 2 FLOPs per
    # multiply-add; attention scores and mixing 4 L d per token.
    per_layer = lambda length: 2 * length * (4 * 32 * 32 + 2 * 32 * 48) + 4 * length * length * 32  # noqa: E731
    assert tower_forward_flops(cfg, 16) == 2 * per_layer(16)
    assert dual_encoder_step_flops(cfg, 4, 16, 8, 64) == 3 * (4 * 2 * per_layer(16) + 8 * 2 * per_layer(64))


def test_metrics_log_writes_speed_apart_from_the_metrics(tmp_path):
    log = common.MetricsLog(tmp_path)
    log.write(3, {"loss": 0.5}, speed={"steps_per_s": 2.0, "eta_s": 4.5})
    log.write(3, {"rank": 1.5}, prefix="dev")
    log.close()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert records[0]["loss"] == 0.5 and records[0]["speed"] == {"steps_per_s": 2.0, "eta_s": 4.5}
    assert "speed" not in records[1]
    assert summaries.read_scalars(tmp_path / "tensorboard") == {
        "train/loss": [(3, 0.5)], "speed/steps_per_s": [(3, 2.0)], "speed/eta_s": [(3, 4.5)], "dev/rank": [(3, 1.5)]}


def _config():
    return ml_collections.ConfigDict({"output_dir": "runs/elsewhere", "train": {"learning_rate": 0.1},
                                      "runtime": runtime_config()})


def test_resolved_config_has_the_output_folder_and_the_mesh_flags(tmp_path):
    config = _config()
    plain = common.resolved_config(config, tmp_path / "run", Runtime.from_config(config))
    assert plain.to_dict() == {**config.to_dict(), "output_dir": str(tmp_path / "run")}
    assert config.output_dir == "runs/elsewhere"  # a copy
    flags = types.SimpleNamespace(mesh="data=2,fsdp=-1", rules="fsdp")
    flagged = common.resolved_config(config, tmp_path / "run", Runtime.from_config(config, flags, role="train"))
    assert flagged.runtime.train.to_dict() == {"mesh": "data=2,fsdp=-1", "rules": "fsdp"}
    assert flagged.runtime.score.to_dict() == config.runtime.score.to_dict()
    # A config without a runtime section gets one only when the flags changed the train role.
    bare = ml_collections.ConfigDict({"train": {"learning_rate": 0.1}})
    assert "runtime" not in common.resolved_config(bare, tmp_path, Runtime.from_config(bare))
    assert common.resolved_config(bare, tmp_path, Runtime.from_config(bare, flags, role="train")).runtime.train.rules == "fsdp"


def test_config_json_on_a_resume_with_another_config_keeps_the_replaced_one(tmp_path):
    config = _config()
    assert common.write_config(tmp_path, config) is None
    assert json.loads((tmp_path / "config.json").read_text()) == config.to_dict()
    # Resumed with a change that cannot alter a step (log cadence): config.json is replaced alone.
    config.train.log_every = 5
    assert common.write_config(tmp_path, config, resumed_step=4) is None
    assert json.loads((tmp_path / "config.json").read_text())["train"]["log_every"] == 5
    # Resumed (--resume-anyway) with another learning rate: steps 1-4 were made with the old one.
    first = (tmp_path / "config.json").read_bytes()
    config.train.learning_rate = 0.01
    kept = common.write_config(tmp_path, config, resumed_step=4)
    assert kept == tmp_path / "config.until-step-4.json" and kept.read_bytes() == first
    assert json.loads((tmp_path / "config.json").read_text())["train"]["learning_rate"] == 0.01


def test_progress_bar_shows_step_rate_time_left_and_loss():
    from rich.console import Console

    out = io.StringIO()
    bar = TrainingProgress(Console(file=out, force_terminal=True, width=160))
    bar.start(10, done_steps=2)
    bar.update(3, loss=0.4321, steps_per_s=2.5, eta_s=2.8)
    bar.close()
    text = out.getvalue()
    assert "3/10" in text and "2.5 steps/s" in text and "~0:00:03 left" in text and "loss 0.4321" in text
    assert TrainingProgress.for_terminal(enabled=False) is None
    assert TrainingProgress.for_terminal() is None  # pytest's stderr is not a terminal
