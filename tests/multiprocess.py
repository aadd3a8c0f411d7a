"""What the multi-process tests share: JAX processes joined over 127.0.0.1 on a free port (the
`--coordinator/--num-processes/--process-id` flags every command takes), started with their
output piped, and waited for with a timeout that kills whatever is still running.

    procs = launch_processes(command, env=env)            # process ids 0 and 1, one free port
    outputs = wait_ok(procs, timeout=300)                 # their stdout; asserts they exited 0
"""

from __future__ import annotations

import socket
import subprocess
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
    """`command` started with stdout and stderr piped, as text."""
    return subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


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
    """Wait for each process in turn, `timeout` seconds each; on a timeout (or any error) every
    process still running is killed and reaped before the error propagates."""
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


def wait_ok(procs: Sequence[subprocess.Popen], timeout: float, tail: int = 4000) -> list[str]:
    """`finish_all`, asserting that every process exited 0 (showing the end of its stderr);
    returns their stdout."""
    results = finish_all(procs, timeout)
    for rc, _, err in results:
        assert rc == 0, err[-tail:]
    return [out for _, out, _ in results]
