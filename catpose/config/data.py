"""Configs of the data stages: synthetic videos, ingestion by SfM, shards, and the surface features."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from catpose.config.context import FeatureBackbone, RunContext, StoreContext, SynthCategory, TaskContext


@dataclass
class SynthConfig(TaskContext):
    """Generate synthetic object-centric video categories in the CO3D v2 layout."""

    out: str = "data/synth"
    """Dataset root to write, a folder or s3://bucket/prefix (one folder per category, plus
    catpose_gt.json with the ground truth)."""
    category: tuple[SynthCategory, ...] = ("car",)
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
    realistic: bool = False
    """Make the videos the way real captures come out: turns on every option below that is left unset
    (partial orbits 40 % at 150-200°, ground and background in the cloud, 5 % outliers, imperfect
    masks, SfM-level camera noise)."""
    partial_share: float | None = None
    """Share of the videos that orbit only part of the object (default 0; --realistic: 0.4)."""
    partial_sweep: tuple[float, float] = (150.0, 200.0)
    """Orbit of a partial video, in degrees (drawn uniformly in this range)."""
    cloud_background: bool | None = None
    """The point cloud holds everything the cameras saw: ground and background, not only the object
    (default False; --realistic: True). Ground truth of which points lie on the object goes to
    catpose_gt_points/<category>/<sequence>.npy."""
    outliers: float | None = None
    """Outlier points added to each cloud, as a share of its points (default 0; --realistic: 0.05)."""
    mask_noise: bool | None = None
    """Imperfect masks: each frame's mask eroded or dilated by 1-3 px, some with holes (default False;
    --realistic: True)."""
    camera_noise: tuple[float, float] | None = None
    """SfM-level camera noise: rotation (degrees) and position (share of the camera distance) standard
    deviations of the written cameras (default none; --realistic: 0.3°, 0.5 %)."""


@dataclass(frozen=True)
class CleaningConfig:
    """Cleaning of a point cloud to the object (catpose.data.cleaning): a vote of the masks over the frames,
    or without masks the supporting plane and what lies outside the common view removed; then isolated
    points. The ingest and the features stages each hold one (their own defaults)."""

    mode: Literal["auto", "masks", "geometry", "off"] = "auto"
    """auto (a vote of the masks when every frame has one, else geometry), masks, geometry (supporting plane
    and what lies outside the common view removed), off."""
    vote: float = 0.5
    """With masks: a point stays when inside the mask in at least this share of the frames that see it."""
    view_share: float = 0.8
    """Without masks: a point must lie inside the image of at least this share of the frames (the common
    view)."""
    plane_angle: float = 20.0
    """Without masks: largest angle (degrees) between the supporting plane's normal and the cameras' up
    direction."""
    plane_band: float = 0.01
    """Without masks: points within this × the camera distance above the supporting plane (and all below
    it) go."""
    isolated: float = 3.0
    """Points whose 8th nearest neighbour is farther than this × the median such distance (over the points
    left) go: outliers float alone (0: keep them)."""
    min_points: int = 100
    """A video whose cleaning leaves fewer points is skipped, with the reason in its manifest."""
    frames: int = 30
    """Frames used for the tests (evenly chosen; all when fewer)."""


@dataclass
class IngestConfig(TaskContext):
    """Raw frames or videos to CO3D-layout sequences by Structure-from-Motion (pycolmap)."""

    frames: str = "raw"
    """Folder or s3://bucket/prefix with one sub-folder of frames (optionally with masks/) or one video
    file per sequence; on S3 each task copies its own sequence to its node's scratch."""
    out: str = "data/ingested"
    """Dataset root to write: a folder or s3://bucket/prefix (each SfM task works in its node's scratch and
    uploads its finished sequence)."""
    category: str = "object"
    """Category name of these sequences."""
    max_frames: int = 60
    """Frames per sequence to use (evenly subsampled)."""
    max_size: int = 640
    """Longest image side for SfM (larger frames are downscaled)."""
    matcher: Literal["exhaustive", "sequential"] = "exhaustive"
    """Feature matching: exhaustive (all pairs, best for short videos) or sequential."""
    sift_peak_threshold: float = 0.002
    """SIFT's contrast threshold (COLMAP's default 0.0067 finds few features on weakly textured objects:
    on 256-px synthetic mugs 3-7x fewer object points at about the same time)."""
    sift_max_features: int = 8192
    """Most SIFT features per frame."""
    min_registered: float = 0.5
    """A sequence whose SfM registers fewer than this fraction of its frames counts as failed."""
    sfm_retry: float = 0.8
    """When SfM registers fewer than this share of the frames, it reruns with the settings for sparse
    captures (more features, guided matching, relaxed initialisation); the better model is kept (0: never;
    above 1: always the sparse-capture settings)."""
    masks: Literal["grabcut", "none"] = "grabcut"
    """Masks for frames that come without one: grabcut (the cleaned cloud projected into the frame,
    refined by OpenCV's GrabCut) or none."""
    cleaning: CleaningConfig = field(default_factory=lambda: CleaningConfig(vote=0.8, min_points=20))
    """Cleaning of the SfM cloud to the object. Its vote is stricter than the features stage's (an SfM cloud
    is sparse, and seen from few frames), and a sequence left with fewer than min_points points is skipped
    (catpose ingest also takes --clean-vote for --cleaning.vote, and so on)."""
    hull_voxels: int = 112
    """When every frame has a mask (given or GrabCut's): the cloud written is the object's visual hull,
    carved from the masks in a cube of this many voxels per side (0: the cleaned sparse SfM cloud)."""
    hull_vote: float = 0.95
    """A voxel is object when inside the mask in at least this share of the frames whose image it is in."""
    hull_view_share: float = 0.5
    """... and inside the image of at least this share of the frames."""
    hull_half_size: float = 0.75
    """Half the carved cube's side, as a multiple of the width the cameras frame at the object."""
    hull_refine_masks: bool = True
    """GrabCut the frames without a given mask again, seeded by the carved hull, and carve again."""


