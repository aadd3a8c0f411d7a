"""The demo's shipped tiny models: what they are, that the code makes them deterministically,
and that the scorer is the teacher UMR needs (it prefers the question's own passages; checked
against the corpus's gold entity annotations, which no training stage ever reads)."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from umr_jax.data import formats
from umr_jax.demo import demo_paths, models
from umr_jax.models import hf_io


def test_shipped_models_are_the_specs_models():
    made = json.loads((models.PRETRAINED / "made.json").read_text())
    assert made["models"]["scorer"]["spec"] == models.dataclasses.asdict(models.SCORER_SPEC)
    assert made["models"]["retriever"]["spec"] == models.dataclasses.asdict(models.RETRIEVER_SPEC)
    tokenizer = hf_io.load_tokenizer(demo_paths()["t5_tokenizer"])
    scorer = hf_io.load_model(models.PRETRAINED / "scorer")
    expected = models.scorer_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    assert scorer.config.replace(vocab_chunk_size=0) == expected  # the chunk size is a loading choice
    retriever = hf_io.load_model(models.PRETRAINED / "retriever")
    assert retriever.config.hidden_size == 64 and retriever.config.num_hidden_layers == 2
    size = sum(f.stat().st_size for f in models.PRETRAINED.rglob("*") if f.is_file())
    assert size < 5_000_000


def test_make_scorer_is_deterministic(tmp_path):
    p = demo_paths()
    passages = [(x.title, x.text) for x in list(formats.read_dpr_passages(p["passages"]))[:64]]
    questions = [q.question for q in list(formats.read_questions(p["train_questions"]))[:64]]
    spec = models.DemoModelSpec(steps=3, batch_size=8, learning_rate=1e-3, seed=5)
    weights = []
    for name in ("a", "b"):
        folder = models.make_scorer(tmp_path / name, passages, p["t5_tokenizer"], questions=questions, spec=spec)
        weights.append((folder / "model.safetensors").read_bytes())
    assert weights[0] == weights[1]
    with pytest.raises(ValueError, match="unlabelled questions"):
        models.make_scorer(tmp_path / "c", passages, p["t5_tokenizer"], questions=[], spec=spec)


def test_shipped_scorer_prefers_the_question_entitys_passage():
    from umr_jax.labeling.scorer import QuestionLikelihoodScorer, ScorePair
    from umr_jax.parallel import mesh as mesh_lib

    p = demo_paths()
    passages = list(formats.read_dpr_passages(p["passages"]))
    by_title: dict[str, list] = {}
    for passage in passages:
        by_title.setdefault(passage.title, []).append(passage)
    gold = {g["id"]: g for g in map(json.loads, p["train_gold"].read_text().splitlines())}
    rng = random.Random(0)
    questions = [q for q in formats.read_questions(p["train_questions"])
                 if gold[q.id]["name_script"] == "latin" and gold[q.id]["entity"] in by_title]
    questions = rng.sample(questions, 48)
    pairs, candidates = [], 8
    for i, q in enumerate(questions):
        own = rng.choice(by_title[gold[q.id]["entity"]])
        others = rng.sample([x for x in passages if x.title != own.title], candidates - 1)
        for j, passage in enumerate([own] + others):
            pairs.append(ScorePair((i, j), q.question, passage.title, passage.text, q.lang))
    scorer = QuestionLikelihoodScorer(models.PRETRAINED / "scorer", mesh=mesh_lib.make_mesh({"data": -1}),
                                      rules="data_parallel", dtype="float32", max_source_length=96,
                                      max_target_length=48, tokens_per_batch=4096)
    scores = np.asarray(scorer.score(pairs)).reshape(len(questions), candidates)
    top1 = float(np.mean(np.argmax(scores, axis=1) == 0))
    # Chance is 1/8; a span-corruption scorer of the same size scored at chance.
    assert top1 >= 0.5, top1
