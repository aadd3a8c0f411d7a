"""How the demo's tiny models are made: deterministically, from fixed seeds, on this corpus.

The demo cannot download mT5-XL or mContriever, so it builds stand-ins of the same families
and trains them briefly, without any labelled (question, passage) pair:

  scorer     a tiny mT5 (gated-GELU, untied head) pre-trained to write, for a passage, a
             question-like string that names the passage's subject: the target is the UMR
             prompt's "Question: " followed by a few noise tokens, the passage's title and a
             few more noise tokens, where the noise is drawn from the token frequencies of the
             unlabelled train questions. It learns what question likelihood needs from mT5 and
             what a tiny model does not pick up from span corruption in minutes: the question
             words are passage-independent noise, and a name in the question is copied from
             the passage. No question is ever paired with a passage.
  retriever  a tiny XLM-R tower warmed up Contriever-style: two independent random crops of
             the same passage are a positive pair, the other passages in the batch negatives.

Both are written as Hugging Face folders (weights, config, tokenizer), exactly like real
checkpoints, and every later stage loads them through `hf_io`. The demo ships both, made by

    python -m umr_jax.demo.models        # about 5 minutes on a 2-core CPU

into `umr_jax/demo/pretrained/`, so that the demo itself is the UMR loop;
`umr-jax demo --make-models` makes them afresh instead.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Sequence

import jax
import numpy as np

from umr_jax.models import BertConfig, BertEncoderTower, DualEncoder, T5Config, T5EncoderDecoder, hf_io
from umr_jax.parallel import mesh as mesh_lib
from umr_jax.parallel import sharding as shd
from umr_jax.data.batches import pad_rows as _pad
from umr_jax.training.losses import info_nce_loss
from umr_jax.training.state import create_train_state, make_optimizer, make_train_step


@dataclasses.dataclass(frozen=True)
class DemoModelSpec:
    steps: int
    batch_size: int
    learning_rate: float
    seed: int


SCORER_SPEC = DemoModelSpec(steps=800, batch_size=32, learning_rate=3e-3, seed=11)
RETRIEVER_SPEC = DemoModelSpec(steps=300, batch_size=64, learning_rate=1e-3, seed=12)
SCORER_SOURCE_LENGTH = 96   # the demo scores with score.max_source_length = 96 too
SCORER_TARGET_LENGTH = 32
PRETRAINED = Path(__file__).resolve().parent / "pretrained"
# The prompt languages the scorer is pre-trained with (the demo's question languages), in turn.
PROMPT_LANGUAGES = ("ar", "bn", "fi", "ja", "ko", "ru", "te")


def scorer_config(vocab_size: int, eos_id: int, pad_id: int) -> T5Config:
    return T5Config(
        vocab_size=vocab_size, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4,
        dropout_rate=0.0, dense_act_fn="gelu_new", is_gated_act=True, tie_word_embeddings=False,
        scale_decoder_outputs=False, pad_token_id=pad_id, eos_token_id=eos_id, decoder_start_token_id=pad_id,
        model_type="mt5", vocab_chunk_size=0,
    )


def retriever_config(vocab_size: int, pad_id: int) -> BertConfig:
    return BertConfig(
        vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=256 + pad_id + 1,
        type_vocab_size=1, layer_norm_eps=1e-5, pad_token_id=pad_id, model_type="xlm-roberta", pooling="mean",
    )


def _train(init, loss_fn, make_batch, spec: DemoModelSpec, progress: Callable[[int, float], None] | None):
    mesh = mesh_lib.make_mesh({"data": -1})
    optimizer = make_optimizer(spec.learning_rate, total_steps=spec.steps, warmup_steps=spec.steps // 10, grad_clip_norm=1.0)
    state, shardings = create_train_state(init, optimizer, mesh, "data_parallel")
    step = make_train_step(loss_fn, optimizer, mesh, shardings, shd.batch_sharding(mesh), "data_parallel")
    rng = np.random.default_rng(spec.seed)
    key = jax.random.PRNGKey(spec.seed)
    for i in range(spec.steps):
        state, metrics = step(state, shd.host_batch_to_global(make_batch(rng), mesh), jax.random.fold_in(key, i))
        if progress is not None:
            progress(i + 1, float(metrics["loss"]))
    return jax.tree_util.tree_map(np.asarray, state.params)


def make_scorer(output: str | Path, passages: Sequence[tuple[str, str]], tokenizer_dir: str | Path, *,
                questions: Sequence[str], spec: DemoModelSpec = SCORER_SPEC, progress=None) -> Path:
    """Pre-train the tiny mT5 scorer on `passages` ((title, text) pairs) to write a question-like
    string naming each passage's title amid noise drawn from the token frequencies of the
    unlabelled `questions` (see the module docstring). Deterministic for `spec.seed`."""
    from umr_jax.labeling import prompts

    tokenizer = hf_io.load_tokenizer(tokenizer_dir)
    cfg = scorer_config(len(tokenizer), tokenizer.eos_token_id, tokenizer.pad_token_id)
    module = T5EncoderDecoder(cfg)
    eos = tokenizer.eos_token_id
    if not questions:
        raise ValueError("the scorer's noise needs the unlabelled questions' token frequencies; none given")
    noise = np.concatenate([np.asarray(t, np.int64) for t in tokenizer(list(questions), add_special_tokens=False)["input_ids"]])
    head = tokenizer(prompts.scorer_target(""), add_special_tokens=False)["input_ids"]
    titles = tokenizer([title for title, _ in passages], add_special_tokens=False)["input_ids"]
    sources = [ids[: SCORER_SOURCE_LENGTH - 1] + [eos] for ids in tokenizer(
        [prompts.scorer_input(title, text, PROMPT_LANGUAGES[i % len(PROMPT_LANGUAGES)])
         for i, (title, text) in enumerate(passages)], add_special_tokens=False)["input_ids"]]

    def make_batch(rng):
        inputs, targets = [], []
        for d in rng.integers(0, len(sources), spec.batch_size):
            before = noise[rng.integers(0, len(noise), int(rng.integers(1, 10)))].tolist()
            after = noise[rng.integers(0, len(noise), int(rng.integers(0, 5)))].tolist()
            inputs.append(sources[d])
            targets.append((head + before + titles[d] + after)[: SCORER_TARGET_LENGTH - 1] + [eos])
        s, sm = _pad(inputs, SCORER_SOURCE_LENGTH, cfg.pad_token_id)
        t, tm = _pad(targets, SCORER_TARGET_LENGTH, cfg.pad_token_id)
        return {"source_ids": s, "source_mask": sm, "target_ids": t, "target_mask": tm}

    def init():
        ids = np.ones((1, 8), np.int32)
        return module.init(jax.random.PRNGKey(spec.seed), ids, ids, ids)["params"]

    def loss_fn(params, batch, rng):
        log_probs = module.apply({"params": params}, batch["source_ids"], batch["source_mask"], batch["target_ids"],
                                 batch["target_mask"], method="token_log_probs")
        return -log_probs.sum() / batch["target_mask"].sum(), {}

    params = _train(init, loss_fn, make_batch, spec, progress)
    return hf_io.export_model(output, cfg, params, family="t5", tokenizer=tokenizer)


def make_retriever(output: str | Path, passages: Sequence[tuple[str, str]], tokenizer_dir: str | Path, *,
                   spec: DemoModelSpec = RETRIEVER_SPEC, progress=None) -> Path:
    """Warm up the tiny XLM-R tower Contriever-style (independent cropping) on `passages`."""
    tokenizer = hf_io.load_tokenizer(tokenizer_dir)
    cfg = retriever_config(len(tokenizer), tokenizer.pad_token_id)
    docs = tokenizer([f"{title} {text}" for title, text in passages], add_special_tokens=False)["input_ids"]
    tower = BertEncoderTower(cfg)
    model = DualEncoder(tower)  # one shared tower during the warm-up
    length = 64
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id

    def crop(doc, rng):
        size = max(4, int(len(doc) * rng.uniform(0.1, 0.5)))
        start = int(rng.integers(0, max(1, len(doc) - size + 1)))
        return [cls] + doc[start : start + size][: length - 2] + [sep]

    def make_batch(rng):
        picks = rng.choice(len(docs), spec.batch_size, replace=False)
        q, qm = _pad([crop(docs[d], rng) for d in picks], length, cfg.pad_token_id)
        p, pm = _pad([crop(docs[d], rng) for d in picks], length, cfg.pad_token_id)
        return {"query_ids": q, "query_mask": qm, "passage_ids": p, "passage_mask": pm}

    def init():
        ids = np.full((1, 8), 5, np.int32)
        return tower.init(jax.random.PRNGKey(spec.seed), ids, np.ones_like(ids))["params"]

    def loss_fn(params, batch, rng):
        shared = {"query_tower": params}
        rq, rp = jax.random.split(rng)
        q = model.apply({"params": shared}, batch["query_ids"], batch["query_mask"], False, method="encode_queries", rngs={"dropout": rq})
        p = model.apply({"params": shared}, batch["passage_ids"], batch["passage_mask"], False, method="encode_passages", rngs={"dropout": rp})
        return info_nce_loss(q, p)

    params = _train(init, loss_fn, make_batch, spec, progress)
    return hf_io.export_model(output, cfg, params, family="bert", tokenizer=tokenizer, max_seq_length=256)


def make_demo_models(output: str | Path = PRETRAINED, progress: Callable[[str, int, int, float], None] | None = None
                     ) -> dict[str, Path]:
    """Make both demo models into `output`/{scorer,retriever} from the embedded corpus, with a
    `made.json` beside them (specs, seconds, final losses, versions). Returns the folders."""
    import json
    import platform
    import time

    from umr_jax.data import formats
    from umr_jax.demo import demo_paths

    p = demo_paths()
    output = Path(output)
    passages = [(x.title, x.text) for x in formats.read_dpr_passages(p["passages"])]
    questions = [q.question for q in formats.read_questions(p["train_questions"])]
    record = {"jax": jax.__version__, "python": platform.python_version(), "models": {}}
    folders = {}
    for name, spec in (("scorer", SCORER_SPEC), ("retriever", RETRIEVER_SPEC)):
        losses: list[float] = []

        def report(step, loss, name=name, spec=spec):
            losses.append(loss)
            if progress is not None:
                progress(name, step, spec.steps, loss)

        started = time.time()
        if name == "scorer":
            folders[name] = make_scorer(output / name, passages, p["t5_tokenizer"], questions=questions, spec=spec, progress=report)
        else:
            folders[name] = make_retriever(output / name, passages, p["xlmr_tokenizer"], spec=spec, progress=report)
        record["models"][name] = {"spec": dataclasses.asdict(spec), "seconds": round(time.time() - started, 1),
                                  "final_loss_mean_of_last_50": float(np.mean(losses[-50:]))}
    (output / "made.json").write_text(json.dumps(record, indent=2) + "\n")
    return folders


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m umr_jax.demo.models",
                                     description="Make the demo's tiny scorer and retriever (deterministic, fixed seeds).")
    parser.add_argument("--output", default=str(PRETRAINED), help=f"where to write them (default: {PRETRAINED})")
    args = parser.parse_args(argv)

    def progress(name, step, total, loss):
        if step % 50 == 0 or step == total:
            print(f"{name}: step {step}/{total}, loss {loss:.3f}", flush=True)

    for name, folder in make_demo_models(args.output, progress).items():
        print(f"{name}: {folder}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
