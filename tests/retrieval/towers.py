"""Tiny random retriever towers and demo-corpus slices shared by the retrieval tests."""

from __future__ import annotations

import itertools
from pathlib import Path

import jax
import numpy as np

from umr_jax.data import formats
from umr_jax.demo import demo_paths
from umr_jax.models import BertConfig, BertEncoderTower, T5Config, T5EncoderTower, hf_io


def random_params(module, seed: int) -> dict:
    """fp32 numpy params for `module`, drawn with numpy (no init to compile): norm scales near 1,
    biases near 0, weights with std 0.05."""
    ids = np.full((1, 8), 5, np.int32)
    shapes = hf_io.abstract_params(module, ids, np.ones_like(ids))
    rng = np.random.default_rng(seed)
    center = {"scale": 1.0}
    spread = {"scale": 0.1, "bias": 0.02}

    def draw(path, leaf):
        name = path[-1].key
        return (center.get(name, 0.0) + spread.get(name, 0.05) * rng.standard_normal(leaf.shape)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def make_xlmr_tower(folder: Path, seed: int = 0) -> Path:
    """A random 2-layer XLM-R tower (hidden 32) with the demo XLM-R tokenizer, as a HF folder."""
    tokenizer = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    pad = tokenizer.pad_token_id
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=256 + pad + 1, type_vocab_size=1,
                     layer_norm_eps=1e-5, pad_token_id=pad, model_type="xlm-roberta", pooling="mean")
    params = random_params(BertEncoderTower(cfg), seed)
    return hf_io.export_model(folder, cfg, params, family="bert", tokenizer=tokenizer, max_seq_length=256)


def make_mt5_tower(folder: Path, seed: int = 1) -> Path:
    """A random 2-layer mT5 encoder (d_model 32) with the demo mT5 tokenizer, as a HF folder."""
    tokenizer = hf_io.load_tokenizer(demo_paths()["t5_tokenizer"])
    cfg = T5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2, num_decoder_layers=2,
                   num_heads=4, dense_act_fn="gelu_new", is_gated_act=True, tie_word_embeddings=False,
                   scale_decoder_outputs=False, model_type="mt5", pad_token_id=tokenizer.pad_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    params = random_params(T5EncoderTower(cfg), seed)
    return hf_io.export_model(folder, cfg, params, family="t5-encoder", tokenizer=tokenizer)


def demo_passages(n: int) -> list[formats.Passage]:
    return list(itertools.islice(formats.read_dpr_passages(demo_paths()["passages"]), n))


def demo_questions(n: int, split: str = "dev") -> list[formats.Question]:
    """Every k-th question of a demo split, so that all seven languages are in a small sample."""
    questions = list(formats.read_questions(demo_paths()[f"{split}_questions"]))
    return questions[:: max(1, len(questions) // n)][:n]


def write_demo_tsv(path: Path, n: int) -> Path:
    """The first `n` demo passages as a DPR TSV."""
    formats.write_dpr_passages(path, demo_passages(n))
    return path


# Fixtures shared by the tower tests (tests/retrieval) and the encode stage's (tests/stages):
# import them by name into a test module.
import pytest  # noqa: E402


@pytest.fixture(scope="module")
def xlmr_folder(tmp_path_factory):
    return make_xlmr_tower(tmp_path_factory.mktemp("xlmr") / "tower")


@pytest.fixture(scope="module")
def encoder8(xlmr_folder):
    from umr_jax.parallel.mesh import make_mesh
    from umr_jax.retrieval.encode import TowerEncoder

    return TowerEncoder(xlmr_folder, mesh=make_mesh({"data": -1}), dtype="float32")
