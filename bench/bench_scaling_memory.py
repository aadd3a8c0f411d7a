"""Scaling-study memory benchmark: peak host RSS of the contrastive training-data path on a
1M-pair and a 10M-pair WebFAQ source (issue 21, part 4: flat within 10%).

Run from the repository root (CPU only, no model; about 15 minutes on 2 cores, most of it the
one-time conversion of 11M synthetic rows):

    python bench/bench_scaling_memory.py                      # 1M and 10M pairs, appends to bench/RESULTS.md
    python bench/bench_scaling_memory.py --sizes 100000 1000000 --no-record   # a quick look

Per size, synthetic WebFAQ parquet (7 language folders, short texts, unique ids) is written to a
work folder. A fresh subprocess then runs what `training.contrastive.train` runs before the
model: `open_pair_store` (the one-time streaming conversion; its time and peak are reported
apart, in a process of its own), then per point, in a fresh process over the converted store:
`nested_subset_indices`, `PairBatches` over the store with the demo's XLM-R tokenizer, and
`--batches` global batches of `--batch-size`. The peak is the kernel's high-water mark (VmHWM),
reset (/proc/self/clear_refs) after the imports and opening the store, so it covers the subset,
the epoch order and the batches. Two points per source:

  subset   a `--subset`-pair point (the same size from both sources): flat means the source's
           size costs nothing
  full     the whole source (the study's last point): the subset is all rows (no array) and the
           epoch order is int32, 4 bytes per pair, which is the one thing that grows

With `--by-language` the batches are single-language (`data.batch_by_language`, as
`webfaq_scaling` trains): the batcher also holds each language's positions (4 bytes per pair of
the point) and builds each epoch's order from them.

The worker imports jax, as every training process does, so the baseline is a trainer's.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## Scaling study memory: pairs streamed from a store (bench/bench_scaling_memory.py)"
TABLE_HEADER = (
    "| date | device | versions | command | source pairs | conversion s (peak RSS MiB) | baseline RSS MiB "
    "| peak RSS MiB, subset point | peak RSS MiB, full point | ms per batch |\n"
    "|---|---|---|---|---|---|---|---|---|---|\n"
)
LANGUAGES = ("ara", "ben", "fin", "jpn", "kor", "rus", "tel")


def write_webfaq(folder: Path, pairs: int, rows_per_file: int = 500_000) -> None:
    """`pairs` synthetic WebFAQ rows, spread over the language folders, in files of at most
    `rows_per_file` rows; short texts (a few words), unique ids."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema([("id", pa.string()), ("origin", pa.string()), ("url", pa.string()), ("question", pa.string()),
                        ("answer", pa.string()), ("semantic_similarity_score", pa.float64())])
    per_language = -(-pairs // len(LANGUAGES))
    written = 0
    for lang in LANGUAGES:
        count = min(per_language, pairs - written)
        (folder / lang).mkdir(parents=True, exist_ok=True)
        for part, start in enumerate(range(0, count, rows_per_file)):
            ids = range(written + start, written + min(count, start + rows_per_file))
            table = pa.table({
                "id": [f"{lang}-{i}" for i in ids], "origin": ["example.org"] * len(ids),
                "url": [f"https://example.org/{i}" for i in ids],
                "question": [f"what is item {i} of {lang}?" for i in ids],
                "answer": [f"item {i} is the answer number {i % 977} for {lang}." for i in ids],
                "semantic_similarity_score": [0.5 + (i % 50) / 100 for i in ids],
            }, schema=schema)
            pq.write_table(table, folder / lang / f"train-{part:05d}.parquet")
        written += count


def _vm(field: str) -> int:
    """A /proc/self/status figure in bytes (VmRSS, VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field} in /proc/self/status")


def _reset_peak() -> None:
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS


def convert(folder: Path, stores: Path) -> dict:
    """The one-time conversion, in its own process: seconds and peak RSS."""
    from umr_jax.data.pair_store import open_pair_store

    start = time.perf_counter()
    store = open_pair_store("webfaq", folder, root=stores)
    return {"pairs": len(store), "seconds": time.perf_counter() - start, "peak": _vm("VmHWM")}


def batch(folder: Path, stores: Path, point: str, subset: int, batches: int, batch_size: int,
          by_language: bool = False) -> dict:
    """One point in a fresh process over the converted store: its peak RSS while batching."""
    import jax  # noqa: F401  (a training process has it; its memory is part of the baseline)
    import numpy as np

    from umr_jax.data.pair_store import open_pair_store
    from umr_jax.data.subsets import nested_subset_indices
    from umr_jax.demo import demo_paths
    from umr_jax.models import hf_io
    from umr_jax.training.contrastive import PairBatches

    tokenizer = hf_io.load_tokenizer(demo_paths()["xlmr_tokenizer"])
    store = open_pair_store("webfaq", folder, root=stores)  # converted already: reads the manifest
    size = subset if point == "subset" else len(store)
    _reset_peak()
    baseline = _vm("VmRSS")
    indices = nested_subset_indices(len(store), size, seed=0, noun="pairs")
    batcher = PairBatches(store, tokenizer, batch_size=batch_size, hard_negatives=0, seed=0, query_max_length=64,
                          passage_max_length=256, process_index=0, process_count=1, subset=indices,
                          by_language=by_language)
    start = time.perf_counter()
    for _ in range(batches):
        out = next(batcher)
    seconds = time.perf_counter() - start
    assert out["query_ids"].shape[0] == batch_size and np.all(out["query_mask"].sum(1) > 0)
    return {"size": size, "baseline": baseline, "peak": _vm("VmHWM"), "ms_per_batch": 1e3 * seconds / batches}


def _run(*args: str) -> dict:
    done = subprocess.run([sys.executable, __file__, *args], check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def _versions() -> str:
    import numpy
    import pyarrow
    import tokenizers

    return f"python {platform.python_version()}, numpy {numpy.__version__}, pyarrow {pyarrow.__version__}, tokenizers {tokenizers.__version__}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _append_row(row: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{TABLE_HEADER}"
    start = text.index(SECTION)
    lines = text[start:].split("\n")
    last = max(i for i, line in enumerate(lines) if line.startswith("|"))
    lines.insert(last + 1, row)
    RESULTS.write_text(text[:start] + "\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def _mib(value: float) -> str:
    return f"{value / 2**20:.0f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000], help="source sizes, in pairs")
    parser.add_argument("--subset", type=int, default=100_000, help="pairs of the subset point (same for every source)")
    parser.add_argument("--batches", type=int, default=300, help="global batches per point")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--work", type=Path, help="folder for the synthetic parquet and the stores (default: a temp folder)")
    parser.add_argument("--by-language", action="store_true",
                        help="single-language batches (data.batch_by_language, as webfaq_scaling trains)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--worker", nargs=3, metavar=("convert|subset|full", "SOURCE", "STORES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    if args.worker is not None:
        kind, source, stores = args.worker[0], Path(args.worker[1]), Path(args.worker[2])
        result = (convert(source, stores) if kind == "convert"
                  else batch(source, stores, kind, args.subset, args.batches, args.batch_size, args.by_language))
        print(json.dumps(result))
        return 0

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = f"{_cpu_model()} ({cores} cores visible)"
    print(f"device: {device}\nversions: {_versions()}\n")
    with tempfile.TemporaryDirectory(prefix="bench-scaling-memory-") as temp:
        work = args.work or Path(temp)
        results = []
        for size in args.sizes:
            source = work / f"webfaq-{size}"
            if not source.is_dir():
                start = time.perf_counter()
                write_webfaq(source, size)
                print(f"wrote {size:,} synthetic WebFAQ rows in {time.perf_counter() - start:.0f} s", flush=True)
            stores = str(work / "stores")
            conversion = _run("--worker", "convert", str(source), stores)
            options = ["--subset", str(args.subset), "--batches", str(args.batches), "--batch-size", str(args.batch_size),
                       *(["--by-language"] if args.by_language else [])]
            results.append({"pairs": conversion["pairs"], "conversion": conversion,
                            **{point: _run("--worker", point, str(source), stores, *options) for point in ("subset", "full")}})
            r = results[-1]
            print(f"{r['pairs']:>11,} pairs: conversion {r['conversion']['seconds']:.0f} s (peak {_mib(r['conversion']['peak'])} MiB); "
                  f"baseline {_mib(r['subset']['baseline'])} MiB; peak {_mib(r['subset']['peak'])} MiB at {args.subset:,} pairs, "
                  f"{_mib(r['full']['peak'])} MiB at all pairs; {r['subset']['ms_per_batch']:.1f} / {r['full']['ms_per_batch']:.1f} ms per batch",
                  flush=True)
    print("\n| source pairs | conversion s | peak RSS MiB, subset point | peak RSS MiB, full point | ms per batch |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['pairs']:,} | {r['conversion']['seconds']:.0f} | {_mib(r['subset']['peak'])} | {_mib(r['full']['peak'])} "
              f"| {r['subset']['ms_per_batch']:.1f} / {r['full']['ms_per_batch']:.1f} |")
    if len(results) >= 2:
        first, last = results[0], results[-1]
        for point in ("subset", "full"):
            growth = last[point]["peak"] / first[point]["peak"] - 1
            print(f"{point} point: peak RSS {growth:+.1%} from {first['pairs']:,} to {last['pairs']:,} pairs "
                  f"({'flat' if abs(growth) <= 0.10 else 'NOT flat'} within 10%)")
    if not args.no_record:
        date = datetime.date.today().isoformat()
        shown = sys.argv[1:] if argv is None else argv
        command = " ".join(["python bench/bench_scaling_memory.py", *shown])
        for r in results:
            _append_row(f"| {date} | {device} | {_versions()} | `{command}` | {r['pairs']:,} | {r['conversion']['seconds']:.0f} "
                        f"({_mib(r['conversion']['peak'])}) | {_mib(r['subset']['baseline'])} | {_mib(r['subset']['peak'])} "
                        f"(subset {args.subset:,}) | {_mib(r['full']['peak'])} | {r['subset']['ms_per_batch']:.1f} / "
                        f"{r['full']['ms_per_batch']:.1f} |")
        print(f"\nappended to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
