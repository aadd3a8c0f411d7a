"""The question-likelihood scorer: a frozen T5/mT5 sharded over the mesh.

score(question | passage) = mean (UMR, default) or sum (UPR) of the log-probabilities of the
target tokens "Question: <question></s>" given the encoder input built by `prompts`.

Pairs are tokenized once, grouped into (source length, target length) buckets of fixed padded
sizes, and batched across questions, so the jitted scoring function compiles once per bucket
pair and every batch is full. Batch sizes follow a token budget: short sources get more rows.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from umr_jax.data.pipeline import LengthBuckets
from umr_jax.labeling import prompts
from umr_jax.models import hf_io
from umr_jax.models.t5 import T5EncoderDecoder, sequence_scores
from umr_jax.parallel import sharding as shd


@dataclasses.dataclass(frozen=True)
class ScorePair:
    """One (question, candidate passage) pair to score; `key` identifies it in the output."""

    key: Any
    question: str
    title: str
    text: str
    lang: str


class QuestionLikelihoodScorer:
    """Scores (question, passage) pairs with a frozen T5/mT5 from a Hugging Face folder."""

    def __init__(
        self,
        folder: str,
        *,
        mesh: jax.sharding.Mesh,
        rules: str | shd.Rules = "fsdp",
        dtype: str = "bfloat16",
        reduction: str = "mean",
        max_source_length: int = 512,
        max_target_length: int = 128,
        tokens_per_batch: int = 16384,
        vocab_chunk_size: int = 16384,
        loaded: hf_io.LoadedModel | None = None,
    ):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        loaded = loaded or hf_io.load_t5(folder, dtype=dtype, dropout_rate=0.0, vocab_chunk_size=vocab_chunk_size)
        self.name = str(folder)
        self.config = loaded.config
        self.tokenizer = hf_io.load_tokenizer(folder)
        self.mesh = mesh
        self.reduction = reduction
        self.source_buckets = LengthBuckets.powers_of_two(max_source_length, 64)
        self.target_buckets = LengthBuckets.powers_of_two(max_target_length, 16)
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.tokens_per_batch = tokens_per_batch
        self.rows_multiple = int(np.prod([mesh.shape[a] for a in shd.BATCH_AXES]))
        module = T5EncoderDecoder(self.config)
        example = (np.ones((1, 4), np.int32),) * 3
        shardings = shd.abstract_shardings(module, example, mesh, rules)
        self.params = shd.place_host_params(loaded.params, shardings)
        rules = shd.get_rules(rules)

        def score(params, batch):
            import flax.linen as nn

            with nn.logical_axis_rules(list(rules)):
                log_probs = module.apply(
                    {"params": params}, batch["source_ids"], batch["source_mask"], batch["target_ids"], batch["target_mask"],
                    method="token_log_probs",
                )
            return sequence_scores(log_probs, batch["target_mask"], reduction)

        self._score = jax.jit(score, in_shardings=(shardings, shd.batch_sharding(mesh)), out_shardings=shd.replicated(mesh))

    def batch_rows(self, source_length: int) -> int:
        """Rows per batch for a source bucket: the token budget, rounded to the mesh's batch devices."""
        rows = max(1, self.tokens_per_batch // source_length)
        return max(self.rows_multiple, rows // self.rows_multiple * self.rows_multiple)

    def tokenize(self, pairs: Sequence[ScorePair]) -> tuple[list[list[int]], list[list[int]]]:
        sources = [prompts.scorer_input(p.title, p.text, p.lang) for p in pairs]
        targets = [prompts.scorer_target(p.question) for p in pairs]
        src = self.tokenizer(sources, max_length=self.max_source_length, truncation=True)["input_ids"]
        tgt = self.tokenizer(targets, max_length=self.max_target_length, truncation=True)["input_ids"]
        return src, tgt

    def batches(self, pairs: Sequence[ScorePair]) -> Iterator[tuple[list[int], dict[str, np.ndarray]]]:
        """(positions in `pairs`, padded batch) per full-size bucketed batch."""
        src, tgt = self.tokenize(pairs)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (s, t) in enumerate(zip(src, tgt)):
            groups.setdefault((self.source_buckets.padded(len(s)), self.target_buckets.padded(len(t))), []).append(i)
        pad = self.config.pad_token_id
        for (s_len, t_len), positions in sorted(groups.items()):
            rows = self.batch_rows(s_len)
            for start in range(0, len(positions), rows):
                chunk = positions[start : start + rows]
                batch = {
                    "source_ids": np.full((rows, s_len), pad, np.int32),
                    "source_mask": np.zeros((rows, s_len), np.int32),
                    "target_ids": np.full((rows, t_len), pad, np.int32),
                    "target_mask": np.zeros((rows, t_len), np.int32),
                }
                for row, i in enumerate(chunk):
                    batch["source_ids"][row, : len(src[i])] = src[i]
                    batch["source_mask"][row, : len(src[i])] = 1
                    batch["target_ids"][row, : len(tgt[i])] = tgt[i]
                    batch["target_mask"][row, : len(tgt[i])] = 1
                batch["source_mask"][len(chunk) :, 0] = 1  # padding rows: one token, so nothing divides by zero
                yield chunk, batch

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Scores [rows] of one global batch. Every process builds the same global batch and
        contributes its own rows; the result is replicated to all."""
        rows = next(iter(batch.values())).shape[0]
        per_process, p = rows // jax.process_count(), jax.process_index()
        local = {k: v[p * per_process : (p + 1) * per_process] for k, v in batch.items()}
        return np.asarray(self._score(self.params, shd.host_batch_to_global(local, self.mesh)))

    def score(self, pairs: Sequence[ScorePair], progress=None) -> np.ndarray:
        """fp32 scores [len(pairs)] in input order."""
        out = np.empty(len(pairs), np.float32)
        for positions, batch in self.batches(pairs):
            out[positions] = self.score_batch(batch)[: len(positions)]
            if progress is not None:
                progress(len(positions))
        return out
