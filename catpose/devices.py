"""Which torch device a stage runs on: one rule and one vocabulary for every stage.

A device is ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:class:`catpose.config.DeviceContext`). ``auto``
means the GPU this process was given: inside a Ray task, trial or Ray Train worker, the GPU Ray assigned
to it (a task without one must not take a GPU that another task reserved); in the driver or a plain
process, its GPU when it has one; otherwise the CPU.
"""

from __future__ import annotations

import sys

import torch


def in_ray_worker() -> bool:
    """Whether this process is a Ray worker (a task, actor, trial or Ray Train worker), not a driver."""
    if "ray" not in sys.modules:  # nothing imported Ray: certainly not one of its workers
        return False
    try:
        import ray

        if not ray.is_initialized():
            return False
        from ray._private.worker import WORKER_MODE, global_worker

        return global_worker.mode == WORKER_MODE
    except Exception:  # noqa: BLE001 — another Ray layout: treat as a plain process
        return False


def resolve_device(device: str = "auto") -> str:
    """The torch device for ``device``: ``auto`` → the GPU Ray gave this worker (inside Ray), this
    process's GPU (outside Ray), else ``cpu``; any other value as given."""
    if device != "auto":
        return device
    if in_ray_worker():
        import ray

        return "cuda" if ray.get_gpu_ids() and torch.cuda.is_available() else "cpu"
    return "cuda" if torch.cuda.is_available() else "cpu"


def wants_gpu(device: str) -> bool:
    """Whether ``device`` lets a stage ask the cluster for GPUs (``auto``, ``cuda``, ``cuda:N``)."""
    return device == "auto" or device.startswith("cuda")
