"""The score stage (stage 1): labels equal the scorer's, resume scores no pair twice, settings are guarded,
bad input is one line, and `umr-jax score` exits as documented."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.multiprocess import finish_all, free_port, join_flags, launch
from umr_jax import cli
from umr_jax.data import formats
from umr_jax.data.formats import Context, RetrievalResult
from umr_jax.errors import InputError
from umr_jax.labeling.scorer import QuestionLikelihoodScorer, ScorePair
from umr_jax.parallel import mesh as mesh_lib
from umr_jax.stages import score as stage1
from umr_jax.stages import score_folder, score_input

TOWN = "Tavoren is a town founded in 1743 on the Miro river."
RIVER = "The Miro river flows from the Kasimo mountains to the sea " * 5
BOOKS = "Mirela Kasimo wrote four books about mountains, rivers and towns."
RETRIEVED = [
    RetrievalResult("q1", "Milloin Tavoren perustettiin", "fi",
                    (Context("p1", "Tavoren", TOWN, 81.0, True), Context("p2", "Miro", RIVER, 80.5, False),
                     Context("p3", "Kasimo", BOOKS, 79.0, False), Context("p4", "Olbra", "Olbra is a river.", 70.0, False)),
                    answers=("1743",)),
    RetrievalResult("q2", "タヴォレンはいつ設立されましたか", "ja", (Context("p1", "Tavoren", TOWN, 3.0), Context("p4", "Olbra", "Olbra is a river.", 2.0))),
    RetrievalResult("q3", "Когда был основан Таворен", "ru", (Context("p3", "Kasimo", BOOKS, 1.0),)),
    RetrievalResult("q4", "متى تأسست تافورين", "ar", (Context("p2", "", RIVER, 5.0), Context("p1", "Tavoren", TOWN, 4.0), Context("p3", "Kasimo", BOOKS, 3.5))),
    RetrievalResult("q5", "Who wrote four books about mountains", "en", (Context("p3", "Kasimo", BOOKS, 9.0), Context("p2", "Miro", RIVER, 8.0))),
    RetrievalResult("q6", "Milloin Olbra", "fi", (Context("p4", "Olbra", "Olbra is a river.", 1.0), Context("p1", "Tavoren", TOWN, 0.5))),
    RetrievalResult("q7", "Kasimo", "sv", (Context("p3", "Kasimo", BOOKS, 2.0), Context("p1", "Tavoren", TOWN, 1.0), Context("p2", "Miro", RIVER, 0.0))),
]
TOP_K = 3
PAIRS = sum(min(len(r.ctxs), TOP_K) for r in RETRIEVED)


@pytest.fixture(scope="module")
def scorer_folder(tiny_scorer_folder):
    return tiny_scorer_folder[0]


@pytest.fixture(scope="module")
def scorer(scorer_folder):
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    return QuestionLikelihoodScorer(str(scorer_folder), mesh=mesh, rules="fsdp", dtype="float32",
                                    tokens_per_batch=256, vocab_chunk_size=1000)


@pytest.fixture(scope="module")
def retrieved(tmp_path_factory):
    path = tmp_path_factory.mktemp("retrieved") / "retrieved.jsonl"
    formats.write_retrieval(path, RETRIEVED)
    return path


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, scorer, retrieved):
    """The labels of one uninterrupted run: (folder, manifest)."""
    output = tmp_path_factory.mktemp("labels")
    manifest = stage1.score_retrieved(retrieved, output, scorer, top_k=TOP_K, questions_per_chunk=3)
    return output, manifest


class Counting:
    """The scorer, recording the (question id, passage id) of every pair it is asked to score;
    attribute overrides stand in for a scorer made with other settings."""

    def __init__(self, scorer, **overrides):
        self.inner, self.overrides, self.keys = scorer, overrides, []

    def __getattr__(self, name):
        return self.overrides[name] if name in self.overrides else getattr(self.inner, name)

    def score(self, pairs, progress=None):
        self.keys += [p.key for p in pairs]
        return self.inner.score(pairs, progress)


class StopAfterFirstShard(stage1.Progress):
    def shard_written(self, index, path):
        raise KeyboardInterrupt(f"killed after shard {index}")


def _labels(folder) -> list[RetrievalResult]:
    return list(formats.read_retrieval(Path(folder) / score_folder.SHARDS_NAME))


def _all_keys() -> list[tuple[str, str]]:
    return sorted((r.id, c.id) for r in RETRIEVED for c in r.ctxs[:TOP_K])


def test_labels_equal_the_scorer_in_the_retrieved_order(uninterrupted, scorer):
    output, manifest = uninterrupted
    labels = _labels(output)
    assert [r.id for r in labels] == [r.id for r in RETRIEVED]
    pairs = []
    for label, source in zip(labels, RETRIEVED):
        kept = source.ctxs[:TOP_K]  # top-k truncation, retrieved order
        assert [(c.id, c.title, c.text, c.has_answer) for c in label.ctxs] == [(c.id, c.title, c.text, c.has_answer) for c in kept]
        assert (label.question, label.lang, label.answers, label.scorer) == (source.question, source.lang, source.answers, scorer.name)
        pairs += [ScorePair((source.id, c.id), source.question, c.title, c.text, source.lang) for c in kept]
    written = np.array([c.score for r in labels for c in r.ctxs], np.float32)
    np.testing.assert_allclose(written, scorer.score(pairs), rtol=1e-6, atol=1e-6)
    assert np.all(written < 0)

    assert sorted(p.name for p in output.glob("pseudo_labels-*")) == [f"pseudo_labels-0000{i}-of-00003.jsonl" for i in range(3)]
    assert manifest == json.loads((output / score_folder.MANIFEST).read_text())
    assert {k: manifest[k] for k in ("questions", "pairs", "pairs_scored", "top_k", "reduction", "dtype", "scorer")} == {
        "questions": 7, "pairs": PAIRS, "pairs_scored": PAIRS, "top_k": TOP_K, "reduction": "mean", "dtype": "float32", "scorer": scorer.name}
    assert manifest["pairs_per_second"] > 0 and manifest["shards"] == [f"pseudo_labels-0000{i}-of-00003.jsonl" for i in range(3)]
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_resume_after_a_kill_scores_no_pair_twice(tmp_path, scorer, retrieved, uninterrupted):
    output = tmp_path / "labels"
    first = Counting(scorer)
    with pytest.raises(KeyboardInterrupt):
        stage1.score_retrieved(retrieved, output, first, top_k=TOP_K, questions_per_chunk=3, progress=StopAfterFirstShard())
    assert [p.name for p in output.glob("pseudo_labels-*")] == ["pseudo_labels-00000-of-00003.jsonl"]
    assert not (output / score_folder.MANIFEST).exists()
    with pytest.raises(InputError, match="incomplete shard set"):  # a half-done folder never reads as complete
        _labels(output)
    assert json.loads((output / score_folder.STATE).read_text())["shards_done"] == [0]

    second = Counting(scorer)
    manifest = stage1.score_retrieved(retrieved, output, second, top_k=TOP_K, questions_per_chunk=3)
    assert sorted(first.keys + second.keys) == _all_keys()  # every pair scored exactly once
    assert manifest["last_run"] == {**manifest["last_run"], "pairs_scored": len(second.keys), "pairs_resumed": len(first.keys)}
    assert manifest["pairs_scored"] == PAIRS and manifest["runs"] == 2
    assert _labels(output) == _labels(uninterrupted[0])

    again = Counting(scorer)  # a finished folder: nothing to do
    assert stage1.score_retrieved(retrieved, output, again, top_k=TOP_K, questions_per_chunk=3)["last_run"]["pairs_scored"] == 0
    assert again.keys == []


def test_resume_reads_back_shards_the_state_does_not_list_and_other_chunkings(tmp_path, scorer, retrieved, uninterrupted):
    output = tmp_path / "labels"
    first = Counting(scorer)
    with pytest.raises(KeyboardInterrupt):
        stage1.score_retrieved(retrieved, output, first, top_k=TOP_K, questions_per_chunk=3, progress=StopAfterFirstShard())
    # A kill between the shard's rename and the state's: the shard is there, the state does not list it.
    state = json.loads((output / score_folder.STATE).read_text())
    (output / score_folder.STATE).write_text(json.dumps({**state, "shards_done": []}))
    (output / ".pseudo_labels-00001-of-00003.jsonl.x.tmp").write_text("half a shard")
    # ... and the rerun cuts the questions into chunks of 2 instead of 3.
    second = Counting(scorer)
    manifest = stage1.score_retrieved(retrieved, output, second, top_k=TOP_K, questions_per_chunk=2)
    assert sorted(first.keys + second.keys) == _all_keys()
    assert sorted(p.name for p in output.iterdir()) == sorted(
        [f"pseudo_labels-0000{i}-of-00004.jsonl" for i in range(4)] + [score_folder.STATE, score_folder.MANIFEST])
    assert manifest["pairs_scored"] == PAIRS
    assert _labels(output) == _labels(uninterrupted[0])


def test_resume_from_a_previous_partial_output(tmp_path, scorer, retrieved, uninterrupted):
    partial = tmp_path / "partial.json"  # a DPR JSON list holding the first two questions' labels
    formats.write_dpr_json(partial, _labels(uninterrupted[0])[:2])
    counting = Counting(scorer)
    stage1.score_retrieved(retrieved, tmp_path / "labels", counting, top_k=TOP_K, questions_per_chunk=4, resume_from=partial)
    assert sorted(counting.keys) == sorted(k for k in _all_keys() if k[0] not in ("q1", "q2"))
    assert _labels(tmp_path / "labels") == _labels(uninterrupted[0])


def test_refuses_a_folder_made_with_other_settings(tmp_path, scorer, scorer_folder, retrieved, uninterrupted):
    output = tmp_path / "labels"
    shutil.copytree(uninterrupted[0], output)
    other_folder = tmp_path / "other-scorer"
    shutil.copytree(scorer_folder, other_folder)
    weights = other_folder / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1000:] = bytes(1000)  # other weights, same size
    weights.write_bytes(bytes(data))

    same_model_elsewhere = tmp_path / "moved-scorer"
    shutil.copytree(scorer_folder, same_model_elsewhere)
    for overrides, expected in [
        ({"reduction": "sum"}, "reduction='mean'.*this run asks for reduction='sum'"),
        ({"name": str(other_folder)}, f"scorer={str(other_folder)!r}"),
        ({"config": type("Config", (), {"dtype": "bfloat16"})()}, "dtype='float32'.*dtype='bfloat16'"),
    ]:
        counting = Counting(scorer, **overrides)
        with pytest.raises(InputError, match=expected) as err:
            stage1.score_retrieved(retrieved, output, counting, top_k=TOP_K, questions_per_chunk=3)
        assert str(err.value).startswith(f"{output / score_folder.STATE}: ") and "\n" not in str(err.value)
        assert counting.keys == []
    with pytest.raises(InputError, match="top-k=3.*top-k=2"):
        stage1.score_retrieved(retrieved, output, scorer, top_k=2, questions_per_chunk=3)
    # The same model under another path is the same scorer: nothing to redo.
    moved = Counting(scorer, name=str(same_model_elsewhere))
    assert stage1.score_retrieved(retrieved, output, moved, top_k=TOP_K, questions_per_chunk=3)["questions"] == 7
    assert moved.keys == []
    assert _labels(output) == _labels(uninterrupted[0])


def _write_lines(path: Path, objects: list) -> Path:
    path.write_text("".join((o if isinstance(o, str) else json.dumps(o, ensure_ascii=False)) + "\n" for o in objects), encoding="utf-8")
    return path


def _record(r: RetrievalResult) -> dict:
    return {"id": r.id, "question": r.question, "lang": r.lang,
            "ctxs": [{"id": c.id, "title": c.title, "text": c.text, "score": c.score} for c in r.ctxs]}


def test_bad_input_is_one_line_naming_file_and_line(tmp_path):
    good = _record(RETRIEVED[0])
    malformed = _write_lines(tmp_path / "malformed.jsonl", [good, '{"id": "q2", "question": '])
    with pytest.raises(InputError) as err:
        score_input.inspect_retrieved(malformed, top_k=TOP_K)
    assert str(err.value).startswith(f"{malformed}:2: not valid JSON")

    empty = _write_lines(tmp_path / "empty.jsonl", [good, {**_record(RETRIEVED[1]), "id": "q-empty", "ctxs": []}, _record(RETRIEVED[2])])
    with pytest.raises(InputError) as err:
        score_input.inspect_retrieved(empty, top_k=TOP_K)
    assert str(err.value) == f"{empty}:2: question 'q-empty' has no ctxs; expected at least one retrieved passage to score"

    found = score_input.inspect_retrieved(empty, top_k=1, skip_invalid=True)
    assert (found.questions, found.pairs, found.skipped) == (2, 2, {score_input.NO_CTXS: 1})
    assert [r.id for r in score_input.read_retrieved(empty, top_k=1, skip_invalid=formats.SkippedRecords())] == ["q1", "q3"]

    dpr_list = tmp_path / "retrieved.json"  # DPR's JSON list is read too
    formats.write_dpr_json(dpr_list, RETRIEVED)
    assert score_input.inspect_retrieved(dpr_list, top_k=TOP_K).pairs == PAIRS


def _cli(capsys, *argv: str) -> tuple[int, str, str]:
    status = cli.main(["score", *argv])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_errors_are_one_line_and_exit_1(tmp_path, capsys, scorer_folder, retrieved, uninterrupted):
    common = ["--scorer", str(scorer_folder), "--output", str(tmp_path / "labels"), "--no-progress", "--mesh", "data=2,fsdp=4"]
    malformed = _write_lines(tmp_path / "bad.jsonl", [_record(RETRIEVED[0]), "[1, 2]"])
    status, out, err = _cli(capsys, "--retrieved", str(malformed), *common)
    assert status == 1 and out == ""
    assert err == f"umr-jax score: error: {malformed}:2: expected a JSON object, got list\n"
    assert not (tmp_path / "labels").exists()

    # A finished folder made with mean, float32, top-3: asking for sum is refused before any model loads.
    status, _, err = _cli(capsys, "--scorer", str(scorer_folder), "--retrieved", str(retrieved), "--output", str(uninterrupted[0]),
                          "--top-k", "3", "--dtype", "float32", "--reduction", "sum")
    assert status == 1 and err.count("\n") == 1
    assert err.startswith(f"umr-jax score: error: {uninterrupted[0] / score_folder.STATE}: this folder holds pseudo labels made with reduction='mean'")

    status, _, err = _cli(capsys, "--retrieved", str(retrieved), *common[:-2], "--mesh", "data=3")
    assert status == 1 and err.startswith("umr-jax score: error: --mesh 'data=3'") and err.count("\n") == 1

    with pytest.raises(SystemExit) as usage:
        cli.main(["score", "--retrieved", str(retrieved), *common, "--top-k", "0"])
    assert usage.value.code == 2


def test_cli_scores_resumes_and_shows_progress(tmp_path, capsys, scorer_folder, retrieved, uninterrupted):
    output = tmp_path / "labels"
    argv = ["--scorer", str(scorer_folder), "--retrieved", str(retrieved), "--output", str(output), "--top-k", "3",
            "--dtype", "float32", "--mesh", "data=2,fsdp=-1,model=1", "--rules", "fsdp", "--questions-per-chunk", "3",
            "--tokens-per-batch", "256"]
    status, out, err = _cli(capsys, *argv)
    assert status == 0
    assert out.startswith(f"{output}: 7 questions, {PAIRS} pairs pseudo-labelled (scorer {scorer_folder}, mean, float32, top-3); {PAIRS} scored in this run")
    assert "pairs" in err  # the progress bar (on stderr)
    labels = _labels(output)
    reference = _labels(uninterrupted[0])
    assert [(r.id, [c.id for c in r.ctxs]) for r in labels] == [(r.id, [c.id for c in r.ctxs]) for r in reference]
    np.testing.assert_allclose([c.score for r in labels for c in r.ctxs], [c.score for r in reference for c in r.ctxs], rtol=1e-5, atol=1e-5)
    status, out, _ = _cli(capsys, *argv, "--no-progress")
    assert status == 0 and "; 0 scored in this run" in out


ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_two_processes_only_process_0_writes_and_both_follow_its_resume(tmp_path, scorer, scorer_folder, retrieved, uninterrupted):
    # Process 0's folder holds an interrupted run (chunk 0 done); process 1 is given an empty
    # folder of its own: it must write nothing there and still skip chunk 0 with process 0.
    with pytest.raises(KeyboardInterrupt):
        stage1.score_retrieved(retrieved, tmp_path / "out0", scorer, top_k=TOP_K, questions_per_chunk=3, progress=StopAfterFirstShard())
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu",
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    port = free_port()
    procs = [launch(
        [sys.executable, "-m", "umr_jax.cli", "score", "--scorer", str(scorer_folder), "--retrieved", str(retrieved),
         "--output", str(tmp_path / f"out{i}"), "--top-k", str(TOP_K), "--dtype", "float32", "--questions-per-chunk", "3",
         "--tokens-per-batch", "256", "--mesh", "data=2,fsdp=2,model=1", "--no-progress", *join_flags(port, i)],
        cwd=ROOT, env=env) for i in range(2)]  # each process writes to a folder of its own
    results = finish_all(procs, timeout=240)
    assert [rc for rc, _, _ in results] == [0, 0], [err[-2000:] for _, _, err in results]
    done_before = sum(min(len(r.ctxs), TOP_K) for r in RETRIEVED[:3])
    assert f"; {PAIRS - done_before} scored in this run" in results[0][1]
    assert "pseudo-labelled" not in results[1][1] and not (tmp_path / "out1").exists()  # (gloo logs to stdout)
    labels, reference = _labels(tmp_path / "out0"), _labels(uninterrupted[0])
    assert [(r.id, [c.id for c in r.ctxs]) for r in labels] == [(r.id, [c.id for c in r.ctxs]) for r in reference]
    np.testing.assert_allclose([c.score for r in labels for c in r.ctxs], [c.score for r in reference for c in r.ctxs], rtol=1e-5, atol=1e-5)


def test_a_non_finite_score_is_never_written(tmp_path, scorer, retrieved):
    class NaNScorer(Counting):
        def score(self, pairs, progress=None):
            scores = super().score(pairs, progress)
            scores[1] = np.nan
            return scores

    with pytest.raises(FloatingPointError, match=r"\('q1', 'p2'\)"):
        stage1.score_retrieved(retrieved, tmp_path / "labels", NaNScorer(scorer), top_k=TOP_K, questions_per_chunk=3)
    assert not list((tmp_path / "labels").glob("pseudo_labels-*")) and not (tmp_path / "labels" / score_folder.MANIFEST).exists()
