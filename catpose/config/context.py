"""The run context every stage shares, declared once: its store, its Ray fan-out, its device."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

# the choices of the settings that name one of a few things (the CLI and the YAML checks list them)
SynthCategory = Literal["car", "mug", "crate"]
"""Categories the synthetic generator makes: car (asymmetric), mug (near-symmetric with a handle)."""
FeatureBackbone = Literal["colorsift", "random_cnn", "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14"]
"""Backbones of the surface features: colorsift (offline, no weights), random_cnn (a floor), the DINOv2s."""


@dataclass
class StoreContext:
    """The part of the run context every stage shares: how its store is reached. Every stage config that
    reads or writes a store inherits it, so endpoint_url is declared here only (--endpoint-url on
    every such subcommand; in the main job set once at the top of the config and handed to every stage)."""

    endpoint_url: str | None = None
    """S3 endpoint of s3:// stores and data (MinIO, moto, ...); default: $CATPOSE_S3_ENDPOINT, then
    $AWS_ENDPOINT_URL, then AWS."""


@dataclass
class TaskContext(StoreContext):
    """The run context of the stages that fan per-item work (videos, sequences, pair chunks) out as Ray
    tasks: the store, plus how many tasks are in flight."""

    workers: int = 2
    """Ray tasks in flight for per-item work (0: everything in this process)."""


@dataclass
class DeviceContext:
    """The part of the run context that says where tensors are computed. One vocabulary for every stage
    that computes on a device (features, alignment, the α/τ sweep, training, pose estimation):
    auto, cpu, cuda or cuda:N (catpose.devices)."""

    device: str = "auto"
    """auto, cpu, cuda or cuda:N. auto: the GPU the Ray task or worker was given, else this process's GPU
    when it has one, else the CPU; on a cluster with GPUs the stage's Ray tasks and workers then ask for
    GPUs."""


@dataclass
class RunContext(TaskContext, DeviceContext):
    """The whole run context (store, Ray fan-out, device) of the stages that fan work out on a device
    (features, alignment, the α/τ sweep) and of the main job, whose top-level fields it is."""
