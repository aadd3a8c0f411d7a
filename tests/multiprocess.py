"""What the multi-process tests share: JAX processes joined over 127.0.0.1 on a free port (the
`--coordinator/--num-processes/--process-id` flags every command takes), started with their
output piped, and waited for with a timeout that kills whatever is still running.

    procs = launch_processes(command, env=env)            # process ids 0 and 1, one free port
    outputs = wait_ok(procs, timeout=300)                 # their stdout; asserts they exited 0
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from typing import Iterable, Sequence

Result = tuple[int, str, str]  # (return code, stdout, stderr)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (for the coordinator)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_flags(port: int, process_id: int | str, num_processes: int = 2) -> list[str]:
    """The flags that make a command process `process_id` of a job coordinated on `port`."""
    return ["--coordinator", f"127.0.0.1:{port}", "--num-processes", str(num_processes), "--process-id", str(process_id)]


def launch(command: Sequence[str], **popen) -> subprocess.Popen:
    """`command` started with stdout and stderr piped, as text, and Python's fault handler on: a
    process that JAX's coordination service aborts (a peer missed a barrier) prints where each of
    its threads was."""
    env = dict(popen.pop("env", None) or os.environ, PYTHONFAULTHANDLER="1")
    return subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, **popen)


def launch_processes(command: Sequence[str], num_processes: int = 2, process_ids: Iterable[int | str] | None = None,
                     **popen) -> list[subprocess.Popen]:
    """One process of `command` per id in `process_ids` (default all `num_processes`), joined on
    a free port."""
    port = free_port()
    ids = range(num_processes) if process_ids is None else process_ids
    return [launch([*command, *join_flags(port, i, num_processes)], **popen) for i in ids]


def finish(proc: subprocess.Popen, timeout: float) -> Result:
    """Wait for `proc` (at most `timeout` seconds, then it is killed and TimeoutExpired raised)."""
    return finish_all([proc], timeout)[0]


def finish_all(procs: Sequence[subprocess.Popen], timeout: float) -> list[Result]:
    """Wait for every process, `timeout` seconds in all, reading all their pipes at once (a
    process that fills its pipe while another is waited for would block, and its peers with it
    at their next barrier). On a timeout every process still running is aborted (the fault
    handler prints where each of its threads was), killed if that does not end it, and an
    AssertionError shows every process's stderr."""
    outputs: list[list[str]] = [["", ""] for _ in procs]

    def drain(i: int, which: int, stream) -> None:
        outputs[i][which] = stream.read()

    readers = [threading.Thread(target=drain, args=(i, which, stream), daemon=True)
               for i, proc in enumerate(procs) for which, stream in enumerate((proc.stdout, proc.stderr))]
    for reader in readers:
        reader.start()
    deadline = time.monotonic() + timeout
    timed_out = False
    try:
        for proc in procs:
            proc.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        timed_out = True
    finally:
        running = [proc for proc in procs if proc.poll() is None]
        for proc in running:
            proc.send_signal(signal.SIGABRT)
        for proc in running:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for reader in readers:
            reader.join()
        for proc in procs:
            proc.stdout.close()
            proc.stderr.close()
    results = [(proc.returncode, out, err) for proc, (out, err) in zip(procs, outputs)]
    if timed_out:
        raise AssertionError(f"still running after {timeout:.0f} s; aborted\n{failures(results)}")
    return results


def failures(results: Sequence[Result], tail: int = 4000) -> str:
    """Each process's exit code and the end of its stderr (every process: the one that failed
    first is often not the one that shows why). A process that was aborted shows the end of what
    it printed before the abort and, apart, its main thread's stack from the fault handler (the
    other threads' stacks would push the error out of view)."""
    return "\n".join(f"--- process {i}: exit {rc}\n{_stderr_summary(err, tail)}" for i, (rc, _, err) in enumerate(results))


def _stderr_summary(err: str, tail: int) -> str:
    before, fatal, dump = err.partition("Fatal Python error")
    if not fatal:
        return err[-tail:]
    stacks = [block for block in dump.split("\n\n") if "most recent call first" in block]
    main = [block for block in stacks if "umr_jax" in block or "Current thread" in block] or stacks[:1]
    return f"{before[-tail:]}\n[fault handler: {fatal}{dump.splitlines()[0]}]\n" + "\n".join(b[-2000:] for b in main)


def wait_ok(procs: Sequence[subprocess.Popen], timeout: float, tail: int = 4000) -> list[str]:
    """`finish_all`, asserting that every process exited 0 (showing the end of its stderr);
    returns their stdout."""
    results = finish_all(procs, timeout)
    assert all(rc == 0 for rc, _, _ in results), failures(results, tail)
    return [out for _, out, _ in results]
