"""`umr-jax loop --config NAME|FILE --iterations N [key=value ...]`: run (or resume) UMR iterations.

The config names the starting retriever (`loop.retriever`, a HF folder or model ID), the scorer
(`loop.scorer`), the passages, the unlabelled train questions and optionally dev questions and
their gold answers for evaluation; see configs/demo.py (`--config demo` runs it from any folder).
Every stage resumes where it stopped. `--mesh ROLE:SPEC` / `--rules ROLE:NAME` set a role's mesh
and rules (encode, score, train), the same as `runtime.ROLE.mesh=SPEC`; without ROLE, every role's.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.config import config_help
    from umr_jax.parallel.cli_flags import positive_int
    from umr_jax.runtime import add_runtime_flags

    parser.add_argument("--config", required=True, help=config_help("demo"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="config overrides, e.g. loop.scorer=/models/mt5-xl")
    parser.add_argument("--iterations", type=positive_int, default=1, help="UMR iterations (default 1)")
    parser.add_argument("--output", help="output folder (default: the config's output_dir)")
    parser.add_argument("--resume-anyway", action="store_true",
                        help="let an interrupted training stage resume its checkpoint even if it was made with "
                             "another config (logged as a warning); without it such a resume is refused")
    add_runtime_flags(parser, roles=("encode", "score", "train"))  # --mesh ROLE:SPEC, as runtime.ROLE.mesh=SPEC


def run(args: argparse.Namespace) -> int:
    import logging

    from umr_jax.config import load_config
    from umr_jax.errors import InputError
    from umr_jax.outputs import check_output
    from umr_jax.parallel.cli_flags import emit, say
    from umr_jax.runtime import Runtime
    from umr_jax.stages.loop import UmrLoop

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config = load_config(args.config, args.overrides)
    for key in ("retriever", "scorer", "passages", "train_questions"):
        if not config.loop.get(key):
            raise InputError(f"loop.{key} is not set (give it as loop.{key}=...)", args.config)
    output = args.output or config.get("output_dir")
    if not output:
        raise InputError("no output folder: give --output DIR or output_dir=DIR", args.config)
    check_output(output, "folder")
    runtime = Runtime.from_config(config, args).start()
    history = UmrLoop(config, output_dir=args.output, runtime=runtime, resume_anyway=args.resume_anyway,
                      on_stage=lambda i, s: say(args, f"iteration {i}: {s}")).run(args.iterations)
    lines = []
    for record in history:
        line = {"iteration": record["iteration"], "retriever": record["retriever"]}
        if "eval" in record:
            line["r@2kt"] = record["eval"]["r@2kt"]["average"]
            line["r@5kt"] = record["eval"]["r@5kt"]["average"]
        lines.append(line)
    emit(args, {"output": str(output), "iterations": lines},
         "\n".join(f"iteration {line['iteration']}: {line['retriever']}"
                   + (f", R@2kt {line['r@2kt']:.1f}, R@5kt {line['r@5kt']:.1f}" if "r@2kt" in line else "") for line in lines))
    return 0
