"""The `umr-jax` command: one sub-command per stage of the UMR pipeline.

Each built sub-command lives in a module that exposes `add_arguments(parser)` and
`run(args) -> int`. Those modules import nothing heavy (jax, torch) at import time, so
`umr-jax --help` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from umr_jax import __version__
from umr_jax.parallel.cli_flags import add_output_flags, settle_output_flags

# name -> (module, one-line help). Order is the order of the UMR data flow.
BUILT: dict[str, tuple[str, str]] = {
    "demo": ("umr_jax.demo.cli", "two UMR iterations plus evaluation on the embedded demo corpus, tiny models"),
    "data": ("umr_jax.data.cli", "validate and convert XOR-TyDi, DPR, WebFAQ, MKQA, BEIR, pairs and retrieval files"),
    "model": ("umr_jax.models.cli", "inspect and check Hugging Face model folders (T5/mT5, BERT, XLM-R)"),
    "encode": ("umr_jax.stages.encode_cli", "encode passages or queries with a retriever tower across the mesh"),
    "index": ("umr_jax.stages.index_cli", "build (ScaNN or exact) and search an embedding index"),
    "retrieve": ("umr_jax.stages.retrieve_cli", "top-k retrieval for a question file, written in the field's formats"),
    "score": ("umr_jax.stages.score_cli", "stage 1: mT5 question-likelihood pseudo labels"),
    "train": ("umr_jax.stages.train_cli", "stage 2: distil the retriever from pseudo labels, or contrastive training on pairs"),
    "loop": ("umr_jax.stages.loop_cli", "iterate encode -> index -> retrieve -> score -> train, resumable per stage"),
    "evaluate": ("umr_jax.evaluation.cli", "XOR-Retrieve R@kt, XOR-Full F1/EM/BLEU, IR metrics, run comparison"),
    "scaling": ("umr_jax.scaling.cli", "scaling sweeps over nested data subsets: train, evaluate, fit curves, plot"),
    "compile": ("umr_jax.aot.cli", "compile stages for a TPU topology on this machine: memory, FLOPs, collectives, estimated step time"),
}


def _build_parser() -> argparse.ArgumentParser:
    from umr_jax.config import config_names

    parser = argparse.ArgumentParser(
        prog="umr-jax",
        description=(
            "Unsupervised multilingual dense retrieval (UMR) in JAX/Flax: "
            "pseudo-label with a frozen mT5, distil a dual encoder, iterate."
        ),
        epilog=(
            f"Configs shipped with umr-jax (train, loop, scaling and compile take --config NAME from any folder, or a "
            f"config file path): {', '.join(config_names())}. Models are Hugging Face folders or model IDs "
            f"(org/name[@revision], fetched into the Hugging Face cache)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"umr-jax {__version__}")
    parser.add_argument(
        "--compilation-cache", metavar="DIR", default=None,
        help="keep XLA's compiled programs here and reuse them in later runs and iterations (default: "
             "$UMR_JAX_COMPILATION_CACHE, else ~/.cache/umr-jax/xla; 'off' disables it)",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, help_text) in BUILT.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        for leaf in leaf_parsers(p):
            add_output_flags(leaf)
            leaf.set_defaults(_options=frozenset(leaf._option_string_actions))
    return parser


def leaf_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """The parsers that parse a whole command line: `parser` itself, or those of its actions
    (`umr-jax index build`, `umr-jax data validate`, ...)."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return [leaf for child in action.choices.values() for leaf in leaf_parsers(child)]
    return [parser]


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command's leaf parser by its full name ("encode", "index search", ...)."""
    parsers: dict[str, argparse.ArgumentParser] = {}

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child_name, child in action.choices.items():
                    walk(child, f"{name} {child_name}".strip())
                return
        parsers[name] = parser

    walk(_build_parser(), "")
    return parsers


def _with_hints(err: Exception, options: frozenset[str]) -> str:
    """The error's message plus those of its hints whose flag the running command has."""
    from umr_jax.errors import hints_for

    return "; ".join([str(err), *hints_for(err, options)])


def main(argv: list[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from umr_jax.config import default_compilation_cache, enable_compilation_cache
    from umr_jax.errors import InputError, JobFailed, MissingDependencyError, ModelLoadError, UsageError, describe_os_error

    # The one place where anticipated failures become `umr-jax CMD: error: path[:line]: what is
    # wrong; what is expected` and exit status 1. Anything else is a bug: it keeps its traceback.
    settle_output_flags(args)
    options = getattr(args, "_options", frozenset())
    succeeded = False
    try:
        enable_compilation_cache(args.compilation_cache if args.compilation_cache is not None else default_compilation_cache())
        rc = int(args._run(args) or 0)
        if rc == 0:
            _finish_job()
            succeeded = True
        return rc
    except UsageError as err:
        print(f"umr-jax {args.command}: error: {_with_hints(err, options)}", file=sys.stderr)
        return 2
    except (InputError, ModelLoadError, MissingDependencyError, JobFailed) as err:
        message = _with_hints(err, options)
    except OSError as err:
        message = describe_os_error(err)
        if message is None:
            raise
    finally:
        if not succeeded:
            _announce_failure()
    print(f"umr-jax {args.command}: error: {message}", file=sys.stderr)
    return 1


def _finish_job() -> None:
    """In a multi-process job, a command that succeeded waits for the other processes to succeed
    (`finish_distributed`); a peer's failure is this process's failure too."""
    if "umr_jax.parallel.mesh" not in sys.modules:  # the command joined no job
        return
    from umr_jax.parallel.mesh import finish_distributed

    finish_distributed()


def _announce_failure() -> None:
    """In a multi-process job, tell the other processes that this one failed (they stop waiting)."""
    if "umr_jax.parallel.mesh" in sys.modules:
        from umr_jax.parallel.mesh import announce_failure

        announce_failure()


if __name__ == "__main__":
    sys.exit(main())
