"""XLA:CPU settings that umr-jax applies when it is imported (stdlib only: this runs before jax).

XLA reads `XLA_FLAGS` once, when JAX opens its first backend, so `import umr_jax` appends these
to `XLA_FLAGS` then. Nothing is clobbered:

- a flag the user's `XLA_FLAGS` already names keeps the user's value;
- `UMR_JAX_XLA_CPU_DEFAULTS=0` (or off/false/no) applies none;
- only jaxlib versions where they were measured get them (an unknown flag is a fatal error in
  XLA, and a newer XLA:CPU may have other defaults), see `MEASURED_JAXLIB`;
- if JAX has already opened a backend it is too late, and the flags are not applied.

The flags only change how XLA:CPU compiles; GPU and TPU programs are unaffected.

`--xla_cpu_experimental_ynn_fusion_type=-individual_dot,-dot`: XLA:CPU 0.10 hands every dot
(alone, or fused with its elementwise neighbours) to YNNPACK. On the dense-layer shapes of a
BERT/mT5 tower YNNPACK ran at 90-150 GFLOP/s where XLA's own (Eigen/XNNPACK) dots ran at 120-215
on a 2-core Xeon. Dropping the two dot types keeps YNNPACK's reductions, which the backward pass
needs (without them, the bias gradients' column sums run 5x slower). Measured with
`python bench/bench_vs_torch.py` (2026-12-01, jaxlib 0.10.2, fp32, mini models): scoring
40.5 -> 44.2 pairs/s, encoding 55.4 -> 61.7 passages/s, a distillation step 0.199 -> 0.229
steps/s.
"""

from __future__ import annotations

import os
import sys

OPT_OUT_ENV = "UMR_JAX_XLA_CPU_DEFAULTS"
MEASURED_JAXLIB = ("0.10.",)
CPU_FLAGS = ("--xla_cpu_experimental_ynn_fusion_type=-individual_dot,-dot",)


def _jaxlib_version() -> str | None:
    from importlib import metadata

    try:
        return metadata.version("jaxlib")
    except metadata.PackageNotFoundError:
        return None


def _backends_started() -> bool:
    if "jax" not in sys.modules:
        return False
    try:
        from jax._src import xla_bridge

        return bool(xla_bridge.backends_are_initialized())
    except Exception:  # a JAX without that function: assume the worst
        return True


def flag_name(flag: str) -> str:
    return flag.split("=", 1)[0].lstrip("-")


def apply_cpu_defaults(environ: dict | None = None, jaxlib_version: str | None = None,
                       backends_started: bool | None = None) -> list[str]:
    """Append `CPU_FLAGS` to `environ["XLA_FLAGS"]` (default `os.environ`) where that is safe
    and wanted (see the module docstring). Returns the flags it added. `jaxlib_version` and
    `backends_started` default to this process's."""
    env = os.environ if environ is None else environ
    if env.get(OPT_OUT_ENV, "1").strip().lower() in ("0", "off", "false", "no"):
        return []
    version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
    if version is None or not version.startswith(MEASURED_JAXLIB):
        return []
    if _backends_started() if backends_started is None else backends_started:
        return []
    current = env.get("XLA_FLAGS", "")
    named = {flag_name(f) for f in current.split()}
    added = [f for f in CPU_FLAGS if flag_name(f) not in named]
    if added:
        env["XLA_FLAGS"] = " ".join([current.strip(), *added]).strip()
    return added
