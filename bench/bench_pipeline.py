"""Input-pipeline benchmark: tokenize + bucket + batch throughput, and memory on a growing TSV.

Run from the repository root (CPU only; a few minutes on 2 cores):

    python bench/bench_pipeline.py                     # prints tables, appends a row to bench/RESULTS.md
    python bench/bench_pipeline.py --passages 5000 --base-rows 5000 --no-record   # quick look

Part 1, throughput: the demo passages, repeated to `--passages` records (fresh ids), go through
`umr_jax.data.pipeline.passage_batches` (and `bucketed_batches` variants); reported in passages
per second of this process's rows, next to the bare tokenizer on the same texts, with the share
of padded positions that hold real tokens.

Part 2, memory: DPR-style TSVs of `--base-rows` and 10x as many rows are written to a temp
folder; a fresh subprocess per file streams it (`umr_jax.data.formats.read_dpr_passages` when
that module exists, and the csv module), feeds chunks of `--chunk` passages to
`passage_batches`, and reports its peak resident memory (getrusage ru_maxrss). Flat means the
10x file peaks at about the same memory as the 1x file. A control run ("in-memory") loads the
whole TSV into a list first, to show that the measurement does see memory that grows.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.util
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "RESULTS.md"
SECTION = "## Input pipeline (bench/bench_pipeline.py)"
TABLE_HEADER = (
    "| date | device | versions | command | passages/s: xlmr grouped / grouped 8 buckets / shuffled / 1 of 4 procs (own rows); mt5 grouped; bare xlmr tokenizer "
    "| real-token share: grouped / 8 buckets / shuffled | peak RSS MiB, 1x -> 10x rows (reader) |\n"
    "|---|---|---|---|---|---|---|\n"
)


def _demo_passages() -> list[dict]:
    from umr_jax.demo import demo_paths

    with open(demo_paths()["passages"], encoding="utf-8", newline="") as f:
        reader = csv.reader(f, delimiter="\t")
        header = next(reader)
        return [dict(zip(header, row)) for row in reader]


def _repeat(passages: list[dict], n: int) -> list[dict]:
    return [{"id": str(i + 1), "title": passages[i % len(passages)]["title"], "text": passages[i % len(passages)]["text"]} for i in range(n)]


def _tokenizer(name: str):
    from transformers import AutoTokenizer

    from umr_jax.demo import demo_paths

    return AutoTokenizer.from_pretrained(demo_paths()[f"{name}_tokenizer"])


# ---------------------------------------------------------------------------------------------
# Part 1: throughput


def _run_pipeline(dataset) -> dict:
    start = time.perf_counter()
    rows = real_tokens = padded_tokens = batches = 0
    shapes = set()
    for batch in dataset:
        batches += 1
        rows += int(batch["example_mask"].sum())
        real_tokens += int(batch["attention_mask"].sum())
        padded_tokens += batch["input_ids"].size
        shapes.add(batch["input_ids"].shape)
    seconds = time.perf_counter() - start
    return {
        "passages_per_s": rows / seconds,
        "seconds": seconds,
        "batches": batches,
        "shapes": len(shapes),
        "real_token_share": real_tokens / padded_tokens,
    }


def throughput(n: int, batch_size: int, max_length: int) -> dict[str, dict]:
    from umr_jax.data import pipeline
    from umr_jax.data.buckets import LengthBuckets

    passages = _repeat(_demo_passages(), n)
    results = {}
    for name in ("xlmr", "mt5"):
        tokenizer = _tokenizer("t5" if name == "mt5" else name)
        configs = {f"{name} grouped": dict(group_by_length=True, shuffle=False)}
        if name == "xlmr":
            fine = LengthBuckets((32, 64, 96, 128, 160, 192, 224, 256))
            configs["xlmr grouped 8 buckets"] = dict(group_by_length=True, shuffle=False, buckets=fine)
            configs["xlmr shuffled"] = dict(group_by_length=False, shuffle=True)
            configs["xlmr 1 of 4 procs"] = dict(group_by_length=True, shuffle=False, process_index=0, process_count=4)
        for label, options in configs.items():
            options = {"process_index": 0, "process_count": 1, **options}
            dataset = pipeline.passage_batches(passages, tokenizer, global_batch_size=batch_size, max_length=max_length, **options)
            results[label] = _run_pipeline(dataset)
        if name == "xlmr":
            start = time.perf_counter()
            for i in range(0, n, batch_size):
                chunk = passages[i : i + batch_size]
                tokenizer([p["title"] for p in chunk], [p["text"] for p in chunk], truncation="longest_first", max_length=max_length)
            seconds = time.perf_counter() - start
            results["xlmr bare tokenizer"] = {"passages_per_s": n / seconds, "seconds": seconds}
    return results


# ---------------------------------------------------------------------------------------------
# Part 2: memory on a growing TSV (each measurement in a fresh process)


def _write_tsv(path: Path, rows: int) -> None:
    passages = _demo_passages()
    with open(path, "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, delimiter="\t", lineterminator="\n")
        writer.writerow(("id", "text", "title"))
        for i in range(rows):
            p = passages[i % len(passages)]
            writer.writerow((str(i + 1), p["text"], p["title"]))


def _stream(path: Path, reader: str):
    if reader == "formats":
        from umr_jax.data import formats

        for passage in formats.read_dpr_passages(path):
            yield {"id": passage.id, "title": passage.title, "text": passage.text}
    else:
        with open(path, encoding="utf-8", newline="") as f:
            rows = csv.reader(f, delimiter="\t")
            header = next(rows)
            for row in rows:
                yield dict(zip(header, row))


def stream_worker(path: Path, reader: str, chunk: int, batch_size: int, max_length: int) -> dict:
    """Streams one TSV through the pipeline in chunks; returns counts and peak RSS."""
    from umr_jax.data import pipeline

    tokenizer = _tokenizer("xlmr")
    start = time.perf_counter()
    passages = batches = 0
    buffer: list[dict] = []

    def drain(records):
        nonlocal passages, batches
        for batch in pipeline.passage_batches(records, tokenizer, global_batch_size=batch_size, max_length=max_length, process_index=0, process_count=1):
            batches += 1
            passages += int(batch["example_mask"].sum())

    if reader == "in-memory":  # the control: the whole TSV as a list, one pipeline over it
        drain(list(_stream(path, "csv")))
    for record in _stream(path, reader) if reader != "in-memory" else ():
        buffer.append(record)
        if len(buffer) == chunk:
            drain(buffer)
            buffer = []
    if buffer:
        drain(buffer)
    return {
        "passages": passages,
        "batches": batches,
        "seconds": time.perf_counter() - start,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def memory(base_rows: int, chunk: int, batch_size: int, max_length: int) -> dict[str, dict[int, dict]]:
    readers = ["csv", "in-memory"]
    if importlib.util.find_spec("umr_jax.data.formats") is not None:
        readers.insert(0, "formats")
    results: dict[str, dict[int, dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for rows in (base_rows, 10 * base_rows):
            path = Path(tmp) / f"passages_{rows}.tsv"
            _write_tsv(path, rows)
            for reader in readers:
                command = [
                    sys.executable, __file__, "--stream-worker", str(path), "--reader", reader,
                    "--chunk", str(chunk), "--batch-size", str(batch_size), "--max-length", str(max_length),
                ]
                out = subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
                result = json.loads(out.stdout.strip().splitlines()[-1])
                result["tsv_mib"] = path.stat().st_size / 2**20
                if result["passages"] != rows:
                    raise RuntimeError(f"{reader}: streamed {result['passages']} passages of {rows}")
                results.setdefault(reader, {})[rows] = result
    return results


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


def _versions() -> str:
    import grain
    import numpy
    import tokenizers
    import transformers

    return f"python {platform.python_version()}, grain {grain.__version__}, transformers {transformers.__version__}, tokenizers {tokenizers.__version__}, numpy {numpy.__version__}"


def _append_row(row: str) -> None:
    text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else "# Benchmark results\n"
    if SECTION not in text:
        text = text.rstrip("\n") + f"\n\n{SECTION}\n\n{TABLE_HEADER}"
    start = text.index(SECTION)
    lines = text[start:].split("\n")
    # the row goes after the last table line of this section
    last = max(i for i, line in enumerate(lines) if line.startswith("|"))
    lines.insert(last + 1, row)
    RESULTS.write_text(text[:start] + "\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--passages", type=int, default=20_000, help="records for the throughput part")
    parser.add_argument("--base-rows", type=int, default=20_000, help="rows of the 1x TSV (the other has 10x)")
    parser.add_argument("--chunk", type=int, default=4096, help="passages handed to one pipeline when streaming")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    parser.add_argument("--stream-worker", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--reader", default="csv", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))

    if args.stream_worker is not None:
        print(json.dumps(stream_worker(args.stream_worker, args.reader, args.chunk, args.batch_size, args.max_length)))
        return 0

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    device = f"{_cpu_model()} ({cores} cores visible, TOKENIZERS_PARALLELISM={os.environ.get('TOKENIZERS_PARALLELISM', 'unset')})"
    print(f"device: {device}\nversions: {_versions()}\n")

    speed = throughput(args.passages, args.batch_size, args.max_length)
    print(f"Throughput: {args.passages} passages, global batch {args.batch_size}, max length {args.max_length}")
    print(f"{'configuration':<24} {'passages/s':>11} {'seconds':>8} {'batches':>8} {'shapes':>7} {'real-token share':>17}")
    for label, r in speed.items():
        extra = f"{r['batches']:>8} {r['shapes']:>7} {r['real_token_share']:>17.2f}" if "batches" in r else ""
        print(f"{label:<24} {r['passages_per_s']:>11.0f} {r['seconds']:>8.2f} {extra}")

    mem = memory(args.base_rows, args.chunk, args.batch_size, args.max_length)
    print(f"\nMemory: streaming a DPR TSV in chunks of {args.chunk} through passage_batches (fresh process each)")
    print(f"{'reader':<10} {'rows':>9} {'TSV MiB':>8} {'peak RSS MiB':>13} {'passages/s':>11}")
    for reader, by_rows in mem.items():
        for rows, r in by_rows.items():
            print(f"{reader:<10} {rows:>9} {r['tsv_mib']:>8.1f} {r['peak_rss_mib']:>13.0f} {r['passages'] / r['seconds']:>11.0f}")

    if not args.no_record:
        command = "python bench/bench_pipeline.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv))
        rate = lambda k: f"{speed[k]['passages_per_s']:.0f}"  # noqa: E731
        rates = " / ".join(rate(k) for k in ("xlmr grouped", "xlmr grouped 8 buckets", "xlmr shuffled", "xlmr 1 of 4 procs"))
        rates += f"; {rate('mt5 grouped')}; {rate('xlmr bare tokenizer')}"
        share = " / ".join(f"{speed[k]['real_token_share']:.2f}" for k in ("xlmr grouped", "xlmr grouped 8 buckets", "xlmr shuffled"))
        rss = "; ".join(
            f"{by_rows[args.base_rows]['peak_rss_mib']:.0f} -> {by_rows[10 * args.base_rows]['peak_rss_mib']:.0f} ({reader})"
            for reader, by_rows in mem.items()
        )
        row = f"| {datetime.date.today().isoformat()} | {device} | {_versions()} | `{command}` | {rates} | {share} | {rss} |"
        _append_row(row)
        print(f"\nappended to {RESULTS.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
