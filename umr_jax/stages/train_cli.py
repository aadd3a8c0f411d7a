"""`umr-jax train --config NAME|FILE [key=value ...]`: stage-2 distillation (objective "distill") or
contrastive training on pairs (objective "contrastive"), as the config says.

  umr-jax train --config umr_xor_retrieve model.init=/models/mcontriever \
      data.pseudo_labels=runs/it0/pseudo_labels data.dev_pseudo_labels=runs/it0/dev_pseudo_labels

Resumes from the latest checkpoint in the output folder, if it was made with the same config
(logging, evaluation and checkpoint cadence and output paths may differ); a checkpoint made with
another config is refused, naming each differing key, unless --resume-anyway. SIGTERM saves and
exits cleanly. The resolved config is written to OUTPUT/config.json before the first step. A
progress bar (step, steps/s, time left, last loss) is drawn on a terminal; the log line every
train.log_every steps has the loss, steps/s, examples/s, tokens/s, MFU (on TPUs and GPUs) and
the time left, as OUTPUT/metrics.jsonl and OUTPUT/tensorboard do. Prints where it stopped and
the retrievers it exported (`--json`: the summary as one JSON object).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.config import config_help
    from umr_jax.runtime import add_runtime_flags

    parser.add_argument("--config", required=True, help=config_help("umr_xor_retrieve"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. train.epochs=3")
    parser.add_argument("--output", help="output folder (default: the config's output_dir)")
    parser.add_argument("--resume-anyway", action="store_true",
                        help="resume the output folder's checkpoint even if it was made with another config "
                             "(the differences are logged as a warning); without it such a resume is refused")
    add_runtime_flags(parser, role="train")


def run(args: argparse.Namespace) -> int:
    import logging

    from umr_jax.config import load_config
    from umr_jax.errors import InputError
    from umr_jax.outputs import check_output
    from umr_jax.parallel.cli_flags import emit
    from umr_jax.runtime import Runtime

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config, args.overrides)
    output = args.output or config.get("output_dir")
    if not output:
        raise InputError("no output folder: give --output DIR or output_dir=DIR", args.config)
    check_output(output, "folder")
    runtime = Runtime.from_config(config, args, role="train").start()
    objective = config.get("objective", "distill")
    if objective == "distill":
        from umr_jax.training.distill import train
    elif objective == "contrastive":
        from umr_jax.training.contrastive import train
    else:
        raise InputError(f"objective must be 'distill' or 'contrastive', got {objective!r}", args.config)
    from umr_jax.stages.train import locked
    from umr_jax.training.progress import TrainingProgress

    with locked(output, runtime):  # one writer per run folder
        summary = train(config, output_dir=output, runtime=runtime, resume_anyway=args.resume_anyway,
                        progress=TrainingProgress.for_terminal(enabled=not args.no_progress))
    emit(args, summary, f"{output}: {summary['reason']} at step {summary['steps']} of {summary['total_steps']}"
         + (f"; best retriever {summary['best_dir']}" if summary.get("best_dir") else "")
         + (f"; final retriever {summary['final_dir']}" if summary.get("final_dir") else ""))
    return 0 if summary["reason"] in ("done", "early_stopped", "preempted") else 1
