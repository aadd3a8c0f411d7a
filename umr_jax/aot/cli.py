"""`umr-jax compile --config NAME|FILE --topology v5e-16 [--stage S ...] [key=value ...]`: compile
stages' programs for a TPU topology on this (CPU) machine, ahead of time, and report per chip
what they need: memory against HBM, FLOPs against the analytic count, every collective, and a
roofline estimate of step time and MFU from the chip's published peaks.

  umr-jax compile --config umr_xor_loop --topology v5e-16
  umr-jax compile --config webfaq_scaling --topology v4-32 --stage contrastive --json-out out.json
  umr-jax compile --config umr_xor_loop --topology v5e-16 --stage score \\
      --mesh score:data=1,fsdp=4,model=4 --rules score:fsdp_tp --max-batch --json

The programs are the ones the stages run (see `aot.programs`), on the meshes and rules the
config's `runtime` section gives each role; `--mesh ROLE:SPEC` / `--rules ROLE:NAME` set a role's
(the same as `runtime.ROLE.mesh=SPEC`), and without ROLE every role's. `--json` prints every
number as one JSON object on stdout (the report then goes to stderr); `--json-out FILE` writes
it to a file (`--json FILE` is the old spelling of that).
Model architectures come from the folders the config names, or the preset of their name
(e.g. mt5-xl-lm-adapt, mcontriever, xlm-roberta-base; google/mt5-xl is mt5-xl) when the folder
is not here, or a model ID's config.json (from the Hugging Face cache, else the Hub). Needs the
TPU compiler: pip install -e ".[tpu]" (it runs on CPU-only machines).
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

GiB = 1024**3
HEADROOM = 0.2  # what the defaults promise to leave free on every chip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from umr_jax.aot.programs import STAGES
    from umr_jax.runtime import ROLES, add_runtime_flags
    from umr_jax.config import config_help

    parser.add_argument("--config", required=True, help=config_help("umr_xor_loop"))
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                        help="config overrides, e.g. runtime.score.mesh=data=1,fsdp=4,model=4 score.tokens_per_batch=8192")
    parser.add_argument("--topology", required=True,
                        help="TPU to compile for: an accelerator type (v5e-16, v4-32, v5p-8, v6e-64; 2xv5e-16 for two "
                             "slices) or a topology (v5e:4x4, v4:2x2x4)")
    parser.add_argument("--num-slices", type=int, default=1, help="multislice: this many slices of --topology (default 1)")
    parser.add_argument("--stage", action="append", choices=STAGES,
                        help="stage to compile (repeatable; default: every stage the config describes)")
    add_runtime_flags(parser, roles=ROLES, distributed=False)
    parser.add_argument("--max-batch", action="store_true",
                        help="also find the largest batch that fits (score.tokens_per_batch, encode.batch_size, "
                             "train.questions_per_batch or train.batch_size; one compile per try)")
    parser.add_argument("--json", nargs="?", const="-", default=None, metavar="FILE", action=_JsonFlag,
                        help="print every number as one JSON object on stdout (the report goes to stderr); "
                             "--json FILE, the old spelling of --json-out FILE, still works")
    parser.add_argument("--json-out", metavar="FILE", help="write every number as JSON to FILE")
    parser.add_argument("--hlo", metavar="DIR", help="write each optimised HLO here (<stage>.hlo.txt)")


class _JsonFlag(argparse.Action):
    """`--json` (stdout) or the old `--json FILE`. A KEY=VALUE right after a bare `--json` is a
    config override, not a file name: it goes back to the overrides."""

    def __call__(self, parser, namespace, value, option_string=None):
        if value != "-" and "=" in value and not value.endswith(".json"):
            namespace.json_overrides = [*getattr(namespace, "json_overrides", []), value]
            value = "-"
        setattr(namespace, self.dest, value)


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("JAX_PLATFORMS", "cpu")  # the host compiles; the TPU is only a target
    import jax

    jax.config.update("jax_enable_compilation_cache", False)  # a cache of CPU programs; TPU ones cannot load here
    from umr_jax.aot.chips import parse_topology, tpu_devices
    from umr_jax.aot.programs import stages_of
    from umr_jax.config import load_config
    from umr_jax.errors import UsageError
    from umr_jax.outputs import check_output
    from umr_jax.parallel.cli_flags import say

    if args.json not in (None, "-"):  # the old spelling: --json FILE
        if args.json_out:
            raise UsageError("--json FILE is the old spelling of --json-out FILE; give one of them")
        args.json_out, args.json = args.json, None
    to_stdout = args.json == "-"
    report_to = sys.stderr if to_stdout else sys.stdout
    topology = parse_topology(args.topology, args.num_slices)
    config = load_config(args.config, [*getattr(args, "json_overrides", []), *args.overrides])
    if args.json_out:  # before minutes of compiling, not after
        check_output(args.json_out, "file")
    if args.hlo:
        check_output(args.hlo, "folder")
    stages = args.stage or stages_of(config)
    if not stages:
        raise UsageError(f"{args.config}: no stage to compile (objective {config.get('objective')!r}); name one with --stage")
    devices = tpu_devices(topology)
    say(args, f"compiling for {topology.describe()}")
    reports = []
    for stage in stages:
        say(args, f"compiling {stage} ...")
        report = compile_stage(stage, config, args, topology, devices)
        if args.max_batch and report["fits"]:
            report["max_batch"] = max_batch(stage, config, args, topology, devices, report)
        reports.append(report)
        print(render(report), file=report_to, flush=True)
    result = {"topology": topology.name, "chips": topology.chips, "stages": reports}
    if to_stdout:
        print(json.dumps(result, default=float))
    if args.json_out:
        from umr_jax.data.files import atomic_write_bytes

        text = json.dumps(result, indent=2, default=float)
        atomic_write_bytes(args.json_out, lambda f: f.write(text.encode() + b"\n"))
    return 0 if all(r["fits"] for r in reports) else 1


def _layout(stage: str, config, args):
    from umr_jax.aot.programs import ROLE
    from umr_jax.runtime import Runtime

    role = ROLE[stage]
    return Runtime.from_config(config, args), role  # --mesh without ROLE: every role


def _program(stage: str, config, args, devices):
    from umr_jax.aot.programs import build
    from umr_jax.errors import UsageError

    runtime, role = _layout(stage, config, args)
    try:
        mesh = runtime.mesh(role, devices)
    except Exception as err:
        raise UsageError(f"the {stage} stage's mesh does not fit this topology: {err}") from None
    return build(stage, config, mesh, runtime.rules(role)), runtime.layouts[role], mesh


def compile_stage(stage: str, config, args, topology, devices, suggest_on_failure: bool = True) -> dict[str, Any]:
    """Compile one stage and measure it; a program that does not fit is reported, not raised."""
    import time

    from umr_jax.aot import analysis

    program, layout, mesh = _program(stage, config, args, devices)
    chips = int(mesh.devices.size)
    report: dict[str, Any] = {
        "stage": stage, "role": program.role, "model": program.model, "mesh": dict(mesh.shape), "chips": chips,
        "rules": layout.rules if isinstance(layout.rules, str) else [list(r) for r in layout.rules],
        "shapes": program.shapes, "hbm_per_chip": topology.chip.hbm_bytes,
    }
    start = time.time()
    try:
        compiled = program.lower().compile()
    except Exception as err:  # XLA's verdict when the program cannot fit
        text = str(err)
        if "RESOURCE_EXHAUSTED" not in text and "Ran out of memory" not in text:
            raise
        report.update(fits=False, compile_s=round(time.time() - start, 1), error=_oom_summary(text),
                      largest_inputs=analysis.largest_inputs(program.groups), inputs={k: analysis.per_chip_bytes(t)
                                                                                       for k, t in program.groups.items()})
        report["suggestion"] = suggest(stage, config, args, topology, devices, report) if suggest_on_failure else None
        return report
    report["compile_s"] = round(time.time() - start, 1)
    hlo = compiled.as_text()
    if args.hlo:  # a folder or gs:// (atomic_write_bytes uploads what lands in a bucket's mirror)
        from umr_jax import storage
        from umr_jax.data.files import atomic_write_bytes

        atomic_write_bytes(storage.local(args.hlo) / f"{stage}.hlo.txt", lambda f: f.write(hlo.encode()))
    memory = analysis.memory(compiled, program.groups)
    counts = analysis.count_hlo(hlo, chips)
    traffic = sum(c["traffic"] for c in counts.collectives.values())
    estimate = analysis.roofline(topology.chip, counts.matmul_flops, counts.hbm_bytes, traffic, program.model_flops / chips)
    report.update(
        fits=memory["total"] <= topology.chip.hbm_bytes, memory=memory,
        headroom=1 - memory["total"] / topology.chip.hbm_bytes,
        flops={"compiled_per_chip": counts.matmul_flops, "analytic_program_per_chip": program.program_flops / chips,
               "analytic_model_per_chip": program.model_flops / chips,
               "compiled_over_analytic": counts.matmul_flops / (program.program_flops / chips)},
        hbm_bytes_per_chip=counts.hbm_bytes, collectives=counts.collectives, unknown_trip_counts=counts.unknown_loops,
        estimate=estimate, tokens=program.tokens, items=program.items, item_name=program.item_name,
        items_per_s=program.items / estimate["step_s"] if estimate["step_s"] else None,
        largest_inputs=analysis.largest_inputs(program.groups),
    )
    return report


def _oom_summary(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    keep = [line for line in lines if "memory" in line.lower() or "exceed" in line.lower() or "allocation" in line.lower()]
    return " | ".join((keep or lines)[:4])[:600]


def candidates(chips: int, role: str) -> list[tuple[str, str]]:
    """Meshes and rule sets worth trying for `role` on `chips` chips, least communication first."""
    out = [("data=-1,fsdp=1,model=1", "data_parallel"), ("data=1,fsdp=-1,model=1", "fsdp")]
    out += [(f"data=1,fsdp={chips // k},model={k}", "fsdp_tp") for k in (2, 4, 8) if chips % k == 0 and chips // k >= 1]
    return out


def suggest(stage: str, config, args, topology, devices, failed: dict) -> dict[str, Any] | None:
    """A mesh/rule set that fits, when the asked one does not: the candidates ranked by the
    per-chip bytes of their inputs (exact, no compile), the first one under half the chip's
    HBM compiled to confirm."""
    from umr_jax.aot import analysis
    from umr_jax.aot.programs import ROLE

    role = ROLE[stage]
    tried = []
    for mesh_spec, rules in candidates(failed["chips"], role):
        trial = argparse.Namespace(**{**vars(args), "mesh": mesh_spec, "rules": rules})
        try:
            program, _, mesh = _program(stage, config, trial, devices)
        except Exception:  # noqa: BLE001 - a candidate that cannot even be built is skipped
            continue
        if (dict(mesh.shape), rules) == (failed["mesh"], failed["rules"]):
            continue  # the one that failed
        tried.append((sum(analysis.per_chip_bytes(t) for t in program.groups.values()), mesh_spec, rules))
    for inputs, mesh_spec, rules in sorted(tried):
        if inputs > topology.chip.hbm_bytes / 2:
            continue
        trial = argparse.Namespace(**{**vars(args), "mesh": mesh_spec, "rules": rules, "max_batch": False, "hlo": None})
        result = compile_stage_quiet(stage, config, trial, topology, devices)
        if result and result.get("fits"):
            return {"mesh": mesh_spec, "rules": rules, "total_per_chip": result["memory"]["total"],
                    "override": f"runtime.{role}.mesh={mesh_spec} runtime.{role}.rules={rules}"}
    return None


def compile_stage_quiet(stage, config, args, topology, devices) -> dict | None:
    """`compile_stage`, None when the program cannot even be built for these settings."""
    try:
        return compile_stage(stage, config, args, topology, devices, suggest_on_failure=False)
    except Exception:  # noqa: BLE001 - a trial that fails for any reason is not a fit
        return None


def max_batch(stage: str, config, args, topology, devices, first: dict) -> dict[str, Any]:
    """The largest value of the stage's batch key that compiles and fits: doubling from the
    config's value, then bisecting (in multiples of the mesh's batch devices) to within 1/16."""
    from umr_jax.aot.programs import BATCH_KEY
    from umr_jax.config import apply_overrides

    key = BATCH_KEY[stage]
    section, name = key.split(".")
    start = int(config[section][name])
    step = first["chips"] if stage != "score" else 1024

    def fits(value: int) -> dict | None:
        print(f"compiling {stage} with {key}={value} ...", file=sys.stderr, flush=True)
        trial = config.copy_and_resolve_references()
        apply_overrides(trial, [f"{key}={value}"])
        result = compile_stage_quiet(stage, trial, argparse.Namespace(**{**vars(args), "hlo": None}), topology, devices)
        return result if result and result.get("fits") else None

    good, good_report, bad = start, first, None
    value = start * 2
    while bad is None and value <= start * 64:
        result = fits(value)
        if result:
            good, good_report, value = value, result, value * 2
        else:
            bad = value
    if bad is None:
        return {"key": key, "value": good, "note": f"fits up to {good} (64x the config's; searched no further)",
                "total_per_chip": good_report["memory"]["total"]}
    while bad - good > max(step, good // 16):  # to within 1/16 of the answer (each try is a compile)
        middle = (good + bad) // 2 // step * step
        if middle <= good:
            break
        result = fits(middle)
        if result:
            good, good_report = middle, result
        else:
            bad = middle
    return {"key": key, "value": good, "total_per_chip": good_report["memory"]["total"],
            "headroom": 1 - good_report["memory"]["total"] / topology.chip.hbm_bytes}


# ---------------------------------------------------------------------------------------------
# The report


def _gib(x: float) -> str:
    return f"{x / GiB:.2f} GiB"


def _si(x: float, unit: str = "") -> str:
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.2f} {prefix}{unit}"
    return f"{x:.0f} {unit}".strip()


def render(r: dict) -> str:
    mesh = ",".join(f"{k}={v}" for k, v in r["mesh"].items())
    rules = r["rules"] if isinstance(r["rules"], str) else "custom"
    lines = [f"== {r['stage']} ({r['role']} role) on {r['chips']} chips, mesh {mesh}, rules {rules}; model: {r['model']}",
             f"   batch: {', '.join(f'{k}={v}' for k, v in r['shapes'].items())}; compiled in {r['compile_s']} s"]
    hbm = r["hbm_per_chip"]
    if "memory" not in r:
        lines.append(f"   DOES NOT FIT: {r['error']}")
        lines.append("   largest inputs per chip: " + "; ".join(f"{p} {_gib(b)} ({d})" for p, b, d in r["largest_inputs"][:3]))
        s = r.get("suggestion")
        lines.append(f"   fits instead: {s['override']} ({_gib(s['total_per_chip'])} per chip)" if s else
                     "   no mesh/rule set tried fits; lower the batch (see --max-batch) or use a larger topology")
        return "\n".join(lines)
    m = r["memory"]
    parts = [f"{k} {_gib(v)}" for k, v in m.items() if k not in ("arguments", "total") and v]
    verdict = "fits" if r["fits"] else "DOES NOT FIT"
    lines.append(f"   memory per chip: {_gib(m['total'])} of {_gib(hbm)} ({verdict}, {r['headroom']:.0%} free): " + ", ".join(parts))
    if r["headroom"] < HEADROOM:
        lines.append(f"   warning: less than {HEADROOM:.0%} of HBM left free")
    f = r["flops"]
    lines.append(f"   FLOPs per chip per step: compiled {_si(f['compiled_per_chip'])} vs analytic {_si(f['analytic_program_per_chip'])} "
                 f"({f['compiled_over_analytic']:.2f}x); model FLOPs {_si(f['analytic_model_per_chip'])}")
    coll = r["collectives"]
    if coll:
        lines.append("   collectives per step: " + "; ".join(
            f"{k} x{v['count']:.0f} {_si(v['bytes'], 'B')}" for k, v in sorted(coll.items())))
    else:
        lines.append("   collectives per step: none")
    e = r["estimate"]
    lines.append(f"   estimate (roofline from published peaks, not a measurement): step {e['step_s'] * 1e3:.1f} ms "
                 f"(compute {e['compute_s'] * 1e3:.1f}, HBM {e['hbm_s'] * 1e3:.1f}, ICI {e['ici_s'] * 1e3:.1f} ms; "
                 f"{e['bound']}-bound), MFU {e['mfu']:.0%}, {r['items_per_s']:.0f} {r['item_name']}/s")
    if r.get("unknown_trip_counts"):
        lines.append(f"   note: {r['unknown_trip_counts']} loop(s) with an unreadable trip count were counted once")
    if "max_batch" in r:
        b = r["max_batch"]
        lines.append(f"   largest batch that fits: {b['key']}={b['value']} ({_gib(b['total_per_chip'])} per chip)")
    return "\n".join(lines)

