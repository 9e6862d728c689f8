"""CO3D as it really is: videos without a point cloud, blank frames, broken masks.

Real CO3D downloads have three problems a synthetic dataset never has:

* **no** ``pointcloud.ply`` for some sequences. When the frames carry depth maps (CO3D's
  ``depths/*.geometric.png``: the bits of float16 values × ``scale_adjustment``, camera Z, 0 = unknown)
  the cloud is made from them: every usable frame's foreground pixels with a depth are unprojected
  through its camera (:func:`cloud_from_depth`). A video with neither is excluded and named.
* **all-black or near-constant frames** (a dropped camera frame, a fade): :func:`blank_reason` tells
  them; the shard and features stages skip them and count them.
* **masks that disagree with the cloud** (empty, shifted, another frame's): the cloud is projected
  through the frame's camera and compared with the mask both ways — the share of projected points inside
  the mask and the share of the mask the projection covers (:func:`mask_agreement`). A frame far below its
  video's median, or below an absolute floor, is named (:func:`bad_masks`); nothing is dropped for it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catpose.data.pointcloud import PointCloud
from catpose.errors import DataFormatError

BLACK_MAX = 8
"""A frame whose brightest pixel is at most this (of 255) is all black."""
CONSTANT_STD = 2.0
"""A frame whose grey values vary by less than this standard deviation (of 255) is near-constant."""
MASK_FLOOR = 0.1
"""A frame whose mask agreement is below this is named, whatever its video's median."""
MASK_RELATIVE = 0.5
"""A frame whose mask agreement is below this share of its video's median is named."""


class BlankFrameError(DataFormatError):
    """An image that is all black or near-constant: nothing of the object is in it."""


def blank_reason(img: np.ndarray) -> str | None:
    """Why the image (H, W[, 3]) uint8 is blank ("all black (max 3/255)", "near-constant (std 0.4/255)"),
    or None when it is not."""
    a = np.asarray(img)
    if a.size == 0:
        return "empty image"
    top = int(a.max())
    if top <= BLACK_MAX:
        return f"all black (brightest pixel {top}/255)"
    grey = a.astype(np.float32).mean(axis=-1) if a.ndim == 3 else a.astype(np.float32)
    std = float(grey[::2, ::2].std())
    if std < CONSTANT_STD:
        return f"near-constant (grey std {std:.2f}/255 < {CONSTANT_STD})"
    return None


def check_blank(img: np.ndarray, path: str) -> None:
    """Raises :class:`BlankFrameError` naming ``path`` when the image is blank."""
    why = blank_reason(img)
    if why is not None:
        raise BlankFrameError(path, f"blank frame: {why}; skipped")


def pick_frames(seq, k: int) -> tuple[list, list[np.ndarray], dict[str, str]]:
    """``k`` frames of ``seq`` evenly spread (as :meth:`Co3dSequence.subsample`), a blank one replaced by
    the nearest unused frame that is not; returns (frames, their images, blank ``"<seq>/<frame>"`` →
    reason). Raises :class:`BlankFrameError` when every frame it looked at is blank."""
    n = len(seq.frames)
    want = [seq.frames.index(f) for f in seq.subsample(k)]
    used: set[int] = set()
    frames, images, blank = [], [], {}
    for i in want:
        for j in sorted(range(n), key=lambda j: (abs(j - i), j)):
            if j in used:
                continue
            fr = seq.frames[j]
            key = f"{seq.name}/{fr.frame_number}"
            if key in blank:
                continue
            img = fr.load_image()
            why = blank_reason(img)
            used.add(j)
            if why is not None:
                blank[key] = f"{fr.image_path}: blank frame: {why}; skipped"
                continue
            frames.append(fr)
            images.append(img)
            break
    if not frames:
        raise BlankFrameError(seq.source, f"sequence '{seq.name}': every frame looked at is blank "
                              f"({len(blank)} of {n})", field="image")
    order = np.argsort([f.frame_number for f in frames])
    return [frames[i] for i in order], [images[i] for i in order], blank


