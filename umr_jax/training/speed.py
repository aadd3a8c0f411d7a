"""How fast a training run goes: steps/s, examples/s, tokens/s, MFU and the time left, from host
timestamps the loop already has.

The loop reads every step's loss on the host (the non-finite check), so the time from a step's
dispatch to its loss is that step's time, and measuring it adds no device synchronisation. A
step whose global batch has shapes this process has not run before compiled its program (or
loaded it from the compilation cache): its time is counted in `compile_s`, never in a rate.

    meter = StepMeter(total_steps=52, examples_per_step=16, step_flops=flops_of_shapes, peak_flops=8 * 197e12)
    info = meter.batch_info(host_batch, global_batch)      # when the batch is drawn: shapes, tokens
    meter.record(step, seconds, info)                      # once the step's loss is on the host
    meter.report(step)   # {"steps_per_s": 3.1, "examples_per_s": 49.6, "tokens_per_s": ..., "eta_s": 12.9, ...}

Rates are over the steps since the previous report (the log interval), without compile steps;
the time left is the steps left times the wall time per step since the first step that did not
compile, which includes evaluations, checkpoints and later compiles, so it is what the run will
actually take. Tokens are the non-pad tokens of the batch masks (`query_mask`, `passage_mask`)
counted on the host from this process's rows and scaled by the number of processes (exact on
one host, an estimate on several); `padded_tokens_per_s` counts the padded shapes, which is
what the device computes on and what the model FLOPs are counted over. MFU (model FLOPs per
second over the peak of the train mesh's devices) is reported only where the devices have a
published peak (`parallel.peaks`): not on a CPU.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any, Callable, Mapping

import numpy as np

# Batch fields holding 0/1 token masks [rows, length], and the id arrays of the same shapes.
TOKEN_FIELDS = (("query_ids", "query_mask"), ("passage_ids", "passage_mask"))


@dataclasses.dataclass(frozen=True)
class BatchInfo:
    """What the meter needs of one global batch, read on the host when it is drawn."""

    shapes: tuple  # ((field, shape), ...) of the global batch: a new one means a compile
    tokens: int | None  # non-pad tokens of the global batch (None: the batch has no masks)
    padded_tokens: int | None
    flops: float | None  # model FLOPs of the step (None: not counted)


@dataclasses.dataclass
class _Window:
    steps: int = 0
    seconds: float = 0.0
    tokens: float = 0.0
    padded_tokens: float = 0.0
    flops: float = 0.0
    counted_tokens: bool = True
    counted_flops: bool = True

    def add(self, seconds: float, info: BatchInfo | None) -> None:
        self.steps += 1
        self.seconds += seconds
        if info is None or info.tokens is None:
            self.counted_tokens = False
        else:
            self.tokens += info.tokens
            self.padded_tokens += info.padded_tokens or 0
        if info is None or info.flops is None:
            self.counted_flops = False
        else:
            self.flops += info.flops


class StepMeter:
    """Step timings of one run (module docstring). `step_flops(shapes)` gives the model FLOPs of
    a step from its global batch's {field: shape} (None: no MFU); `peak_flops` is the summed peak
    FLOP/s of the devices the step runs on (None: no MFU)."""

    def __init__(self, *, total_steps: int, examples_per_step: int,
                 step_flops: Callable[[Mapping[str, tuple]], float | None] | None = None,
                 peak_flops: float | None = None, processes: int = 1, clock: Callable[[], float] = time.perf_counter):
        self.total_steps, self.examples_per_step = int(total_steps), int(examples_per_step)
        self.step_flops, self.peak_flops = step_flops, peak_flops
        self.processes, self.clock = int(processes), clock
        self.compile_seconds = 0.0
        self.compiled_steps = 0
        self._seen: set[tuple] = set()
        self._flops: dict[tuple, float | None] = {}
        self._window = _Window()
        self._steady = _Window()  # every step that did not compile, for the progress bar
        self._wall_start: tuple[int, float] | None = None  # (steps done before it, clock) of the first steady step
        self.last_step_compiled = False

    def batch_info(self, host_batch: Mapping[str, Any], global_batch: Mapping[str, Any]) -> BatchInfo:
        """Shapes, token counts and model FLOPs of a batch: `host_batch` is this process's numpy
        rows, `global_batch` the global arrays (only their shapes are read: no device access)."""
        shapes = tuple(sorted((name, tuple(getattr(value, "shape", ()))) for name, value in global_batch.items()))
        tokens = padded = None
        if any(mask in host_batch for _, mask in TOKEN_FIELDS):
            tokens = padded = 0
            for ids, mask in TOKEN_FIELDS:
                if mask in host_batch:
                    tokens += int(np.count_nonzero(host_batch[mask])) * self.processes
                    padded += int(math.prod(dict(shapes).get(ids, dict(shapes)[mask])))
        if shapes not in self._flops:
            self._flops[shapes] = self.step_flops(dict(shapes)) if self.step_flops is not None else None
        return BatchInfo(shapes, tokens, padded, self._flops[shapes])

    def record(self, step: int, seconds: float, info: BatchInfo | None) -> None:
        """Step `step` (1-based) took `seconds` from dispatch to its loss on the host."""
        key = info.shapes if info is not None else ()
        self.last_step_compiled = key not in self._seen
        if self.last_step_compiled:
            self._seen.add(key)
            self.compile_seconds += seconds
            self.compiled_steps += 1
            return
        if self._wall_start is None:
            self._wall_start = (step - 1, self.clock() - seconds)
        self._window.add(seconds, info)
        self._steady.add(seconds, info)

    def steps_per_second(self) -> float | None:
        """Over every step of this run that did not compile (None before the first)."""
        return self._steady.steps / self._steady.seconds if self._steady.seconds > 0 else None

    def eta_seconds(self, step: int) -> float | None:
        """Seconds until `total_steps` at the wall-clock pace since the first step that did not
        compile (0 at the last step; None before a step has been timed that way)."""
        if step >= self.total_steps:
            return 0.0
        if self._wall_start is None:
            return None
        done_before, started = self._wall_start
        elapsed, steps = self.clock() - started, step - done_before
        return (self.total_steps - step) * elapsed / steps if steps > 0 else None

    def report(self, step: int) -> dict[str, float]:
        """The rates since the previous report (keys absent when every step of the interval
        compiled), the time left, and the seconds spent in compile steps so far; starts a new
        interval."""
        window, self._window = self._window, _Window()
        out: dict[str, float] = {}
        if window.steps and window.seconds > 0:
            rate = window.steps / window.seconds
            out["steps_per_s"] = rate
            out["examples_per_s"] = rate * self.examples_per_step
            if window.counted_tokens:
                out["tokens_per_s"] = window.tokens / window.seconds
                out["padded_tokens_per_s"] = window.padded_tokens / window.seconds
            if window.counted_flops and self.peak_flops:
                out["mfu"] = window.flops / window.seconds / self.peak_flops
        eta = self.eta_seconds(step)
        if eta is not None:
            out["eta_s"] = eta
        out["compile_s"] = self.compile_seconds
        return out


def format_duration(seconds: float) -> str:
    """3725.2 -> '1:02:05'."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def describe(speed: Mapping[str, float]) -> str:
    """A report as the log line shows it: '3.10 steps/s, 49.6 examples/s, 12,345 tokens/s, MFU
    41.2%, ETA 0:00:13'."""
    parts = []
    if "steps_per_s" in speed:
        parts.append(f"{speed['steps_per_s']:.3g} steps/s")
        parts.append(f"{speed['examples_per_s']:,.1f} examples/s")
    if "tokens_per_s" in speed:
        parts.append(f"{speed['tokens_per_s']:,.0f} tokens/s ({speed['padded_tokens_per_s']:,.0f} padded)")
    if "mfu" in speed:
        parts.append(f"MFU {100 * speed['mfu']:.1f}%")
    if "eta_s" in speed:
        parts.append(f"ETA {format_duration(speed['eta_s'])}")
    if "steps_per_s" not in speed and speed.get("compile_s"):
        parts.append(f"compiling: {speed['compile_s']:.1f} s so far")
    return ", ".join(parts)
