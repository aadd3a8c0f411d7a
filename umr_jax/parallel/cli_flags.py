"""Command-line flags every multi-device command shares, and the argparse types for counts.

  --coordinator HOST:PORT --num-processes N --process-id I   (GPU/CPU clusters; TPU VMs need none)
  `positive_int` (--top-k, --iterations, ...), `non_negative_int`

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
