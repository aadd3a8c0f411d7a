"""`umr-jax scaling` as two JAX processes (2 CPU devices each, joined over 127.0.0.1) equals one
process with the same 4 devices: the same points, training steps and examples, and R@kt that
agrees (embeddings and gradients are computed on other device splits, so scores may differ in
the last bits; with the tiny study that moves no question across the R@kt cut)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.multiprocess import launch, launch_processes, wait_ok
from tests.scaling.test_runner import CONFIG, _overrides, study_data  # noqa: F401  (a fixture)
from tests.training.conftest import tiny_retriever  # noqa: F401  (a fixture)
from umr_jax.scaling.study import collect_results

ROOT = Path(__file__).resolve().parents[2]


def _study(output: Path, overrides: list[str], cache: Path, *processes: str) -> None:
    command = [sys.executable, "-m", "umr_jax.cli", "--compilation-cache", str(cache), "scaling", "--config", CONFIG,
               "--output", str(output), *overrides]
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu", JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
               XLA_FLAGS="--xla_force_host_platform_device_count=" + ("2" if processes else "4"))
    procs = launch_processes(command, process_ids=processes, env=env) if processes else [launch(command, env=env)]
    wait_ok(procs, timeout=900)


@pytest.mark.slow
def test_a_two_process_study_equals_one_process(tmp_path, study_data, tiny_retriever):  # noqa: F811
    overrides = _overrides(study_data, tiny_retriever) + ["sources.translated.model.similarity=cosine"]
    cache = tmp_path / "xla"
    _study(tmp_path / "one", overrides, cache)
    _study(tmp_path / "two", overrides, cache, "0", "1")
    one = {(r.source, r.size): r.metrics for r in collect_results(tmp_path / "one")}
    two = {(r.source, r.size): r.metrics for r in collect_results(tmp_path / "two")}
    assert sorted(one) == sorted(two) == [("translated", 10), ("translated", 30), ("translated", 40),
                                          ("umr", 10), ("umr", 30), ("umr", 40)]
    for point, metrics in one.items():
        assert {k: metrics["train"][k] for k in ("objective", "steps", "examples")} == \
               {k: two[point]["train"][k] for k in ("objective", "steps", "examples")}, point
        for k in ("r@2kt", "r@5kt"):
            assert two[point][k]["average"] == pytest.approx(metrics[k]["average"], abs=1e-9), (point, k)
    assert (tmp_path / "two" / "report" / "scaling.json").is_file() and (tmp_path / "two" / "baseline" / "eval.json").is_file()
