"""TPU topologies by name, and the published per-chip peaks the roofline estimates use.

Names are what `gcloud` calls an accelerator type (`v5e-16`, `v4-32`, `v5p-8`, `v6e-64`; v4
and v5p count TensorCores, two per chip; v5e and v6e count chips), or a topology
(`v5e:4x4`, `v4:2x2x4`). `--num-slices N` (or `2xv5e-16`) makes a multislice job.

Peaks (`parallel.peaks`, where the trainers read them for MFU too) are from Cloud TPU's
system-architecture pages (bf16 FLOP/s per chip, HBM capacity and bandwidth, bidirectional ICI
bandwidth per chip) and NVIDIA's H100 SXM datasheet (dense bf16, NVLink); estimates built from
them say so.
"""

from __future__ import annotations

import dataclasses
import math
import re

from umr_jax.errors import UsageError
from umr_jax.parallel.peaks import CHIPS, H100, Chip, GiB  # noqa: F401  (re-exported: the peaks live below the trainers, which read them too)

ALIASES = {"v5litepod": "v5e", "v5lite": "v5e", "v6": "v6e"}


@dataclasses.dataclass(frozen=True)
class Topology:
    name: str  # as given
    chip: Chip
    shape: tuple[int, ...]  # chips per torus dimension, one slice
    num_slices: int = 1

    @property
    def chips(self) -> int:
        return math.prod(self.shape) * self.num_slices

    @property
    def topology_name(self) -> str:
        return f"{self.chip.topology_prefix}:{'x'.join(map(str, self.shape))}"

    def describe(self) -> str:
        slices = f", {self.num_slices} slices" if self.num_slices > 1 else ""
        return f"{self.name} ({self.topology_name}, {self.chips} chips{slices}, {self.chip.hbm_bytes / GiB:.0f} GiB HBM each)"


def _shape_for(chip: Chip, chips: int, given: str) -> tuple[int, ...]:
    """The usual slice shape of `chips` chips: 2D (v5e/v6e) or 3D (v4/v5p) torus, squarest first."""
    if chips < 1 or chips & (chips - 1):
        raise UsageError(f"topology {given!r}: {chips} chips; slices have a power-of-two number of chips")
    if chip.dims == 2:
        if chips > 256:
            raise UsageError(f"topology {given!r}: a {chip.name} slice has at most 256 chips")
        a = 1 << (int(math.log2(chips)) // 2)
        return (a, chips // a)
    if chips < 4:
        raise UsageError(f"topology {given!r}: the smallest {chip.name} slice has 4 chips ({chip.name}-{4 * chip.cores_per_chip})")
    shape = [2, 2, 1]
    while math.prod(shape) < chips:
        shape[_grow(shape)] *= 2
    return tuple(shape)


def _grow(shape: list[int]) -> int:
    """Which dimension doubles next: 2x2x1 -> 2x2x2 -> 2x2x4 -> 2x4x4 -> 4x4x4 -> 4x4x8 ..."""
    smallest = min(shape)
    if shape[2] == smallest:
        return 2
    return 1 if shape[1] == smallest else 0


def parse_topology(name: str, num_slices: int = 1) -> Topology:
    """`v5e-16`, `v4-32`, `2xv5p-8`, `v5e:4x4` -> Topology; a clear error for anything else."""
    text = name.strip().lower()
    multi = re.fullmatch(r"(\d+)x(v.+)", text)
    if multi:
        num_slices, text = num_slices * int(multi.group(1)), multi.group(2)
    if num_slices < 1:
        raise UsageError(f"--num-slices must be at least 1, got {num_slices}")
    known = ", ".join(sorted(CHIPS))
    explicit = re.fullmatch(r"(v[0-9a-z]+):(\d+(?:x\d+)+)", text)
    if explicit:
        kind, dims = ALIASES.get(explicit.group(1), explicit.group(1)), tuple(int(d) for d in explicit.group(2).split("x"))
        if kind not in CHIPS:
            raise UsageError(f"unknown TPU generation {explicit.group(1)!r} in topology {name!r}; known: {known}")
        if len(dims) != CHIPS[kind].dims:
            raise UsageError(f"topology {name!r}: {kind} slices are {CHIPS[kind].dims}-dimensional (e.g. "
                             f"{kind}:{'x'.join(['2'] * CHIPS[kind].dims)})")
        return Topology(name, CHIPS[kind], dims, num_slices)
    typed = re.fullmatch(r"(v[0-9a-z]+)-(\d+)", text)
    if not typed:
        raise UsageError(f"unknown topology {name!r}; expected an accelerator type such as v5e-16, v4-32, v5p-8, "
                         f"v6e-64 (or 2xv5e-16 for two slices), or a topology such as v5e:4x4 or v4:2x2x4")
    kind = ALIASES.get(typed.group(1), typed.group(1))
    if kind not in CHIPS:
        raise UsageError(f"unknown TPU generation {typed.group(1)!r} in {name!r}; known: {known}")
    chip, count = CHIPS[kind], int(typed.group(2))
    if count % chip.cores_per_chip:
        raise UsageError(f"{name!r}: {kind} accelerator types count TensorCores, {chip.cores_per_chip} per chip")
    return Topology(name, chip, _shape_for(chip, count // chip.cores_per_chip, name), num_slices)


def check_tpu_runtime() -> None:
    """Raise a UsageError saying how to install the TPU compiler when libtpu is missing."""
    import importlib.util

    if importlib.util.find_spec("libtpu") is None:
        raise UsageError("the TPU compiler (libtpu) is not installed; install it with the project's extra: "
                         "pip install -e \".[tpu]\" (or pip install \"umr-jax[tpu]\"); it works on a CPU-only machine")


def tpu_devices(topology: Topology) -> list:
    """Abstract devices of `topology` (compile targets; nothing runs on them)."""
    import logging
    import os

    check_tpu_runtime()
    # libtpu looks for a TPU VM's metadata when it loads; on a CPU host these say "none" up front.
    os.environ.setdefault("TPU_SKIP_MDS_QUERY", "1")
    # libtpu takes a machine-wide lock for the chips it drives; compiling drives none, so
    # several compiles (test workers, a sweep) may run at once.
    os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
    os.environ.setdefault("TPU_ACCELERATOR_TYPE", f"{topology.chip.name}-{math.prod(topology.shape) * topology.chip.cores_per_chip}")
    os.environ.setdefault("TPU_WORKER_HOSTNAMES", "localhost")
    os.environ.setdefault("TPU_STDERR_LOG_LEVEL", "3")
    os.environ.setdefault("TPU_MIN_LOG_LEVEL", "3")
    logging.getLogger("jax._src.xla_bridge").setLevel(logging.ERROR)
    from jax.experimental import topologies

    bounds = (1, 1, 1) if math.prod(topology.shape) == 1 else (2, 2, 1)
    try:
        desc = topologies.get_topology_desc(platform="tpu", topology_name=topology.topology_name,
                                            chip_config_name=topology.chip.chip_config, chips_per_host_bounds=bounds,
                                            num_slices=topology.num_slices)
    except Exception as err:  # libtpu's own message says what it refused
        raise UsageError(f"topology {topology.name!r} ({topology.topology_name}): the TPU compiler refused it: "
                         f"{str(err).splitlines()[0]}") from None
    return list(desc.devices)
