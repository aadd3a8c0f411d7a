"""`umr-jax retrieve` end to end on a slice of the demo corpus with a tiny random retriever."""

from __future__ import annotations

import json

import numpy as np
import pytest

from umr_jax import cli
from umr_jax.data import formats
from umr_jax.retrieval.embeddings import EmbeddingStore
from tests.retrieval.towers import demo_passages, demo_questions, make_xlmr_tower, write_demo_tsv

N_PASSAGES, N_QUESTIONS, K = 240, 21, 10


def _cli(*argv: str) -> None:
    assert cli.main([*argv, "--no-progress"] if argv[0] in ("encode", "retrieve") else list(argv)) == 0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Tower, collection, questions, passage and query embeddings, exact index, and a jsonl run."""
    root = tmp_path_factory.mktemp("retrieve")
    tower = make_xlmr_tower(root / "tower", seed=3)
    tsv = write_demo_tsv(root / "passages.tsv", N_PASSAGES)
    questions = root / "questions.jsonl"
    formats.write_questions(questions, demo_questions(N_QUESTIONS))
    # fp32 compute: bf16 is emulated (slow) on CPU; the default bf16 path is tested in test_encode.
    _cli("encode", "--model", str(tower), "--passages", str(tsv), "--output", str(root / "emb"), "--shard-size", "100",
         "--max-length", "64", "--dtype", "float32")
    _cli("encode", "--model", str(tower), "--queries", str(questions), "--output", str(root / "q_emb"),
         "--output-dtype", "float32", "--dtype", "float32")
    # ScaNN scores corpora this small exactly. (The exact backend's all-gather over 8 simulated CPU
    # devices can deadlock in XLA's CPU rendezvous; test_index.py covers that backend.)
    _cli("index", "build", "--embeddings", str(root / "emb"), "--backend", "scann", "--output", str(root / "index"))
    common = ["--model", str(tower), "--dtype", "float32", "--index", str(root / "index"), "--queries", str(questions), "--top-k", str(K)]
    _cli("retrieve", *common, "--passages", str(tsv), "--output", str(root / "run.jsonl"))
    return dict(root=root, tower=tower, tsv=tsv, questions=questions, common=common)


def _exact_top_k(root):
    """numpy fp64 exact search of the encoded questions against the stored passage embeddings."""
    (queries, query_ids), = EmbeddingStore.open(root / "q_emb").iter_shards()
    matrices, passage_ids = zip(*EmbeddingStore.open(root / "emb").iter_shards())
    corpus = np.concatenate(matrices).astype(np.float64)
    scores = np.asarray(queries, np.float64) @ corpus.T
    order = np.argsort(-scores, axis=1, kind="stable")[:, :K]
    return query_ids, np.asarray(sum(passage_ids, []))[order], np.take_along_axis(scores, order, axis=1)


def test_results_have_the_collection_passages_and_exact_scores(run):
    assert json.loads((run["root"] / "index" / "index.json").read_text())["scann"]["brute_force"]
    results = list(formats.read_retrieval(run["root"] / "run.jsonl"))  # validates every record
    questions = list(formats.read_questions(run["questions"]))
    assert [(r.id, r.question, r.lang, r.answers) for r in results] == [(q.id, q.question, q.lang, q.answers) for q in questions]
    assert len({r.lang for r in results}) == 7 and all(r.answers for r in results)
    collection = {p.id: p for p in demo_passages(N_PASSAGES)}
    query_ids, exact_ids, exact_scores = _exact_top_k(run["root"])
    assert query_ids == [q.id for q in questions]
    for result, ids, scores in zip(results, exact_ids, exact_scores):
        assert [c.id for c in result.ctxs] == ids.tolist()
        np.testing.assert_allclose([c.score for c in result.ctxs], scores, rtol=1e-5, atol=1e-5)
        assert all((c.title, c.text) == (collection[c.id].title, collection[c.id].text) for c in result.ctxs)


@pytest.mark.parametrize("fmt", ["dpr-json", "xor-predictions", "trec"])
def test_every_output_format(run, fmt, tmp_path):
    output = tmp_path / f"run.{fmt}"
    _cli("retrieve", *run["common"], "--passages", str(run["tsv"]), "--output", str(output), "--format", fmt, "--tag", "tiny")
    expected = list(formats.read_retrieval(run["root"] / "run.jsonl"))
    if fmt == "dpr-json":
        assert output.read_text().startswith("[") and list(formats.read_dpr_json(output)) == expected
    elif fmt == "xor-predictions":
        predictions = list(formats.read_xor_predictions(output))
        assert [(p.id, p.lang, p.ctxs) for p in predictions] == [(r.id, r.lang, tuple(c.text for c in r.ctxs)) for r in expected]
    else:
        entries = list(formats.read_trec_run(output))
        assert len(entries) == N_QUESTIONS * K
        assert entries[:K] == [formats.TrecRunEntry(expected[0].id, c.id, rank, c.score, "tiny") for rank, c in enumerate(expected[0].ctxs, 1)]


def test_jsonl_collection_gives_the_same_run(run, tmp_path):
    formats.write_passages_jsonl(tmp_path / "passages.jsonl", demo_passages(N_PASSAGES))
    _cli("retrieve", *run["common"], "--passages", str(tmp_path / "passages.jsonl"), "--output", str(tmp_path / "run.jsonl"))
    assert (tmp_path / "run.jsonl").read_bytes() == (run["root"] / "run.jsonl").read_bytes()


def test_bad_input_is_a_one_line_error(run, tmp_path, capsys):
    def error(*argv) -> str:
        assert cli.main(["retrieve", *argv, "--output", str(tmp_path / "out.jsonl"), "--no-progress"]) == 1
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "Traceback" not in err
        return err

    common = run["common"]
    missing = tmp_path / "no-model"
    assert error("--model", str(missing), *common[2:], "--passages", str(run["tsv"])) == (
        f"umr-jax retrieve: error: {missing}: no such model folder; expected a Hugging Face model folder or a model ID "
        "(org/name[@revision])")
    other = tmp_path / "other.tsv"
    formats.write_dpr_passages(other, [formats.Passage(f"x{p.id}", p.title, p.text) for p in demo_passages(N_PASSAGES)])
    assert "returned by the index is not in this collection" in error(*common, "--passages", str(other))
    assert error(*common, "--passages", str(tmp_path / "none.tsv")).endswith(f"{tmp_path / 'none.tsv'}: no such file; expected a DPR passage TSV")
    assert not (tmp_path / "out.jsonl").exists()


def test_passages_by_row_number_for_an_index_without_ids(run, tmp_path):
    """An index built from a bare .npy returns row numbers; both collection formats resolve them."""
    from umr_jax.errors import InputError
    from umr_jax.retrieval.retrieve import attach_passages, fetch_passages

    passages = demo_passages(N_PASSAGES)
    formats.write_passages_jsonl(tmp_path / "passages.jsonl", passages)
    for path, fmt in ((run["tsv"], "dpr-tsv"), (tmp_path / "passages.jsonl", "passages-jsonl")):
        found = fetch_passages(path, fmt, [7, 0, "12"])
        assert (found[7], found[0], found["12"]) == (passages[7], passages[0], passages[11])
        with pytest.raises(InputError, match=f"row {N_PASSAGES} returned by the index is not in this collection"):
            fetch_passages(path, fmt, [N_PASSAGES])
    question = formats.Question("q1", "Mikä?", "fi", None)
    result, = attach_passages([question], np.array([[3, 1]]), np.array([[2.5, 1.25]], np.float32), fetch_passages(run["tsv"], "dpr-tsv", [1, 3]))
    assert [(c.id, c.score) for c in result.ctxs] == [(passages[3].id, 2.5), (passages[1].id, 1.25)] and result.answers is None
