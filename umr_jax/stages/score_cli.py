"""`umr-jax score`: stage 1, pseudo labels by question likelihood under a frozen T5/mT5.

  umr-jax score --model /models/mt5-xl-lm-adapt --run retrieved.jsonl --output labels/
                [--top-k 100] [--reduction mean|sum] [--dtype bfloat16|float32]
                [--mesh data=1,fsdp=-1,model=1] [--rules fsdp|fsdp_tp|data_parallel]

The run is a retrieval run file (`retrieval` JSON lines `{id, question, lang, answers?, ctxs}` or
a `dpr-json` list); `--scorer` and `--retrieved` are the old names of `--model` and `--run`. The
output folder holds shards `pseudo_labels-NNNNN-of-NNNNN.jsonl` (the same records, ctxs cut to
the first top-k, `ctxs[*].score` = the LM score, plus `scorer`), `state.json`, and, once every
question is labelled, `manifest.json`. Rerunning the same command resumes.

Exit status: 0 when every question is labelled; 1 on invalid input or an output folder made
with other settings (one line, `file:line: message`); 2 on a usage error.
Imports nothing heavy at import time.
"""

from __future__ import annotations

import argparse
import sys


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.parallel.cli_flags import positive_int
    from umr_jax.runtime import add_runtime_flags
    from umr_jax.stages.encode_cli import add_known_language

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = "\n\n".join(__doc__.split("\n\n")[1:3])
    parser.add_argument("--model", "--scorer", dest="model", required=True, metavar="MODEL",
                        help="the scorer: a T5/mT5 Hugging Face model folder or model ID (e.g. google/mt5-xl, or the "
                             "folder of mT5-XL LM-adapted); --scorer is the old name")
    parser.add_argument("--run", "--retrieved", dest="run", required=True, metavar="FILE",
                        help="retrieval run: retrieval JSON lines or a dpr-json list (or its shard set); --retrieved is the old name")
    add_known_language(parser)
    parser.add_argument("--output", required=True, metavar="DIR", help="pseudo-label folder (created; an existing one is resumed)")
    parser.add_argument("--top-k", type=positive_int, default=100, help="score the first K ctxs of each question (default: 100, UMR's)")
    parser.add_argument("--reduction", choices=["mean", "sum"], default="mean",
                        help="mean token log-probability (UMR, default) or their sum (UPR)")
    parser.add_argument("--dtype", choices=["bfloat16", "float32"], default="bfloat16",
                        help="compute dtype (default: bfloat16; float16 overflows in T5)")
    parser.add_argument("--questions-per-chunk", type=positive_int, default=256,
                        help="questions scored together and written as one shard (default: 256)")
    parser.add_argument("--tokens-per-batch", type=positive_int, default=16384,
                        help="padded source tokens per global batch; rows = this / source bucket (default: 16384)")
    parser.add_argument("--vocab-chunk-size", type=positive_int, default=16384,
                        help="vocabulary rows per step of the log-sum-exp (default: 16384)")
    parser.add_argument("--resume-from", metavar="FILE",
                        help="reuse the scores of a previous output (retrieval JSON lines or DPR JSON list) keyed by (question id, passage id)")
    parser.add_argument("--skip-invalid", action="store_true",
                        help="skip invalid questions (malformed, duplicate id, no ctxs) and print how many, instead of stopping")
    add_runtime_flags(parser, role="score")


class _RichProgress:
    """A rich progress bar over pairs: done / total, pairs/s of this run's scoring, time left."""

    def __init__(self):
        import time

        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._time = time.monotonic
        self.bar = Progress(TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TextColumn("pairs"),
                            TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("{task.fields[left]}"),
                            console=Console(stderr=True))
        self.task = None
        self.scored_pairs, self.first_scored_at, self.left = 0, None, None

    def started(self, total_pairs: int) -> None:
        self.bar.start()
        self.task = self.bar.add_task("score", total=total_pairs, rate="", left="")
        self.total = total_pairs

    def resumed(self, pairs: int) -> None:
        self.bar.update(self.task, advance=pairs)

    def scored(self, pairs: int) -> None:
        now = self._time()
        if self.first_scored_at is None:  # the first batch includes compilation: time from its end
            self.first_scored_at = now
        else:
            self.scored_pairs += pairs
        rate, left = "", ""
        elapsed = now - self.first_scored_at
        if elapsed > 0 and self.scored_pairs:
            per_second = self.scored_pairs / elapsed
            remaining = self.total - self.bar.tasks[0].completed - pairs  # before this batch's advance
            rate, left = f"{per_second:,.1f} pairs/s", f"~{_duration(remaining / per_second)} left"
        self.bar.update(self.task, advance=pairs, rate=rate, left=left)

    def shard_written(self, index, path) -> None:
        pass

    def close(self) -> None:
        self.bar.stop()


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def run(args: argparse.Namespace) -> int:
    import jax

    from umr_jax.errors import InputError
    from umr_jax.labeling.scorer import QuestionLikelihoodScorer
    from umr_jax.outputs import check_output
    from umr_jax.parallel.cli_flags import emit
    from umr_jax.runtime import Runtime
    from umr_jax.stages import score_folder, score_input
    from umr_jax.stages.encode_cli import known_languages
    from umr_jax.stages.score import score_retrieved

    # Everything that can be refused is checked before the model is loaded.
    check_output(args.output, "folder")
    retrieved = score_input.inspect_retrieved(args.run, top_k=args.top_k, skip_invalid=args.skip_invalid,
                                              known_languages=known_languages(args))
    if retrieved.questions == 0:
        skipped = f" ({sum(retrieved.skipped.values())} skipped as invalid)" if retrieved.skipped else ""
        raise InputError(f"no questions to score{skipped}; expected retrieval results with at least one question",
                         args.run)
    settings = score_folder.Stage1Settings(
        scorer=str(args.model), scorer_fingerprint=score_folder.scorer_fingerprint(args.model), reduction=args.reduction,
        dtype=args.dtype, top_k=args.top_k, max_source_length=512, max_target_length=128)
    score_folder.ScoreFolder(args.output).check_settings(settings)  # changes nothing
    mesh, rules = Runtime.from_args(args, role="score").start().mesh_and_rules("score")
    scorer = QuestionLikelihoodScorer(args.model, mesh=mesh, rules=rules, dtype=args.dtype, reduction=args.reduction,
                                      max_source_length=settings.max_source_length, max_target_length=settings.max_target_length,
                                      tokens_per_batch=args.tokens_per_batch, vocab_chunk_size=args.vocab_chunk_size)
    writer = jax.process_index() == 0
    progress = _RichProgress() if writer and not args.no_progress else None
    try:
        manifest = score_retrieved(args.run, args.output, scorer, top_k=args.top_k,
                                   questions_per_chunk=args.questions_per_chunk, resume_from=args.resume_from,
                                   skip_invalid=args.skip_invalid, retrieved_input=retrieved, progress=progress)
    finally:
        if progress is not None and progress.task is not None:
            progress.close()
    if writer:
        rate = manifest["pairs_per_second"]
        for line in retrieved.skipped_summary:
            print(f"skipped {line}", file=sys.stderr)
        emit(args, {"folder": str(args.output), **manifest},
             f"{args.output}: {manifest['questions']:,} questions, {manifest['pairs']:,} pairs pseudo-labelled "
             f"(scorer {manifest['scorer']}, {manifest['reduction']}, {manifest['dtype']}, top-{manifest['top_k']}); "
             f"{manifest['last_run']['pairs_scored']:,} scored in this run" + (f", {rate:,.1f} pairs/s overall" if rate else ""))
    return 0
