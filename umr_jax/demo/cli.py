"""`umr-jax demo`: two UMR iterations plus evaluation on the embedded demo corpus, tiny models.

What it does, plainly:
  1. takes two tiny models made from fixed seeds on the demo passages, with no labelled pair
     anywhere (`umr_jax.demo.models`): a 2+2-layer mT5-style scorer pre-trained to write
     question-like strings that name a passage's subject, and a 2-layer XLM-R-style retriever
     warmed up Contriever-style (independent crops of a passage are positives). They ship with
     the package; `--make-models` makes them afresh here (about 5 more minutes);
  2. runs the UMR loop: encode the passages, index them exactly, retrieve for the unlabelled
     train questions, score the candidates with the scorer (question likelihood), distil the
     retriever from those scores, and repeat;
  3. evaluates every iteration's retriever on the dev questions with XOR-Retrieve R@2kt/R@5kt
     and prints the table before and after, with the teacher-student agreement.
Everything is written under --output and every stage resumes if the demo is run again.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import ml_collections


def demo_config(output: str = "runs/demo") -> ml_collections.ConfigDict:
    """The demo's loop config (configs/demo.py returns this too)."""
    from umr_jax.runtime import runtime_config
    from umr_jax.demo import demo_paths

    p = demo_paths()
    c = ml_collections.ConfigDict()
    c.objective = "distill"
    c.output_dir = output
    c.loop = dict(
        retriever="", retriever_passage="", scorer="",
        passages=str(p["passages"]), train_questions=str(p["train_questions"]), dev_questions=str(p["dev_questions"]),
        eval_gold=str(p["dev_questions"]), eval_tokenizer="nltk-line", top_k=100, index_backend="exact",
        dev_pseudo_labels=True,
    )
    c.encode = dict(dtype="float32", batch_size=256, shard_size=100_000)
    # The scorer was pre-trained on 96-token prompts (the title and the passage's first sentences).
    c.score = dict(dtype="float32", reduction="mean", top_k=16, max_source_length=96, max_target_length=48,
                   tokens_per_batch=8192, questions_per_chunk=1024)
    c.model = dict(init="", init_passage="", pooling="mean", separate_towers=True, dtype="float32",
                   query_max_length=48, passage_max_length=96)
    # One padded length per side: the step compiles once (52 steps would otherwise compile per bucket).
    c.data = dict(pseudo_labels="", dev_pseudo_labels="", top_k=16, candidates_per_question=8, subset_size=0,
                  fixed_lengths=True)
    c.train = dict(
        questions_per_batch=16, epochs=1, learning_rate=1e-3, adam_eps=1e-8, weight_decay=0.0, warmup_steps=5,
        grad_clip_norm=2.0, dropout=0.1, seed=12345, temperature=10.0, student_scale=1.0, grad_cache=False,
        query_chunk=16, passage_chunk=128, eval_every=1000, checkpoint_every=50, keep_checkpoints=1, log_every=10,
    )
    # One CPU host, data parallel in every role (the scorer too: it is tiny).
    c.runtime = runtime_config(score=dict(mesh="data=-1,fsdp=1,model=1", rules="data_parallel"))
    return c


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.parallel.cli_flags import positive_int

    parser.add_argument("--output", default="runs/demo", help="where everything is written (default runs/demo)")
    parser.add_argument("--iterations", type=positive_int, default=2, help="UMR iterations (default 2)")
    parser.add_argument("--make-models", action="store_true",
                        help="make the tiny scorer and retriever here (OUTPUT/models, about 5 minutes on 2 cores) "
                             "instead of using the ones shipped with the package, which the same code made")
    parser.add_argument("--resume-anyway", action="store_true",
                        help="let an interrupted training stage resume its checkpoint even if it was made with another "
                             "config (logged as a warning); without it such a resume is refused")
    from umr_jax.runtime import ROLES, add_runtime_flags

    add_runtime_flags(parser, roles=ROLES)  # --mesh ROLE:SPEC, as runtime.ROLE.mesh=SPEC (default: data parallel)


SCORER_WHAT = ("tiny mT5 scorer (d_model 64, 2+2 layers), pre-trained to name a passage's subject in a "
               "question-like string ({steps} steps)")
RETRIEVER_WHAT = "tiny XLM-R retriever (d_model 64, 2 layers), Contriever-style crop warm-up ({steps} steps)"


def _models(output: Path, console, make: bool) -> tuple[str, str]:
    from umr_jax.demo import models

    what = {"scorer": SCORER_WHAT.format(steps=models.SCORER_SPEC.steps),
            "retriever": RETRIEVER_WHAT.format(steps=models.RETRIEVER_SPEC.steps)}
    if not make:
        for name in ("scorer", "retriever"):
            folder = models.PRETRAINED / name
            if not (folder / "config.json").is_file():
                from umr_jax.errors import InputError

                raise InputError(f"the shipped demo {name} is missing; run the demo with --make-models", folder)
            console.print(f"{what[name]}: shipped, made by `python -m umr_jax.demo.models` -> {folder}")
        return str(models.PRETRAINED / "scorer"), str(models.PRETRAINED / "retriever")
    folder = output / "models"
    if all((folder / name / "config.json").is_file() for name in ("scorer", "retriever")):
        console.print(f"[dim]tiny models: reusing {folder}[/dim]")
    else:
        started = time.time()
        with console.status("making the tiny models") as status:
            def progress(name, step, total, loss):
                if step % 20 == 0:
                    status.update(f"making the {what[name]}: step {step}/{total}, loss {loss:.3f}")
            models.make_demo_models(folder, progress)
        console.print(f"{what['scorer']} and {what['retriever']}: made in {time.time() - started:.0f}s -> {folder}")
    return str(folder / "scorer"), str(folder / "retriever")


