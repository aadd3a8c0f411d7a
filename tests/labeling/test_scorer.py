"""Stage-1 scorer: prompts exactly as UMR builds them; scores equal PyTorch's likelihoods."""

from __future__ import annotations


import jax
import numpy as np
import pytest
import torch

from umr_jax.labeling import prompts
from umr_jax.labeling.scorer import QuestionLikelihoodScorer, ScorePair
from umr_jax.parallel import mesh as mesh_lib


def test_prompts_match_the_released_format():
    assert prompts.scorer_input("Tavoren", "A town by the river.", "ja") == (
        "Passage:  Tavoren A town by the river.. Please write a question based on this passage in Japanese."
    )
    assert prompts.scorer_input("T", "x", "xx") == "Passage:  T x. Please write a question based on this passage in xx."
    assert prompts.scorer_target("Kuka perusti Tavorenin") == "Question: Kuka perusti Tavorenin"
    assert [prompts.language_name(c) for c in ("ar", "bn", "fi", "ja", "ko", "ru", "te", "sv")] == [
        "Arabic", "Bengali", "Finnish", "Japanese", "Korean", "Russian", "Telugu", "Swedish"]


PAIRS = [
    ScorePair(("q1", "p1"), "Milloin Tavoren perustettiin", "Tavoren", "Tavoren is a town founded in 1743 on the Miro river.", "fi"),
    ScorePair(("q1", "p2"), "Milloin Tavoren perustettiin", "Kasimo", "Mirela Kasimo wrote four books about mountains, rivers and towns " * 6, "fi"),
    ScorePair(("q2", "p1"), "タヴォレンはいつ設立されましたか", "Tavoren", "Tavoren is a town founded in 1743 on the Miro river.", "ja"),
    ScorePair(("q3", "p3"), "Когда был основан Таворен", "Olbra", "Olbra is a river.", "ru"),
    ScorePair(("q4", "p4"), "Short", "T", "x", "xx"),
]


def _torch_scores(model, tokenizer, pairs, reduction):
    out = []
    for p in pairs:
        src = tokenizer(prompts.scorer_input(p.title, p.text, p.lang), max_length=512, truncation=True, return_tensors="pt")
        tgt = tokenizer(prompts.scorer_target(p.question), max_length=128, truncation=True, return_tensors="pt")["input_ids"]
        assert tgt[0, -1].item() == tokenizer.eos_token_id
        with torch.no_grad():
            logits = model(**src, labels=tgt).logits
        lp = torch.log_softmax(logits, -1).gather(-1, tgt[..., None])[0, :, 0]
        out.append(float(lp.mean() if reduction == "mean" else lp.sum()))
    return np.array(out)


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_scores_equal_pytorch(tiny_scorer_folder, reduction):
    folder, model, tokenizer = tiny_scorer_folder
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    scorer = QuestionLikelihoodScorer(str(folder), mesh=mesh, rules="fsdp", dtype="float32", reduction=reduction,
                                      tokens_per_batch=256, vocab_chunk_size=1000)
    scores = scorer.score(PAIRS)
    np.testing.assert_allclose(scores, _torch_scores(model, tokenizer, PAIRS, reduction), atol=2e-4, rtol=1e-5)


def test_scanned_bf16_scorer_stores_bf16_params_scores_as_unrolled_and_releases_them(tiny_scorer_folder):
    """The frozen scorer's params live in its compute dtype; scanning the layers changes no
    score; `release` frees the device arrays (the loop calls it before training)."""
    folder, _, _ = tiny_scorer_folder
    mesh = mesh_lib.make_mesh({"data": 2, "fsdp": 4})
    options = dict(mesh=mesh, rules="fsdp", dtype="bfloat16", tokens_per_batch=256, vocab_chunk_size=1000)
    unrolled = QuestionLikelihoodScorer(str(folder), **options)
    scanned = QuestionLikelihoodScorer(str(folder), scan_layers=True, **options)
    import jax
    import jax.numpy as jnp

    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(scanned.params)} == {jnp.dtype("bfloat16")}
    np.testing.assert_allclose(scanned.score(PAIRS), unrolled.score(PAIRS), atol=1e-2)
    leaves = jax.tree_util.tree_leaves(scanned.params)
    scanned.release()
    assert scanned.params is None and all(leaf.is_deleted() for leaf in leaves)


