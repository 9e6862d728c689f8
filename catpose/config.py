"""Typed configs of every stage, with their defaults in one place. The CLI is generated from them
(``catpose <stage> --help``), and ``jobs/full_pipeline.py`` reads the same fields from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from catpose.errors import ConfigError


@dataclass
class StoreContext:
    """The part of the run context every stage shares: how its store is reached. Every stage config that
    reads or writes a store inherits it, so ``endpoint_url`` is declared here only (``--endpoint-url`` on
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
    ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (:mod:`catpose.devices`)."""

    device: str = "auto"
    """auto, cpu, cuda or cuda:N. auto: the GPU the Ray task or worker was given, else this process's GPU
    when it has one, else the CPU; on a cluster with GPUs the stage's Ray tasks and workers then ask for
    GPUs."""


@dataclass
class RunContext(TaskContext, DeviceContext):
    """The whole run context (store, Ray fan-out, device) of the stages that fan work out on a device
    (features, alignment, the α/τ sweep) and of the main job, whose top-level fields it is."""


@dataclass
class SynthConfig(TaskContext):
    """Generate synthetic object-centric video categories in the CO3D v2 layout."""

    out: str = "data/synth"
    """Dataset root to write, a folder or s3://bucket/prefix (one folder per category, plus
    catpose_gt.json with the ground truth)."""
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
    matcher: str = "exhaustive"
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
    masks: str = "grabcut"
    """Masks for frames that come without one: grabcut (the cleaned cloud projected into the frame,
    refined by OpenCV's GrabCut) or none."""
    clean_mode: str = "auto"
    """Cleaning of the SfM cloud to the object: auto (a vote of the masks when every frame has one,
    else geometry), masks, geometry (supporting plane and what lies outside the common view), off."""
    clean_vote: float = 0.8
    """A point stays when inside the given masks in at least this share of the frames that see it
    (stricter than the features stage: an SfM cloud is sparse, and seen from few frames)."""
    clean_view_share: float = 0.8
    """Without masks: a point must lie inside the image of at least this share of the frames."""
    clean_plane_band: float = 0.01
    """Points within this × the camera distance above the supporting plane (and all below it) go."""
    clean_isolated: float = 3.0
    """Points whose 8th neighbour is farther than this × the median such distance go (0: keep)."""
    clean_min_points: int = 20
    """A sequence whose cleaning leaves fewer points is skipped, with the reason in the manifest."""
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
    backbone: str = "colorsift"
    """colorsift (offline, no weights), random_cnn (floor), dinov2_vits14 / dinov2_vitb14 / dinov2_vitl14."""
    weights: Path | None = None
    """DINOv2 checkpoint file (default: $CATPOSE_DINOV2_WEIGHTS, then the torch hub cache)."""
    layer: int = -1
    """DINOv2 block whose output is used (-1: last)."""
    facet: str = "token"
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
    clean_mode: str = "auto"
    """Cleaning of each cloud to the object before the vertices are picked: auto (a vote of the masks
    when every frame has one, else geometry), masks, geometry (supporting plane and what lies outside
    the common view removed), off."""
    clean_vote: float = 0.5
    """A point stays when inside the mask in at least this share of the frames that see it."""
    clean_view_share: float = 0.8
    """Without masks: a point must lie inside the image of at least this share of the frames."""
    clean_plane_angle: float = 20.0
    """Largest angle (degrees) between the supporting plane's normal and the cameras' up direction."""
    clean_plane_band: float = 0.01
    """Points within this × the camera distance above the supporting plane (and all below it) go."""
    clean_isolated: float = 3.0
    """Points whose 8th neighbour is farther than this × the median such distance go (0: keep)."""
    clean_min_points: int = 100
    """A video whose cleaning leaves fewer points is skipped, with the reason in the manifest."""
    clean_frames: int = 30
    """Frames used for cleaning (evenly chosen)."""
    cloud_points: int = 1_000_000
    """The most points a video's point cloud is read with: a larger cloud is subsampled while it is read
    (a seeded subset, in file order), so memory and time stay those of this many points (0: no cap)."""


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
    """Rotations of the coarse super-Fibonacci grid (4096: neighbours about 11° apart, see ``catpose.geometry.so3_grid``)."""
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
    """Rotations per batch of the coarse search (0: sized to the device, see ``coarse_search``)."""


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
    """Surface-feature store (default: OUT/features; computed on the way where absent)."""
    alpha: float = SearchConfig.alpha
    """Appearance weight: D = (1 - alpha) D_geo + alpha D_app."""
    tau: float = SearchConfig.tau
    """Cycle-weight temperature (large: weak cycle weighting)."""
    rotations: int = SearchConfig.rotations
    """Rotations of the coarse SO(3) grid."""
    vertices: int = SearchConfig.vertices
    """Vertices per video in the alignment."""
    coarse_vertices: int = SearchConfig.coarse_vertices
    """Vertices per cloud in the coarse search."""
    prefilter_vertices: int = SearchConfig.prefilter_vertices
    """Vertices per cloud of the coarse search's first pass over all rotations (0: no first pass)."""
    prefilter_keep: int = SearchConfig.prefilter_keep
    """Rotations per pair kept by the first pass and scored again on coarse_vertices."""
    top_k: int = SearchConfig.top_k
    """Coarse optima refined per pair."""
    refine_iters: int = SearchConfig.refine_iters
    """IRLS Procrustes iterations per refined candidate."""
    batch: int = SearchConfig.batch
    """Rotations per block of the coarse search (0: sized to the device's memory)."""
    partners: int = 0
    """Partners per video in the pair graph (0: all pairs)."""
    sync: bool = True
    """Refine all rotations jointly by robust rotation synchronisation."""
    chunk: int = 0
    """Pairs per Ray task (0: 512 on GPUs; on CPUs at most 16, balanced over the workers)."""


@dataclass
class SweepConfig(RunContext):
    """Ray Tune sweep of the alignment weights alpha and tau, scored without labels. ``device`` is where
    a trial aligns (auto: the GPU the trial reserved, else the CPU); ``workers`` the Ray tasks of the
    surface features computed on the way (trials themselves are placed by Tune, see cpus_per_trial)."""

    data: str = "data/synth"
    """Dataset root (CO3D v2 layout): a folder or an s3://bucket/prefix (read lazily, file by file)."""
    category: str = "car"
    """Category to tune on."""
    out: str = "runs/tune"
    """Sweep storage (local folder or s3://bucket/prefix): Tune trials, results table, heatmaps, best config."""
    features: str = ""
    """Surface-feature store (default: OUT/features; computed on the way where absent; local path)."""
    alphas: tuple[float, ...] = (0.0, 0.1, 0.2, 0.4, 0.7, 1.0)
    """Grid of alpha (appearance weight)."""
    taus: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0, 10.0)
    """Grid of tau (cycle-weight temperature; log-spaced)."""
    search: str = "grid"
    """grid (alphas x taus, repeated num_samples times) or random (alpha uniform, tau log-uniform)."""
    num_samples: int = 1
    """Grid repeats, or random samples."""
    videos: int = 8
    """Fixed random subset of videos per trial; every pair and triangle among them is scored."""
    rotations: int = SearchConfig.rotations
    """Coarse rotations per pair (the main job sets the alignment stage's value)."""
    vertices: int = SearchConfig.vertices
    """Vertices per video (the main job sets the alignment stage's value)."""
    cpus_per_trial: float = 1.0
    """CPUs per trial."""
    gpus_per_trial: float = 0.0
    """GPU fraction per trial (e.g. 0.25 on GPU nodes)."""
    seed: int = 0
    """Seed of the video subset."""


