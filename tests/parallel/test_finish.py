"""The processes of a job exit together: a process that finished waits for the others
(`finish_distributed`), however long process 0 works on after the last collective (longer than
JAX's 300 s shutdown barrier at real scale), and stops waiting, failing, as soon as a peer says it
failed (`announce_failure`). Two real JAX processes joined over 127.0.0.1."""

from __future__ import annotations

import os
import sys

import pytest

from tests.multiprocess import finish_all, launch_processes

WORKER = """
import os, sys, time
from umr_jax.parallel.mesh import DistributedConfig, announce_failure, finish_distributed, initialize_distributed
flags = dict(zip(sys.argv[1::2], sys.argv[2::2]))  # the join flags launch_processes appends
process, mode = int(flags["--process-id"]), os.environ["MODE"]
initialize_distributed(DistributedConfig(flags["--coordinator"], int(flags["--num-processes"]), process))
started = time.monotonic()
if process == 0:
    time.sleep(4)  # process 0 works on (a manifest, uploads) after the others are done
    if mode == "fail":
        announce_failure()
        sys.exit(1)
try:
    finish_distributed(poll_seconds=0.2)
except RuntimeError as err:  # as the command line does: the others are told
    announce_failure()
    print(f"error after {time.monotonic() - started:.1f} s: {err}")
    sys.exit(1)
print(f"finished after {time.monotonic() - started:.1f} s")
"""


def run_pair(mode: str, **env):
    procs = launch_processes([sys.executable, "-c", WORKER], env=dict(os.environ, JAX_PLATFORMS="cpu", MODE=mode, **env))
    return finish_all(procs, timeout=120)


def seconds(line: str) -> float:
    return float(line.split(" after ", 1)[1].split(" s", 1)[0])


@pytest.mark.parametrize("mode", ["slow", "fail"])
def test_finished_processes_wait_for_process_zero(mode):
    (rc0, out0, err0), (rc1, out1, err1) = run_pair(mode)
    if mode == "slow":
        assert (rc0, rc1) == (0, 0), err0[-2000:] + err1[-2000:]
        assert out1.startswith("finished after ") and seconds(out1) >= 3.5, out1  # waited for process 0
    else:
        assert (rc0, rc1) == (1, 1), err0[-2000:] + err1[-2000:]
        assert "process 1 finished, but process 0 of the job failed; see its log" in out1
        assert seconds(out1) < 30, out1  # told at once, not after JAX's shutdown barrier timed out (300 s)
    assert "Shutdown barrier" not in err0 + err1


def test_a_peer_that_never_finishes_is_reported_at_the_timeout():
    (rc0, out0, err0), (rc1, out1, err1) = run_pair("slow", UMR_JAX_FINISH_TIMEOUT="1")
    # process 1 gave up after 1 s (process 0 was still working); process 0 then sees it failed
    assert "process 1 finished, but process 0 did not within UMR_JAX_FINISH_TIMEOUT=1 s" in out1, out1 + err1[-2000:]
    assert "process 0 finished, but process 1 of the job failed" in out0, out0 + err0[-2000:]
    assert (rc0, rc1) == (1, 1)


BARRIER_WORKER = """
import os, sys, time
from umr_jax.errors import JobFailed
from umr_jax.parallel.mesh import DistributedConfig, announce_failure, barrier, initialize_distributed
flags = dict(zip(sys.argv[1::2], sys.argv[2::2]))
process, mode = int(flags["--process-id"]), os.environ["MODE"]
initialize_distributed(DistributedConfig(flags["--coordinator"], int(flags["--num-processes"]), process))
started = time.monotonic()
try:
    barrier("start")
    if mode == "fail" and process == 1:
        time.sleep(2)
        announce_failure()  # bad input on process 1, while process 0 waits at the next barrier
        sys.exit(1)
    barrier("done" if mode != "mismatch" or process == 0 else "elsewhere")
except JobFailed as err:
    announce_failure()
    print(f"error after {time.monotonic() - started:.1f} s: {err}")
    sys.exit(1)
print(f"passed after {time.monotonic() - started:.1f} s")
"""


@pytest.mark.parametrize("mode", ["pass", "fail", "mismatch"])
def test_a_barrier_lets_all_pass_or_stops_when_a_peer_failed(mode):
    procs = launch_processes([sys.executable, "-c", BARRIER_WORKER], env=dict(os.environ, JAX_PLATFORMS="cpu", MODE=mode))
    (rc0, out0, err0), (rc1, out1, err1) = finish_all(procs, timeout=120)
    if mode == "pass":
        assert (rc0, rc1) == (0, 0) and out0.startswith("passed") and out1.startswith("passed"), err0[-2000:] + err1[-2000:]
    elif mode == "fail":
        assert (rc0, rc1) == (1, 1), err0[-2000:] + err1[-2000:]
        assert "process 0 stopped at 'done': process 1 of the job failed; see its log" in out0, out0 + err0[-2000:]
        assert seconds(out0) < 30, out0  # at once, not after JAX's shutdown barrier timed out (300 s)
    else:
        assert (rc0, rc1) == (1, 1), err0[-2000:] + err1[-2000:]
        assert "reached barrier 'done' where another process reached 'elsewhere'" in out0 + out1, out0 + out1
    assert "Shutdown barrier" not in err0 + err1


RUN_ONCE_WORKER = """
import os, sys, time
from pathlib import Path
from umr_jax.parallel.mesh import DistributedConfig, barrier, initialize_distributed
from umr_jax.stages.steps import run_once
flags = dict(zip(sys.argv[1::2], sys.argv[2::2]))
process = int(flags["--process-id"])
initialize_distributed(DistributedConfig(flags["--coordinator"], int(flags["--num-processes"]), process))

class Runtime:
    barrier = staticmethod(barrier)

marker = Path(os.environ["MARKER"])
if process == 1:
    time.sleep(3)  # process 0 is done with the stage (it writes the marker at once) before process 1 looks
def stage():
    if process == 0:
        marker.write_text("done")
print("ran" if run_once("stage", marker, stage, Runtime()) else "skipped")
"""


def test_a_stage_is_run_or_skipped_by_every_process_together(tmp_path):
    # A slow process must not find the marker a fast one wrote at the end of the stage, skip it
    # and leave the fast one waiting in the stage's barrier.
    env = dict(os.environ, JAX_PLATFORMS="cpu", MARKER=str(tmp_path / "done.json"))
    for expected in ("ran", "skipped"):  # the second time the marker is there for both
        procs = launch_processes([sys.executable, "-c", RUN_ONCE_WORKER], env=env)
        (rc0, out0, err0), (rc1, out1, err1) = finish_all(procs, timeout=120)
        assert (rc0, rc1) == (0, 0), err0[-2000:] + err1[-2000:]
        assert (out0.strip(), out1.strip()) == (expected, expected)