def test_batches_are_bucketed_and_full(tiny_scorer_folder):
    folder, _, _ = tiny_scorer_folder
    mesh = mesh_lib.make_mesh({"data": 8})
    scorer = QuestionLikelihoodScorer(str(folder), mesh=mesh, rules="data_parallel", tokens_per_batch=1024)
    many = [ScorePair(i, f"question {i}", "title", "word " * (i % 97), "fi") for i in range(300)]
    shapes, seen, groups = set(), [], {}
    for positions, batch in scorer.batches(many):
        rows, t_len = batch["target_ids"].shape
        s_rows, s_len = batch["source_ids"].shape
        assert rows % 8 == 0 and rows <= scorer.batch_rows(s_len) and s_rows % 8 == 0
        assert s_rows <= rows  # (i and i + 97 share a passage: fewer source rows than pairs)
        assert s_len in scorer.source_buckets.lengths and t_len in scorer.target_buckets.lengths
        shapes.add((batch["source_ids"].shape, batch["target_ids"].shape))
        groups.setdefault((s_len, t_len), []).append((rows, int((positions >= 0).sum())))
        seen += [int(p) for p in positions if p >= 0]
    assert sorted(seen) == list(range(300))
    for (s_len, _), batches in groups.items():
        # Every batch of a group is full-size but the last, which is the smallest halving that
        # holds what is left (so a half-size batch would not have held it).
        assert all(rows == scorer.batch_rows(s_len) for rows, _ in batches[:-1])
        last_rows, last_real = batches[-1]
        assert last_real <= last_rows and (last_rows == 8 or last_real > last_rows // 2 - 8)
    # Compiled shapes: the full size and the tails' halvings, per (source, target) bucket pair.
    assert len(shapes) <= 2 * len(groups)
    bf16 = scorer.score(many[:20])
    assert bf16.shape == (20,) and np.all(np.isfinite(bf16)) and np.all(bf16 < 0)


def test_shared_sources_score_as_if_each_pair_were_alone(tiny_scorer_folder):
    """Many questions retrieving the same passages: each distinct encoder input is encoded once
    per batch (fewer source rows than pairs, each row of a block reading its own block's
    sources), and the scores equal one-pair-at-a-time PyTorch on 8 devices and 1."""
    folder, model, tokenizer = tiny_scorer_folder
    rng = np.random.default_rng(0)
    passages = [(f"T{j}", "word " * int(rng.integers(1, 60)) + f"w{j}") for j in range(7)]
    pairs = [ScorePair(i, f"question {i} " + "q " * int(rng.integers(0, 9)), *passages[int(rng.integers(0, 7))],
                       "fi" if i % 3 else "ja") for i in range(90)]
    expected = _torch_scores(model, tokenizer, pairs, "mean")
    for devices in (8, 1):
        mesh = mesh_lib.make_mesh({"data": devices}, devices=jax.devices()[:devices])
        scorer = QuestionLikelihoodScorer(str(folder), mesh=mesh, rules="data_parallel", dtype="float32",
                                          tokens_per_batch=2048, vocab_chunk_size=1000)
        src, _ = scorer.tokenize(pairs)
        batches = list(scorer.batches(pairs))
        seen = []
        for positions, batch in batches:
            real = positions[positions >= 0]
            seen += real.tolist()
            blocks, per_block = batch["source_index"].shape
            assert blocks == devices and blocks * per_block == batch["target_ids"].shape[0]
            s_per_block = batch["source_ids"].shape[0] // blocks
            for row, i in enumerate(positions):
                if i >= 0:  # the row's source slot, in its own block, holds the pair's encoder input
                    b, r = divmod(row, per_block)
                    slot = b * s_per_block + batch["source_index"][b, r]
                    n = int(batch["source_mask"][slot].sum())
                    assert batch["source_ids"][slot, :n].tolist() == src[i]
        assert sorted(seen) == list(range(len(pairs)))
        assert sum(b["source_ids"].shape[0] for _, b in batches) < sum(b["target_ids"].shape[0] for _, b in batches)
        np.testing.assert_allclose(scorer.score(pairs), expected, atol=2e-4, rtol=1e-5)


def test_shared_sources_are_gathered_on_each_device(tiny_scorer_folder):
    """The compiled scoring program moves no encoder state between devices: the only
    collectives left gather the [rows] scores."""
    import re

    from umr_jax.parallel import sharding as shd

    folder, _, _ = tiny_scorer_folder
    scorer = QuestionLikelihoodScorer(str(folder), mesh=mesh_lib.make_mesh({"data": 8}), rules="data_parallel",
                                      dtype="float32", tokens_per_batch=2048, vocab_chunk_size=1000)
    pairs = [ScorePair(i, f"question {i}", f"T{i % 5}", "word " * 20, "fi") for i in range(200)]
    _, batch = next(iter(scorer.batches(pairs)))
    assert batch["source_ids"].shape[0] < batch["target_ids"].shape[0]
    hlo = scorer._score.lower(scorer.params, shd.host_batch_to_global(batch, scorer.mesh)).compile().as_text()
    collectives = [line for line in hlo.splitlines() if re.search(r"\b(all-gather|all-to-all|collective-permute|all-reduce)\(", line)]
    assert collectives, "expected the final gather of the scores"
    for line in collectives:  # rank-1 results only: f32[rows]
        assert re.search(r"= f32\[\d+\]", line), line
