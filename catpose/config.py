"""Typed configs of every stage, with their defaults in one place. The CLI is generated from them
(``catpose <stage> --help``), and ``jobs/full_pipeline.py`` reads the same fields from YAML."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class SynthConfig:
    """Generate synthetic object-centric video categories in the CO3D v2 layout."""

    out: Path = Path("data/synth")
    """Dataset root to write (one folder per category, plus catpose_gt.json with the ground truth)."""
    category: tuple[str, ...] = ("car",)
    """Categories to generate: car (asymmetric), mug (near-symmetric with a handle)."""
    videos: int = 40
    """Videos (sequences) per category; every one shows a different instance."""
    frames: int = 24
    """Frames per video, on an orbit around the object."""
    size: int = 128
    """Image height and width in pixels."""
    seed: int = 0
    """Random seed: the same seed gives the same files."""
    depth: bool = True
    """Also write CO3D depth maps (16-bit PNG of float16) and depth masks."""
    supersample: int = 2
    """Ray-casting samples per pixel along each axis (anti-aliasing, soft masks)."""
    max_points: int = 20000
    """Most points in each sequence's pointcloud.ply (voxel-downsampled from the rendered depth)."""
    workers: int = 0
    """Ray tasks in flight (0: render in this process)."""


@dataclass
class IngestConfig:
    """Raw frames or videos to CO3D-layout sequences by Structure-from-Motion (pycolmap)."""

    frames: Path = Path("raw")
    """Folder with one sub-folder of frames (or one video file) per sequence."""
    out: Path = Path("data/ingested")
    """Dataset root to write."""
    category: str = "object"
    """Category name of these sequences."""
    max_frames: int = 60
    """Frames per sequence to use (evenly subsampled)."""
    max_size: int = 640
    """Longest image side for SfM (larger frames are downscaled)."""
    matcher: str = "exhaustive"
    """Feature matching: exhaustive (all pairs, best for short videos) or sequential."""
    min_registered: float = 0.5
    """A sequence whose SfM registers fewer than this fraction of its frames counts as failed."""
    workers: int = 0
    """Ray tasks in flight (0: in this process)."""


@dataclass
class ShardConfig:
    """Frames of a CO3D-layout dataset to Parquet shards (local folder or s3:// URI)."""

    data: Path = Path("data/synth")
    """Dataset root (CO3D v2 layout)."""
    out: str = "data/shards"
    """Where the shards go: a folder or an s3://bucket/prefix URI."""
    category: tuple[str, ...] = ()
    """Categories to shard (default: every category under --data)."""
    rows_per_shard: int = 512
    """Frames per Parquet file."""
    endpoint_url: str | None = None
    """S3 endpoint for S3-compatible stores (MinIO, moto); default: $AWS_ENDPOINT_URL or AWS."""
