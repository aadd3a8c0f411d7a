"""`umr-jax index build | search`: ANN (ScaNN) and exact indexes over embedding stores.

  umr-jax index build --embeddings PATH [--ids FILE] --backend scann|exact --output DIR
  umr-jax index search --index DIR --query-embeddings Q.npy --top-k K --output R.npz

PATH is an embeddings folder written by `umr-jax encode` or a single `.npy` [rows, dim]
matrix (float16/float32), optionally with an ids file (one id per line). `search` writes
`ids` [nq, k] (the ids, or row numbers when there are none) and `scores` [nq, k] (fp32).
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.parallel.cli_flags import non_negative_int, positive_int

    sub = parser.add_subparsers(dest="index_command", metavar="ACTION", required=True)
    build = sub.add_parser("build", help="build an index folder from embeddings")
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

    search = sub.add_parser("search", help="search an index with query embeddings")
    search.add_argument("--index", required=True, help="index folder")
    search.add_argument("--query-embeddings", required=True, help=".npy [n_queries, dim]")
    search.add_argument("--top-k", type=positive_int, default=100, help="neighbours per query (default 100)")
    search.add_argument("--output", required=True, help=".npz with arrays ids [nq, k] and scores [nq, k]")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from umr_jax.outputs import check_output, removed_on_failure
    from umr_jax.retrieval.embeddings import atomic_write_bytes, load_matrix
    from umr_jax.retrieval.index import Index, ScannOptions
    from umr_jax.stages.index import build_index

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
        print(f"{folder}: {meta['backend']} index over {meta['rows']:,} x {meta['dim']} embeddings"
              + (f", settings {meta['scann']}" if "scann" in meta else ""))
        return 0

    check_output(args.output, "file")
    queries = np.asarray(load_matrix(args.query_embeddings), np.float32)
    ids, scores = Index.open(args.index).search(queries, args.top_k)
    output = Path(args.output)
    with removed_on_failure(output):
        atomic_write_bytes(output, lambda f: np.savez(f, ids=ids, scores=scores))
    print(f"{output}: top-{ids.shape[1]} for {ids.shape[0]:,} queries")
    return 0
