"""Config of training (Ray Train)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from catpose.config.context import DeviceContext, StoreContext


@dataclass
class TrainConfig(StoreContext, DeviceContext):
    """Learn viewpoint-invariant surface features on a category template with Ray Train."""

    data: str = "data/shards"
    """Parquet frame shards (a folder or s3://bucket/prefix), as written by catpose shard."""
    alignment: str = "runs/align"
    """Output folder (or s3:// URI) of catpose align for this category (alignment.parquet)."""
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
    model: Literal["small", "base", "resnet"] = "small"
    """Encoder Φ: small (a U-Net, width --width: the CPU demo's), base (a frozen DINOv2 ViT, --backbone,
    default dinov2_vits14, from local weights, with a trainable convolutional head; use --size 224 or
    more) or resnet (a ResNet-18-style encoder with an FPN decoder, from scratch; --size 224 or more)."""
    dim: int = 64
    """Feature dimension D."""
    width: int = 16
    """Encoder width (channels at stride 2; 2x and 4x deeper)."""
    stride: int = 4
    """Output stride of the features (2: finer, about 2x the compute of 4)."""
    backbone: Literal["", "dinov2_vits14", "dinov2_vitb14", "dinov2_vitl14"] = ""
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
    agrees with (catpose align records the counts): one video turned by 180° teaches the template
    wrong correspondences for all its frames."""
    mask_fill: bool = True
    """Fill the holes and eroded borders of object masks from each video's own vertices before training
    (catpose.learn.frames.refine_masks; never removes mask pixels). Imperfect segmentation masks
    otherwise teach object pixels to look like background."""
    mask_snap: float = 0.025
    """Move each mask's boundary to the object's edge in its frame before training, within a band of this
    share of the frame's shorter side (catpose.learn.frames.snap_masks, GrabCut; 0: off). Masks a few
    pixels too wide carry a fringe of floor into every augmented composite. Runs once per frame and
    worker (when its frame cache holds the frames), about 15 ms a 128-px frame on one CPU core."""
    frame_cache_mb: float = 2048
    """Decoded frames and their targets each worker keeps on its device (0: decode every epoch)."""
    prefetch: int = 2
    """Batches the device feed prepares ahead of the training step (in a thread)."""
    num_workers: int = 0
    """Ray Train workers, the data-parallel training processes (0: auto — one per GPU the cluster has when
    training on GPUs, 2 on CPUs). Not the run context's workers (Ray tasks of the per-item stages)."""
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
