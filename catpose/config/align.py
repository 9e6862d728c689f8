"""Configs of the alignment: one pair's search, the alignment of a category, the α/τ sweep."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from catpose.config.context import RunContext


@dataclass
class SearchConfig:
    """Search for one pair's similarity (catpose.align.search); AlignConfig takes its defaults from here."""

    alpha: float = 0.2
    """Weight of appearance: D = (1 − α)·D_geo + α·D_app."""
    tau: float = 1.0
    """Temperature of the cycle weights σ (large: weak cycle weighting; inf: uniform)."""
    vertices: int = 500
    """Vertices per video used for the alignment (farthest point subsample of the feature vertices)."""
    rotations: int = 4096
    """Rotations of the coarse super-Fibonacci grid (4096: neighbours about 11° apart)."""
    coarse_vertices: int = 128
    """Vertices per cloud in the coarse search (farthest point subsample)."""
    prefilter_vertices: int = 64
    """Vertices per cloud of the coarse search's first pass over all rotations (0: no prefilter)."""
    prefilter_keep: int = 256
    """Rotations per pair kept by the first pass and scored again on coarse_vertices."""
    top_k: int = 4
    """Coarse optima refined."""
    refine_iters: int = 15
    """IRLS Procrustes iterations per refined candidate."""
    batch: int = 0
    """Rotations per batch of the coarse search (0: sized to the device's memory)."""


@dataclass
class AlignConfig(RunContext):
    """Align all videos of a category into one reference frame (pairwise alignments, then reduction)."""

    data: str = "data/synth"
    """Dataset root (CO3D v2 layout): a folder or an s3://bucket/prefix (read lazily, file by file)."""
    category: str = "car"
    """Category to align."""
    out: str = "runs/align"
    """Output folder or s3://bucket/prefix: alignment.parquet, pairs.parquet, plots."""
    features: str = ""
    """Surface-feature store (default: OUT/features). catpose align computes the videos it lacks first; the
    alignment itself takes the store as it is."""
    search: SearchConfig = field(default_factory=SearchConfig)
    """The search for each pair's similarity: appearance weight alpha, cycle temperature tau, rotations,
    vertices, the coarse search's first pass, the refinement (catpose align also takes these flags without
    their prefix: --alpha for --search.alpha)."""
    partners: int = 0
    """Partners per video in the pair graph (0: all pairs)."""
    sync: bool = True
    """Refine all rotations jointly by robust rotation synchronisation."""
    chunk: int = 0
    """Pairs per Ray task (0: 512 on GPUs; on CPUs at most 16, balanced over the workers)."""


@dataclass
class SweepConfig(RunContext):
    """Ray Tune sweep of the alignment weights alpha and tau, scored without labels. device is where
    a trial aligns (auto: the GPU the trial reserved, else the CPU); workers the Ray tasks of the
    surface features computed on the way (trials themselves are placed by Tune, see cpus_per_trial)."""

    data: str = "data/synth"
    """Dataset root (CO3D v2 layout): a folder or an s3://bucket/prefix (read lazily, file by file)."""
    category: str = "car"
    """Category to tune on."""
    out: str = "runs/tune"
    """Sweep storage (local folder or s3://bucket/prefix): Tune trials, results table, heatmaps, best
    config."""
    features: str = ""
    """Surface-feature store (default: OUT/features; computed on the way where absent; local path)."""
    alphas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.7, 1.0)
    """Grid of alpha (appearance weight)."""
    taus: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 10.0)
    """Grid of tau (cycle-weight temperature; log-spaced)."""
    search: Literal["grid", "random"] = "grid"
    """grid (alphas x taus, repeated num_samples times) or random (alpha uniform, tau log-uniform)."""
    num_samples: int = 1
    """Grid repeats, or random samples."""
    videos: int = 8
    """Fixed random subset of videos per trial; every pair and triangle among them is scored."""
    trial: SearchConfig = field(default_factory=SearchConfig)
    """The search each trial aligns its pairs with (its alpha and tau are the trial's; the main job sets the
    alignment stage's search here; catpose tune also takes --rotations for --trial.rotations, and so on)."""
    cpus_per_trial: float = 1.0
    """CPUs per trial."""
    gpus_per_trial: float = 0.0
    """GPU fraction per trial (e.g. 0.25 on GPU nodes)."""
    seed: int = 0
    """Seed of the video subset."""
