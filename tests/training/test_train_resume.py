"""Resuming `umr-jax train`: a checkpoint is resumed only with the config it was made with (or
with --resume-anyway), and a run killed with SIGKILL and resumed leaves the same metrics.jsonl,
TensorBoard series and weights as a run that was never interrupted."""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.multiprocess import finish, launch
from umr_jax import cli
from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.errors import InputError
from umr_jax.parallel.checkpoint import Checkpointer, latest_saved_config
from umr_jax.training import common
from umr_jax.training.runner import RESUMABLE_WITH_CHANGES, config_differences, migrate_config, train_loop
from umr_jax.runtime import runtime_config

ROOT = Path(__file__).resolve().parents[2]
Q_TRAIN, Q_DEV, CANDIDATES = 48, 8, 6


# ---- reading what TensorBoard reads ---------------------------------------------------------

def tensorboard_series(folder: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard shows a run folder: the event files in name order
    (the order TensorBoard reads them), each record's CRCs checked, and a SessionLog START event
    at step s discarding every event read before it with step >= s (TensorBoard's purge of
    orphaned data, which tensorboardX's `purge_step` relies on). A record a kill cut short at
    the end of a file is skipped, as TensorBoard skips it."""
    from tensorboardX.proto.event_pb2 import Event, SessionLog
    from tensorboardX.record_writer import masked_crc32c

    series: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            header = data[pos : pos + 8]
            (length,) = struct.unpack("<Q", header)
            assert struct.unpack("<I", data[pos + 8 : pos + 12])[0] == masked_crc32c(header), f"{path}@{pos}: header CRC"
            if pos + 12 + length + 4 > len(data):
                break
            body = data[pos + 12 : pos + 12 + length]
            assert struct.unpack("<I", data[pos + 12 + length : pos + 16 + length])[0] == masked_crc32c(body), f"{path}@{pos}: CRC"
            pos += 16 + length
            event = Event.FromString(body)
            if event.HasField("session_log") and event.session_log.status == SessionLog.START:
                series = {tag: [(s, v) for s, v in points if s < event.step] for tag, points in series.items()}
            for value in event.summary.value:
                series.setdefault(value.tag, []).append((event.step, value.simple_value))
    return series


def read_metrics(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# ---- the allow-list and the comparison --------------------------------------------------------

def test_config_differences_name_every_key_but_the_allow_listed_ones():
    saved = {"output_dir": "runs/a", "mesh": {"data": -1}, "sharding_rules": [("batch", ("data", "fsdp"))],
             "data": {"subset_size": 0, "pseudo_labels": "p.jsonl"},
             "train": {"learning_rate": 3e-3, "log_every": 10, "eval_every": 500, "checkpoint_every": 500,
                       "keep_checkpoints": 3, "epochs": 10}}
    requested = json.loads(json.dumps(saved))  # as a checkpoint holds it: tuples are lists
    assert config_differences(saved, requested) == []
    requested["train"].update(learning_rate=1e-3, log_every=1, eval_every=7, checkpoint_every=9, keep_checkpoints=1)
    requested["data"].update(subset_size=1000, fixed_lengths=True)
    requested["output_dir"] = "runs/b"
    assert config_differences(saved, requested) == [
        "data.fixed_lengths: (absent) -> True",
        "data.subset_size: 0 -> 1000",
        "train.learning_rate: 0.003 -> 0.001",
    ]
    assert RESUMABLE_WITH_CHANGES == {"output_dir", "train.log_every", "train.eval_every", "train.checkpoint_every",
                                      "train.keep_checkpoints"}
    # Keys added to the configs since: a checkpoint without them resumes at their old behaviour only.
    added = json.loads(json.dumps(saved))
    added["train"].update(steps=0, warmup_fraction=None, early_stopping_patience=0)
    added["data"]["dev_split"] = 0
    assert config_differences(saved, added) == []
    added["train"].update(steps=500, warmup_fraction=0.1)
    assert config_differences(saved, added) == ["train.steps: (absent) -> 500", "train.warmup_fraction: (absent) -> 0.1"]


def old_style(config: dict, mesh: dict | None = None, rules="data_parallel") -> dict:
    """`config` as the code before the runtime object saved it with its checkpoints (git log -S
    sharding_rules): no `runtime` section; the train mesh as a top-level `mesh` dict (the configs
    wrote `c.mesh = dict(data=-1, fsdp=1, model=1)`) and the rule set as `sharding_rules`."""
    old = {key: value for key, value in config.items() if key != "runtime"}
    old["mesh"] = dict(data=-1, fsdp=1, model=1) if mesh is None else mesh
    old["sharding_rules"] = rules
    return old


def test_an_old_config_compares_as_its_runtime_train_mesh_and_rules():
    current = {"train": {"learning_rate": 1.0}, "runtime": runtime_config().to_dict()}
    assert config_differences(old_style(current), current) == []
    assert config_differences(old_style(current, mesh={"data": -1}), current) == []  # the axes left out were 1
    fsdp = {"train": {"learning_rate": 1.0}, "runtime": runtime_config(train=dict(mesh="fsdp=4,data=-1", rules="fsdp")).to_dict()}
    assert config_differences(old_style(current, mesh={"data": -1, "fsdp": 4, "model": 1}, rules="fsdp"), fsdp) == []
    assert config_differences(old_style(current), fsdp) == [
        "runtime.train.mesh: 'data=-1,fsdp=1,model=1' -> 'data=-1,fsdp=4,model=1'",
        "runtime.train.rules: 'data_parallel' -> 'fsdp'"]
    pairs = [["batch", ["data", "fsdp"]], ["embed", None]]
    with_pairs = {"train": {"learning_rate": 1.0}, "runtime": runtime_config(train=dict(rules=pairs)).to_dict()}
    assert config_differences(old_style(current, rules=pairs), with_pairs) == []
    # The other roles of an old config are the defaults (the old code had no such settings).
    scored = {"train": {"learning_rate": 1.0}, "runtime": runtime_config(score=dict(mesh="data=2,fsdp=-1")).to_dict()}
    assert config_differences(old_style(current), scored) == ["runtime.score.mesh: 'data=1,fsdp=-1,model=1' -> 'data=2,fsdp=-1,model=1'"]
    assert migrate_config(current) is current and migrate_config({"train": {}}) == {"train": {}}


def test_an_old_run_folder_resumes_with_the_same_settings_and_is_refused_with_others(tmp_path, caplog):
    """A checkpoint whose config the old code wrote (top-level mesh and sharding_rules) resumes
    under the current spelling of the same settings without --resume-anyway; another mesh or
    rule set is refused, naming the difference."""
    current = {"train": {"learning_rate": 1.0, "log_every": 1}, "data": {"subset_size": 0}, "runtime": runtime_config().to_dict()}
    w, steps = _toy_run(tmp_path, old_style(current), 4)  # what the old code saved, checkpoints at steps 2 and 4
    assert (w, steps) == (1 + 2 + 3 + 4, [1, 2, 3, 4])
    saved = latest_saved_config(tmp_path)
    assert saved[0] == 4 and "runtime" not in saved[1] and saved[1]["mesh"] == {"data": -1, "fsdp": 1, "model": 1}

    other = {**current, "runtime": runtime_config(train=dict(mesh="data=-1,fsdp=2,model=1")).to_dict()}
    with pytest.raises(InputError) as refused:
        _toy_run(tmp_path, other, 6)
    assert str(refused.value) == (
        f"{tmp_path}: the checkpoint of step 4 was made with another config (runtime.train.mesh: 'data=-1,fsdp=1,model=1' "
        "-> 'data=-1,fsdp=2,model=1'); rerun with the saved config, or pass --resume-anyway to continue with this one")
    with pytest.raises(InputError, match=r"\(runtime.train.rules: 'data_parallel' -> 'fsdp'\)"):
        _toy_run(tmp_path, {**current, "runtime": runtime_config(train=dict(rules="fsdp")).to_dict()}, 6)

    caplog.set_level(logging.WARNING, logger="umr_jax.training.runner")
    assert _toy_run(tmp_path, current, 6) == (1 + 2 + 3 + 4 + 5 + 6, [5, 6])  # resumed, and not a word
    assert [r for r in caplog.records if r.name == "umr_jax.training.runner"] == []


class Batches:
    def __init__(self):
        self.position = 0

    def __next__(self) -> dict:
        self.position += 1
        return {"x": np.full((4,), self.position, np.float32)}

    def get_state(self) -> dict:
        return {"position": self.position}

    def set_state(self, state: dict) -> None:
        self.position = int(state["position"])


def _toy_run(folder: Path, config: dict, total_steps: int, **options):
    """train_loop on a toy step (w += batch * lr); returns (w, steps run)."""
    steps_run = []

    def train_step(state, batch, rng):
        steps_run.append(int(batch["x"][0]))
        return {"w": state["w"] + batch["x"] * config["train"]["learning_rate"]}, {"loss": jnp.float32(0.5)}

    sharding = {"w": jax.sharding.SingleDeviceSharding(jax.devices()[0])}
    checkpointer = Checkpointer(folder, save_interval_steps=2, max_to_keep=2, async_save=False)
    try:
        state, _ = train_loop(state={"w": jnp.zeros(4)}, state_shardings=sharding, train_step=train_step, data=Batches(),
                              to_global=lambda b: {k: jnp.asarray(v) for k, v in b.items()}, total_steps=total_steps,
                              checkpointer=checkpointer, rng=jax.random.PRNGKey(0), config=config, **options)
    finally:
        checkpointer.close()
    return float(state["w"][0]), steps_run


def test_train_loop_refuses_another_config_unless_resume_anyway(tmp_path, caplog):
    base = {"train": {"learning_rate": 1.0, "log_every": 1}, "data": {"subset_size": 0}}
    assert _toy_run(tmp_path, base, 4) == (1 + 2 + 3 + 4, [1, 2, 3, 4])

    changed = {"train": {"learning_rate": 0.5, "log_every": 1}, "data": {"subset_size": 16}}
    with pytest.raises(InputError) as refused:
        _toy_run(tmp_path, changed, 6)
    assert str(refused.value) == (
        f"{tmp_path}: the checkpoint of step 4 was made with another config (data.subset_size: 0 -> 16; "
        "train.learning_rate: 1.0 -> 0.5); rerun with the saved config, or pass --resume-anyway to continue with this one")
    assert Checkpointer(tmp_path).all_steps() == [2, 4]  # nothing was run or saved

    caplog.set_level(logging.WARNING, logger="umr_jax.training.runner")
    cadence = {"train": {"learning_rate": 1.0, "log_every": 50}, "data": {"subset_size": 0}}
    assert _toy_run(tmp_path, cadence, 6) == (1 + 2 + 3 + 4 + 5 + 6, [5, 6])  # resumed, and not a word
    assert [r for r in caplog.records if r.name == "umr_jax.training.runner"] == []

    w, steps = _toy_run(tmp_path, changed, 8, resume_anyway=True)
    assert (w, steps) == (21 + (7 + 8) * 0.5, [7, 8])
    assert [r.getMessage() for r in caplog.records if r.name == "umr_jax.training.runner"] == [
        f"{tmp_path}: resuming step 6 with a config that differs from the checkpoint's: data.subset_size: 0 -> 16; "
        "train.learning_rate: 1.0 -> 0.5"]


# ---- the CLI ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pseudo_labels(tmp_path_factory):
    """Pseudo labels in the real format: synthetic LM scores over demo passages."""
    rng = np.random.default_rng(0)
    passages = list(formats.read_dpr_passages(demo_paths()["passages"]))[:300]
    questions = list(formats.read_questions(demo_paths()["train_questions"]))[: Q_TRAIN + Q_DEV]
    results = []
    for q in questions:
        picks = rng.choice(len(passages), CANDIDATES, replace=False)
        ctxs = tuple(formats.Context(passages[i].id, passages[i].title, passages[i].text, float(-rng.random() * 3))
                     for i in picks)
        results.append(formats.RetrievalResult(q.id, q.question, q.lang, ctxs, scorer="synthetic"))
    folder = tmp_path_factory.mktemp("labels")
    formats.write_retrieval(folder / "train.jsonl", results[:Q_TRAIN])
    formats.write_retrieval(folder / "dev.jsonl", results[Q_TRAIN:])
    return folder


def write_config(folder: Path, retriever: Path, labels: Path) -> Path:
    """A config file for `umr-jax train`: 48 questions, 8 per step, 4 epochs = 24 steps, a
    checkpoint every 3 steps, the dev set every 6, metrics every step."""
    config = {
        "objective": "distill", "output_dir": str(folder / "run"),
        "model": dict(init=str(retriever), init_passage="", pooling="mean", separate_towers=True, dtype="float32",
                      query_max_length=32, passage_max_length=64),
        "data": dict(pseudo_labels=str(labels / "train.jsonl"), dev_pseudo_labels=str(labels / "dev.jsonl"), top_k=100,
                     candidates_per_question=4, subset_size=0, fixed_lengths=True),
        "train": dict(questions_per_batch=8, epochs=4, learning_rate=3e-3, adam_eps=1e-8, weight_decay=0.0, warmup_steps=2,
                      grad_clip_norm=2.0, dropout=0.1, seed=1, temperature=10.0, student_scale=1.0, grad_cache=False,
                      query_chunk=8, passage_chunk=32, eval_every=6, checkpoint_every=3, keep_checkpoints=2, log_every=1),
        "runtime": runtime_config().to_dict(),
    }
    path = folder / "config.py"
    path.write_text(f"import ml_collections\n\n\ndef get_config():\n    return ml_collections.ConfigDict({config!r})\n")
    return path


def test_cli_refuses_a_changed_config_in_one_line(tmp_path, tiny_retriever, pseudo_labels, capsys):
    from umr_jax.config import load_config

    config_file = write_config(tmp_path, tiny_retriever, pseudo_labels)
    saved = load_config(config_file)
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpointer = Checkpointer(checkpoints, async_save=False)
    checkpointer.save(3, {"w": jnp.zeros(2)}, config=saved.to_dict(), force=True)
    checkpointer.close()
    listing = lambda: sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in checkpoints.rglob("*"))  # noqa: E731
    before = listing()

    rc = cli.main(["train", "--config", str(config_file), "train.learning_rate=0.001", "data.subset_size=16"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.splitlines()[-1:] == [
        f"umr-jax train: error: {checkpoints}: the checkpoint of step 3 was made with another config "
        "(data.subset_size: 0 -> 16; train.learning_rate: 0.003 -> 0.001); rerun with the saved config, "
        "or pass --resume-anyway to continue with this one"]
    assert not (tmp_path / "run" / "config.json").exists() and listing() == before  # refused; nothing written

    # Allow-listed keys pass the check; the run folder records the config it runs with.
    from umr_jax.config import apply_overrides

    apply_overrides(saved, ["train.log_every=5", "train.eval_every=2", "train.checkpoint_every=4", "train.keep_checkpoints=1",
                            f"output_dir={tmp_path / 'elsewhere'}"])
    common.check_resume(tmp_path / "run", saved)
    common.write_config(tmp_path / "run", saved)
    assert json.loads((tmp_path / "run" / "config.json").read_text()) == json.loads(json.dumps(saved.to_dict()))
    assert latest_saved_config(checkpoints)[0] == 3


def test_cli_checks_an_old_run_folder_under_the_current_spelling(tmp_path, tiny_retriever, pseudo_labels, capsys):
    """`umr-jax train`'s resume check on a run folder the old code made: the same settings pass,
    another rule set is refused in one line naming it."""
    from umr_jax.config import load_config

    config_file = write_config(tmp_path, tiny_retriever, pseudo_labels)
    config = load_config(config_file)
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpointer = Checkpointer(checkpoints, async_save=False)
    checkpointer.save(3, {"w": jnp.zeros(2)}, config=old_style(config.to_dict()), force=True)
    checkpointer.close()
    common.check_resume(tmp_path / "run", config)  # no error: the same settings

    rc = cli.main(["train", "--config", str(config_file), "runtime.train.rules=fsdp"])
    err = capsys.readouterr().err
    assert rc == 1 and "Traceback" not in err
    assert err.splitlines()[-1:] == [
        f"umr-jax train: error: {checkpoints}: the checkpoint of step 3 was made with another config "
        "(runtime.train.rules: 'data_parallel' -> 'fsdp'); rerun with the saved config, "
        "or pass --resume-anyway to continue with this one"]
    assert not (tmp_path / "run" / "config.json").exists()


def test_cli_passes_resume_anyway_to_the_trainer(tmp_path, tiny_retriever, pseudo_labels, monkeypatch, capsys):
    from umr_jax.training import distill

    seen = []
    monkeypatch.setattr(distill, "train", lambda config, **kw: seen.append(kw) or {"reason": "done", "steps": 3, "total_steps": 3})
    config_file = write_config(tmp_path, tiny_retriever, pseudo_labels)
    assert cli.main(["train", "--config", str(config_file)]) == 0
    assert cli.main(["train", "--config", str(config_file), "--resume-anyway"]) == 0
    assert [kw["resume_anyway"] for kw in seen] == [False, True]
    capsys.readouterr()
    for command in ("train", "loop", "scaling"):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert "--resume-anyway" in capsys.readouterr().out, command


# ---- metrics.jsonl and TensorBoard after a kill ------------------------------------------------

def test_metrics_of_a_killed_run_are_dropped_past_the_checkpoint(tmp_path, monkeypatch):
    run = tmp_path / "run"
    # Both runs within one second: the second event file must not overwrite the first (same time, same host).
    monkeypatch.setattr(time, "time", lambda: 1_700_000_000.25)
    first = common.MetricsLog(run)  # never closed: a SIGKILL closes nothing
    first.write(0, {"rank": 9.0}, prefix="dev")
    for step in range(1, 8):
        first.write(step, {"loss": 10.0 + step})
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "split": "tr')  # a line the kill cut short
    # Resumed from the checkpoint of step 4: what was logged after it goes.
    second = common.MetricsLog(run, resume_step=4)
    assert [(r["step"], r["split"]) for r in read_metrics(run / "metrics.jsonl")] == [(0, "dev")] + [(s, "train") for s in range(1, 5)]
    for step in range(5, 10):
        second.write(step, {"loss": 20.0 + step})
    second.close()
    monkeypatch.undo()

    records = read_metrics(run / "metrics.jsonl")
    assert [(r["step"], r.get("loss")) for r in records] == [(0, None)] + [(s, 10.0 + s) for s in range(1, 5)] + [
        (s, 20.0 + s) for s in range(5, 10)]
    files = sorted(p.name for p in (run / "tensorboard").iterdir())
    assert [f.split(".", 4)[3] for f in files] == ["1700000000", "1700000000"] and files[1].endswith(".run0001"), files
    assert tensorboard_series(run / "tensorboard") == {
        "dev/rank": [(0, 9.0)], "train/loss": [(s, 10.0 + s) for s in range(1, 5)] + [(s, 20.0 + s) for s in range(5, 10)]}

    # A run that starts again with no checkpoint at all redoes everything from step 0.
    third = common.MetricsLog(run)
    assert not (run / "metrics.jsonl").read_text()
    third.write(1, {"loss": 1.0})
    third.close()
    assert tensorboard_series(run / "tensorboard") == {"dev/rank": [], "train/loss": [(1, 1.0)]}


# ---- SIGKILL at seeded points (slow) -------------------------------------------------------------

KILL_SEED = 20261202
KILLS = 5


def _env(cache: Path) -> dict:
    env = dict(os.environ)
    # Two devices: a sharded batch and state, and a fraction of the 8-device compile time.
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
    env.update(JAX_PLATFORMS="cpu", UMR_JAX_COMPILATION_CACHE=str(cache), PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""))
    return env


def _train(config_file: Path, output: Path, cache: Path, *args: str) -> subprocess.Popen:
    return launch([sys.executable, "-m", "umr_jax.cli", "train", "--config", str(config_file), "--output", str(output), "--json",
                   *args],
                  cwd=ROOT, env=_env(cache))


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    return finish(proc, timeout)


def _kill_at(proc: subprocess.Popen, step: int, timeout: float = 300) -> str:
    """SIGKILL the run once it has logged `step` (its stderr's "step N/T" lines); returns its stderr."""
    seen, deadline = [], time.time() + timeout
    for line in proc.stderr:
        seen.append(line)
        logged = re.search(r" step (\d+)/\d+ ", line)
        if logged and int(logged.group(1)) >= step:
            proc.send_signal(signal.SIGKILL)
            break
        assert time.time() < deadline, "".join(seen[-20:])
    proc.wait(timeout=60)
    proc.stdout.close()
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen[-20:])
    return "".join(seen)


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {f"{p.parent.name}/{k}": v for p in sorted(folder.glob("*/model.safetensors")) for k, v in load_file(p).items()}


def _without_time(records: list[dict]) -> list[dict]:
    """The records without what the wall clock measured (the time, the speed)."""
    return [{k: v for k, v in r.items() if k not in ("time", "speed")} for r in records]


def _without_speed(series: dict) -> dict:
    """TensorBoard series without the `speed/` tags (wall-clock measurements)."""
    return {tag: points for tag, points in series.items() if not tag.startswith("speed/")}


def _metric_difference(a: list[dict], b: list[dict]) -> float:
    """Largest difference between the values of two metrics logs that have the same steps, splits
    and keys (wall-clock `time` aside)."""
    assert [(r["step"], r["split"], sorted(r)) for r in a] == [(r["step"], r["split"], sorted(r)) for r in b]
    return max(abs(x[k] - y[k]) for x, y in zip(a, b) for k in x if k not in ("step", "split", "time", "speed"))


@pytest.mark.slow
def test_kill_9_at_seeded_points_then_resume_equals_an_uninterrupted_run(tmp_path, tiny_retriever, pseudo_labels):
    """An uninterrupted `umr-jax train` is the reference. A second run into another folder is
    killed with SIGKILL 5 times, each time once it has logged a step drawn from a fixed seed, and
    resumed after each kill; its metrics.jsonl, TensorBoard series, best.json and exported
    weights must equal the reference's exactly (the same compiled programs run on the same state,
    batches and rng). Then a copy of a killed run is resumed with another config: refused in one
    line, and with --resume-anyway continued with a warning."""
    cache = tmp_path / "xla"  # the first run compiles; every later one loads its programs
    config_file = write_config(tmp_path, tiny_retriever, pseudo_labels)
    total_steps = 24

    started = time.time()
    rc, out, err = _finish(_train(config_file, tmp_path / "reference", cache))
    assert rc == 0, err[-3000:]
    reference = tmp_path / "reference"
    assert json.loads(out.splitlines()[-1])["steps"] == total_steps
    timings = {"reference": time.time() - started}

    run = tmp_path / "killed"
    targets = sorted(random.Random(KILL_SEED).sample(range(2, total_steps), KILLS))
    kills = []
    for i, target in enumerate(targets):
        started = time.time()
        stderr = _kill_at(_train(config_file, run, cache), target)
        found = latest_saved_config(run / "checkpoints")
        checkpoint = found[0] if found else 0  # killed before the first checkpoint: the next run starts afresh
        logged = max(r["step"] for r in read_metrics(run / "metrics.jsonl") if r["split"] == "train")
        resumed = re.search(r"resumed from step (\d+)", stderr)
        kills.append({"target": target, "resumed_from": int(resumed.group(1)) if resumed else None,
                      "logged_up_to": logged, "checkpoint": checkpoint, "seconds": round(time.time() - started, 1)})
        if i == 1:
            shutil.copytree(run, tmp_path / "branch")
    print("kills:", json.dumps(kills))
    # Most kills leave lines (and events) past the last checkpoint for the resume to drop.
    assert sum(k["logged_up_to"] > k["checkpoint"] for k in kills) >= 3, kills

    # The last resume changes only allow-listed keys: it must resume without a word about the config.
    started = time.time()
    rc, out, err = _finish(_train(config_file, run, cache, "train.checkpoint_every=4", "train.keep_checkpoints=3"))
    timings["last resume"] = time.time() - started
    assert rc == 0, err[-3000:]
    assert f"resumed from step {kills[-1]['checkpoint']}" in err and "another config" not in err and "differs" not in err

    expected, got = read_metrics(reference / "metrics.jsonl"), read_metrics(run / "metrics.jsonl")
    steps = [(r["step"], r["split"]) for r in got]
    assert len(steps) == len(set(steps)) == total_steps + total_steps // 6 + 1  # every step once, dev at 0, 6, ..., 24
    print(f"metrics: largest difference {_metric_difference(got, expected)}")
    assert _without_time(got) == _without_time(expected)  # bit-exact: the same values, not merely close
    tb_expected, tb_got = (_without_speed(tensorboard_series(folder / "tensorboard")) for folder in (reference, run))
    assert len(list((run / "tensorboard").glob("events.*"))) == KILLS + 1
    assert tb_got == tb_expected
    assert [s for s, _ in tb_got["train/loss"]] == list(range(1, total_steps + 1))
    assert json.loads((run / "best.json").read_text()) == json.loads((reference / "best.json").read_text())
    for folder in ("final", "best"):
        a, b = _weights(reference / folder), _weights(run / folder)
        assert a.keys() == b.keys() and len(a) > 10
        difference = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        print(f"{folder}: largest weight difference {difference}")
        assert all(np.array_equal(a[k], b[k]) for k in a), difference
    assert json.loads((run / "config.json").read_text())["train"]["checkpoint_every"] == 4

    # A copy of the run killed the second time, resumed with another learning rate and subset size.
    branch = tmp_path / "branch"
    before = {p: p.read_bytes() for p in (branch / "metrics.jsonl", branch / "config.json")}
    changed = ("train.learning_rate=0.001", "data.subset_size=40")
    started = time.time()
    rc, out, err = _finish(_train(config_file, branch, cache, *changed))
    timings["refused"] = time.time() - started
    assert rc == 1 and "Traceback" not in err, err[-3000:]
    restored = latest_saved_config(branch / "checkpoints")[0]
    assert err.splitlines()[-1] == (
        f"umr-jax train: error: {branch / 'checkpoints'}: the checkpoint of step {restored} was made with another config "
        "(data.subset_size: 0 -> 40; train.learning_rate: 0.003 -> 0.001); rerun with the saved config, "
        "or pass --resume-anyway to continue with this one")
    assert {p: p.read_bytes() for p in before} == before

    started = time.time()
    rc, out, err = _finish(_train(config_file, branch, cache, *changed, "--resume-anyway"))
    timings["resume anyway"] = time.time() - started
    assert rc == 0, err[-3000:]
    assert ("with a config that differs from the checkpoint's: data.subset_size: 0 -> 40; "
            "train.learning_rate: 0.003 -> 0.001") in err
    summary = json.loads(out.splitlines()[-1])
    assert summary["reason"] == "done" and summary["total_steps"] == summary["steps"] == 4 * (40 // 8)
    records = read_metrics(branch / "metrics.jsonl")
    steps = [(r["step"], r["split"]) for r in records]
    assert len(steps) == len(set(steps))
    assert [s for s, split in steps if split == "train"] == list(range(1, 21))
    kept = [r for r in records if r["step"] <= restored]
    assert _without_time(kept) == _without_time([r for r in expected if r["step"] <= restored])
    assert [s for s, _ in tensorboard_series(branch / "tensorboard")["train/loss"]] == list(range(1, 21))
    assert json.loads((branch / "config.json").read_text())["train"]["learning_rate"] == 0.001
    print("timings:", {k: round(v, 1) for k, v in timings.items()})
