"""Command-line flags every multi-device command shares: the mesh, the rule set, multi-host.

  --mesh data=-1,fsdp=1,model=1   mesh axis sizes (one may be -1: the remaining devices)
  --rules fsdp                    data_parallel | fsdp | fsdp_tp
  --coordinator HOST:PORT --num-processes N --process-id I   (GPU/CPU clusters; TPU VMs need none)

and the argparse types for counts (`positive_int`: --top-k, --iterations, ...).
"""

from __future__ import annotations

import argparse

from umr_jax.errors import InputError


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (a count, a k, a size). 0 and negative values are usage
    errors, reported by argparse before anything runs."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected a positive integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not positive; expected an integer >= 1")
    return value


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; expected an integer >= 0") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative; expected an integer >= 0")
    return value


def add_distributed_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("multi-host (automatic on TPU VMs; give all three on GPU/CPU clusters)")
    group.add_argument("--coordinator", help="host:port of process 0")
    group.add_argument("--num-processes", type=int)
    group.add_argument("--process-id", type=int)


def add_mesh_flags(parser: argparse.ArgumentParser, *, default_mesh: str = "data=-1,fsdp=1,model=1", default_rules: str = "data_parallel") -> None:
    add_distributed_flags(parser)
    group = parser.add_argument_group("device mesh")
    group.add_argument("--mesh", default=default_mesh, help=f"mesh axis sizes (default {default_mesh})")
    group.add_argument("--rules", default=default_rules, choices=["data_parallel", "fsdp", "fsdp_tp"], help=f"sharding rule set (default {default_rules})")


def parse_mesh(text: str) -> dict[str, int]:
    """'data=-1,fsdp=2' -> {'data': -1, 'fsdp': 2}."""
    sizes = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        try:
            if not sep:
                raise ValueError
            sizes[name.strip()] = int(value)
        except ValueError:
            raise InputError(f"--mesh {text!r}: expected comma-separated axis=size pairs, e.g. data=-1,fsdp=2") from None
    return sizes


def start_distributed(args: argparse.Namespace) -> None:
    """Join the multi-host job the flags describe (a no-op on one host). Call before using devices."""
    from umr_jax.parallel.mesh import DistributedConfig, initialize_distributed

    initialize_distributed(DistributedConfig(getattr(args, "coordinator", None), getattr(args, "num_processes", None),
                                             getattr(args, "process_id", None)))


def mesh_from_args(args: argparse.Namespace):
    """(mesh, rules) from --mesh/--rules, after joining the multi-host job."""
    from umr_jax.parallel.mesh import make_mesh
    from umr_jax.parallel.sharding import get_rules

    start_distributed(args)
    try:
        mesh = make_mesh(parse_mesh(args.mesh))
    except ValueError as err:
        raise InputError(f"--mesh {args.mesh!r}: {err}") from None
    return mesh, get_rules(args.rules)
