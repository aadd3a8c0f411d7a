"""TensorBoard event files for results that arrive one at a time: a UMR iteration's evaluation
(`umr-jax loop`), a scaling-study point's. Training writes its own stream (`common.MetricsLog`).

Each result is one whole event file, written atomically under a name the caller chooses, so a
rerun that finds the file does not write it again and a kill never leaves half a record; names
sort in the order the results come (TensorBoard reads a run folder's files in name order). A
run's hyper-parameters are one more file (the hparams plugin's experiment, session start and
session end summaries, as tensorboardX's `add_hparams` writes them), named by a hash of their
values so a changed set replaces the earlier one.

    write_scalars(folder / "tensorboard", "iter0001", step=1, values={"eval": eval_report})
    write_hparams(folder / "tensorboard", {"train.learning_rate": 3e-5, ...}, ["eval/r@5kt/average"])
    read_scalars(folder / "tensorboard")   # {"eval/r@5kt/average": [(0, 24.9), (1, 27.7)], ...}
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import struct
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

PREFIX = "events.out.tfevents."  # TensorBoard reads files whose names contain "tfevents"


def numeric_leaves(tree: Mapping[str, Any], prefix: str = "") -> dict[str, float]:
    """{"r@2kt": {"ja": 12.0, "average": 15.4}, "counted": {...}} -> {"r@2kt/ja": 12.0, ...}:
    every finite real-number leaf (numpy's too) of nested mappings, keyed by its path joined with "/"."""
    out: dict[str, float] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(numeric_leaves(value, f"{path}/"))
        elif isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value):
            out[path] = float(value)
    return out


def _record(data: bytes) -> bytes:
    """One TFRecord: length, its masked CRC, the data, its masked CRC."""
    from tensorboardX.record_writer import masked_crc32c

    header = struct.pack("<Q", len(data))
    return header + struct.pack("<I", masked_crc32c(header)) + data + struct.pack("<I", masked_crc32c(data))


def _write(folder: Path, name: str, summaries: Iterable[tuple[int, Any]]) -> Path:
    """An event file `folder/events.out.tfevents.<name>` holding the version header and one event
    per (step, Summary), written atomically."""
    from tensorboardX.proto.event_pb2 import Event

    from umr_jax.data.files import AtomicFile

    now = time.time()
    records = [_record(Event(wall_time=now, file_version="brain.Event:2").SerializeToString())]
    records += [_record(Event(wall_time=now, step=int(step), summary=summary).SerializeToString())
                for step, summary in summaries]
    path = Path(folder) / f"{PREFIX}{name}"
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path) as f:
        f.write(b"".join(records))
    return path


def write_scalars(folder: str | Path, name: str, *, step: int, values: Mapping[str, Any]) -> Path | None:
    """Every numeric leaf of `values` as a scalar at `step` (tags are the leaves' paths, e.g.
    "eval/r@5kt/average"), in the event file `name` of `folder`, unless it exists already.
    Returns the file written (None when it was there)."""
    from tensorboardX.proto.summary_pb2 import Summary

    path = Path(folder) / f"{PREFIX}{name}"
    if path.is_file():
        return None
    # Summaries built here, not with tensorboardX's `scalar`, which rewrites "r@5kt" as "r_5kt".
    scalars = [Summary(value=[Summary.Value(tag=tag, simple_value=value)]) for tag, value in numeric_leaves(values).items()]
    return _write(Path(folder), name, [(step, summary) for summary in scalars])


def config_values(config: Any, keys: Iterable[str]) -> dict[str, Any]:
    """{dotted key: value} for each of `keys` the config (nested mappings) has."""
    values = {}
    for key in keys:
        node = config
        for part in key.split("."):
            node = node.get(part, None) if node is not None and hasattr(node, "get") else None
        if node is not None:
            values[key] = node
    return values


def hparam_value(value: Any) -> str | float | bool:
    """A config value as the hparams plugin holds it: a number, a bool or a string (lists and
    other values as their JSON)."""
    if isinstance(value, (bool, str)):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return json.dumps(value, sort_keys=True, default=str)


def write_hparams(folder: str | Path, hparams: Mapping[str, Any], metric_tags: Iterable[str]) -> Path:
    """The run's hyper-parameters (None values left out) and the scalar tags the hparams plugin
    shows against them, as the event file `hparams-<hash>` of `folder`; an hparams file of other
    values is removed (the run's settings changed), the same values are not written again."""
    from tensorboardX.summary import hparams as hparams_summaries

    values = {key: hparam_value(value) for key, value in hparams.items() if value is not None}
    tags = list(metric_tags)
    digest = hashlib.sha256(json.dumps([values, tags], sort_keys=True).encode()).hexdigest()[:12]
    folder = Path(folder)
    path = folder / f"{PREFIX}hparams-{digest}"
    if not path.is_file():
        experiment, start, end = hparams_summaries(values, {tag: 0.0 for tag in tags})
        _write(folder, path.name[len(PREFIX):], [(0, experiment), (0, start), (0, end)])
    for other in folder.glob(f"{PREFIX}hparams-*"):
        if other != path:
            other.unlink(missing_ok=True)
    return path


def read_events(folder: str | Path) -> list:
    """Every event of a run folder's event files, in the order TensorBoard reads them (file names
    in order; CRCs checked; a record cut short at the end of a file is skipped, as TensorBoard
    skips it)."""
    from tensorboardX.proto.event_pb2 import Event
    from tensorboardX.record_writer import masked_crc32c

    events = []
    for path in sorted(Path(folder).glob(f"{PREFIX}*")):
        data, pos = path.read_bytes(), 0
        while pos + 12 <= len(data):
            header = data[pos: pos + 8]
            (length,) = struct.unpack("<Q", header)
            if struct.unpack("<I", data[pos + 8: pos + 12])[0] != masked_crc32c(header):
                raise ValueError(f"{path}: bad record header at byte {pos}")
            if pos + 16 + length > len(data):
                break
            body = data[pos + 12: pos + 12 + length]
            if struct.unpack("<I", data[pos + 12 + length: pos + 16 + length])[0] != masked_crc32c(body):
                raise ValueError(f"{path}: bad record at byte {pos}")
            events.append(Event.FromString(body))
            pos += 16 + length
    return events


def read_scalars(folder: str | Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] of a run folder's scalar summaries, in the order they were read."""
    series: dict[str, list[tuple[int, float]]] = {}
    for event in read_events(folder):
        for value in event.summary.value:
            if value.HasField("simple_value"):
                series.setdefault(value.tag, []).append((event.step, value.simple_value))
    return series


def read_hparams(folder: str | Path) -> tuple[dict[str, Any], list[str]]:
    """The hyper-parameters of a run folder's session start and the metric tags of its
    experiment ({} and [] when it has none)."""
    from tensorboardX.proto.plugin_hparams_pb2 import HParamsPluginData

    values: dict[str, Any] = {}
    tags: list[str] = []
    for event in read_events(folder):
        for value in event.summary.value:
            if value.metadata.plugin_data.plugin_name != "hparams":
                continue
            data = HParamsPluginData.FromString(value.metadata.plugin_data.content)
            if data.HasField("session_start_info"):
                for key, hp in data.session_start_info.hparams.items():
                    values[key] = getattr(hp, hp.WhichOneof("kind"))
            if data.HasField("experiment"):
                tags = [info.name.tag for info in data.experiment.metric_infos]
    return values, tags