@dataclass
class TrainConfig(StoreContext, DeviceContext):
    """Learn viewpoint-invariant surface features on a category template with Ray Train."""

    data: str = "data/shards"
    """Parquet frame shards (a folder or s3://bucket/prefix), as written by `catpose shard`."""
    alignment: str = "runs/align"
    """Output folder (or s3:// URI) of `catpose align` for this category (alignment.parquet)."""
    features: str = ""
    """Surface-feature store with the videos' vertices (default: ALIGNMENT/features)."""
    category: str = "car"
    """Category to train."""
    out: str = "runs/train"
    """Run storage (a folder or s3://bucket/prefix): checkpoints, TensorBoard events, model, evaluation."""
    name: str = ""
    """Run name under OUT (default: train-CATEGORY). The same name resumes from its latest checkpoint (when
    the stored run learned from the same settings and inputs; else an error names what changed)."""
    ground_truth: str | None = None
    """Dataset root (folder or s3://) with catpose_gt.json (synthetic data): held-out targets and viewpoints
    from the truth."""
    vertices: int = 1000
    """Template vertices N."""
    model: str = "small"
    """Encoder Φ: small (a U-Net, width --width: the CPU demo's), base (a frozen DINOv2 ViT, --backbone,
    default dinov2_vits14, from local weights, with a trainable convolutional head; use --size 224 or
    more) or resnet (a ResNet-18-style encoder with an FPN decoder, from scratch; --size 224 or more)."""
    dim: int = 64
    """Feature dimension D."""
    width: int = 16
    """Encoder width (channels at stride 2; 2x and 4x deeper)."""
    stride: int = 4
    """Output stride of the features (2: finer, about 2x the compute of 4)."""
    backbone: str = ""
    """Frozen context backbone fed into the encoder: '' (none, from scratch) or dinov2_vits14/b14/l14
    (local weights required: --weights or $CATPOSE_DINOV2_WEIGHTS)."""
    weights: Path | None = None
    """DINOv2 checkpoint file for --backbone."""
    size: int = 128
    """Crop size S in pixels."""
    epochs: int = 20
    """Passes over the training frames."""
    batch_size: int = 16
    """Crops per worker per step."""
    lr: float = 5e-3
    """AdamW learning rate (cosine decay over the epochs)."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    temperature: float = 0.07
    """Softmax temperature T of the contrastive loss."""
    background_weight: float = 0.5
    """Weight w_bg of the background term."""
    exclude: float = 0.05
    """Vertices closer than this fraction of the template diameter are not negatives of each other."""
    holdout: float = 0.2
    """Share of the videos held out from training for the evaluation."""
    augment: bool = True
    """Backgrounds, occluders, crop/scale jitter and colour jitter in the data pipeline."""
    skip_ambiguous: bool = True
    """Leave out of training the videos whose aligned rotation no majority of their pairwise alignments
    agrees with (``catpose align`` records the counts): one video turned by 180° teaches the template
    wrong correspondences for all its frames."""
    mask_fill: bool = True
    """Fill the holes and eroded borders of object masks from each video's own vertices before training
    (:func:`catpose.learn.frames.refine_masks`; never removes mask pixels). Imperfect segmentation masks
    otherwise teach object pixels to look like background."""
    mask_snap: float = 0.025
    """Move each mask's boundary to the object's edge in its frame before training, within a band of this
    share of the frame's shorter side (:func:`catpose.learn.frames.snap_masks`, GrabCut; 0: off). Masks a few
    pixels too wide carry a fringe of floor into every augmented composite. Runs once per frame and
    worker (when its frame cache holds the frames), about 15 ms a 128-px frame on one CPU core."""
    frame_cache_mb: float = 2048
    """Decoded frames and their targets each worker keeps on its device (0: decode every epoch)."""
    prefetch: int = 2
    """Batches the device feed prepares ahead of the training step (in a thread)."""
    num_workers: int = 0
    """Ray Train workers, the data-parallel training processes (0: auto — one per GPU the cluster has when
    training on GPUs, 2 on CPUs). Not the run context's ``workers`` (Ray tasks of the per-item stages)."""
    cpus_per_worker: float = 0.5
    """CPUs reserved per worker; the run also needs one CPU for Ray Data's reading of the shards (so that the
    default 2 CPU workers fit a 2-core machine). A reservation, not a limit: each worker's torch uses
    max(1, round(cpus_per_worker)) threads."""
    gpus_per_worker: float = 1.0
    """GPUs per worker; below 1, workers share a GPU and talk through gloo instead of NCCL."""
    amp: bool = True
    """bfloat16 autocast on GPU."""
    max_failures: int = 2
    """Worker-group restarts (from the latest checkpoint) before the run fails."""
    keep_checkpoints: int = 2
    """Checkpoints kept in storage."""
    checkpoint_every_s: float = 20.0
    """Seconds of training between checkpoints (and TensorBoard uploads); the last epoch always writes one
    (0: every epoch). Short epochs on a GPU would otherwise spend most of their time checkpointing; a
    restart repeats at most this much work."""
    wait_for_resources: float = 60.0
    """Seconds to wait for the cluster to offer the workers' CPUs and GPUs (an autoscaling cluster adds
    nodes meanwhile) before the run stops with a clear error instead of waiting silently."""
    evaluate: bool = True
    """Score the held-out videos after training (vertex-to-pixel matching, against baselines)."""
    eval_frames: int = 96
    """Held-out frames scored (evenly drawn; 0: all)."""
    eval_threshold: float = 4.0
    """A vertex counts as matched when its best pixel lies within this many pixels of the truth."""
    seed: int = 0
    """Seed of the split, the initialisation and the evaluation."""


