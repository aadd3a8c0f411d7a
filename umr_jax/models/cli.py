"""`umr-jax model`: look inside Hugging Face model folders before a long job.

  umr-jax model inspect DIR [--as-tower] [--pooling mean|cls|pooler] [--json]
  umr-jax model inspect facebook/mcontriever        # a model ID: fetched into the HF cache

loads the folder with the project's own loader (strict about tensor names and shapes) and
prints the family, the architecture, the parameter count and the checkpoint tensors that
were ignored (task heads, tied copies). A folder that does not load exits 1 with the list of
missing, extra or mis-shaped tensors.
"""

from __future__ import annotations

import argparse
import dataclasses
import json


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_command", metavar="ACTION", required=True)
    inspect = sub.add_parser("inspect", help="load a HF model folder or model ID and describe it")
    inspect.add_argument("folder", metavar="MODEL",
                         help="Hugging Face model folder (config.json + weights + tokenizer) or model ID "
                              "(org/name[@revision], fetched into the Hugging Face cache; a cached one loads offline)")
    inspect.add_argument("--as-tower", action="store_true", help="load a T5/mT5 folder as an encoder tower")
    inspect.add_argument("--pooling", choices=["mean", "cls", "pooler"], help="tower pooling (default: from the folder, else mean)")
    inspect.add_argument("--json", action="store_true", help="print one JSON object")


def run(args: argparse.Namespace) -> int:
    from umr_jax.models import hf_io

    loaded = hf_io.load_model(args.folder, as_tower=args.as_tower or None, pooling=args.pooling)
    report = {
        "model": args.folder,
        "folder": str(loaded.folder),
        "family": loaded.family,
        "parameters": hf_io.count_params(loaded.params),
        "config": dataclasses.asdict(loaded.config),
        "ignored_tensors": loaded.ignored,
    }
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return 0
    where = report["folder"] if report["folder"] == report["model"] else f"{report['model']} ({report['folder']})"
    print(f"{where}: {loaded.family}, {report['parameters']:,} parameters")
    for key, value in report["config"].items():
        print(f"  {key} = {value}")
    if loaded.ignored:
        print(f"  ignored checkpoint tensors ({len(loaded.ignored)}): {', '.join(loaded.ignored[:10])}" + (" ..." if len(loaded.ignored) > 10 else ""))
    return 0
