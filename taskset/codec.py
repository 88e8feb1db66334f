"""Wire forms of Tasksets and ClusterTasks: canonical JSON, zlib-compressed.

A snapshot body (in `TasksetPublished.body`) and a DESIRED message (a ClusterTask) are both
compressed canonical JSON, so equal content is byte-identical and tasksets that are large in
YAML stay small on the bus.
"""

from __future__ import annotations

import zlib

import msgspec

from taskset.digest import canonical_json
from taskset.errors import FleetbusError
from taskset.model import ClusterTask, Taskset

_taskset_decoder = msgspec.json.Decoder(Taskset)
_cluster_task_decoder = msgspec.json.Decoder(ClusterTask)


class CorruptPayload(FleetbusError):
    pass


def encode_taskset(taskset: Taskset) -> bytes:
    return zlib.compress(canonical_json(taskset), 6)


def decode_taskset(body: bytes) -> Taskset:
    try:
        return _taskset_decoder.decode(zlib.decompress(body))
    except (zlib.error, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptPayload(f"not a taskset body: {e}") from e


def encode_cluster_task(task: ClusterTask) -> bytes:
    return zlib.compress(canonical_json(task), 6)


def decode_cluster_task(data: bytes) -> ClusterTask:
    try:
        return _cluster_task_decoder.decode(zlib.decompress(data))
    except (zlib.error, msgspec.DecodeError, UnicodeDecodeError, RecursionError) as e:
        raise CorruptPayload(f"not a ClusterTask: {e}") from e
