"""Which torch device a stage runs on: one rule for every stage."""

from __future__ import annotations

import torch


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when this process sees a GPU, else ``cpu``; any other value as given."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def task_device(device: str = "auto") -> str:
    """Inside a Ray task or trial: ``auto`` → ``cuda`` only when Ray gave this task a GPU (a task
    without one must not take a GPU that another task reserved); any other value as given."""
    if device != "auto":
        return device
    try:
        import ray  # only inside Ray processes; the rest of this module needs no Ray

        gpus = ray.get_gpu_ids() if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 — outside Ray or before it is up: no GPU was given
        gpus = []
    return "cuda" if gpus and torch.cuda.is_available() else "cpu"