@dataclass
class PoseConfig(DeviceContext):
    """Pose estimation: coarse search and render-and-compare refinement (:mod:`catpose.pose.estimate`)."""

    grid: int = 4096
    """Rotations of the coarse SO(3) grid (4096: neighbours about 11° apart, see ``catpose.geometry.so3_grid``)."""
    top_k: int = 4
    """Distinct coarse hypotheses that are refined."""
    refine_steps: int = 40
    """Gradient steps of the render-and-compare refinement (0: coarse pose only)."""
    focal_ndc: float = 2.4
    """Assumed focal length of the whole image in NDC (shorter side = 2) when the data gives none."""
    margin: float = 1.15
    """Crop side = margin × the longer side of the object box (training crops use the same,
    ``catpose.geometry.BOX_MARGIN``)."""
    min_object: float = 0.02
    """Smallest share of object-like crop pixels in an image given without box or mask; fewer → the image
    is rejected as showing no object."""
    sim_size: int = 64
    """Resolution of the similarity maps s_j used for scoring."""
    prior_weight: float = 0.0
    """Weight of the retrieval prior (similarity of the crop to training views near each rotation; 0: off).
    It needs the run's training frames (read once, cached in the run); 3 helps weakly trained features."""
    prior_radius: float = 20.0
    """Training views within this many degrees of a grid rotation count for its prior."""
    translation: str = "box"
    """Refinement of the translation: free (image position and depth are refined with the rotation) or box
    (the translation always puts the template's projected box on the object box)."""
    batch: int = 16
    """Images estimated together (``catpose estimate`` over many files, ``catpose evaluate``): one encoder
    pass, and all their hypotheses scored and refined as one tensor; 0: one image at a time, the reference
    path)."""


