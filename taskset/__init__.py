"""The shared domain language of fleetbus: Tasksets, their phases and steps, ClusterTasks.

Pure data and pure functions; nothing in this package performs I/O.
"""

from taskset.model import (
    PHASES,
    ClusterTask,
    HookInfo,
    ObjectRef,
    Phase,
    SourceInfo,
    Step,
    Taskset,
)

__all__ = [
    "PHASES",
    "ClusterTask",
    "HookInfo",
    "ObjectRef",
    "Phase",
    "SourceInfo",
    "Step",
    "Taskset",
]
