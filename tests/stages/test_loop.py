"""The UMR loop chains every stage and resumes after a kill in any stage without redoing
finished stages."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.demo.cli import demo_config
from umr_jax.models import T5EncoderDecoder, hf_io
from umr_jax.demo.models import scorer_config
from umr_jax.stages.loop import UmrLoop


class Killed(Exception):
    pass


@pytest.fixture(scope="module")
def tiny_scorer(tmp_path_factory):
    tokenizer = hf_io.load_tokenizer(demo_paths()["t5_tokenizer"])
    cfg = scorer_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id).replace(d_model=32, d_kv=8, d_ff=48)
    ids = np.ones((1, 4), np.int32)
    params = jax.tree_util.tree_map(np.asarray, __import__("flax").linen.meta.unbox(
        T5EncoderDecoder(cfg).init(jax.random.PRNGKey(0), ids, ids, ids)["params"]))
    return hf_io.export_model(tmp_path_factory.mktemp("scorer") / "scorer", cfg, params, family="t5", tokenizer=tokenizer)


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory):
    p = demo_paths()
    folder = tmp_path_factory.mktemp("corpus")
    formats.write_dpr_passages(folder / "passages.tsv", list(formats.read_dpr_passages(p["passages"]))[:240])
    formats.write_questions(folder / "train.jsonl", list(formats.read_questions(p["train_questions"]))[:32])
    formats.write_questions(folder / "dev.jsonl", list(formats.read_questions(p["dev_questions"]))[:16])
    return folder


def _config(tmp, retriever, scorer, corpus):
    c = demo_config(str(tmp / "run"))
    with c.unlocked():
        c.loop.update(retriever=str(retriever), scorer=str(scorer), passages=str(corpus / "passages.tsv"),
                      train_questions=str(corpus / "train.jsonl"), dev_questions=str(corpus / "dev.jsonl"),
                      eval_gold=str(corpus / "dev.jsonl"), top_k=8)
        c.score.update(top_k=4, max_source_length=128, max_target_length=32, tokens_per_batch=2048)
        c.model.update(query_max_length=32, passage_max_length=96)
        c.data.update(top_k=4, candidates_per_question=4)
        c.train.update(epochs=1, eval_every=1, checkpoint_every=1)
    return c


@pytest.mark.slow
def test_loop_resumes_after_a_kill_in_each_stage(tmp_path, tiny_retriever, tiny_scorer, small_corpus):
    config = _config(tmp_path, tiny_retriever, tiny_scorer, small_corpus)
    kill_at = [(0, "encode"), (0, "retrieve"), (0, "evaluate"), (0, "score"), (0, "train"), (1, "index")]
    started: list[tuple[int, str]] = []

    def on_stage(iteration, stage):
        started.append((iteration, stage))
        if kill_at and kill_at[0] == (iteration, stage) and started.count((iteration, stage)) == 1:
            kill_at.pop(0)
            raise Killed(f"{iteration}/{stage}")

    runs = 0
    while True:
        runs += 1
        try:
            history = UmrLoop(config, on_stage=on_stage).run(1)
            break
        except Killed:
            assert runs < 10
    assert runs == 7 and not kill_at
    # Every stage ran to completion once: a killed stage is retried once, a finished one never.
    for key in set(started):
        assert started.count(key) <= 4  # retrieve and score run twice per iteration (train and dev splits)
    assert started.count((0, "encode")) == 2 and started.count((0, "train")) == 2 and started.count((1, "encode")) == 1
    assert [r["iteration"] for r in history] == [0, 1]
    assert set(history[0]["eval"]["r@2kt"]) >= {"average"} and "train" in history[0]
    assert history[1]["retriever"]["query"].endswith("query_encoder")
    assert json.loads((tmp_path / "run" / "history.json").read_text()) == json.loads(json.dumps(history))
    # A finished loop run again does nothing.
    started.clear()
    UmrLoop(config, on_stage=on_stage).run(1)
    assert started == []
