"""`umr-jax retrieve`: the top-k passages of every question, in the field's formats.

  umr-jax retrieve --model DIR --index index/ --queries xor_dev.jsonl --passages psgs_w100.tsv \\
      --top-k 100 --output dev_run.jsonl [--format retrieval|dpr-json|xor-predictions|trec-run]

DIR is the query tower (for a dual encoder with separate towers, the one that encodes
questions); the index was built (`umr-jax index build`) from `umr-jax encode --passages` output
of the same collection. The output is written atomically; `retrieval` holds one question per line
`{id, question, lang, answers?, ctxs: [{id, title, text, score}]}` (formats as `umr-jax data` names
them; the old names jsonl and trec still work). Runs on one host: the
questions are encoded on this host's devices (`--mesh`), the index searched here.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.data.formats.table import aliases_of, canonical_format
    from umr_jax.parallel.cli_flags import positive_int
    from umr_jax.retrieval.retrieve import OUTPUT_FORMATS
    from umr_jax.runtime import add_runtime_flags
    from umr_jax.stages.encode_cli import add_known_language, add_passages_format, add_tower_arguments

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n")[1]
    add_tower_arguments(parser)
    parser.add_argument("--index", required=True, metavar="DIR", help="index folder (umr-jax index build)")
    parser.add_argument("--queries", required=True, metavar="FILE", help="questions: XOR-TyDi JSON lines {id, question, lang, answers?}")
    add_known_language(parser)
    parser.add_argument("--passages", required=True, metavar="FILE", help="the collection the index was built from: DPR TSV or JSON lines")
    add_passages_format(parser)
    parser.add_argument("--top-k", type=positive_int, default=100, help="passages per question (default 100)")
    parser.add_argument("--max-length", type=int, default=64, help="question truncation length in tokens (default 64)")
    parser.add_argument("--output", required=True, metavar="FILE", help="results file to write")
    parser.add_argument("--format", type=canonical_format, choices=OUTPUT_FORMATS, default="retrieval",
                        help=f"default retrieval (JSON lines); {aliases_of(OUTPUT_FORMATS)}")
    parser.add_argument("--tag", default="umr-jax", help="run tag of --format trec-run (default umr-jax)")
    add_runtime_flags(parser, role="encode")


def run(args: argparse.Namespace) -> int:
    import jax

    from umr_jax.data import formats
    from umr_jax.errors import InputError
    from umr_jax.outputs import check_output, removed_on_failure
    from umr_jax.parallel.cli_flags import emit
    from umr_jax.retrieval.encode import EncodeInput, TowerEncoder
    from umr_jax.stages.encode_cli import RichProgress, check_sizes, known_languages
    from umr_jax.runtime import Runtime
    from umr_jax.retrieval.index import Index
    from umr_jax.retrieval.retrieve import retrieve, write_results

    check_sizes(args, "batch_size", "max_length")
    check_output(args.output, "file")
    passages = EncodeInput.passages(args.passages, args.passages_format)
    passages.files()  # a missing collection fails before the model loads
    questions = list(formats.read_questions(args.queries, known_languages=known_languages(args)))
    if not questions:
        raise InputError("no questions; expected at least one to retrieve passages for", args.queries)
    mesh, rules = Runtime.from_args(args, role="encode").start().mesh_and_rules("encode")
    encoder = TowerEncoder(args.model, mesh=mesh, rules=rules, pooling=args.pooling, as_tower=args.as_tower, dtype=args.dtype)
    index = Index.open(args.index, devices=jax.local_devices())
    bar = RichProgress("queries", enabled=not args.no_progress)
    bar.start(len(questions))
    try:
        results = retrieve(encoder, index, questions, passages.path, passages_format=passages.format, top_k=args.top_k,
                           max_length=args.max_length, batch_size=args.batch_size, progress=bar.advance)
    finally:
        bar.close()
    with removed_on_failure(args.output):
        paths = write_results(args.output, results, args.format, tag=args.tag)
    k = len(results[0].ctxs)
    emit(args, {"paths": [str(p) for p in paths], "format": args.format, "questions": len(results), "top_k": k},
         f"{', '.join(map(str, paths))}: top-{k} passages for {len(results):,} questions ({args.format})")
    return 0
