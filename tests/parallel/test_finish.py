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