def _dev_records(path: Path) -> list[dict]:
    """The dev evaluations a trainer logged (metrics.jsonl lines with split "dev"), in order."""
    if not path.is_file():
        return []
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [r for r in records if r.get("split") == "dev" and "teacher_student_top1_agreement" in r]


def run(args: argparse.Namespace) -> int:
    import logging

    from rich.console import Console
    from rich.table import Table

    from umr_jax import storage
    from umr_jax.data.files import atomic_write_bytes
    from umr_jax.outputs import check_output
    from umr_jax.parallel.cli_flags import emit
    from umr_jax.runtime import Runtime
    from umr_jax.stages.loop import UmrLoop

    logging.basicConfig(level=logging.WARNING)
    console = Console(stderr=args.json)  # under --json stdout holds only the JSON object
    quiet = args.quiet
    started = time.time()
    check_output(args.output, "folder")
    output = storage.local(args.output)  # a gs:// output: its local mirror, uploaded as it is written
    console.print("[bold]umr-jax demo[/bold]: UMR on the embedded synthetic corpus (7 languages, 3,568 English "
                  "passages) with tiny models made from fixed seeds; no labelled question-passage pair is used.")
    scorer, retriever = _models(output, console, args.make_models)
    config = demo_config(storage.shown(output))
    with config.unlocked():
        config.loop.retriever = retriever
        config.loop.scorer = scorer
    runtime = Runtime.from_config(config, args).start()
    loop = UmrLoop(config, runtime=runtime, resume_anyway=args.resume_anyway,
                   on_stage=lambda i, s: quiet or console.print(f"[dim]iteration {i}: {s}[/dim]"))
    history = loop.run(args.iterations)

    table = Table(title="XOR-Retrieve on the demo dev questions (R@kt, %; tokens: nltk-line)")
    table.add_column("lang")
    langs = [k for k in history[0]["eval"]["r@2kt"] if k != "average"] + ["average"]
    for record in history:
        table.add_column(f"it{record['iteration']} R@2kt", justify="right")
        table.add_column(f"it{record['iteration']} R@5kt", justify="right")
    for lang in langs:
        row = [lang]
        for record in history:
            for k in ("r@2kt", "r@5kt"):
                value = record["eval"][k].get(lang)
                row.append("-" if value is None else f"{value:.1f}")
        table.add_row(*row)
    console.print(table)
    for record in history[:-1]:
        i = record["iteration"]
        dev = _dev_records(output / f"iter{i}" / "train" / "metrics.jsonl")
        if len(dev) >= 2:
            before, after = dev[0], dev[-1]
            best = record["train"]["best"]
            console.print(
                f"iteration {i} -> {i + 1}: teacher-student top-1 agreement on the dev questions' pseudo labels "
                f"{before['teacher_student_top1_agreement']:.3f} -> {after['teacher_student_top1_agreement']:.3f} "
                f"(student rank of the teacher's best of {config.score.top_k} candidates "
                f"{before['teacher_best_mean_rank']:.2f} -> {after['teacher_best_mean_rank']:.2f}); "
                f"the retriever kept is step {best.get('step', 0)}'s")
    first, last = history[0]["eval"], history[-1]["eval"]
    delta2 = last["r@2kt"]["average"] - first["r@2kt"]["average"]
    delta5 = last["r@5kt"]["average"] - first["r@5kt"]["average"]
    console.print(f"average R@2kt {first['r@2kt']['average']:.1f} -> {last['r@2kt']['average']:.1f} ({delta2:+.1f}), "
                  f"R@5kt {first['r@5kt']['average']:.1f} -> {last['r@5kt']['average']:.1f} ({delta5:+.1f}) "
                  f"after {args.iterations} iteration(s); {time.time() - started:.0f}s in all. Outputs: {storage.shown(output)}")
    spent: dict[str, float] = {}
    for key, seconds in loop.timings.items():
        stage = key.split("/", 1)[1]
        spent[stage] = spent.get(stage, 0.0) + seconds
    if spent:
        console.print("time by stage (this run): " + ", ".join(f"{k} {v:.0f}s" for k, v in spent.items()))
    summary = json.dumps({"history": history, "timings": loop.timings}, indent=2, default=str).encode("utf-8")
    atomic_write_bytes(output / "demo_summary.json", lambda f: f.write(summary))
    emit(args, {"output": storage.shown(output), "history": history, "timings": loop.timings}, None)
    return 0
