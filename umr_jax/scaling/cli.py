"""`umr-jax scaling --config NAME|FILE --output DIR [key=value ...]`: a scaling study end to end.

Trains the same starting model on nested, log-spaced subsets of every source the config
names (WebFAQ pairs, translated pairs, UMR pseudo labels), evaluates each point on
XOR-Retrieve, fits score = a - b * n^-c per source with question-level (and, with several
seeds, seed-level) bootstrap intervals, compares the sources, reports where ten times more data
adds less than `scaling.flattening_gain` points, and writes the plots (PNG, SVG), a Markdown
report (what each arm trains on, how long, the answer), JSON and CSV. Finished points are never
recomputed; an interrupted point resumes from its checkpoints.

  umr-jax scaling --config webfaq_scaling --output runs/scaling \\
      model.init=/models/xlm-roberta-base sources.webfaq.data.path=/data/webfaq ...
  umr-jax scaling --config demo_scaling --output runs/demo_scaling   # minutes, CPU
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.config import config_help
    from umr_jax.runtime import add_runtime_flags

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = __doc__.split("\n\n", 1)[1]
    parser.add_argument("--config", required=True, help="the study's config: " + config_help("webfaq_scaling"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. scaling.sources=webfaq,translated sources.webfaq.data.path=/data/webfaq")
    parser.add_argument("--output", required=True, help="the study folder (plan.json, points/, baseline/, report/)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--dry-run", action="store_true",
                      help="count the sources (converting pairs sources to their stores once) and print what each "
                           "arm trains on and the planned points with their steps, pairs seen, passages encoded, "
                           "embedding bytes (float16) and estimated time (with scaling.step_time_from=FILE); "
                           "train nothing")
    mode.add_argument("--report-only", action="store_true", help="refit and redraw the report from the finished points; train nothing")
    parser.add_argument("--resume-anyway", action="store_true",
                        help="let a point's interrupted training resume its checkpoint even if it was made with another "
                             "config (logged as a warning); without it such a resume is refused")
    add_runtime_flags(parser, roles=("encode", "train"))  # --mesh ROLE:SPEC, as runtime.ROLE.mesh=SPEC


def run(args: argparse.Namespace) -> int:
    import json
    import logging
    import sys

    from umr_jax.config import load_config
    from umr_jax.outputs import check_output
    from umr_jax.parallel.cli_flags import emit, say
    from umr_jax.runtime import Runtime
    from umr_jax.scaling.fit import format_size
    from umr_jax.scaling.runner import run_scaling

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    for noisy in ("absl", "orbax", "jax"):  # checkpoint and backend chatter; the study logs its own progress
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = load_config(args.config, args.overrides)
    check_output(args.output, "folder")
    runtime = Runtime.from_config(config, args)
    if not args.report_only:
        runtime.start()
    try:
        out = run_scaling(config, args.output, report_only=args.report_only, dry_run=args.dry_run, runtime=runtime,
                          resume_anyway=args.resume_anyway,
                          on_stage=lambda s: say(args, f"  {s}"))
    except InterruptedError as err:
        print(f"umr-jax scaling: {err}", file=sys.stderr)
        return 3
    if args.dry_run:
        finished = set(out["finished"])
        lines = ["arms:"] + [f"  {name:<12} {a['objective']} on {a['data']}: {a['languages']}, shares {a['shares']}, "
                             f"{a['direction']}; size in {a['unit']}" for name, a in out["arms"].items()]
        lines += [f"{len(out['plan'])} points ({len(finished)} finished):",
                 f"  {'source':<12} {'n':>8}  {'steps':>9} {'pairs seen':>11} {'passages':>21} {'embeddings':>10} "
                 f"{'time':>9}  state",
                 f"  {'':<12} {'':>8}  {'':>9} {'':>11} {'train':>10} {'eval':>10} {'(float16)':>10}"]
        for point, e in zip(out["plan"], out["estimates"]):
            lines.append(f"  {point.source:<12} n={format_size(point.size):>6}  {e['steps']:>9,} {e['pairs_seen']:>11,} "
                         f"{e['train_passages']:>10,} {_count(e['eval_passages']):>10} {_bytes(e['embedding_bytes']):>10} "
                         f"{_duration(e['seconds']):>9}  {'finished' if point in finished else 'to train'}"
                         + (f"  (seed {point.seed})" if point.seed else "")
                         + ("  (too few examples for one batch)" if e["steps"] == 0 else ""))
        if not any(e["seconds"] is not None for e in out["estimates"]):
            lines.append("time: n/a (give scaling.step_time_from=FILE, a `umr-jax compile --json-out FILE` of this config)")
        emit(args, {"arms": out["arms"],
                    "plan": [{**e, "finished": point in finished} for point, e in zip(out["plan"], out["estimates"])]},
             "\n".join(lines))
        return 0
    report = out.get("report")
    if report is None:
        emit(args, {"output": str(args.output), "report": None}, None)
        return 0
    emit(args, {"output": str(args.output), "report": json.loads(report.json.read_text(encoding="utf-8")),
                "files": [str(p) for p in (report.markdown, report.png, report.svg, report.json)]},
         report.markdown.read_text(encoding="utf-8") + f"\nreport: {report.markdown} {report.png} {report.svg} {report.json}")
    return 0


def _count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "n/a"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return ""


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
