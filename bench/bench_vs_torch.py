"""Our JAX paths against the PyTorch (transformers) reference, in the same run, on the same
model config, the same random weights, the same inputs and the same machine:

  (a) stage-1 scoring, pairs/s, with an mT5 (gated-GELU, untied head);
  (b) passage encoding, passages/s, with a BERT tower (mean pooling);
  (c) one UMR distillation training step of the dual encoder (two BERT towers), steps/s.

Run from the repository root:

    python bench/bench_vs_torch.py                      # CPU default: --size mini; appends to bench/RESULTS.md
    python bench/bench_vs_torch.py --size base          # mT5-base / mBERT-base shapes, bf16 (a GPU)
    python bench/bench_vs_torch.py --which encode --no-record

The reference is batched the way the released UMR code batches: scoring takes one question at a
time with its K candidates as one batch padded to its longest passage (UPR's teacher-forced
log-likelihood over the full-vocabulary log-softmax); encoding takes the passages in file order
in batches of `--encode-batch`, padded to the longest in the batch; the training step is the
same loss (teacher log_softmax(10 x score) over each question's candidates, student
log_softmax over every passage of the batch, KL) with torch.optim.AdamW and gradient clipping.
Ours is what `umr-jax score`, `encode` and `train` run: length-bucketed batches across questions
with the vocabulary log-sum-exp in chunks; length-bucketed encoding; the jitted, sharded train
step. Weights are random (a fixed seed) and written once as a Hugging Face folder that both
sides load. Inputs are random token ids with UMR-like lengths. Every timing follows a warm-up
run (XLA compilation and torch's first-call overheads are not timed); the table also gives the
largest difference between the two sides' outputs (scores, embeddings, the first step's loss;
dropout is off on both sides for that), so a fast wrong answer shows.

MFU (GPU/TPU only): model FLOPs (matmuls, attention, the LM head; padded positions count, as
each side pads its own way, so each side's MFU uses its own padded shapes) divided by time and
by the device's bf16 dense peak.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from bench_retrieval import RESULTS, _append_row, _device, forward_flops, peak_flops  # noqa: E402

SECTION = "## JAX against the PyTorch reference (bench/bench_vs_torch.py)"
HEADER = (
    "| date | device | versions | command | workload | ours | reference | ours / reference | MFU ours / reference | max difference |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n"
)

# (mT5 d_model, d_kv, d_ff, encoder layers, decoder layers, heads, vocab), (BERT hidden, layers, heads, ff, vocab)
SIZES = {
    "mini": ((256, 32, 640, 4, 4, 8, 32128), (256, 4, 4, 1024, 30522)),
    "base": ((768, 64, 2048, 12, 12, 12, 250112), (768, 12, 12, 3072, 119547)),   # mT5-base, mBERT-base
}
# Workload sizes per model size: scoring (questions, candidates), encoding (passages, batch),
# training (questions, candidates), and the passage / question lengths.
WORKLOADS = {
    "mini": dict(questions=32, candidates=16, passages=512, encode_batch=64, train_q=8, train_c=8,
                 passage_lengths=(96, 192), question_lengths=(8, 24), train_steps=5),
    "base": dict(questions=32, candidates=100, passages=8192, encode_batch=512, train_q=16, train_c=16,
                 passage_lengths=(160, 256), question_lengths=(8, 32), train_steps=20),
}


# ---------------------------------------------------------------------------------------------
# Models: random weights saved once with transformers, loaded by both sides


def make_models(folder: Path, size: str):
    import torch
    import transformers

    (d, dkv, dff, enc, dec, heads, vocab), (h, layers, bheads, ff, bvocab) = SIZES[size]
    torch.manual_seed(0)
    t5 = transformers.MT5ForConditionalGeneration(transformers.MT5Config(
        vocab_size=vocab, d_model=d, d_kv=dkv, d_ff=dff, num_layers=enc, num_decoder_layers=dec, num_heads=heads,
        feed_forward_proj="gated-gelu", tie_word_embeddings=False, dropout_rate=0.0, decoder_start_token_id=0))
    with torch.no_grad():  # transformers 5 ties mT5's head at construction; real mT5 has its own
        t5.lm_head.weight = torch.nn.Parameter(torch.randn(vocab, d) * d ** -0.5)
    t5.save_pretrained(folder / "mt5")
    bert = transformers.BertModel(transformers.BertConfig(
        vocab_size=bvocab, hidden_size=h, num_hidden_layers=layers, num_attention_heads=bheads, intermediate_size=ff,
        max_position_embeddings=512, type_vocab_size=2), add_pooling_layer=False)
    bert.save_pretrained(folder / "bert")
    _write_bert_tokenizer(folder / "bert", bvocab)
    _write_t5_tokenizer_config(folder / "mt5")
    return folder / "mt5", folder / "bert"


def _write_bert_tokenizer(folder: Path, vocab: int) -> None:
    import transformers

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(vocab - 5)]
    transformers.BertTokenizer(vocab={w: i for i, w in enumerate(words)}, do_lower_case=False).save_pretrained(folder)


def _write_t5_tokenizer_config(folder: Path) -> None:
    # The scorer loads a tokenizer from its folder; the benchmark feeds token ids, so any T5
    # tokenizer does: the demo's (its ids are never used here).
    import shutil

    from umr_jax.demo import demo_paths

    for f in Path(demo_paths()["t5_tokenizer"]).iterdir():
        if f.is_file():
            shutil.copy(f, folder / f.name)


def _lengths(rng, count: int, bounds: tuple[int, int]):
    return rng.integers(bounds[0], bounds[1] + 1, count)


def _ids(rng, length: int, vocab: int):
    return rng.integers(5, vocab, length).tolist()


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _torch_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _torch_model(cls, folder: Path, dtype: str, *, train: bool = False, **kwargs):
    """A transformers model from `folder` on the GPU when there is one, in `dtype`."""
    import torch

    model = cls.from_pretrained(folder, **kwargs).to(_torch_device())
    model = model.train() if train else model.eval()
    return model.to(torch.bfloat16) if dtype == "bfloat16" else model


def _best_of(fn, repeats: int) -> float:
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - started)
    return best


def _row(workload: str, unit: str, count: int, ours_out, ours_time: float, ours_flops: float, reference, repeats: int,
         diff_what: str) -> dict:
    """Warm up and time `reference()` (-> (outputs, flops)), and put both sides in one table row."""
    import numpy as np

    reference()
    ref_out, ref_flops = reference()
    ref_time = _best_of(reference, repeats)
    return dict(workload=workload, unit=unit, ours=count / ours_time, reference=count / ref_time,
                ours_flops_per_s=ours_flops / ours_time, ref_flops_per_s=ref_flops / ref_time,
                diff=float(np.max(np.abs(np.asarray(ours_out) - ref_out))), diff_what=diff_what)


# ---------------------------------------------------------------------------------------------
# (a) scoring


def t5_score_flops(cfg, batch: int, src: int, tgt: int, sources: int | None = None) -> float:
    """Encoder forward on [sources (default batch), src] plus decoder forward on [batch, tgt]
    with cross-attention over src, plus the LM head over the whole vocabulary for every target
    position."""
    inner, d = cfg.num_heads * cfg.d_kv, cfg.d_model
    ff = (3 if cfg.is_gated_act else 2) * d * cfg.d_ff
    encoder = (batch if sources is None else sources) * src * cfg.num_layers * (2 * (4 * d * inner + ff) + 4 * src * inner)
    decoder = batch * tgt * cfg.num_decoder_layers * (2 * (8 * d * inner + ff) + 4 * tgt * inner + 4 * src * inner)
    return float(encoder + decoder + 2.0 * batch * tgt * d * cfg.vocab_size)


def bench_scoring(folder: Path, size: str, dtype: str, repeats: int):
    import numpy as np
    import torch
    import transformers

    from umr_jax.labeling.scorer import QuestionLikelihoodScorer, ScorePair
    from umr_jax.models import hf_io
    from umr_jax.parallel import mesh as mesh_lib

    w = WORKLOADS[size]
    rng = np.random.default_rng(1)
    cfg = hf_io.load_t5(folder, dtype=dtype).config
    vocab, eos, pad = cfg.vocab_size, 1, 0
    questions = [_ids(rng, n, vocab) + [eos] for n in _lengths(rng, w["questions"], w["question_lengths"])]
    sources, targets, pairs = [], [], []
    for qi, question in enumerate(questions):
        for n in _lengths(rng, w["candidates"], w["passage_lengths"]):
            sources.append(_ids(rng, n, vocab) + [eos])
            targets.append(question)
            pairs.append(ScorePair(len(pairs), f"q{qi}", "t", "x", "en"))

    class TokenScorer(QuestionLikelihoodScorer):
        def tokenize(self, batch_pairs):
            return [sources[p.key] for p in batch_pairs], [targets[p.key] for p in batch_pairs]

    max_src = 1 << (max(map(len, sources)) - 1).bit_length()
    ours = TokenScorer(str(folder), mesh=mesh_lib.make_mesh({"data": -1}), rules="data_parallel", dtype=dtype,
                       max_source_length=max_src, max_target_length=64, tokens_per_batch=max(8192, 64 * max_src))
    ours.score(pairs)  # compile every bucket
    ours_scores = ours.score(pairs)
    ours_time = _best_of(lambda: ours.score(pairs), repeats)
    ours_flops = sum(t5_score_flops(cfg, b["target_ids"].shape[0], b["source_ids"].shape[1], b["target_ids"].shape[1],
                                    sources=b["source_ids"].shape[0]) for _, b in ours.batches(pairs))

    device = _torch_device()
    model = _torch_model(transformers.MT5ForConditionalGeneration, folder, dtype)
    per_question = w["candidates"]

    def reference():
        out, flops = [], 0.0
        with torch.no_grad():
            for start in range(0, len(pairs), per_question):  # one question and its candidates per batch
                src = sources[start : start + per_question]
                tgt = targets[start : start + per_question]
                s_len, t_len = max(map(len, src)), max(map(len, tgt))
                ids = torch.full((len(src), s_len), pad, dtype=torch.long)
                labels = torch.full((len(src), t_len), -100, dtype=torch.long)
                for row, (s, t) in enumerate(zip(src, tgt)):
                    ids[row, : len(s)] = torch.tensor(s)
                    labels[row, : len(t)] = torch.tensor(t)
                ids, labels = ids.to(device), labels.to(device)
                logits = model(input_ids=ids, attention_mask=(ids != pad).long(), labels=labels).logits.float()
                log_probs = torch.log_softmax(logits, dim=-1)
                mask = labels != -100
                token = log_probs.gather(-1, labels.clamp(min=0)[..., None])[..., 0] * mask
                out.append((token.sum(1) / mask.sum(1)).cpu())
                flops += t5_score_flops(cfg, len(src), s_len, t_len)
        _sync()
        return torch.cat(out).numpy(), flops

    return _row(f"(a) scoring: {w['questions']} questions x {w['candidates']} candidates, mT5 {size}, {dtype}",
                "pairs/s", len(pairs), ours_scores, ours_time, ours_flops, reference, repeats, "mean log-prob")


# ---------------------------------------------------------------------------------------------
# (b) encoding


def bench_encoding(folder: Path, size: str, dtype: str, repeats: int):
    import numpy as np
    import torch
    import transformers

    from umr_jax.data.buckets import LengthBuckets
    from umr_jax.parallel import mesh as mesh_lib
    from umr_jax.retrieval.encode import TowerEncoder

    w = WORKLOADS[size]
    rng = np.random.default_rng(2)
    encoder = TowerEncoder(folder, mesh=mesh_lib.make_mesh({"data": -1}), dtype=dtype, pooling="mean")
    vocab, pad, batch = encoder.config.vocab_size, 0, encoder.round_batch(w["encode_batch"])
    passages = [[2] + _ids(rng, n - 2, vocab) + [3] for n in _lengths(rng, w["passages"], w["passage_lengths"])]
    buckets = LengthBuckets.powers_of_two(max(map(len, passages)), 32)

    def ours_batches():
        groups: dict[int, list[int]] = {}
        for i, p in enumerate(passages):
            groups.setdefault(buckets.padded(len(p)), []).append(i)
        for length, members in sorted(groups.items()):
            for start in range(0, len(members), batch):
                chunk = members[start : start + batch]
                ids = np.full((batch, length), pad, np.int32)
                for row, i in enumerate(chunk):
                    ids[row, : len(passages[i])] = passages[i]
                yield chunk, ids

    def ours():
        out = np.empty((len(passages), encoder.dim), np.float32)
        pending = [(chunk, encoder._dispatch(ids, (ids != pad).astype(np.int32))) for chunk, ids in ours_batches()]
        for chunk, result in pending:  # dispatch everything, then gather: the device never waits for the host
            out[chunk] = np.asarray(result)[: len(chunk)]
        return out

    ours()
    ours_out = ours()
    ours_time = _best_of(ours, repeats)
    ours_flops = sum(forward_flops(encoder.config, ids.shape[0], ids.shape[1]) for _, ids in ours_batches())

    device = _torch_device()
    model = _torch_model(transformers.BertModel, folder, dtype, add_pooling_layer=False)

    def reference():
        out, flops = [], 0.0
        with torch.no_grad():
            for start in range(0, len(passages), batch):  # file order, padded to the batch's longest
                chunk = passages[start : start + batch]
                length = max(map(len, chunk))
                ids = torch.full((len(chunk), length), pad, dtype=torch.long)
                for row, p in enumerate(chunk):
                    ids[row, : len(p)] = torch.tensor(p)
                ids = ids.to(device)
                mask = (ids != pad)
                hidden = model(input_ids=ids, attention_mask=mask.long()).last_hidden_state.float()
                m = mask[..., None].float()
                out.append(((hidden * m).sum(1) / m.sum(1)).cpu())
                flops += forward_flops(encoder.config, len(chunk), length)
        _sync()
        return torch.cat(out).numpy(), flops

    return _row(f"(b) encoding: {len(passages)} passages, batch {batch}, BERT {size}, {dtype}", "passages/s",
                len(passages), ours_out, ours_time, ours_flops, reference, repeats, "embedding")


# ---------------------------------------------------------------------------------------------
# (c) one distillation step


def bench_training(folder: Path, size: str, dtype: str, repeats: int):
    import jax
    import numpy as np
    import torch
    import transformers

    from umr_jax.parallel import mesh as mesh_lib
    from umr_jax.parallel import sharding as shd
    from umr_jax.training import common
    from umr_jax.training.gradcache import plain_value_and_grad
    from umr_jax.training.losses import umr_distillation_loss
    from umr_jax.training.state import make_optimizer, make_train_step, state_from_params

    w = WORKLOADS[size]
    q_count, c_count, steps = w["train_q"], w["train_c"], w["train_steps"]
    rng = np.random.default_rng(3)
    setup = common.build_dual_encoder(folder, separate_towers=True, pooling="mean", dtype=dtype, dropout=0.0)
    cfg = setup.tower_config
    vocab, pad = cfg.vocab_size, 0
    q_len = 1 << (w["question_lengths"][1] - 1).bit_length()
    p_len = 1 << (w["passage_lengths"][1] - 1).bit_length()

    def batch_of(seed):
        r = np.random.default_rng(seed)
        q = np.full((q_count, q_len), pad, np.int32)
        p = np.full((q_count * c_count, p_len), pad, np.int32)
        for row, n in enumerate(_lengths(r, q_count, w["question_lengths"])):
            q[row, :n] = _ids(r, n, vocab)
        for row, n in enumerate(_lengths(r, q_count * c_count, w["passage_lengths"])):
            p[row, :n] = _ids(r, n, vocab)
        scores = -r.uniform(0.5, 3.0, (q_count, c_count)).astype(np.float32)
        return {"query_ids": q, "query_mask": (q != pad).astype(np.int32), "passage_ids": p,
                "passage_mask": (p != pad).astype(np.int32), "lm_scores": scores,
                "candidate_mask": np.ones((q_count, c_count), bool)}

    batches = [batch_of(s) for s in range(steps)]
    mesh = mesh_lib.make_mesh({"data": -1})
    rules = "data_parallel"
    optimizer = make_optimizer(1e-5, total_steps=1000, warmup_steps=10, weight_decay=0.0, eps=1e-8, grad_clip_norm=2.0)
    state, shardings = state_from_params(setup.params, common.boxed_abstract_params(setup.module), optimizer, mesh, rules)
    module = setup.module

    def enc_q(params, ids, mask, rng_):
        return module.apply({"params": params}, ids, mask, False, method="encode_queries", rngs={"dropout": rng_})

    def enc_p(params, ids, mask, rng_):
        return module.apply({"params": params}, ids, mask, False, method="encode_passages", rngs={"dropout": rng_})

    def loss_on(q, p, batch):
        return umr_distillation_loss(q, p, batch["lm_scores"], temperature=10.0, candidate_mask=batch["candidate_mask"])

    vg = plain_value_and_grad(enc_q, enc_p, loss_on, query_chunk=q_count, passage_chunk=q_count * c_count)
    step = make_train_step(None, optimizer, mesh, shardings, shd.batch_sharding(mesh), rules, value_and_grad_fn=vg)
    key = jax.random.PRNGKey(0)
    global_batches = [shd.host_batch_to_global(b, mesh) for b in batches]
    state, metrics = step(state, global_batches[0], key)  # compile
    first_loss = float(metrics["loss"])

    def ours():
        nonlocal state
        for b in global_batches:
            state, m = step(state, b, key)
        jax.block_until_ready(m["loss"])

    ours_time = _best_of(ours, repeats) / steps
    flops = 3 * (forward_flops(cfg, q_count, q_len) + forward_flops(cfg, q_count * c_count, p_len))

    device = _torch_device()
    # Dropout off on both sides (ours: dropout=0.0 above), so the first-step losses must agree.
    towers = [_torch_model(transformers.BertModel, folder, dtype, train=True, add_pooling_layer=False,
                           hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0) for _ in range(2)]
    params = [p for t in towers for p in t.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-5, eps=1e-8, weight_decay=0.0)
    tb = [{k: torch.tensor(v).to(device) for k, v in b.items()} for b in batches]

    def pool(tower, ids, mask):
        hidden = tower(input_ids=ids.long(), attention_mask=mask.long()).last_hidden_state.float()
        m = mask[..., None].float()
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)

    def ref_step(b):
        q = pool(towers[0], b["query_ids"], b["query_mask"])
        p = pool(towers[1], b["passage_ids"], b["passage_mask"])
        student = torch.log_softmax(q @ p.T, dim=-1).view(q_count, q_count, c_count)
        own = student[torch.arange(q_count), torch.arange(q_count)]       # each question's own candidates
        teacher = torch.log_softmax(10.0 * b["lm_scores"], dim=-1)
        loss = (teacher.exp() * (teacher - own)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 2.0)
        opt.step()
        return loss

    first_ref = float(ref_step(tb[0]).detach())

    def reference():
        for b in tb:
            loss = ref_step(b)
        _sync()
        return loss

    ref_time = _best_of(reference, repeats) / steps
    return dict(workload=f"(c) distillation step: {q_count} questions x {c_count} candidates, 2 BERT {size} towers, {dtype}",
                unit="steps/s", ours=1 / ours_time, reference=1 / ref_time, ours_flops_per_s=flops / ours_time,
                ref_flops_per_s=flops / ref_time, diff=abs(first_loss - first_ref), diff_what="first-step loss")


# ---------------------------------------------------------------------------------------------


def _versions() -> str:
    import importlib.metadata as md
    import platform

    return (f"python {platform.python_version()}, jax {md.version('jax')}, jaxlib {md.version('jaxlib')}, "
            f"flax {md.version('flax')}, torch {md.version('torch')}, transformers {md.version('transformers')}")


def accelerator_defaults(args) -> tuple[str, str, bool]:
    """(size, dtype, on_accelerator) from --size/--dtype: base and bf16 on a GPU/TPU, mini and
    fp32 on a CPU, where torch is given every visible core."""
    import jax
    import torch

    on_accelerator = jax.devices()[0].platform != "cpu"
    if not on_accelerator:
        torch.set_num_threads(len(os.sched_getaffinity(0)))
    return (args.size or ("base" if on_accelerator else "mini"),
            args.dtype or ("bfloat16" if on_accelerator else "float32"), on_accelerator)


def print_and_record(script: str, argv: list[str] | None, columns: list[str], rows: list[list[str]], section: str,
                     header: str, record: bool) -> None:
    """Print the table (device and versions above it) and append each row to bench/RESULTS.md."""
    device, versions = _device(), _versions()
    args = sys.argv[1:] if argv is None else argv
    command = f"python bench/{script}" + (" " + " ".join(args) if args else "")
    date = datetime.date.today().isoformat()
    print(f"\n{device}; {versions}\n")
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
        if record:
            _append_row(section, header, f"| {date} | {device} | {versions} | `{command}` | " + " | ".join(cells) + " |")
    if record:
        print(f"\nappended to {RESULTS}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), help="model and workload size (default: base on a GPU, mini on a CPU)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], help="compute dtype (default: bfloat16 on a GPU, float32 on a CPU)")
    parser.add_argument("--which", default="score,encode,train", help="comma-separated: score, encode, train")
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per side; the best is reported")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)

    import jax

    size, dtype, _ = accelerator_defaults(args)
    peak = peak_flops(jax.devices()[0])
    which = [w.strip() for w in args.which.split(",") if w.strip()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        mt5, bert = make_models(Path(tmp), size)
        runners = {"score": lambda: bench_scoring(mt5, size, dtype, args.repeats),
                   "encode": lambda: bench_encoding(bert, size, dtype, args.repeats),
                   "train": lambda: bench_training(bert, size, dtype, args.repeats)}
        for name in which:
            if name not in runners:
                parser.error(f"--which: unknown {name!r} (score, encode, train)")
            print(f"running {name} ...", flush=True)
            rows.append(runners[name]())

    table = []
    for r in rows:
        mfu = "n/a (CPU)" if peak is None else f"{r['ours_flops_per_s'] / peak:.1%} / {r['ref_flops_per_s'] / peak:.1%}"
        table.append([r["workload"], f"{r['ours']:.3g} {r['unit']}", f"{r['reference']:.3g} {r['unit']}",
                      f"{r['ours'] / r['reference']:.2f}x", mfu, f"{r['diff']:.2e} ({r['diff_what']})"])
    print_and_record("bench_vs_torch.py", argv, ["workload", "ours", "reference", "ours / reference", "MFU ours / reference",
                                                 "max difference"], table, SECTION, HEADER, not args.no_record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
