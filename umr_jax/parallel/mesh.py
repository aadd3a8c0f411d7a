"""Device mesh and multi-host start.

The mesh has three named axes, always in this order:
  data   pure data parallelism (batch split, params replicated); spans TPU slices (DCN)
  fsdp   data parallelism with parameters and optimizer state sharded (ZeRO-3 style)
  model  tensor parallelism (mlp, heads and vocab split)
Sizes come from config; one of them may be -1, meaning "whatever devices are left".
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import time
from typing import Mapping, Sequence

import numpy as np
import jax
from jax.sharding import Mesh

MESH_AXES = ("data", "fsdp", "model")
log = logging.getLogger(__name__)


def resolve_axis_sizes(sizes: Mapping[str, int], num_devices: int) -> dict[str, int]:
    """Fill in a single -1 so that the product of the sizes is `num_devices`.

    >>> resolve_axis_sizes({"data": -1, "fsdp": 2, "model": 1}, 8)
    {'data': 4, 'fsdp': 2, 'model': 1}
    """
    unknown = set(sizes) - set(MESH_AXES)
    if unknown:
        raise ValueError(f"unknown mesh axes {sorted(unknown)}; the axes are {MESH_AXES}")
    resolved = {axis: int(sizes.get(axis, 1)) for axis in MESH_AXES}
    free = [axis for axis, size in resolved.items() if size == -1]
    if len(free) > 1:
        raise ValueError(f"at most one mesh axis may be -1, got {free}")
    if any(size == 0 or size < -1 for size in resolved.values()):
        raise ValueError(f"mesh axis sizes must be positive or -1, got {resolved}")
    known = int(np.prod([s for s in resolved.values() if s != -1]))
    if free:
        if num_devices % known:
            raise ValueError(f"cannot fill -1: {num_devices} devices are not divisible by {known} ({resolved})")
        resolved[free[0]] = num_devices // known
    elif known != num_devices:
        raise ValueError(f"mesh {resolved} needs {known} devices, but {num_devices} are available")
    return resolved


def make_mesh(sizes: Mapping[str, int], devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A Mesh over ('data', 'fsdp', 'model') from config sizes (one may be -1).

    On multi-slice TPU (devices report `slice_index`), the `data` axis spans slices over DCN
    and `fsdp`/`model` stay inside a slice's ICI: that is what a hybrid mesh does.
    """
    from jax.experimental import mesh_utils

    devices = list(jax.devices() if devices is None else devices)
    resolved = resolve_axis_sizes(sizes, len(devices))
    shape = tuple(resolved[a] for a in MESH_AXES)
    num_slices = len({getattr(d, "slice_index", 0) for d in devices})
    if num_slices > 1:
        if resolved["data"] % num_slices:
            raise ValueError(f"data axis {resolved['data']} must be a multiple of the {num_slices} TPU slices")
        ici = (resolved["data"] // num_slices, resolved["fsdp"], resolved["model"])
        dcn = (num_slices, 1, 1)
        grid = mesh_utils.create_hybrid_device_mesh(ici, dcn, devices)
    else:
        try:
            grid = mesh_utils.create_device_mesh(shape, devices)
        except (ValueError, NotImplementedError, AssertionError):
            # Topology-aware placement only exists for some platforms; fall back to device order.
            grid = np.asarray(devices).reshape(shape)
    return Mesh(grid, MESH_AXES)


@dataclasses.dataclass(frozen=True)
class DistributedConfig:
    """How this process joins a multi-host job. All None: automatic on TPU VMs, else single host."""

    coordinator: str | None = None  # "host:port" of process 0
    num_processes: int | None = None
    process_id: int | None = None
    local_device_ids: tuple[int, ...] | None = None


def _on_tpu_vm() -> bool:
    return any(k in os.environ for k in ("TPU_WORKER_HOSTNAMES", "CLOUD_TPU_TASK_ID", "TPU_ACCELERATOR_TYPE", "MEGASCALE_COORDINATOR_ADDRESS"))


_initialized = False


def initialize_distributed(cfg: DistributedConfig = DistributedConfig()) -> bool:
    """Join a multi-host job through `jax.distributed.initialize`. Returns True if it joined one.

    - explicit coordinator/num_processes/process_id (GPU and CPU clusters): initialise with them;
    - none given on a TPU VM: `jax.distributed.initialize()` discovers the pod itself;
    - none given elsewhere: a single host, nothing to do.
    Call it before anything touches a device. Calling it twice is a no-op.
    """
    global _initialized
    if _initialized:
        return True
    explicit = (cfg.coordinator, cfg.num_processes, cfg.process_id)
    if any(v is not None for v in explicit):
        if any(v is None for v in explicit):
            raise ValueError("--coordinator, --num-processes and --process-id must be given together")
        _enable_cpu_collectives()
        jax.distributed.initialize(
            coordinator_address=cfg.coordinator,
            num_processes=cfg.num_processes,
            process_id=cfg.process_id,
            local_device_ids=list(cfg.local_device_ids) if cfg.local_device_ids else None,
        )
    elif _on_tpu_vm():
        jax.distributed.initialize()
    else:
        return False
    _initialized = True
    log.info("joined distributed job: process %d of %d, %d local / %d global devices",
             jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
    return True


FINISH_TIMEOUT_ENV = "UMR_JAX_FINISH_TIMEOUT"  # seconds a finished process waits for the others
DEFAULT_FINISH_TIMEOUT = 24 * 3600
_OUTCOME = "umr-jax/outcome/"  # the coordination service's keys: "<process>" -> "ok" | "failed"


def _client():
    if not _initialized or jax.process_count() == 1:
        return None
    from jax._src import distributed

    return distributed.global_state.client


def finish_distributed(poll_seconds: float = 1.0) -> None:
    """Called by a command that succeeded: wait until every process of the job has succeeded too.

    Process 0 often works on after the last collective (it checks every host's shards, writes a
    manifest, uploads): at real scale for longer than JAX's shutdown barrier waits (300 s), and a
    host that exited first would be aborted in that barrier. Here each process records its outcome
    with the coordination service and a finished one waits, up to `UMR_JAX_FINISH_TIMEOUT` seconds
    (default a day), until every process has finished, so the job's processes exit together.
    Raises `JobFailed` (one line) as soon as another process reports a failure
    (`announce_failure`), or at the timeout. A no-op outside a multi-process job."""
    client = _client()
    if client is None:
        return
    from umr_jax.errors import JobFailed

    me, count = jax.process_index(), jax.process_count()
    client.key_value_set(f"{_OUTCOME}{me}", "ok")
    deadline = time.monotonic() + float(os.environ.get(FINISH_TIMEOUT_ENV) or DEFAULT_FINISH_TIMEOUT)
    while True:
        outcomes = dict(client.key_value_dir_get(_OUTCOME))
        failed = sorted(int(key.rsplit("/", 1)[-1]) for key, value in outcomes.items() if value == "failed")
        if failed:
            raise JobFailed(f"process {me} finished, but process {', '.join(map(str, failed))} of the job failed; "
                               "see its log")
        if sum(value == "ok" for value in outcomes.values()) >= count:
            return
        if time.monotonic() > deadline:
            waiting = sorted(set(range(count)) - {int(key.rsplit("/", 1)[-1]) for key in outcomes})
            raise JobFailed(f"process {me} finished, but process {', '.join(map(str, waiting))} did not within "
                               f"{FINISH_TIMEOUT_ENV}={os.environ.get(FINISH_TIMEOUT_ENV) or DEFAULT_FINISH_TIMEOUT} s")
        time.sleep(poll_seconds)


_barriers = itertools.count()


def barrier(name: str, poll_seconds: float = 0.2) -> None:
    """Wait until every process of the job reaches this barrier (a no-op in one process).

    Unlike a device collective (`multihost_utils.sync_global_devices`), which waits forever for a
    peer that died with an error, this one is kept by the coordination service: each process
    records that it arrived (the barriers a process passes are numbered, so every process must pass
    the same ones in the same order, as with collectives), and a waiting process raises
    `JobFailed` as soon as another announces a failure (`announce_failure`), e.g. process 1 meeting
    bad input while process 0 builds the offset index; or when the processes arrived at
    differently named barriers (they run different code). No timeout: process 0 may work long
    before the others may go on."""
    client = _client()
    if client is None:
        if jax.process_count() > 1:  # joined by someone else's jax.distributed.initialize
            from jax.experimental import multihost_utils

            multihost_utils.sync_global_devices(name)
        return
    from umr_jax.errors import JobFailed

    me, count = jax.process_index(), jax.process_count()
    prefix = f"umr-jax/barrier/{next(_barriers)}/"
    client.key_value_set(f"{prefix}{me}", name)
    while True:
        failed = _failed_processes(client)
        if failed:
            raise JobFailed(f"process {me} stopped at {name!r}: process {', '.join(map(str, failed))} of the job failed; "
                            "see its log")
        arrived = dict(client.key_value_dir_get(prefix))
        if len(arrived) >= count:
            others = sorted({value for value in arrived.values()} - {name})
            if others:
                raise JobFailed(f"process {me} reached barrier {name!r} where another process reached {others[0]!r}: "
                                "the processes disagree (every process must run the same command, on storage all of "
                                "them see)")
            return
        time.sleep(poll_seconds)


def _failed_processes(client) -> list[int]:
    return sorted(int(key.rsplit("/", 1)[-1]) for key, value in client.key_value_dir_get(_OUTCOME) if value == "failed")


def announce_failure() -> None:
    """Called by a command that failed: the processes that finished stop waiting for this one
    (`finish_distributed`) and fail too, instead of waiting in JAX's shutdown barrier."""
    client = _client()
    if client is None:
        return
    try:
        client.key_value_set(f"{_OUTCOME}{jax.process_index()}", "failed", allow_overwrite=True)
    except Exception:  # the service is gone: nobody is left to tell
        pass


def _enable_cpu_collectives() -> None:
    """CPU processes need gloo for cross-process collectives (GPU/TPU have their own)."""
    platforms = os.environ.get("JAX_PLATFORMS", "")
    if platforms == "cpu" or (not platforms and not _on_tpu_vm()):
        try:
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        except (AttributeError, ValueError):  # older/newer jax without the option
            pass
