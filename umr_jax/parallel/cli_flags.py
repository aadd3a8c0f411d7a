"""Command-line flags the commands share, and the argparse types for counts.

  --coordinator HOST:PORT --num-processes N --process-id I   (GPU/CPU clusters; TPU VMs need none)
  --quiet, --verbose, --no-progress, --json                  (every command: `add_output_flags`)
  `positive_int` (--top-k, --iterations, ...), `non_negative_int`
  `say` (a progress line or note), `emit` (the result: text, or one JSON object under --json)

The device mesh flags (--mesh/--rules) belong to the runtime: `umr_jax.runtime.add_runtime_flags`.
"""

from __future__ import annotations

import argparse


def _int_at_least(text: str, least: int, expected: str, below: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected {expected}") from None
    if value < least:
        raise argparse.ArgumentTypeError(f"{value} is {below}; expected an integer >= {least}")
    return value


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count, a k, a size). 0 and negative values are usage
    errors, reported by argparse before anything runs."""
    return _int_at_least(text, 1, "a positive integer", "not positive")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    return _int_at_least(text, 0, "an integer >= 0", "negative")


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host (automatic on TPU VMs; give all three on GPU/CPU clusters)")
    group.add_argument("--coordinator", help="host:port of process 0")
    group.add_argument("--num-processes", type=int)
    group.add_argument("--process-id", type=int)


# ---- the flags every command shares: how much it says, and in what form ------------------------


def add_output_flags(parser: argparse.ArgumentParser) -> None:
    """--quiet, --verbose, --no-progress and (unless the command defines its own) --json.

    `umr_jax.cli` adds them to every command, so they mean the same everywhere:
      --quiet        no progress bars or progress lines, no notes; warnings and errors only
      --verbose      debug logging
      --no-progress  no progress bars (the progress part of --quiet; the old flag)
      --json         exactly one JSON object on stdout: the command's result; everything else
                     it says goes to stderr
    """
    group = parser.add_argument_group("output (every command)")
    verbosity = group.add_mutually_exclusive_group()
    verbosity.add_argument("-q", "--quiet", action="store_true", help="no progress bars or notes; warnings and errors only")
    verbosity.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    group.add_argument("--no-progress", action="store_true", help="no progress bars (implied by --quiet)")
    if "--json" not in parser._option_string_actions:
        group.add_argument("--json", action="store_true",
                           help="print the result as exactly one JSON object on stdout (everything else goes to stderr)")


def settle_output_flags(args: argparse.Namespace) -> None:
    """After parsing: --quiet implies --no-progress, and the log level follows --quiet/--verbose
    (left to the command when neither is given)."""
    import logging

    if getattr(args, "quiet", False):
        args.no_progress = True
    level = logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING if getattr(args, "quiet", False) else None
    if level is not None:  # the commands' own basicConfig calls are then no-ops
        logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", force=True)


def say(args: argparse.Namespace, message: str) -> None:
    """A progress line or a note: on stderr, and not at all under --quiet."""
    import sys

    if not getattr(args, "quiet", False):
        print(message, file=sys.stderr, flush=True)


def result_stream(args: argparse.Namespace):
    """Where a command prints its human-readable result: stdout, or stderr under --json (stdout
    then holds only the JSON object)."""
    import sys

    return sys.stderr if getattr(args, "json", False) is True else sys.stdout


def emit(args: argparse.Namespace, result: dict, text: str | None) -> None:
    """The command's result: `result` as one JSON object on stdout under --json, else `text`
    (when there is any) on stdout."""
    import json

    if getattr(args, "json", False) is True:
        print(json.dumps(result, ensure_ascii=False, default=str))
    elif text is not None:
        print(text)