@dataclass
class WildConfig:
    """``catpose synth-wild``: a synthetic in-the-wild pose evaluation set in the PASCAL3D+ layout."""

    out: Path = Path("data/wild")
    """Folder to write."""
    category: str = "car"
    """Synthetic category (car, mug)."""
    images: int = 200
    """Number of images (one object each)."""
    width: int = 192
    """Image width in pixels."""
    height: int = 160
    """Image height in pixels."""
    seed: int = 1000
    """Random seed; not the training videos' seed, so every instance is unseen."""
    occlusion: float = 0.5
    """Probability of an occluder over the object."""
    supersample: int = 2
    """Ray-casting samples per pixel along each axis."""


@dataclass
class EstimateConfig(StoreContext):
    """``catpose estimate``: the 3D pose of the object in each image, with a picture of it."""

    checkpoint: str = "runs/train/train-car"
    """A finished training run (folder or s3:// URI with model.pt and template.npz)."""
    image: tuple[Path, ...] = ()
    """Image files (one object each)."""
    bbox: tuple[float, ...] | None = None
    """Object box x0 y0 x1 y1 in pixels (for one image); default: from --mask, else the whole image."""
    mask: tuple[Path, ...] = ()
    """Object masks, one per image (optional)."""
    focal_px: float | None = None
    """Focal length in pixels when known."""
    out: Path = Path("poses")
    """Folder for poses.json and the overlay pictures."""
    frame: Path | None = None
    """JSON with a 3x3 "rotation" from the template frame to a canonical frame (written by `catpose
    evaluate`), for azimuth/elevation/in-plane angles."""
    category: str = ""
    """The category of the objects in the images, when known: checked against the run's (its model.pt
    records it), another category being an error unless --allow-other-category. Default: not checked
    (images given to estimate carry no category of their own)."""
    allow_other_category: bool = False
    """With --category: estimate with a run trained on another category than the images'."""
    pose: PoseConfig = field(default_factory=PoseConfig)


