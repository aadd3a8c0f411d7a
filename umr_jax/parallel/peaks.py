"""Published per-chip peaks: the TPU generations `umr-jax compile` targets (and the H100 it
costs on paper), and the peak of the device a run is on, for MFU.

TPU figures are from Cloud TPU's system-architecture pages (bf16 FLOP/s per chip, HBM capacity
and bandwidth, bidirectional ICI bandwidth per chip); GPU figures from NVIDIA's datasheets
(dense bf16, without sparsity). A device without a published figure here (a CPU, an unknown
accelerator) has no peak, and nothing reports an MFU for it.

    peak_flops(jax.devices()[0])   # 1.97e14 on a TPU v5e chip, None on a CPU
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Chip:
    name: str
    bf16_flops: float  # peak dense bf16 FLOP/s
    hbm_bytes: float  # HBM capacity
    hbm_bandwidth: float  # bytes/s
    ici_bandwidth: float  # bidirectional inter-chip bytes/s per chip
    cores_per_chip: int  # what the accelerator-type count counts per chip
    dims: int  # torus dimensions (2 or 3)
    topology_prefix: str  # libtpu's name
    chip_config: str  # libtpu's chip config (megacore: one device per chip)


GiB = 1024**3
CHIPS = {
    "v4": Chip("v4", 275e12, 32 * GiB, 1228e9, 300e9, 2, 3, "v4", "megacore"),
    "v5e": Chip("v5e", 197e12, 16 * GiB, 819e9, 400e9, 1, 2, "v5e", "default"),
    "v5p": Chip("v5p", 459e12, 95 * GiB, 2765e9, 1200e9, 2, 3, "v5p", "megacore"),
    "v6e": Chip("v6e", 918e12, 32 * GiB, 1638e9, 800e9, 1, 2, "v6e", "default"),
}
# For costing on paper only (no compile target): H100 SXM, dense bf16.
H100 = Chip("h100", 989e12, 80e9, 3350e9, 900e9, 1, 0, "", "")

# JAX's `device_kind` of a TPU device -> its generation. v4 and v5p run megacore (one device per
# chip), so a device's peak is its chip's.
TPU_KINDS = {"tpu v4": "v4", "tpu v5 lite": "v5e", "tpu v5e": "v5e", "tpu v5": "v5p", "tpu v5p": "v5p",
             "tpu v6 lite": "v6e", "tpu v6e": "v6e"}
# Substrings of a GPU's `device_kind` -> dense bf16 FLOP/s, most specific first.
GPU_PEAKS = (("h100 pcie", 756e12), ("h100", 989e12), ("h200", 989e12), ("a100", 312e12))


def peak_flops(device) -> float | None:
    """The published dense bf16 peak (FLOP/s) of a JAX device, or None when there is none (a
    CPU, or an accelerator not listed here)."""
    kind = str(getattr(device, "device_kind", "")).strip().lower()
    if getattr(device, "platform", "") == "tpu" or kind.startswith("tpu"):
        chip = TPU_KINDS.get(kind)
        return CHIPS[chip].bf16_flops if chip else None
    if getattr(device, "platform", "") == "gpu" or kind.startswith("nvidia"):
        return next((peak for name, peak in GPU_PEAKS if name in kind), None)
    return None
