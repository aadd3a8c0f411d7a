"""Fixtures shared by the stage-1 tests."""

from __future__ import annotations

import pytest
import torch
import transformers

from umr_jax.demo import demo_paths


@pytest.fixture(scope="module")
def tiny_scorer_folder(tmp_path_factory):
    """A tiny random mT5 (untied head) with the demo tokenizer: (folder, torch model, tokenizer)."""
    folder = tmp_path_factory.mktemp("scorer")
    tokenizer = transformers.AutoTokenizer.from_pretrained(demo_paths()["t5_tokenizer"])
    torch.manual_seed(0)
    config = transformers.MT5Config(vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=48, num_layers=2,
                                    num_decoder_layers=2, num_heads=4, feed_forward_proj="gated-gelu", decoder_start_token_id=0)
    model = transformers.MT5ForConditionalGeneration(config)
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn(len(tokenizer), 32))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder, model.eval(), tokenizer
