"""Retrieval benchmark: encoding throughput (passages/s; MFU on GPU/TPU) and ScaNN against exact search.

Run from the repository root:

    python bench/bench_retrieval.py                  # prints tables, appends rows to bench/RESULTS.md
    python bench/bench_retrieval.py --base-passages 32 --rows 100000 --no-record   # quick look

Part 1, encoding: random towers written as Hugging Face folders and loaded the way
`umr-jax encode` loads them (`retrieval.encode.TowerEncoder`, data parallel over every device).
  tiny   the demo retriever's shape (XLM-R, hidden 64, 2 layers) over the demo passages;
  base   a BERT-base-sized XLM-R tower (hidden 768, 12 layers, 12 heads, FFN 3072; the demo
         vocabulary, which changes no matmul) over `--base-passages` demo passages.
Every length bucket is compiled first. "forward" times the jitted tower on the pre-tokenized
bucketed batches (each fetched back to the host); "end to end" times `encode_to_store` (tokenize,
forward, write shards). FLOPs are those of the forward on the padded batches (projections,
attention scores and values, feed-forward; embeddings and norms left out); MFU = FLOP/s over the
bf16 dense peak of the device kind, printed for GPUs and TPUs of known kind only.

Part 2, search: `--rows` x `--dim` float32 vectors drawn around `--clusters` random centres
(centres N(0, 1), offsets N(0, 0.75^2) per coordinate), `--queries` queries drawn the same way.
Exact: `retrieval.index.ExactSearcher` on the devices (the ground truth). ScaNN: the settings
`retrieval.index.scann_defaults` derives for the corpus (what `umr-jax index build` uses), plus a
second search with twice the leaves. Recall@k = |ScaNN top-k ∩ exact top-k| / k, averaged.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
ENCODE_SECTION = "## Encoding throughput (bench/bench_retrieval.py)"
ENCODE_HEADER = (
    "| date | device | versions | command | tower, dtype | passages | batch | forward passages/s | end-to-end passages/s | forward TFLOP/s | MFU |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)
SEARCH_SECTION = "## ScaNN against exact search (bench/bench_retrieval.py)"
SEARCH_HEADER = (
    "| date | device | versions | command | corpus | queries | exact q/s | ScaNN build s | ScaNN settings | ScaNN q/s | recall@100 |\n"
    "|---|---|---|---|---|---|---|---|---|---|---|\n"
)

# bf16 dense peak FLOP/s by device kind (vendor data sheets); matched in order on device_kind.
PEAK_BF16 = [
    ("H100 PCIe", 756e12), ("H100", 989e12), ("H200", 989e12), ("GH200", 989e12), ("B200", 2250e12),
    ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12), ("A10G", 70e12),
    ("TPU v6", 918e12), ("TPU v5p", 459e12), ("TPU v5", 197e12), ("TPU v4", 275e12),
]


def peak_flops(device) -> float | None:
    """bf16 dense peak FLOP/s of a GPU/TPU device by its kind; None on CPU or an unknown kind."""
    if device.platform not in ("gpu", "cuda", "rocm", "tpu"):
        return None
    for name, peak in PEAK_BF16:
        if name.lower() in device.device_kind.lower():
            return peak
    return None


def forward_flops(config, batch: int, length: int) -> float:
    """FLOPs of one tower forward on [batch, length] tokens (every padded position counts):
    2 per multiply-add of the projections, the feed-forward and attention (scores and values)."""
    from umr_jax.models import BertConfig

    if isinstance(config, BertConfig):
        d, inner, ff, layers, ff_mats = config.hidden_size, config.hidden_size, config.intermediate_size, config.num_hidden_layers, 2
    else:  # T5Config
        d, inner, ff, layers = config.d_model, config.num_heads * config.d_kv, config.d_ff, config.num_layers
        ff_mats = 3 if config.is_gated_act else 2
    per_token = 2 * (4 * d * inner + ff_mats * d * ff) + 2 * 2 * length * inner
    return float(batch) * length * layers * per_token


# ---------------------------------------------------------------------------------------------
# Part 1: encoding


def _random_params(module, seed: int) -> dict:
    import jax
    import numpy as np

    from umr_jax.models import hf_io

    ids = np.full((1, 8), 5, np.int32)
    shapes = hf_io.abstract_params(module, ids, np.ones_like(ids))
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        name = path[-1].key
        center, spread = {"scale": (1.0, 0.1), "bias": (0.0, 0.02)}.get(name, (0.0, 0.02))
        return (center + spread * rng.standard_normal(leaf.shape, dtype=np.float32)).astype(np.float32)

    return jax.tree_util.tree_map_with_path(draw, shapes)


def make_tower(folder: Path, size: str) -> Path:
    from umr_jax.demo import demo_paths
    from umr_jax.models import BertConfig, BertEncoderTower, hf_io

    tokenizer = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    pad = tokenizer.pad_token_id
    shape = {"tiny": (64, 2, 4, 128), "base": (768, 12, 12, 3072)}[size]
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=shape[0], num_hidden_layers=shape[1], num_attention_heads=shape[2],
                     intermediate_size=shape[3], max_position_embeddings=512 + pad + 1, type_vocab_size=1, layer_norm_eps=1e-5,
                     pad_token_id=pad, model_type="xlm-roberta", pooling="mean")
    return hf_io.export_model(folder, cfg, _random_params(BertEncoderTower(cfg), 0), family="bert", tokenizer=tokenizer)


def bench_encode(folder: Path, tsv: Path, passages: int, dtype: str, batch_size: int, tmp: Path) -> dict:
    import jax
    import numpy as np

    from umr_jax.data.passage_store import PassageStore
    from umr_jax.parallel.mesh import make_mesh
    from umr_jax.retrieval.encode import EncodeInput, TowerEncoder
    from umr_jax.stages.encode import encode_to_store

    encoder = TowerEncoder(folder, mesh=make_mesh({"data": -1}), dtype=dtype)
    records = [PassageStore(tsv)[i] for i in range(passages)]
    batches = list(encoder.batches(records, kind="passages", batch_size=batch_size))
    for shape in sorted({b["input_ids"].shape for b in batches}):  # compile every bucket first
        encoder.encode_batch(np.ones(shape, np.int32), np.ones(shape, np.int32))
    flops = sum(forward_flops(encoder.config, *b["input_ids"].shape) for b in batches)
    start = time.perf_counter()
    for b in batches:
        encoder.encode_batch(b["input_ids"], b["attention_mask"])
    forward = time.perf_counter() - start
    report = encode_to_store(encoder, EncodeInput.passages(tsv), tmp / f"emb-{folder.name}-{dtype}", batch_size=batch_size)
    peak = peak_flops(jax.devices()[0])
    return {
        "passages": passages,
        "batch": encoder.round_batch(batch_size),
        "forward_per_s": passages / forward,
        "e2e_per_s": report.rows_per_second,
        "tflops": flops / forward / 1e12,
        "mfu": flops / forward / peak if peak and dtype == "bfloat16" else None,
        "real_share": float(sum(b["attention_mask"].sum() for b in batches) / sum(b["attention_mask"].size for b in batches)),
    }


# ---------------------------------------------------------------------------------------------
# Part 2: ScaNN against exact search


def clustered(rng, rows: int, centers, noise: float, chunk: int = 65536):
    import numpy as np

    out = np.empty((rows, centers.shape[1]), np.float32)
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        out[start : start + n] = centers[rng.integers(0, len(centers), n)]
        out[start : start + n] += noise * rng.standard_normal((n, centers.shape[1]), dtype=np.float32)
    return out


def bench_search(rows: int, dim: int, n_queries: int, n_clusters: int, k: int, tmp: Path) -> dict:
    import numpy as np

    from umr_jax.retrieval.embeddings import EmbeddingStore
    from umr_jax.retrieval.index import ExactSearcher, Index, build_scann, scann_defaults

    rng = np.random.default_rng(0)
    centers = rng.standard_normal((n_clusters, dim), dtype=np.float32)
    corpus = clustered(rng, rows, centers, 0.75)
    queries = clustered(rng, n_queries, centers, 0.75)
    np.save(tmp / "corpus.npy", corpus)
    result: dict = {"rows": rows, "dim": dim, "queries": n_queries}

    exact = ExactSearcher.from_store(EmbeddingStore.open(tmp / "corpus.npy"))
    exact.search_rows(queries[:8], k)  # compile
    start = time.perf_counter()
    _, truth = exact.search_rows(queries, k)
    result["exact_qps"] = n_queries / (time.perf_counter() - start)
    del exact

    settings = scann_defaults(rows, k)
    start = time.perf_counter()
    searcher = build_scann(corpus, settings, k)
    result["build_s"] = time.perf_counter() - start
    index = Index(tmp, {"backend": "scann", "dim": dim, "rows": rows, "scann": settings}, None, _scann=searcher)
    index.search_rows(queries[:8], k)
    runs = []
    for leaves in (settings["leaves_to_search"], 2 * settings["leaves_to_search"]):
        start = time.perf_counter()
        if leaves == settings["leaves_to_search"]:
            found, _ = index.search_rows(queries, k)  # exactly what `umr-jax retrieve` does
        else:
            found, _ = searcher.search_batched_parallel(queries, final_num_neighbors=k, leaves_to_search=leaves,
                                                        pre_reorder_num_neighbors=settings["reorder_k"])
        qps = n_queries / (time.perf_counter() - start)
        recall = float(np.mean([len(set(a.tolist()) & set(b.tolist())) / k for a, b in zip(np.asarray(found), truth)]))
        runs.append({"leaves_to_search": leaves, "qps": qps, "recall": recall})
    result["settings"] = settings
    result["runs"] = runs
    return result


# ---------------------------------------------------------------------------------------------
# Reporting


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _device() -> str:
    import jax

    device = jax.devices()[0]
    if device.platform == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        return f"{_cpu_model()} ({cores} cores visible, 1 JAX CPU device)"
    return f"{jax.device_count()} x {device.device_kind}"


def _versions() -> str:
    import importlib.metadata as md

    import jax
    import numpy

    return (f"python {platform.python_version()}, jax {jax.__version__}, jaxlib {md.version('jaxlib')}, flax {md.version('flax')}, "
            f"scann {md.version('scann')}, numpy {numpy.__version__}")


def _append_row(section: str, header: str, row: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if section not in text:
        text = text.rstrip("\n") + f"\n\n{section}\n\n{header}"
    start = text.index(section)
    lines = text[start:].split("\n")
    end = next((i for i, line in enumerate(lines[1:], 1) if line.startswith("## ")), len(lines))
    last = max(i for i, line in enumerate(lines[:end]) if line.startswith("|"))
    lines.insert(last + 1, row)
    RESULTS.write_text(text[:start] + "\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny-passages", type=int, default=3568, help="demo passages for the tiny tower (all 3568 by default)")
    parser.add_argument("--base-passages", type=int, default=256, help="demo passages for the BERT-base-sized tower (0: skip)")
    parser.add_argument("--tiny-batch", type=int, default=256)
    parser.add_argument("--base-batch", type=int, default=32)
    parser.add_argument("--rows", type=int, default=1_000_000, help="corpus vectors for the search part (0: skip)")
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clusters", type=int, default=1000)
    parser.add_argument("--top-k", type=int, default=100)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))

    import jax

    from umr_jax.data import formats
    from umr_jax.demo import demo_paths

    device, versions = _device(), _versions()
    command = "python bench/bench_retrieval.py" + ("" if not (argv if argv is not None else sys.argv[1:]) else " " + " ".join(argv if argv is not None else sys.argv[1:]))
    date = datetime.date.today().isoformat()
    print(f"device: {device}\nversions: {versions}\n")
    peak = peak_flops(jax.devices()[0])
    if peak is None:
        print(f"MFU: not computed: it needs a GPU or TPU of a kind in PEAK_BF16; this run is on {jax.devices()[0].platform} "
              f"({jax.devices()[0].device_kind})\n")

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        encode_rows = []
        runs = [("tiny", args.tiny_passages, args.tiny_batch), ("base", args.base_passages, args.base_batch)]
        for size, passages, batch in runs:
            if passages <= 0:
                continue
            tsv = tmp / f"passages-{size}.tsv"
            formats.write_dpr_passages(tsv, (p for _, p in zip(range(passages), formats.read_dpr_passages(demo_paths()["passages"]))))
            folder = make_tower(tmp / f"tower-{size}", size)
            for dtype in ("bfloat16", "float32"):
                r = bench_encode(folder, tsv, passages, dtype, batch, tmp)
                encode_rows.append((f"{size}, {dtype}", r))
                print(f"encode {size:<5} {dtype:<9} {passages:>5} passages, batch {r['batch']:>4}: forward {r['forward_per_s']:>9.1f} passages/s, "
                      f"end to end {r['e2e_per_s']:>9.1f} passages/s, {r['tflops']:.3f} TFLOP/s"
                      + (f", MFU {100 * r['mfu']:.1f}%" if r["mfu"] is not None else "") + f", real-token share {r['real_share']:.2f}", flush=True)
        search = bench_search(args.rows, args.dim, args.queries, args.clusters, args.top_k, tmp) if args.rows > 0 else None

    if search is not None:
        s = search
        print(f"\nsearch over {s['rows']:,} x {s['dim']} float32 ({args.clusters} clusters), {s['queries']} queries, k={args.top_k}")
        print(f"exact (on device): {s['exact_qps']:.1f} queries/s")
        print(f"ScaNN build: {s['build_s']:.1f} s, settings {s['settings']}")
        for run in s["runs"]:
            print(f"ScaNN leaves_to_search={run['leaves_to_search']:>4}: {run['qps']:>8.1f} queries/s, recall@{args.top_k} {run['recall']:.4f}")

    if not args.no_record:
        for label, r in encode_rows:
            mfu = f"{100 * r['mfu']:.1f}%" if r["mfu"] is not None else "n/a (CPU)" if peak is None else "n/a (fp32)"
            _append_row(ENCODE_SECTION, ENCODE_HEADER,
                        f"| {date} | {device} | {versions} | `{command}` | {label} | {r['passages']} | {r['batch']} | "
                        f"{r['forward_per_s']:.1f} | {r['e2e_per_s']:.1f} | {r['tflops']:.3f} | {mfu} |")
        if search is not None:
            s = search
            scann = "; ".join(f"{run['qps']:.0f}" for run in s["runs"])
            recall = "; ".join(f"{run['recall']:.4f}" for run in s["runs"])
            leaves = " / ".join(str(run["leaves_to_search"]) for run in s["runs"])
            settings = f"{s['settings']['num_leaves']} leaves, search {leaves}, AH {s['settings']['dims_per_block']} dims/block, reorder {s['settings']['reorder_k']}"
            _append_row(SEARCH_SECTION, SEARCH_HEADER,
                        f"| {date} | {device} | {versions} | `{command}` | {s['rows']:,} x {s['dim']} float32, {args.clusters} clusters | "
                        f"{s['queries']} | {s['exact_qps']:.1f} | {s['build_s']:.0f} | {settings} | {scann} | {recall} |")
        print(f"\nappended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
