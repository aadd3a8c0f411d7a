"""Analytic FLOP counts of the models' programs (matmuls only; the rest is a rounding error at
these sizes), from a tower's or scorer's config and the padded lengths of a batch.

`umr-jax compile` compares them with what the compiled program computes, and the trainers
divide them by the step time and the chips' peak for MFU.

    tower_forward_flops(bert_config, 256)         # one 256-token sequence through the tower
    dual_encoder_step_flops(bert_config, 16, 64, 256, 256)   # one training step, forward + backward
"""

from __future__ import annotations


def tower_forward_flops(cfg, length: int) -> float:
    """FLOPs of one sequence of `length` tokens through a BERT or T5 encoder tower."""
    if hasattr(cfg, "hidden_size"):  # BERT family
        d, ff, layers, inner, mlp = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers, cfg.hidden_size, 2
    else:
        d, ff, layers, inner = cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.num_heads * cfg.d_kv
        mlp = 3 if cfg.is_gated_act else 2
    per_layer = 2 * length * (4 * d * inner + mlp * d * ff) + 4 * length * length * inner
    return float(layers * per_layer)


def scorer_flops(cfg, source_rows: int, source_length: int, rows: int, target_length: int) -> float:
    """FLOPs of one scorer batch: the encoder over the sources, the decoder over the targets
    (self- and cross-attention), and every vocabulary logit of every target token."""
    d, ff, inner = cfg.d_model, cfg.d_ff, cfg.num_heads * cfg.d_kv
    mlp = 3 if cfg.is_gated_act else 2
    encoder = source_rows * tower_forward_flops(cfg, source_length)
    s, t = source_length, target_length
    per_layer = (2 * t * (4 * d * inner + 2 * d * inner + mlp * d * ff) + 2 * s * 2 * d * inner
                 + 4 * t * t * inner + 4 * t * s * inner)
    decoder = rows * (cfg.num_decoder_layers * per_layer + 2 * t * d * cfg.vocab_size)
    return float(encoder + decoder)


def dual_encoder_step_flops(cfg, queries: int, query_length: int, passages: int, passage_length: int) -> float:
    """Model FLOPs of one dual-encoder training step over a global batch of `queries` x
    `query_length` and `passages` x `passage_length` (padded) tokens: the towers' forward and
    backward (3 forwards). What MFU counts: gradient caching's extra forward and rematerialised
    layers are work the program adds, not model FLOPs."""
    forward = queries * tower_forward_flops(cfg, query_length) + passages * tower_forward_flops(cfg, passage_length)
    return 3.0 * forward
