"""Configs of pose estimation: the estimator, the synthetic in-the-wild set, estimate and evaluate."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from catpose.config.context import DeviceContext, StoreContext, SynthCategory


@dataclass
class PoseConfig(DeviceContext):
    """Pose estimation: coarse search and render-and-compare refinement (catpose.pose.estimate)."""

    grid: int = 4096
    """Rotations of the coarse SO(3) grid (4096: neighbours about 11° apart)."""
    top_k: int = 4
    """Distinct coarse hypotheses that are refined."""
    refine_steps: int = 40
    """Gradient steps of the render-and-compare refinement (0: coarse pose only)."""
    focal_ndc: float = 2.4
    """Assumed focal length of the whole image in NDC (shorter side = 2) when the data gives none."""
    margin: float = 1.15
    """Crop side = margin × the longer side of the object box (training crops use the same,
    catpose.geometry.BOX_MARGIN)."""
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
    translation: Literal["free", "box"] = "box"
    """Refinement of the translation: free (image position and depth are refined with the rotation) or box
    (the translation always puts the template's projected box on the object box)."""
    batch: int = 16
    """Images estimated together (catpose estimate over many files, catpose evaluate): one encoder pass, and
    all their hypotheses scored and refined as one tensor (0 or 1: one image at a time; the poses are the
    same)."""


@dataclass
class WildConfig:
    """A synthetic in-the-wild pose evaluation set in the PASCAL3D+ layout."""

    out: Path = Path("data/wild")
    """Folder to write."""
    category: SynthCategory = "car"
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
class CategoryGuard:
    """The check that a run is used on images of the category it was trained on (its model.pt records it),
    shared by estimate and evaluate."""

    allow_other_category: bool = False
    """Use a run on images of another category than the one it was trained on; without this, that is an
    error (estimate: only when --category is given)."""


@dataclass
class EstimateConfig(StoreContext, CategoryGuard):
    """The 3D pose of the object in each image, with a picture of it."""

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
    """JSON with a 3x3 "rotation" from the template frame to a canonical frame (written by catpose
    evaluate), for azimuth/elevation/in-plane angles."""
    category: str = ""
    """The category of the objects in the images, when known: checked against the run's (its model.pt
    records it), another category being an error unless --allow-other-category. Default: not checked
    (images given to estimate carry no category of their own)."""
    pose: PoseConfig = field(default_factory=PoseConfig)


@dataclass
class PoseEvalConfig(StoreContext, CategoryGuard):
    """Pose accuracy of a training run on an annotated image set: Acc@π/6 and Acc@π/18 (the share of objects
    whose rotation error is below 30° and 10°) and the median rotation error, against the nearest training
    view as a baseline."""

    checkpoint: str = "runs/train/train-car"
    """A finished training run (folder or s3:// URI)."""
    dataset: Literal["synth-wild", "pascal3d", "objectnet3d", "co3d"] = "synth-wild"
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
    frame: Literal["gt", "fit", "auto"] = "auto"
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
    pose: PoseConfig = field(default_factory=PoseConfig)