@dataclass
class PoseEvalConfig(StoreContext):
    """``catpose evaluate``: pose accuracy of a training run on an annotated image set."""

    checkpoint: str = "runs/train/train-car"
    """A finished training run (folder or s3:// URI)."""
    dataset: str = "synth-wild"
    """synth-wild (catpose's synthetic in-the-wild set), pascal3d, objectnet3d or co3d."""
    root: Path = Path("data/wild")
    """Dataset folder."""
    category: str = "car"
    """Category (PASCAL3D+/ObjectNet3D class name)."""
    split: str | None = None
    """pascal3d: list file in Image_sets/ (e.g. car_imagenet_val.txt); objectnet3d: val (default), test..."""
    sequences: tuple[str, ...] = ()
    """co3d: sequences to score (default: the run's held-out videos)."""
    limit: int = 0
    """Score at most this many objects, evenly drawn (0: all)."""
    frame: str = "auto"
    """Template → dataset frame: gt (synthetic ground truth of the run's training data), fit (one
    rotation fitted on the calibration share, scored on the rest), auto (gt when known, else fit)."""
    calibration: float = 0.2
    """Share of the objects used to fit the frame (frame=fit)."""
    baseline: bool = True
    """Also score the nearest-neighbour baseline (closest training frame by pooled features)."""
    out: Path = Path("runs/pose-eval")
    """Folder for evaluation.json/.md, the error histogram, per-object results and overlays."""
    overlays: int = 12
    """Overlay pictures written (first objects)."""
    allow_other_category: bool = False
    """Score a run on images of another category than the one it was trained on (its model.pt records
    it); without this, that is an error."""
    pose: PoseConfig = field(default_factory=PoseConfig)