def cloud_from_depth(
    seq, max_frames: int = 40, max_points: int = 100_000, voxel_share: float = 1 / 200
) -> PointCloud:
    """A point cloud for a sequence without ``pointcloud.ply``, made from its depth maps and cameras.

    Up to ``max_frames`` frames evenly spread (blank ones left out); in each, the pixels with a depth
    (and, where the frame has a mask, on the foreground: P(fg) > 0.5) are unprojected through the
    frame's camera at their pixel centres, coloured from the image; the union is voxel-downsampled
    (voxel = ``voxel_share`` × the cloud's bounding-box diagonal) to at most ``max_points``.
    Raises :class:`DataFormatError` naming the sequence when no frame has a usable depth."""
    from catpose.data.camera import Camera  # noqa: F401 (the convention of fr.camera)

    frames = [f for f in seq.frames if f.depth_path is not None]
    if not frames:
        raise DataFormatError(seq.source, f"sequence '{seq.name}' has no pointcloud.ply and no depth maps to "
                                          "make "
                              "one from", field="depth")
    if len(frames) > max_frames:
        idx = np.unique(np.linspace(0, len(frames) - 1, max_frames).round().astype(int))
        frames = [frames[i] for i in idx]
    pts, cols = [], []
    for fr in frames:
        img = fr.load_image()
        if blank_reason(img) is not None:
            continue
        d = fr.load_depth()
        cam = fr.camera
        if d.shape != tuple(cam.image_size):  # CO3D depth maps may be smaller than their image
            cam = cam.resized(d.shape)
        take = d > 0
        if fr.mask_path is not None:
            m = fr.load_mask()
            if m.shape != d.shape:
                from PIL import Image

                m = (
                    np.asarray(
                        Image.fromarray((m * 255).astype(np.uint8)).resize(d.shape[::-1], Image.NEAREST)
                    )
                    / 255.0
                )
            take &= m > 0.5
        if not take.any():
            continue
        v, u = np.nonzero(take)
        pts.append(cam.unproject(np.stack([u + 0.5, v + 0.5], -1), d[take]))
        iv = np.minimum((v * img.shape[0]) // d.shape[0], img.shape[0] - 1)
        iu = np.minimum((u * img.shape[1]) // d.shape[1], img.shape[1] - 1)
        cols.append(img[iv, iu])
    if not pts:
        raise DataFormatError(seq.source, f"sequence '{seq.name}' has no pointcloud.ply and none of its "
                              f"{len(frames)} depth maps looked at has a foreground pixel with a "
                              "depth", field="depth")
    P = np.concatenate(pts)
    C = np.concatenate(cols).astype(np.uint8)
    diag = float(np.linalg.norm(P.max(0) - P.min(0))) or 1.0
    keys = np.floor(P / (diag * voxel_share)).astype(np.int64)
    _, first = np.unique(keys, axis=0, return_index=True)
    keep = np.sort(first)
    if len(keep) > max_points:
        keep = np.sort(np.random.default_rng(0).choice(keep, max_points, replace=False))
    return PointCloud(P[keep].astype(np.float32), C[keep], None)


@dataclass
class MaskCheck:
    frame_number: int
    in_mask: float  # share of the cloud's projected points (in front, in the image) inside the mask
    covered: float  # share of the mask's cells a projected point falls on (or next to)

    @property
    def score(self) -> float:
        return min(self.in_mask, self.covered)


def mask_agreement(points: np.ndarray, frame, mask: np.ndarray | None = None, grid: int = 48) -> MaskCheck:
    """How well the frame's mask agrees with the cloud ``points`` projected through its camera.

    Both ways, on a coarse grid of ``grid`` cells along the longer side (a sparse cloud does not cover
    every pixel): the share of projected points inside the mask, and the share of the mask's cells with
    a projected point in them or next to them."""
    from scipy import ndimage

    m = frame.load_mask() if mask is None else mask
    H, W = m.shape
    uv, z = frame.camera.project(points)
    u, v = np.nan_to_num(uv[:, 0], nan=-1.0), np.nan_to_num(uv[:, 1], nan=-1.0)
    ok = (u >= 0) & (u < W) & (v >= 0) & (v < H) & (z > 0)
    ui, vi = u[ok].astype(int), v[ok].astype(int)
    in_mask = float((m[vi, ui] > 0.5).mean()) if ok.any() else 0.0
    cell = max(H, W) / grid
    gh, gw = int(np.ceil(H / cell)), int(np.ceil(W / cell))
    splat = np.zeros((gh, gw), bool)
    splat[(vi / cell).astype(int), (ui / cell).astype(int)] = True
    splat = ndimage.binary_dilation(splat, iterations=1)
    yy, xx = np.mgrid[:gh, :gw]
    cy = np.minimum(((yy + 0.5) * cell).astype(int), H - 1)
    cx = np.minimum(((xx + 0.5) * cell).astype(int), W - 1)
    mcells = m[cy, cx] > 0.5
    covered = float((mcells & splat).sum() / mcells.sum()) if mcells.any() else 0.0
    return MaskCheck(frame.frame_number, round(in_mask, 4), round(covered, 4))


def bad_masks(checks: list[MaskCheck], name: str) -> dict[str, str]:
    """``"<seq>/<frame>"`` → why, for the frames whose mask agrees badly with the cloud: below
    :data:`MASK_FLOOR` or below :data:`MASK_RELATIVE` × the video's median agreement."""
    if not checks:
        return {}
    med = float(np.median([c.score for c in checks]))
    lim = max(MASK_FLOOR, MASK_RELATIVE * med)
    return {
        f"{name}/{c.frame_number}": (
            f"mask disagrees with the cloud's projection: {c.in_mask:.0%} of the "
            f"projected points inside it, {c.covered:.0%} of it covered "
            f"(video median {med:.0%}, limit {lim:.0%})"
        )
        for c in checks
        if c.score < lim
    }


@dataclass
class SequenceQuality:
    """What :func:`sequence_quality` found in one video."""

    sequence: str
    cloud: str  # "file" or "depth"
    points: int
    blank_frames: dict[str, str]
    bad_masks: dict[str, str]
    mask_checks: list[MaskCheck]

    def to_json(self) -> dict:
        return {"cloud": self.cloud, "points": self.points, "blank_frames": self.blank_frames,
                "bad_masks": self.bad_masks}


def sequence_quality(seq, max_points: int = 3000, frames=None) -> SequenceQuality:
    """Checks every frame of ``seq`` (or ``frames``): blank images, and masks against the cloud. A frame
    whose image or mask cannot be read is passed over (reading it is the caller's check, named there)."""
    from catpose.errors import CatposeError

    cloud = seq.load_point_cloud()
    pts = cloud.points
    if len(pts) > max_points:
        pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
    blank, checks = {}, []
    for fr in (seq.frames if frames is None else frames):
        try:
            img = fr.load_image()
            mask = fr.load_mask() if fr.mask_path is not None else None
        except (CatposeError, OSError):
            continue
        why = blank_reason(img)
        if why is not None:
            blank[f"{seq.name}/{fr.frame_number}"] = f"{fr.image_path}: blank frame: {why}; skipped"
            continue
        if mask is not None:
            checks.append(mask_agreement(pts, fr, mask))
    return SequenceQuality(seq.name, seq.cloud_source, len(cloud), blank, bad_masks(checks, seq.name), checks)
