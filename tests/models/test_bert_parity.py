"""Our Flax BERT / XLM-R towers against the Hugging Face PyTorch models, and the exports."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import transformers

from umr_jax.models import hf_io
from umr_jax.models.bert import BertEncoderTower
from tests.models.hf_reference import BERT_WORDS, make_bert, make_xlmr, random_batch, torch_mean_pool

FAMILIES = {"bert": (make_bert, len(BERT_WORDS), 0), "xlm-roberta": (make_xlmr, 120, 1)}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def bert_pair(request, tmp_path_factory):
    make, vocab, pad = FAMILIES[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    return make(folder), folder, vocab, pad


def _batch(vocab, pad, seed=0):
    rng = np.random.RandomState(seed)
    return random_batch(rng, 4, 30, vocab, pad, lengths=[30, 17, 5, 24])


def _torch_hidden(model, ids, mask):
    with torch.no_grad():
        return model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).last_hidden_state


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_pooled_embeddings_match_pytorch(bert_pair, pooling):
    torch_model, folder, vocab, pad = bert_pair
    tower = hf_io.load_bert(folder, pooling=pooling)
    ids, mask = _batch(vocab, pad)
    hidden = _torch_hidden(torch_model, ids, mask)
    ref = torch_mean_pool(hidden, mask) if pooling == "mean" else hidden[:, 0].numpy()
    ours = np.asarray(tower.module.apply({"params": tower.params}, ids, mask))
    assert np.abs(ours - ref).max() <= 1e-5


def test_hidden_states_match_pytorch_at_real_tokens(bert_pair):
    torch_model, folder, vocab, pad = bert_pair
    tower = hf_io.load_bert(folder)
    ids, mask = _batch(vocab, pad, 1)
    ref = _torch_hidden(torch_model, ids, mask).numpy()
    ours = np.asarray(tower.module.apply({"params": tower.params}, ids, mask, method="hidden_states"))
    real = mask.astype(bool)
    assert np.abs(ours[real] - ref[real]).max() <= 1e-5


def test_bert_pooler_matches_pytorch(tmp_path):
    torch_model = make_bert(tmp_path / "bert")
    tower = hf_io.load_bert(tmp_path / "bert", pooling="pooler")
    ids, mask = _batch(len(BERT_WORDS), 0, 2)
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).pooler_output.numpy()
    ours = np.asarray(tower.module.apply({"params": tower.params}, ids, mask))
    assert np.abs(ours - ref).max() <= 1e-5


def test_bf16_path_within_one_percent(bert_pair):
    torch_model, folder, vocab, pad = bert_pair
    tower = hf_io.load_bert(folder, dtype="bfloat16")
    ids, mask = _batch(vocab, pad, 3)
    ref = torch_mean_pool(_torch_hidden(torch_model, ids, mask), mask)
    ours = np.asarray(tower.module.apply({"params": tower.params}, ids, mask))
    rel = np.abs(ours - ref).max() / np.abs(ref).max()
    assert rel <= 1e-2, rel


def test_swapped_layers_break_parity(bert_pair):
    torch_model, folder, vocab, pad = bert_pair
    tower = hf_io.load_bert(folder)
    params = dict(tower.params)
    params["layers_0"], params["layers_1"] = params["layers_1"], params["layers_0"]
    ids, mask = _batch(vocab, pad, 4)
    ref = torch_mean_pool(_torch_hidden(torch_model, ids, mask), mask)
    ours = np.asarray(tower.module.apply({"params": params}, ids, mask))
    assert np.abs(ours - ref).max() > 1e-2


def test_masked_lm_checkpoint_loads_with_head_ignored(tmp_path):
    mlm = make_bert(tmp_path / "mlm", masked_lm=True)
    tower = hf_io.load_bert(tmp_path / "mlm")
    assert tower.ignored and all(name.startswith("cls.") for name in tower.ignored)
    ids, mask = _batch(len(BERT_WORDS), 0, 5)
    with torch.no_grad():
        hidden = mlm.bert(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask)).last_hidden_state
    ours = np.asarray(tower.module.apply({"params": tower.params}, ids, mask))
    assert np.abs(ours - torch_mean_pool(hidden, mask)).max() <= 1e-5


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_export_reloads_in_pytorch_with_tokenizer(bert_pair, tmp_path, pooling):
    torch_model, folder, vocab, pad = bert_pair
    tower = hf_io.load_bert(folder, pooling=pooling)
    tokenizer = hf_io.load_tokenizer(folder) if (folder / "tokenizer_config.json").exists() else None
    out = hf_io.export_model(tmp_path / "exported", tower.config, tower.params, family="bert", tokenizer=tokenizer)
    reloaded = transformers.AutoModel.from_pretrained(out).eval()
    ids, mask = _batch(vocab, pad, 6)
    ref = _torch_hidden(torch_model, ids, mask).numpy()
    got = _torch_hidden(reloaded, ids, mask).numpy()
    real = mask.astype(bool)
    assert np.abs(got[real] - ref[real]).max() <= 1e-5
    # The pooling travels with the folder (sentence-transformers files) and round-trips.
    again = hf_io.load_bert(out)
    assert again.config == tower.config
    if tokenizer is not None:
        assert hf_io.load_tokenizer(out)("w1 w2 w3")["input_ids"] == tokenizer("w1 w2 w3")["input_ids"] == [2, 6, 7, 8, 3]


def test_tower_module_rejects_unknown_pooling(bert_pair):
    _, folder, _, _ = bert_pair
    tower = hf_io.load_bert(folder)
    module = BertEncoderTower(tower.config.replace(pooling="max"))
    ids, mask = _batch(10, 0)
    with pytest.raises(ValueError, match="pooling"):
        module.apply({"params": tower.params}, ids, mask)
