"""The plan on paper: every real-size stage compiled for TPU topologies on this machine
(`umr-jax compile`), with per-chip memory, the roofline estimate of step time and MFU, and
what one UMR iteration on XOR-Retrieve and the 47M-pair WebFAQ point would take.

Run from the repository root (needs the TPU compiler: pip install -e ".[tpu]"):

    python bench/bench_aot.py                          # v5e-16, v4-32, v5p-8
    python bench/bench_aot.py --topology v5e-16 --no-record

Every number is an estimate from the compiled programs and the chips' published peaks
(see umr_jax/aot/analysis.py): no TPU ran. Rows go to bench/RESULTS.md marked "AOT estimate".
The workload of one UMR iteration on XOR-Retrieve: encode the 18,003,199 passages of
psgs_w100 (and 15,250 training questions, negligible), score 15,250 x 100 candidate pairs,
distil 10 epochs of 15,250 questions at 16 per step. Index build and search run on the
hosts' CPUs and are not in the estimate. The WebFAQ point: 47M pairs, one epoch at 128.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # this host compiles; with libtpu installed jax would probe for a TPU

from bench_vs_torch import _append_row, _device, _versions  # noqa: E402

PASSAGES, QUESTIONS, CANDIDATES, EPOCHS, PER_STEP = 18_003_199, 15_250, 100, 10, 16
WEBFAQ_PAIRS, WEBFAQ_BATCH = 47_000_000, 128
H100_BF16 = 989e12
RUNS = [("configs/umr_xor_retrieve_loop.py", []), ("configs/webfaq_scaling.py", ["model.init=xlm-roberta-base"])]

SECTION = "## AOT estimates: real-size stages compiled for TPU topologies (bench/bench_aot.py)"
HEADER = ("| date | compiled on | versions | command | topology | config: stage | mesh, rules | memory per chip (of HBM) | "
          "estimated step | bound | estimated MFU | estimated throughput |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
PLAN_SECTION = "## AOT estimates: one UMR iteration and the WebFAQ 47M point (bench/bench_aot.py)"
PLAN_HEADER = ("| date | compiled on | versions | command | topology | encode 18M passages | score 1.525M pairs | distil 10 epochs | "
               "one UMR iteration (TPU) | WebFAQ 47M pairs, 1 epoch | same FLOPs on one H100 at the same MFU |\n"
               "|---|---|---|---|---|---|---|---|---|---|---|\n")


def compile_report(config: str, topology: str, overrides: list[str], folder: Path) -> dict:
    out = folder / f"{Path(config).stem}-{topology}.json"
    proc = subprocess.run([sys.executable, "-m", "umr_jax.cli", "--compilation-cache", "off", "compile", "--config", config,
                           "--topology", topology, *overrides, "--json", str(out)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "JAX_PLATFORMS": "cpu"})
    if not out.is_file():
        raise SystemExit(f"umr-jax compile failed for {config} on {topology}:\n{proc.stderr[-3000:]}")
    print(proc.stdout, end="", flush=True)
    return json.loads(out.read_text())


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h" if seconds >= 3600 else f"{seconds / 60:.1f} min"


def plan(stages: dict[str, dict], webfaq: dict, chips: int) -> tuple[list[str], float]:
    """Wall-clock of one iteration and of the WebFAQ point, from the estimated steps."""
    enc, sco, dis = stages["encode"], stages["score"], stages["distill"]
    hosts = chips // enc["chips"]  # every host encodes its own shards
    t_encode = PASSAGES / (enc["items_per_s"] * hosts)
    t_score = QUESTIONS * CANDIDATES / sco["items_per_s"]
    t_distill = EPOCHS * (QUESTIONS // PER_STEP) * dis["estimate"]["step_s"]
    t_webfaq = WEBFAQ_PAIRS // WEBFAQ_BATCH * webfaq["estimate"]["step_s"]
    # The same model FLOPs on one H100 at each stage's estimated MFU.
    flops = [(PASSAGES / enc["items"] * enc["flops"]["analytic_model_per_chip"] * enc["chips"], enc),
             (QUESTIONS * CANDIDATES / sco["items"] * sco["flops"]["analytic_model_per_chip"] * chips, sco),
             (EPOCHS * (QUESTIONS // PER_STEP) * dis["flops"]["analytic_model_per_chip"] * chips, dis)]
    h100 = sum(f / (H100_BF16 * r["estimate"]["mfu"]) for f, r in flops)
    total = t_encode + t_score + t_distill
    return [hours(t_encode), hours(t_score), hours(t_distill), hours(total), hours(t_webfaq),
            f"{hours(h100)} (iteration)"], total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--topology", action="append", help="repeatable (default: v5e-16, v4-32, v5p-8)")
    parser.add_argument("--no-record", action="store_true", help="do not append to bench/RESULTS.md")
    args = parser.parse_args(argv)
    topologies = args.topology or ["v5e-16", "v4-32", "v5p-8"]
    device, versions = f"{_device()} (AOT estimate, no TPU ran)", _versions()
    command = "python bench/bench_aot.py" + (" " + " ".join(argv if argv is not None else sys.argv[1:])).rstrip()
    date = datetime.date.today().isoformat()
    rows, plans = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for topology in topologies:
            stages = {}
            for config, overrides in RUNS:
                report = compile_report(config, topology, overrides, Path(tmp))
                for r in report["stages"]:
                    stages[r["stage"]] = r
                    mesh = ",".join(f"{k}={v}" for k, v in r["mesh"].items())
                    e = r["estimate"]
                    rows.append([topology, f"{Path(config).stem}: {r['stage']}", f"{mesh}, {r['rules']}",
                                 f"{r['memory']['total'] / 2**30:.2f} of {r['hbm_per_chip'] / 2**30:.0f} GiB",
                                 f"{e['step_s'] * 1e3:.1f} ms", e["bound"], f"{e['mfu']:.0%}",
                                 f"{r['items_per_s']:.0f} {r['item_name']}/s"])
            cells, _ = plan(stages, stages["contrastive"], stages["score"]["chips"])
            plans.append([topology, *cells])
    print(f"\n{device}; {versions}\n")
    for cells in rows:
        print("| " + " | ".join(cells) + " |")
        if not args.no_record:
            _append_row(SECTION, HEADER, f"| {date} | {device} | {versions} | `{command}` | " + " | ".join(cells) + " |")
    print()
    for cells in plans:
        print("| " + " | ".join(cells) + " |")
        if not args.no_record:
            _append_row(PLAN_SECTION, PLAN_HEADER, f"| {date} | {device} | {versions} | `{command}` | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
