"""kill -9 and rerun: `umr-jax encode`, `umr-jax score` and `umr-jax loop` lose no work and end
with the outputs of one uninterrupted run.

Each test runs the real CLI (`python -m umr_jax.cli`) as a subprocess, first once without
interruption (the reference), then into a second folder where it is SIGKILLed at several points,
started again after each kill with the same command, and finally run to completion. Every
process of this module shares one XLA compilation cache (`--compilation-cache`, a temporary
folder), so a rerun loads its programs instead of compiling them.

How the kill points are chosen
  A kill point is a progress event, not a time: "this many progress markers exist" (files whose
  appearance marks work done: embedding shard files, pseudo-label shard files, a finished
  Orbax step folder, index.json, ...), polled every millisecond, followed by one of
    at         SIGKILL at once (lands between two writes: an embedding shard's .npy and its ids,
               a pseudo-label shard and the state.json that lists it, a checkpoint and the next
               step);
    mid-write  SIGKILL as soon as a new temporary file appears after that (lands inside an
               atomic write: temp file created, not yet renamed);
    delay      SIGKILL `delay` seconds after that (lands inside a shard's or a step's compute).
  The marker counts and delays come from `random.Random(seed)` with a fixed seed per stage; the
  modes are fixed per kill. The kills are sequential: kill i hits the rerun that followed kill
  i - 1, at a later marker, so one folder is resumed again and again. A kill point that the run
  passes before the kill lands (it finished first) fails the test. Polling makes the landing
  spot "deterministic enough": the marker count is exact, the instructions the process gets to
  run before SIGKILL arrives are not.
    encode  1,024 demo passages in 22 shards of 48 rows (44 shard files); 5 kills, one count in
            each fifth of 1..42, drawn with seed 16.
    score   32 demo questions x 4 passages, 2 questions per shard (16 shards); 5 kills, one
            count in each fifth of 1..14, drawn with seed 1616.
    loop    one UMR iteration on 240 passages, 48 train and 8 dev questions (8 embedding shards,
            12 + 2 pseudo-label shards, 6 training steps checkpointed every step), then the
            iteration-1 retrieval and evaluation; 5 kills, counts drawn with seed 161616: during
            encoding, during retrieval (a delay after index.json), inside a write while scoring
            the train questions, and twice during training (right after a checkpoint; inside the
            next write).

What is compared with the uninterrupted run
  encode  every file of the folder byte for byte (shard .npy, ids, encode.json, manifest.json;
          the manifest holds no timing).
  score   every pseudo-label shard byte for byte (ids, order, scores to the exact float, as
          written), the manifest and state.json except timing and run counters (pairs_scored,
          scoring_seconds, pairs_per_second, runs, last_run).
  loop    byte for byte: both iterations' retrieval files, eval.json, embedding shards, the
          pseudo-label shards, the trained retriever's weights (`train/best` and `train/final`
          model.safetensors: bit-identical, no tolerance, because training resumes from exact
          checkpoints with per-step RNG and data positions), best.json; per-step training and
          dev metrics of metrics.jsonl equal (a redone step logs the same numbers; wall time
          aside); JSON files equal once the run's own folder is replaced by a placeholder and the
          timing and run counters above and `model_files` (a fingerprint of file modification
          times) are dropped.
  In every stage no `*.tmp` file (an unfinished atomic write), unfinished tower export or Orbax
  step may remain after the final rerun: every stage folder sweeps what a killed run left
  (`stages.folder.StageFolder`), the loop its iteration folders.

  PYTHONPATH=. python -m pytest -q -n 0 -m slow tests/test_kill_resume.py
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.demo.models import PRETRAINED

ROOT = Path(__file__).resolve().parents[1]
RUN_TIMEOUT = 300  # seconds for one process; a stuck run fails the test instead of hanging it
POLL = 0.001  # seconds between two looks at the output folder
TEMPORARY = re.compile(r"\.tmp$|\.tmp-|orbax-checkpoint-tmp")  # atomic writes in flight (ours, HF exports, Orbax)
TIMING_AND_RUN_COUNTERS = {"pairs_scored", "scoring_seconds", "pairs_per_second", "runs", "last_run", "elapsed_seconds"}

pytestmark = pytest.mark.slow


@dataclasses.dataclass(frozen=True)
class KillPoint:
    """SIGKILL once `count` names in `folder` (relative to the output) match `pattern`, then `how`
    ("at", "mid-write" or "delay" seconds)."""

    folder: str
    pattern: str
    count: int
    how: str
    delay: float = 0.0

    def markers(self, output: Path) -> int:
        folder = output / self.folder
        if not folder.is_dir():
            return 0
        pattern = re.compile(self.pattern)
        return sum(1 for entry in os.scandir(folder) if pattern.fullmatch(entry.name))


def sampled_kill_points(seed: int, folder: str, pattern: str, markers: int, modes: list[str], max_delay: float) -> list[KillPoint]:
    """One kill per mode, in increasing order: 1 .. markers - 2 (at least two markers of work are
    left after each) cut into len(modes) equal strata and one count drawn in each, so the kills
    spread over the whole run; delays (used by "delay") from max_delay / 4 .. max_delay."""
    rng = random.Random(seed)
    edges = [1 + round(i * (markers - 2) / len(modes)) for i in range(len(modes) + 1)]
    return [KillPoint(folder, pattern, rng.randrange(lo, hi), how, round(rng.uniform(max_delay / 4, max_delay), 3))
            for lo, hi, how in zip(edges, edges[1:], modes)]


# ----------------------------------------------------------------------------------------------
# Running the CLI


def _env() -> dict[str, str]:
    """conftest's test environment (CPU, 8 simulated devices, offline) for a subprocess, importing
    this checkout, caching every compiled program however fast it compiled."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    return env


