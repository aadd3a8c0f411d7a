"""The question-likelihood scorer: a frozen T5/mT5 sharded over the mesh.

score(question | passage) = mean (UMR, default) or sum (UPR) of the log-probabilities of the
target tokens "Question: <question></s>" given the encoder input built by `prompts`.

Pairs are tokenized once, grouped into (source length, target length) buckets of fixed padded
sizes, and batched across questions, so the jitted scoring function compiles once per bucket
pair and every batch is full. Batch sizes follow a token budget: short sources get more rows.
The encoder input depends on the passage and the question's language only, and questions
retrieve many of the same passages, so each distinct input is encoded once per batch and its
states are shared by every pair that needs it (`batches`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Sequence

import jax
import numpy as np

from umr_jax.data.buckets import LengthBuckets
from umr_jax.labeling import prompts
from umr_jax.models import hf_io
from umr_jax.models.t5 import T5EncoderDecoder, sequence_scores
from umr_jax.parallel import sharding as shd


# Pairs per encoded source a batch can be built for (its source rows = target rows / sharing).
SHARING = (1.0, 1.5, 2.0, 3.0, 4.0, 8.0)


@dataclasses.dataclass(frozen=True)
class ScorePair:
    """One (question, candidate passage) pair to score; `key` identifies it in the output."""

    key: Any
    question: str
    title: str
    text: str
    lang: str


def scorer_overrides(dtype: str, vocab_chunk_size: int, scan_layers: bool = False) -> dict[str, Any]:
    """T5Config fields of a frozen scorer: no dropout, parameters stored in the compute dtype."""
    return dict(dtype=dtype, param_dtype=dtype, dropout_rate=0.0, vocab_chunk_size=vocab_chunk_size, scan_layers=scan_layers)


def jitted_score(module: T5EncoderDecoder, param_shardings: Any, mesh: jax.sharding.Mesh, rules: str | shd.Rules,
                 reduction: str):
    """The scorer's one program: `(params, batch) -> fp32 scores [target rows]`, batch as
    `QuestionLikelihoodScorer.batches` builds it. `umr-jax compile` compiles this very function."""
    import flax.linen as nn

    rule_list = list(shd.get_rules(rules))

    def score(params, batch):
        with nn.logical_axis_rules(rule_list):
            log_probs = module.apply(
                {"params": params}, batch["source_ids"], batch["source_mask"], batch["target_ids"], batch["target_mask"],
                source_index=batch["source_index"], method="token_log_probs",
            )
        return sequence_scores(log_probs, batch["target_mask"], reduction)

    return shd.MeshJit(score, mesh, in_shardings=(param_shardings, shd.batch_sharding(mesh)), out_shardings=shd.replicated(mesh))


def batch_shapes(rows: int, source_rows: int, blocks: int, source_length: int, target_length: int) -> dict[str, tuple]:
    """Shapes of one scorer batch (`_batch` below builds them)."""
    return {"source_ids": (source_rows, source_length), "source_mask": (source_rows, source_length),
            "source_index": (blocks, rows // blocks), "target_ids": (rows, target_length),
            "target_mask": (rows, target_length)}


class QuestionLikelihoodScorer:
    """Scores (question, passage) pairs with a frozen T5/mT5 from a Hugging Face folder or model ID."""

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
        scan_layers: bool = False,
        loaded: hf_io.LoadedModel | None = None,
    ):
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
        # Frozen: parameters are stored in the compute dtype (mT5-XL in bf16 is 7.5 GB, not 15).
        self.name = str(folder)  # as given: a folder, or a model ID (written into every label)
        self.folder = hf_io.resolve_model_dir(folder)
        loaded = loaded or hf_io.load_t5(self.folder, **scorer_overrides(dtype, vocab_chunk_size, scan_layers))
        self.config = loaded.config
        self.tokenizer = hf_io.load_tokenizer(self.folder)
        self.mesh = mesh
        self.reduction = reduction
        # Sources are most of the cost (and UMR's prompts spread over 150-300 tokens): finer buckets.
        self.source_buckets = LengthBuckets.half_powers_of_two(max_source_length, 64)
        self.target_buckets = LengthBuckets.powers_of_two(max_target_length, 16)
        self.max_source_length, self.max_target_length = max_source_length, max_target_length
        self.tokens_per_batch = tokens_per_batch
        self.rows_multiple = int(np.prod([mesh.shape[a] for a in shd.BATCH_AXES]))
        module = T5EncoderDecoder(self.config)
        example = (np.ones((1, 4), np.int32),) * 3
        shardings = shd.abstract_shardings(module, example, mesh, rules)
        self.params = shd.place_host_params(loaded.params, shardings)
        self._score = jitted_score(module, shardings, mesh, rules, reduction)

    def release(self) -> None:
        """Delete the parameters from the devices now (not when Python collects them); the
        scorer cannot score afterwards."""
        for leaf in jax.tree_util.tree_leaves(self.params):
            leaf.delete()
        self.params = None

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

    def source_rows(self, rows: int, sharing: float) -> int:
        """Source rows of a batch of `rows` target rows built for `sharing` pairs per source:
        the same number of source slots in each of the mesh's batch blocks."""
        blocks = self.rows_multiple
        return blocks * max(1, math.ceil(rows // blocks / sharing))

    def batches(self, pairs: Sequence[ScorePair]) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray]]]:
        """(row positions, padded batch) per bucketed batch: full-size batches, then per group a
        last batch of the smallest halving of that size that holds what is left.

        Each distinct encoder input is encoded once per batch and shared by all its pairs (many
        questions retrieve the same passage, and the encoder is most of the cost): within a
        (source bucket, target bucket) group the pairs are ordered by source, and each batch
        has `batch_rows` target rows and `source_rows(rows, sharing)` source rows, where
        `sharing` is the largest of SHARING the group's pairs-per-source ratio allows. Both are
        split into one block per batch device, and a row only reads sources of its own block
        (the compiled program gathers encoder states within each device, no collective).
        `row positions[r]` is the position in `pairs` of target row r, or -1 for padding.
        """
        src, tgt = self.tokenize(pairs)
        source_of: dict[tuple[int, ...], int] = {}
        sid = np.array([source_of.setdefault(tuple(s), len(source_of)) for s in src], np.int64)
        unique = list(source_of)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (s, t) in enumerate(zip(src, tgt)):
            groups.setdefault((self.source_buckets.padded(len(s)), self.target_buckets.padded(len(t))), []).append(i)
        blocks = self.rows_multiple
        for (s_len, t_len), positions in sorted(groups.items()):
            positions = sorted(positions, key=lambda i: sid[i])  # stable: one source's pairs together
            ratio = len(positions) / len(set(sid[positions].tolist()))
            sharing = max(f for f in SHARING if f <= ratio)
            rows = self.batch_rows(s_len)
            n_src = self.source_rows(rows, sharing)
            rows_per_block, src_per_block = rows // blocks, n_src // blocks
            layouts = self._pack(positions, sid, rows_per_block, src_per_block)
            for layout in layouts[:-1]:
                yield self._batch(layout, unique, sid, tgt, s_len, t_len, rows_per_block, src_per_block)
            # The group's last batch: the smallest halving of both sizes that still holds it in
            # one batch (at most log2(rows) more compiled shapes; small inputs stay small).
            tail = [i for members, _ in layouts[-1] for i in members]
            while rows_per_block > 1:
                smaller = self._pack(tail, sid, rows_per_block // 2, max(1, src_per_block // 2))
                if len(smaller) > 1:
                    break
                layouts, rows_per_block, src_per_block = smaller, rows_per_block // 2, max(1, src_per_block // 2)
            yield self._batch(layouts[-1], unique, sid, tgt, s_len, t_len, rows_per_block, src_per_block)

    def _pack(self, positions: Sequence[int], sid: np.ndarray, rows_per_block: int, src_per_block: int) -> list:
        """Pairs (ordered by source) -> batches, each `rows_multiple` blocks of at most
        `rows_per_block` pairs reading at most `src_per_block` distinct sources."""
        layouts: list[list[tuple[list[int], dict[int, int]]]] = [[([], {})]]
        for i in positions:
            members, slots = layouts[-1][-1]
            if len(members) == rows_per_block or (sid[i] not in slots and len(slots) == src_per_block):
                if len(layouts[-1]) == self.rows_multiple:
                    layouts.append([])
                layouts[-1].append(([], {}))
                members, slots = layouts[-1][-1]
            slots.setdefault(int(sid[i]), len(slots))
            members.append(i)
        return layouts

    def _batch(self, layout, unique, sid, tgt, s_len: int, t_len: int, rows_per_block: int, src_per_block: int):
        blocks, pad = self.rows_multiple, self.config.pad_token_id
        rows = blocks * rows_per_block
        batch = {
            "source_ids": np.full((blocks * src_per_block, s_len), pad, np.int32),
            "source_mask": np.zeros((blocks * src_per_block, s_len), np.int32),
            "source_index": np.zeros((blocks, rows_per_block), np.int32),
            "target_ids": np.full((rows, t_len), pad, np.int32),
            "target_mask": np.zeros((rows, t_len), np.int32),
        }
        row_positions = np.full(rows, -1, np.int64)
        for b, (members, slots) in enumerate(layout):
            for source, slot in slots.items():
                ids = unique[source]
                batch["source_ids"][b * src_per_block + slot, : len(ids)] = ids
                batch["source_mask"][b * src_per_block + slot, : len(ids)] = 1
            for r, i in enumerate(members):
                row = b * rows_per_block + r
                batch["source_index"][b, r] = slots[int(sid[i])]
                batch["target_ids"][row, : len(tgt[i])] = tgt[i]
                batch["target_mask"][row, : len(tgt[i])] = 1
                row_positions[row] = i
        empty = batch["source_mask"].sum(1) == 0
        batch["source_mask"][empty, 0] = 1  # padding sources: one token, so nothing divides by zero
        return row_positions, batch

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Scores [rows] of one global batch. Every process builds the same global batch and
        contributes its own slice of every array (its devices' blocks of target rows, sources
        and source indices); the result is replicated to all."""
        count, p = jax.process_count(), jax.process_index()
        local = {k: v[p * (len(v) // count) : (p + 1) * (len(v) // count)] for k, v in batch.items()}
        return np.asarray(self._score(self.params, shd.host_batch_to_global(local, self.mesh)))

    def score(self, pairs: Sequence[ScorePair], progress=None) -> np.ndarray:
        """fp32 scores [len(pairs)] in input order."""
        out = np.empty(len(pairs), np.float32)
        for row_positions, batch in self.batches(pairs):
            real = row_positions >= 0
            out[row_positions[real]] = self.score_batch(batch)[real]
            if progress is not None:
                progress(int(real.sum()))
        return out
