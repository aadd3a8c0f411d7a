"""`umr-jax index build | search`: ANN (ScaNN) and exact indexes over embedding stores.

  umr-jax index build --embeddings PATH [--ids FILE] --backend scann|exact --output DIR
  umr-jax index search --index DIR --queries Q --top-k K --output R.npz
  umr-jax index search --index DIR --queries q_emb/ --top-k K --format trec-run --output run.trec

PATH is an embeddings folder written by `umr-jax encode` or a single `.npy` [rows, dim]
matrix (float16/float32), optionally with an ids file (one id per line). `search` reads the
query embeddings Q from an `umr-jax encode --queries` folder or a `.npy` [nq, dim]
(`--query-embeddings` is the old name of `--queries`) and writes, by `--format`: `npz`, arrays
`ids` [nq, k] (the ids, or row numbers when there are none) and `scores` [nq, k] (fp32); a
`trec-run`; or `retrieval` JSON lines (questions and passages from the files the query and passage
folders were encoded from, or `--questions` and `--passages`). Query ids come from the encode
folder (row numbers for a .npy).
Exact search spans every local device on its own one-axis mesh: no --mesh.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.parallel.cli_flags import non_negative_int, positive_int
    from umr_jax.stages.encode_cli import add_known_language, add_passages_format
    from umr_jax.stages.index import SEARCH_FORMATS

    sub = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build an index folder from embeddings", description=__doc__.split("\n\n")[1],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    build.add_argument("--embeddings", required=True, help="embeddings folder (manifest.json) or a .npy matrix")
    build.add_argument("--ids", help="ids file for a .npy matrix (one id per line); default: row numbers")
    build.add_argument("--backend", choices=["scann", "exact"], default="scann")
    build.add_argument("--output", required=True, help="index folder to write")
    build.add_argument("--top-k", type=positive_int, default=100, help="the k searches will ask for (sizes ScaNN's re-ordering)")
    tuning = build.add_argument_group("ScaNN settings (default: derived from the corpus size)")
    tuning.add_argument("--num-leaves", type=positive_int)
    tuning.add_argument("--leaves-to-search", type=positive_int)
    tuning.add_argument("--training-sample-size", type=positive_int)
    tuning.add_argument("--dims-per-block", type=positive_int, default=2)
    tuning.add_argument("--anisotropic-threshold", type=float, default=0.2)
    tuning.add_argument("--reorder-k", type=positive_int)
    tuning.add_argument("--brute-force-below", type=non_negative_int, default=20_000, help="score corpora smaller than this exactly")

    search = sub.add_parser("search", help="search an index with query embeddings", description=__doc__.split("\n\n")[2],
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    search.add_argument("--index", required=True, help="index folder")
    search.add_argument("--queries", "--query-embeddings", dest="queries", required=True, metavar="EMB",
                        help="query embeddings: an `umr-jax encode --queries` folder or a .npy [n_queries, dim] "
                             "(--query-embeddings is the old name)")
    search.add_argument("--top-k", type=positive_int, default=100, help="neighbours per query (default 100)")
    search.add_argument("--output", required=True, help="the file to write, in --format")
    search.add_argument("--format", choices=SEARCH_FORMATS, default="npz",
                        help="npz (arrays ids and scores, default), trec-run, or retrieval JSON lines")
    search.add_argument("--tag", default="umr-jax", help="run tag of --format trec-run (default umr-jax)")
    search.add_argument("--questions", metavar="FILE",
                        help="--format retrieval: the question file (default: the one the query folder was encoded from)")
    search.add_argument("--passages", metavar="FILE",
                        help="--format retrieval: the collection (default: the one the index's embeddings were encoded from)")
    add_passages_format(search)
    add_known_language(search)


def run(args: argparse.Namespace) -> int:
    import json

    from umr_jax.errors import InputError, UsageError
    from umr_jax.outputs import check_output, removed_on_failure
    from umr_jax.parallel.cli_flags import emit
    from umr_jax.retrieval.index import Index, ScannOptions
    from umr_jax.stages.encode_cli import known_languages
    from umr_jax.stages.index import build_index, encoded_from, read_query_embeddings, write_search_results

    if args.index_command == "build":
        check_output(args.output, "folder")
        options = ScannOptions(
            num_leaves=args.num_leaves,
            leaves_to_search=args.leaves_to_search,
            training_sample_size=args.training_sample_size,
            dims_per_block=args.dims_per_block,
            anisotropic_quantization_threshold=args.anisotropic_threshold,
            reorder_k=args.reorder_k,
            brute_force_below=args.brute_force_below,
        )
        folder = build_index(args.embeddings, args.output, backend=args.backend, ids_path=args.ids, k=args.top_k,
                             scann_options=options)
        meta = json.loads((folder / "index.json").read_text())
        emit(args, {"folder": str(folder), **meta},
             f"{folder}: {meta['backend']} index over {meta['rows']:,} x {meta['dim']} embeddings"
             + (f", settings {meta['scann']}" if "scann" in meta else ""))
        return 0

    if args.format == "trec-run" and (not args.tag or any(ch.isspace() for ch in args.tag)):
        raise UsageError(f"--tag {args.tag!r}: a TREC run tag is one word")
    check_output(args.output, "file")
    questions, passages, passages_format = args.questions, args.passages, args.passages_format
    if args.format == "retrieval":
        made = encoded_from(args.queries)
        if questions is None and made is not None and made[0] == "queries":
            questions = made[1]
        if questions is None:
            raise InputError("--format retrieval needs each query's question and language, and these query embeddings "
                             "name no question file: give --questions FILE", args.queries)
        made = encoded_from(Index.meta_of(args.index).get("embeddings", ""))
        if passages is None and made is not None and made[0] == "passages":
            passages, passages_format = made[1], "auto"
        if passages is None:
            raise InputError("--format retrieval needs the passages' titles and texts, and the index's embeddings name no "
                             "collection: give --passages FILE", args.index)
    queries, query_ids = read_query_embeddings(args.queries)
    ids, scores = Index.open(args.index).search(queries, args.top_k)
    with removed_on_failure(args.output):
        paths = write_search_results(args.output, args.format, query_ids, ids, scores, questions=questions, passages=passages,
                                     passages_format=passages_format, known_languages=known_languages(args), tag=args.tag)
    emit(args, {"paths": [str(p) for p in paths], "format": args.format, "queries": int(ids.shape[0]), "top_k": int(ids.shape[1])},
         f"{', '.join(map(str, paths))}: top-{ids.shape[1]} for {ids.shape[0]:,} queries ({args.format})")
    return 0