def umr_jax(cache: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "umr_jax.cli", "--compilation-cache", str(cache), *args]


def _tail(log: Path, chars: int = 3000) -> str:
    return log.read_text(encoding="utf-8", errors="replace")[-chars:] if log.is_file() else ""


def run_to_completion(command: list[str], cwd: Path, log: Path) -> None:
    with open(log, "ab") as out:
        done = subprocess.run(command, check=False, cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT,
                              timeout=RUN_TIMEOUT)
    assert done.returncode == 0, f"{' '.join(command[2:])} exited {done.returncode}:\n{_tail(log)}"


def temporaries(output: Path) -> set[str]:
    """Paths (relative to `output`) of every temporary file or folder of an atomic write in flight."""
    found = set()
    for folder, dirs, names in os.walk(output):
        for name in names + dirs:
            if TEMPORARY.search(name):
                found.add(os.path.relpath(os.path.join(folder, name), output))
    return found


def run_and_kill(command: list[str], cwd: Path, output: Path, point: KillPoint, log: Path) -> str:
    """Start `command`, SIGKILL it at `point`; returns what it was killed after (for messages).
    Fails when the process ends before the kill point is reached."""
    before_start = temporaries(output)
    with open(log, "ab") as out:
        out.write(f"\n===== run to be killed at {point}\n".encode())
        out.flush()
        proc = subprocess.Popen(command, cwd=cwd, env=_env(), stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while point.markers(output) < point.count:
            assert proc.poll() is None, f"exited {proc.returncode} before {point}:\n{_tail(log)}"
            assert time.monotonic() < deadline, f"{point} not reached in {RUN_TIMEOUT}s:\n{_tail(log)}"
            time.sleep(POLL)
        if point.how == "delay":
            time.sleep(point.delay)
        elif point.how == "mid-write":
            before = temporaries(output)  # a killed earlier run may have left some
            while not temporaries(output) - before and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(POLL)
        proc.send_signal(signal.SIGKILL)  # a no-op when it already exited: caught just below
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL, f"the run ended (exit {proc.returncode}) before {point}:\n{_tail(log)}"
    left = sorted(temporaries(output) - before_start)
    what = (f"{point.folder or '.'}/{point.pattern} >= {point.count}, {point.how}"
            + (f" {point.delay}s" if point.how == "delay" else "")
            + f": killed with {point.markers(output)} there" + (f", in flight: {left}" if left else ""))
    with open(log, "a", encoding="utf-8") as out:
        out.write(f"\n===== {what}\n")
    return what


def kill_and_resume(command: list[str], cwd: Path, output: Path, points: list[KillPoint], log: Path) -> list[str]:
    """Kill `command` at each point in turn (each time rerunning it on the same folder), then
    run it to completion. Returns a description of each kill."""
    kills = [run_and_kill(command, cwd, output, point, log) for point in points]
    run_to_completion(command, cwd, log)
    return kills


# ----------------------------------------------------------------------------------------------
# Comparing outputs


def _drop(obj, keys: set[str]):
    if isinstance(obj, dict):
        return {k: _drop(v, keys) for k, v in obj.items() if k not in keys}
    if isinstance(obj, list):
        return [_drop(v, keys) for v in obj]
    return obj


def comparable_json(path: Path, placeholder: tuple[str, str] | None = None, drop: set[str] = frozenset()):
    """The JSON in `path` with `placeholder[0]` replaced by `placeholder[1]` in its text and the
    keys in `drop` removed at any depth."""
    text = path.read_text(encoding="utf-8")
    if placeholder:
        text = text.replace(*placeholder)
    return _drop(json.loads(text), drop)


def files_of(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, hidden files included."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def check_no_temporaries_left(output: Path) -> None:
    """No `*.tmp` file (nor an unfinished tower export or Orbax step) under `output`: the rerun
    swept what the kills left. Called last, after every comparison passed."""
    left = sorted(temporaries(output))
    assert left == [], f"unfinished atomic writes left after the final rerun: {left}"


def first_score_difference(reference: Path, resumed: Path) -> str:
    """The first (question id, passage id) whose label differs, for a readable failure."""
    for ref, res in zip(formats.read_retrieval(reference), formats.read_retrieval(resumed)):
        ref_ctxs = [(c.id, c.score) for c in ref.ctxs]
        res_ctxs = [(c.id, c.score) for c in res.ctxs]
        if (ref.id, ref_ctxs) != (res.id, res_ctxs):
            return f"question {ref.id} -> {res.id}: {ref_ctxs} != {res_ctxs}"
    return "records differ outside ids and scores"


def assert_pseudo_labels_equal(reference: Path, resumed: Path) -> None:
    """Shards byte for byte (naming the first differing label), manifest and state.json but for
    timing and run counters."""
    shards = sorted(p.name for p in reference.glob("pseudo_labels-*.jsonl"))
    assert shards and sorted(p.name for p in resumed.glob("pseudo_labels-*.jsonl")) == shards
    for name in shards:
        if (reference / name).read_bytes() != (resumed / name).read_bytes():
            pytest.fail(f"{resumed / name} differs from the uninterrupted run: "
                        f"{first_score_difference(reference / name, resumed / name)}")
    for name in ("manifest.json", "state.json"):
        assert (comparable_json(resumed / name, drop=TIMING_AND_RUN_COUNTERS)
                == comparable_json(reference / name, drop=TIMING_AND_RUN_COUNTERS)), resumed / name


# ----------------------------------------------------------------------------------------------
# Inputs


@pytest.fixture(scope="module")
def compilation_cache(tmp_path_factory) -> Path:
    """One XLA cache for every process of this module: reruns (and later tests) load, not compile."""
    return tmp_path_factory.mktemp("xla-cache")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> Path:
    """Demo inputs, copied here so that the offset index `encode` builds beside a TSV is not
    written into the package: passages.tsv (1,024), loop_passages.tsv (240), train.jsonl (48), dev.jsonl (8) and
    retrieved.jsonl (32 train questions, 4 passages each drawn with a fixed seed)."""
    folder = tmp_path_factory.mktemp("inputs")
    paths = demo_paths()
    passages = list(formats.read_dpr_passages(paths["passages"]))
    train = list(formats.read_questions(paths["train_questions"]))
    formats.write_dpr_passages(folder / "passages.tsv", passages[:1024])
    formats.write_dpr_passages(folder / "loop_passages.tsv", passages[:240])
    formats.write_questions(folder / "train.jsonl", train[:48])
    formats.write_questions(folder / "dev.jsonl", list(formats.read_questions(paths["dev_questions"]))[:8])
    rng = random.Random(0)
    retrieved = [formats.RetrievalResult(q.id, q.question, q.lang,
                                         tuple(formats.Context(p.id, p.title, p.text, float(4 - rank))
                                               for rank, p in enumerate(rng.sample(passages, 4))), answers=q.answers)
                 for q in train[:32]]
    formats.write_retrieval(folder / "retrieved.jsonl", retrieved)
    return folder


# ----------------------------------------------------------------------------------------------
# The stages


def test_encode_killed_five_times_resumes_to_identical_embeddings(tmp_path, inputs, compilation_cache):
    def command(output: Path) -> list[str]:
        return umr_jax(compilation_cache, "encode", "--model", str(PRETRAINED / "retriever"), "--passages",
                       str(inputs / "passages.tsv"), "--output", str(output), "--shard-size", "48",
                       "--batch-size", "32", "--max-length", "96", "--dtype", "float32", "--no-progress")

    run_to_completion(command(tmp_path / "reference"), tmp_path, tmp_path / "reference.log")
    reference = files_of(tmp_path / "reference")
    shard_files = sum(1 for name in reference if name.startswith("shard-"))
    assert shard_files == 2 * 22

    points = sampled_kill_points(16, "", r"shard-\d{5}\.(npy|ids\.txt)", shard_files,
                                 ["at", "mid-write", "delay", "at", "mid-write"], max_delay=0.2)
    kills = kill_and_resume(command(tmp_path / "killed"), tmp_path, tmp_path / "killed", points, tmp_path / "killed.log")
    assert len(kills) == 5

    resumed = {name: data for name, data in files_of(tmp_path / "killed").items() if not TEMPORARY.search(name)}
    assert sorted(resumed) == sorted(reference)
    different = [name for name in reference if resumed[name] != reference[name]]
    assert different == [], f"differ from the uninterrupted encode after kills {kills}"
    check_no_temporaries_left(tmp_path / "killed")


def test_score_killed_five_times_resumes_to_identical_pseudo_labels(tmp_path, inputs, compilation_cache):
    def command(output: Path) -> list[str]:
        return umr_jax(compilation_cache, "score", "--scorer", str(PRETRAINED / "scorer"), "--retrieved",
                       str(inputs / "retrieved.jsonl"), "--output", str(output), "--top-k", "4", "--dtype", "float32",
                       "--questions-per-chunk", "2", "--tokens-per-batch", "2048", "--no-progress")

    run_to_completion(command(tmp_path / "reference"), tmp_path, tmp_path / "reference.log")
    shards = len(list((tmp_path / "reference").glob("pseudo_labels-*.jsonl")))
    assert shards == 16

    points = sampled_kill_points(1616, "", r"pseudo_labels-\d{5}-of-\d{5}\.jsonl", shards,
                                 ["at", "delay", "mid-write", "at", "delay"], max_delay=0.3)
    kills = kill_and_resume(command(tmp_path / "killed"), tmp_path, tmp_path / "killed", points, tmp_path / "killed.log")
    assert len(kills) == 5

    assert_pseudo_labels_equal(tmp_path / "reference", tmp_path / "killed")
    manifest = json.loads((tmp_path / "killed" / "manifest.json").read_text())
    assert manifest["pairs"] == 32 * 4 and manifest["questions"] == 32
    check_no_temporaries_left(tmp_path / "killed")


LOOP_OVERRIDES = [
    "loop.top_k=8", "encode.shard_size=32", "encode.batch_size=32",
    "score.top_k=4", "score.max_source_length=96", "score.max_target_length=32", "score.tokens_per_batch=2048",
    "score.questions_per_chunk=4", "model.query_max_length=32", "model.passage_max_length=96",
    "data.top_k=4", "data.candidates_per_question=4",
    "train.questions_per_batch=8", "train.epochs=1", "train.warmup_steps=2", "train.query_chunk=8", "train.passage_chunk=32",
    # Every step checkpointed and kept: many points to be killed between, and step folders only ever appear.
    "train.checkpoint_every=1", "train.keep_checkpoints=100", "train.eval_every=3", "train.log_every=1",
]
STEP_FOLDER = r"\d+"  # a finished Orbax step (in flight it is N.orbax-checkpoint-tmp)


def loop_kill_points(seed: int) -> list[KillPoint]:
    """One kill in each region of the iteration, counts drawn from `seed` (see the module docstring)."""
    rng = random.Random(seed)
    shard_file = r"shard-\d{5}\.(npy|ids\.txt)"
    first_step, second_step = sorted(rng.sample(range(1, 6), 2))
    return [
        KillPoint("iter0/embeddings", shard_file, rng.randint(1, 14), "at"),
        KillPoint("iter0/index", r"index\.json", 1, "delay", round(rng.uniform(0.5, 2.0), 3)),
        KillPoint("iter0/pseudo_labels", r"pseudo_labels-\d{5}-of-\d{5}\.jsonl", rng.randint(1, 10), "mid-write"),
        KillPoint("iter0/train/checkpoints", STEP_FOLDER, first_step, "at"),
        KillPoint("iter0/train/checkpoints", STEP_FOLDER, second_step, "mid-write"),
    ]


def json_files_of(run: Path) -> list[str]:
    """The loop's JSON files (relative paths), but Orbax's own and those of unfinished exports."""
    return sorted(str(p.relative_to(run)) for p in run.rglob("*.json")
                  if "checkpoints" not in p.parts and not any(TEMPORARY.search(part) for part in p.parts))


def _metrics_by_step(path: Path) -> dict[tuple[str, int], dict]:
    """metrics.jsonl as {(split, step): values without the wall time and the speed measured}; a
    step redone after a resume is logged again, and must log the same values."""
    seen: dict[tuple[str, int], dict] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        key, values = (record.pop("split"), record.pop("step")), _drop(record, {"time", "speed"})
        assert seen.setdefault(key, values) == values, f"{path}: step {key} logged {values} after {seen[key]}"
    return seen


def test_loop_killed_in_every_stage_resumes_to_identical_outputs(tmp_path, inputs, compilation_cache):
    """One UMR iteration (encode, index, retrieve, evaluate, score, train) and the next iteration's
    retrieval, killed five times: retrieval files, pseudo labels and the trained weights equal an
    uninterrupted loop's bit for bit."""
    overrides = [f"loop.retriever={PRETRAINED / 'retriever'}", f"loop.scorer={PRETRAINED / 'scorer'}",
                 f"loop.passages={inputs / 'loop_passages.tsv'}", f"loop.train_questions={inputs / 'train.jsonl'}",
                 f"loop.dev_questions={inputs / 'dev.jsonl'}", f"loop.eval_gold={inputs / 'dev.jsonl'}", *LOOP_OVERRIDES]
    # Each run in its own folder with the output given relative to it: the paths the loop records
    # (relative ones, and absolute ones under a placeholder) compare equal.
    command = umr_jax(compilation_cache, "loop", "--config", str(ROOT / "configs" / "demo.py"), "--iterations", "1",
                      "--output", "run", *overrides)
    runs = {name: tmp_path / name for name in ("reference", "killed")}
    for folder in runs.values():
        folder.mkdir()

    run_to_completion(command, runs["reference"], tmp_path / "reference.log")
    kills = kill_and_resume(command, runs["killed"], runs["killed"] / "run", loop_kill_points(161616), tmp_path / "killed.log")
    assert len(kills) == 5

    reference, resumed = runs["reference"] / "run", runs["killed"] / "run"
    for name in ("iter0/retrieved_train.jsonl", "iter0/retrieved_dev.jsonl", "iter1/retrieved_train.jsonl",
                 "iter1/retrieved_dev.jsonl", "iter0/eval.json", "iter1/eval.json", "iter0/train/best.json"):
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), f"{name} differs after kills {kills}"
    for iteration in ("iter0", "iter1"):
        folder = f"{iteration}/embeddings"
        shards = {n: d for n, d in files_of(reference / folder).items() if n.startswith("shard-")}
        assert shards and {n: d for n, d in files_of(resumed / folder).items() if n.startswith("shard-")} == shards, folder
    for labels in ("pseudo_labels", "dev_pseudo_labels"):
        assert_pseudo_labels_equal(reference / "iter0" / labels, resumed / "iter0" / labels)
    weights = sorted(str(p.relative_to(reference)) for p in (reference / "iter0" / "train").glob("*/*/model.safetensors"))
    assert weights == ["iter0/train/best/passage_encoder/model.safetensors", "iter0/train/best/query_encoder/model.safetensors",
                       "iter0/train/final/passage_encoder/model.safetensors", "iter0/train/final/query_encoder/model.safetensors"]
    for name in weights:
        assert (resumed / name).read_bytes() == (reference / name).read_bytes(), f"{name}: weights differ after kills {kills}"
    assert _metrics_by_step(resumed / "iter0/train/metrics.jsonl") == _metrics_by_step(reference / "iter0/train/metrics.jsonl")
    assert json_files_of(resumed) == json_files_of(reference)
    placeholder = {name: (str(folder), "<RUN>") for name, folder in runs.items()}
    # A shard record's settings fingerprint hashes the run's own paths and file times, like model_files.
    drop = TIMING_AND_RUN_COUNTERS | {"model_files", "settings_sha256"}
    for name in json_files_of(reference):
        assert (comparable_json(resumed / name, placeholder["killed"], drop)
                == comparable_json(reference / name, placeholder["reference"], drop)), f"{name} differs after kills {kills}"
    check_no_temporaries_left(resumed)
