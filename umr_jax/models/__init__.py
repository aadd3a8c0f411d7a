"""Flax Linen models: T5/mT5 scorer and tower, BERT/XLM-R tower, dual encoder.

Models do no I/O; `umr_jax.models.hf_io` (with the `hf_checkpoint`, `hf_config` and `hf_mapping`
modules behind it) is the one place that knows Hugging Face folders.
"""

from umr_jax.models.bert import BertConfig, BertEncoderTower
from umr_jax.models.dual_encoder import DualEncoder, similarity_matrix
from umr_jax.models.t5 import T5Config, T5EncoderDecoder, T5EncoderTower, sequence_scores

__all__ = [
    "BertConfig",
    "BertEncoderTower",
    "DualEncoder",
    "T5Config",
    "T5EncoderDecoder",
    "T5EncoderTower",
    "sequence_scores",
    "similarity_matrix",
]