# --------------------------------------------------------------------------------------------------
# validation of values that do not come from the typed command line (YAML files)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _check_value(value, tp, field_name: str, source: str):
    """``value`` as type ``tp`` (the dataclass field's annotation), or a :class:`ConfigError`."""
    import dataclasses
    import types
    import typing


    def fail(expected: str):
        got = f"{value!r} (a {type(value).__name__})"
        raise ConfigError(source, f"expected {expected}, got {got}", field=field_name)

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None:
            if type(None) in args:
                return None
            fail(" or ".join(_type_name(a) for a in args))
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_value(value, a, field_name, source)
            except ConfigError as e:
                errors.append(e)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            fail(f"a section (mapping of {tp.__name__} fields)")
        return apply_dict(tp(), value, source, field_name)
    if origin is tuple:
        args = typing.get_args(tp)
        item = args[0] if args else typing.Any
        if isinstance(value, str):
            fail(f"a list (write [{value}] for one item)")
        if not isinstance(value, (list, tuple)):
            fail("a list")
        return tuple(_check_value(v, item, f"{field_name}[{i}]", source) for i, v in enumerate(value))
    if tp is typing.Any:
        return value
    if tp is bool:
        if not isinstance(value, bool):
            fail("true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            fail("a string")
        return value
    if tp is Path:
        if not isinstance(value, str) or not value:
            fail("a path (a string)")
        return Path(value)
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            fail("a mapping")
        return value
    return value


def apply_dict(obj, values: dict, source: str, prefix: str = ""):
    """A copy of dataclass ``obj`` with ``values`` (nested dicts for nested dataclasses) applied, each
    checked against the field's type; unknown fields and wrong types raise
    :class:`~catpose.errors.ConfigError` naming ``source`` (the YAML file) and the dotted field."""
    import dataclasses
    import typing


    if not isinstance(values, dict):
        raise ConfigError(source, f"expected a mapping of fields, got {type(values).__name__}", field=prefix or None)
    hints = typing.get_type_hints(type(obj))
    names = {f.name for f in dataclasses.fields(obj)}
    changes = {}
    for k, v in values.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        if k not in names:
            raise ConfigError(source, f"unknown field; known fields{' of ' + prefix if prefix else ''}: "
                              f"{', '.join(sorted(names))}", field=name)
        cur = getattr(obj, k)
        if dataclasses.is_dataclass(cur) and isinstance(v, dict):
            changes[k] = apply_dict(cur, v, source, name)  # keeps the section's own defaults
        else:
            changes[k] = _check_value(v, hints[k], name, source)
    return dataclasses.replace(obj, **changes)


# --------------------------------------------------------------------------------------------------
# ranges of the settings: checked once, before any work, for flags (catpose.cli) and YAML files alike
# (catpose.pipeline.check_config); the table says what each field allows, check_settings applies it


def _each(test):
    return lambda v: all(test(x) for x in v)


SETTING_RANGES: dict[str, tuple] = {
    # field name (in any config section): (test of the value, the allowed range in words)
    "alpha": (lambda v: 0.0 <= v <= 1.0, "[0, 1]"),
    "alphas": (_each(lambda v: 0.0 <= v <= 1.0), "values in [0, 1]"),
    "tau": (lambda v: v > 0, "> 0"),
    "taus": (_each(lambda v: v > 0), "values > 0"),
    "vertices": (lambda v: v >= 1, ">= 1"),
    "coarse_vertices": (lambda v: v >= 1, ">= 1"),
    "epochs": (lambda v: v >= 1, ">= 1"),
    "workers": (lambda v: v >= 0, ">= 0 (0: in this process)"),
    "num_workers": (lambda v: v >= 0, ">= 0 (0: auto)"),
    "cloud_points": (lambda v: v >= 0, ">= 0 (0: no cap)"),
}


def check_device(value: str) -> None:
    """Raises :class:`~catpose.errors.ConfigError` unless ``value`` names a device this process can use:
    ``auto``, ``cpu``, ``cuda`` (a GPU is visible) or ``cuda:N`` (GPU N exists). ``auto`` always passes
    (it falls back to the CPU). With a cluster named (``RAY_ADDRESS``) and no GPU here, ``cuda`` passes:
    the GPUs may be on other nodes, where the stages' Ray tasks and workers ask for them."""
    import os
    import re

    if value in ("auto", "cpu"):
        return
    m = re.fullmatch(r"cuda(?::(\d+))?", str(value))
    if m is None:
        raise ConfigError("flags", f"unknown device {value!r}; use auto, cpu, cuda or cuda:N", field="device")
    import torch

    n = torch.cuda.device_count()
    if n == 0 and os.environ.get("RAY_ADDRESS"):
        return
    if n == 0:
        raise ConfigError("flags", f"device {value!r} asked for, but this machine has no usable CUDA GPU "
                                   "(torch sees none); use auto or cpu", field="device")
    if m.group(1) is not None and int(m.group(1)) >= n:
        raise ConfigError("flags", f"device {value!r}: this machine has {n} GPU(s), cuda:0 to cuda:{n - 1}",
                          field="device")


def check_settings(cfg, source: str = "flags", prefix: str = "") -> None:
    """Checks every field of dataclass ``cfg`` (and of its nested sections) that :data:`SETTING_RANGES`
    names, and its ``device``; the first one out of range is a :class:`~catpose.errors.ConfigError`
    naming ``source``, the dotted field, the value and the allowed range."""
    import dataclasses

    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        name = f"{prefix}.{f.name}" if prefix else f.name
        if dataclasses.is_dataclass(v):
            check_settings(v, source, name)
        elif f.name == "device" and isinstance(v, str):
            try:
                check_device(v)
            except ConfigError as e:
                raise ConfigError(source, str(e).split(": field 'device': ", 1)[-1], field=name) from None
        elif f.name in SETTING_RANGES and v is not None:
            test, allowed = SETTING_RANGES[f.name]
            try:
                ok = test(v)
            except TypeError:
                ok = False
            if not ok:
                raise ConfigError(source, f"{v!r} is out of range; allowed: {allowed}", field=name)
