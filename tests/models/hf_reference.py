"""Tiny random Hugging Face models built with transformers + torch: the PyTorch references.

Nothing is downloaded: configs are written here, weights are random from a fixed seed, and
the folders are saved with `save_pretrained` exactly as real checkpoints are.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import transformers

T5_VOCAB = 150
BERT_WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(95)]


def make_mt5(folder: Path, seed: int = 0) -> transformers.PreTrainedModel:
    """mT5-style: gated-GELU, untied LM head, 3 encoder / 4 decoder layers."""
    torch.manual_seed(seed)
    config = transformers.MT5Config(
        vocab_size=T5_VOCAB, d_model=32, d_kv=8, d_ff=48, num_layers=3, num_decoder_layers=4, num_heads=4,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        relative_attention_num_buckets=16, relative_attention_max_distance=24,
    )
    model = transformers.MT5ForConditionalGeneration(config)
    with torch.no_grad():
        # transformers 5 builds mT5 with a tied head; real mT5 checkpoints have their own.
        model.lm_head.weight = torch.nn.Parameter(torch.randn(T5_VOCAB, 32))
        for p in model.parameters():  # break the default init's symmetries (e.g. all-ones norms)
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    reloaded = transformers.MT5ForConditionalGeneration.from_pretrained(folder).eval()
    assert not torch.equal(reloaded.lm_head.weight, reloaded.shared.weight), "fixture must have an untied head"
    return reloaded


def make_t5_original(folder: Path, seed: int = 1) -> transformers.PreTrainedModel:
    """Original T5: ReLU, LM head tied to the embedding, decoder output scaled by d_model**-0.5."""
    torch.manual_seed(seed)
    config = transformers.T5Config(
        vocab_size=T5_VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=3, num_decoder_layers=2, num_heads=4,
        feed_forward_proj="relu", tie_word_embeddings=True, decoder_start_token_id=0,
    )
    model = transformers.T5ForConditionalGeneration(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    reloaded = transformers.T5ForConditionalGeneration.from_pretrained(folder).eval()
    assert reloaded.config.scale_decoder_outputs
    return reloaded


def bert_tokenizer() -> transformers.PreTrainedTokenizerBase:
    return transformers.BertTokenizer(vocab={w: i for i, w in enumerate(BERT_WORDS)}, do_lower_case=False)


def make_bert(folder: Path, seed: int = 2, masked_lm: bool = False) -> transformers.PreTrainedModel:
    """mBERT-style tower (BertModel with pooler), or a BertForMaskedLM checkpoint (prefix `bert.`, MLM head)."""
    torch.manual_seed(seed)
    config = transformers.BertConfig(
        vocab_size=len(BERT_WORDS), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
        intermediate_size=48, max_position_embeddings=64, type_vocab_size=2,
    )
    model = (transformers.BertForMaskedLM if masked_lm else transformers.BertModel)(config)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    bert_tokenizer().save_pretrained(folder)
    return type(model).from_pretrained(folder).eval()


def make_xlmr(folder: Path, seed: int = 3) -> transformers.PreTrainedModel:
    """XLM-R-style tower: positions count from pad_token_id + 1, one token type, layer-norm eps 1e-5."""
    torch.manual_seed(seed)
    config = transformers.XLMRobertaConfig(
        vocab_size=120, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=70, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5,
    )
    model = transformers.XLMRobertaModel(config, add_pooling_layer=False)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(folder)
    return transformers.XLMRobertaModel.from_pretrained(folder, add_pooling_layer=False).eval()


def random_batch(rng: np.random.RandomState, batch: int, length: int, vocab: int, pad_id: int, lengths=None):
    """ids/mask [batch, length] with right padding; token ids avoid the pad id."""
    ids = rng.randint(0, vocab - 1, (batch, length))
    ids = np.where(ids >= pad_id, ids + 1, ids).astype(np.int32)
    mask = np.ones((batch, length), np.int32)
    for row, n in enumerate(lengths or []):
        mask[row, n:] = 0
        ids[row, n:] = pad_id
    return ids, mask


def torch_mean_pool(hidden: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    m = torch.tensor(mask, dtype=torch.float32)[..., None]
    return ((hidden * m).sum(1) / m.sum(1).clamp(min=1)).numpy()