@dataclass
class ShardConfig(StoreContext):
    """Frames of a CO3D-layout dataset to Parquet shards (local folder or s3:// URI)."""

    data: str = "data/synth"
    """Dataset root (CO3D v2 layout): a folder or an s3://bucket/prefix (read lazily, file by file)."""
    out: str = "data/shards"
    """Where the shards go: a folder or an s3://bucket/prefix URI."""
    category: tuple[str, ...] = ()
    """Categories to shard (default: every category under --data)."""
    rows_per_shard: int = 512
    """Frames per Parquet file."""


@dataclass
class FeaturesConfig(RunContext):
    """Surface features S = {V, F} per video: vertices from the point cloud, per-frame backbone features."""

    data: str = "data/synth"
    """Dataset root (CO3D v2 layout): a folder or an s3://bucket/prefix (read lazily, file by file)."""
    category: tuple[str, ...] = ("car",)
    """Categories to process."""
    out: str = "data/features"
    """Feature store: a folder or an s3://bucket/prefix URI; one file per sequence."""
    backbone: FeatureBackbone = "colorsift"
    """colorsift (offline, no weights), random_cnn (floor), dinov2_vits14 / dinov2_vitb14 / dinov2_vitl14."""
    weights: Path | None = None
    """DINOv2 checkpoint file (default: $CATPOSE_DINOV2_WEIGHTS, then the torch hub cache)."""
    layer: int = -1
    """DINOv2 block whose output is used (-1: last)."""
    facet: Literal["token", "key", "query", "value"] = "token"
    """DINOv2 facet: token, key, query or value."""
    input_size: int = 448
    """DINOv2 input resolution (multiple of 14)."""
    vertices: int = 1000
    """Vertices N per video (farthest point sampling of the cleaned point cloud)."""
    frames: int = 8
    """Frames K per video (evenly subsampled)."""
    batch: int = 8
    """Frames per backbone batch."""
    outlier_k: int = 16
    """Neighbours for statistical outlier removal."""
    outlier_std: float = 2.0
    """Outlier threshold in standard deviations of the mean neighbour distance."""
    vis_tol: float = 0.05
    """Depth tolerance of the visibility test, as a fraction of the object's diameter."""
    cleaning: CleaningConfig = field(default_factory=CleaningConfig)
    """Cleaning of each cloud to the object before the vertices are picked (catpose features also takes
    --clean-mode for --cleaning.mode, and so on)."""
    cloud_points: int = 1_000_000
    """The most points a video's point cloud is read with: a larger cloud is subsampled while it is read
    (a seeded subset, in file order), so memory and time stay those of this many points (0: no cap)."""
