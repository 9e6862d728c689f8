"""The category template: a mean shape in the reference frame with one learnable feature per vertex.

The aligned videos' vertices (each video's FPS vertices ``V``, mapped by its alignment
``x_ref = s·R·x + t``) are pooled in a voxel grid; voxels that at least ``support`` of the videos
occupy form the mean shape, and farthest point sampling picks its ``N`` vertices ``t_j``. Each
training video then gets, for every template vertex, its *instance correspondent*: the nearest of
the video's own vertices after alignment (or none, when farther than ``max_dist`` — the instance has
no such part). Projecting the correspondents with a frame's camera gives the pixel that vertex j
should match in that frame, which is what the contrastive loss needs.

We keep the template as vertices (no faces): visibility comes from a z-buffer of the video's own
vertices and its mask (:func:`catpose.learn.targets.frame_targets`), so no remeshing or rasteriser
is needed, and pytorch3d stays optional.
"""

from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree

from catpose.errors import DataFormatError
from catpose.geometry import Similarity, farthest_point_sample


@dataclass
class Template:
    """Template vertices ``t_j`` [N, 3] in the category reference frame, with their features."""

    vertices: np.ndarray  # [N, 3] float32
    support: np.ndarray  # [N] share of videos that have this part
    features: np.ndarray | None = None  # [N, D] float32, unit rows (learned)
    meta: dict = field(default_factory=dict)

    @property
    def diameter(self) -> float:
        return float(np.linalg.norm(self.vertices.max(0) - self.vertices.min(0)))

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = {"vertices": self.vertices, "support": self.support,
                  "meta": np.frombuffer(json.dumps(self.meta).encode(), np.uint8)}
        if self.features is not None:
            arrays["features"] = self.features
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> Template:
        try:
            z = np.load(io.BytesIO(data))
            return cls(z["vertices"], z["support"], z["features"] if "features" in z else None,
                       json.loads(z["meta"].tobytes().decode()))
        except Exception as e:
            raise DataFormatError(source, f"not a catpose template file ({type(e).__name__}: {e})") from e


def _cell_key(cells: np.ndarray) -> np.ndarray:
    """One int64 per integer cell [M, 3] (cells are shifted to be non-negative, < 2²⁰ per axis)."""
    c = cells.astype(np.int64) + 2
    return (c[:, 0] << 42) | (c[:, 1] << 21) | c[:, 2]


def robust_diameter(points: np.ndarray, q: float = 2.0) -> float:
    """Bounding-box diagonal between the ``q``-th and ``100 − q``-th percentiles per axis."""
    lo, hi = np.percentile(points, [q, 100 - q], axis=0)
    return float(np.linalg.norm(hi - lo))


def build_template(clouds: list[np.ndarray], n_vertices: int = 1000, voxel: float = 0.02,
                   support: float = 0.3, reach: int = 2, size_ratio: float = 1.5,
                   instance_sizes: list[float] | None = None) -> Template:
    """Mean shape of aligned clouds (each [M_i, 3] in the reference frame), robust to videos that saw
    only part of the object.

    ``voxel`` is the cell size as a fraction of the pooled bounding-box diagonal. A cell's support is
    the share of the videos *that cover its neighbourhood* (have a point within ``reach`` cells) that
    have a point in it: a part seen by the full orbits but not by a partial one keeps its full support,
    which a share of all videos would cut. A cell is kept when its support is at least ``support`` and
    at least 2 videos (and ``support / 2`` of all videos) have it, so that one video's stray part or
    leftover background does not enter; each kept cell contributes the mean of its points; then FPS
    picks ``n_vertices`` of them. Raises when fewer than 4 cells survive.

    When the template comes out more than ``size_ratio`` times the typical instance (the 60th
    percentile of the clouds' robust diameters: partial videos are smaller than the instance), a
    :class:`UserWarning` says so and ``meta["size_warning"]`` keeps it:
    the symptom of ground or background left in some of the videos' clouds. When every cloud holds
    the ground the clouds alone cannot tell; ``instance_sizes`` (per video, in the reference frame:
    how large a thing its cameras frame, ``alignment scale × SurfaceFeatures.meta["view_size"]``)
    then give the typical instance instead (their median).
    """
    if not clouds:
        raise ValueError("no aligned clouds to build a template from")
    n = len(clouds)
    pts = np.concatenate(clouds).astype(np.float64)
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(clouds)])
    lo = pts.min(0)
    cell = voxel * float(np.linalg.norm(pts.max(0) - lo))
    cells = np.floor((pts - lo) / cell).astype(np.int64)
    keys = _cell_key(cells)
    ukeys, inv = np.unique(keys, return_inverse=True)
    inv = inv.ravel()
    n_cells = len(ukeys)
    # distinct videos per cell
    pair = np.unique(inv * n + owner)
    videos_per_cell = np.bincount(pair // n, minlength=n_cells)
    # videos covering each cell's neighbourhood: each video's cells, grown by `reach`
    r = np.arange(-reach, reach + 1)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), -1).reshape(-1, 3)
    covered = np.zeros(n_cells, np.int64)
    for i in range(n):
        own = np.unique(cells[owner == i], axis=0)
        grown = np.unique(_cell_key((own[:, None] + offsets[None]).reshape(-1, 3)))
        covered += np.isin(ukeys, grown)
    share = videos_per_cell / np.maximum(covered, 1)
    sums = np.zeros((n_cells, 3))
    np.add.at(sums, inv, pts)
    centres = sums / np.bincount(inv, minlength=n_cells)[:, None]
    keep = (share >= support) & (videos_per_cell >= max(2, int(np.ceil(support / 2 * n))))
    if keep.sum() < 4:
        raise ValueError(f"only {keep.sum()} template cells are shared by {support:.0%} of the videos; "
                         "is the alignment broken?")
    centres, share = centres[keep], share[keep]
    idx = farthest_point_sample(centres, min(n_vertices, len(centres)))
    tpl = Template(centres[idx].astype(np.float32), share[idx].astype(np.float32),
                   meta={"videos": n, "voxel": voxel, "support": support, "reach": reach})
    if instance_sizes is not None and len(instance_sizes):
        typical = float(np.median(instance_sizes))
    else:
        diameters = [robust_diameter(c) for c in clouds if len(c) >= 4]
        typical = float(np.percentile(diameters, 60)) if diameters else float("nan")
    tpl.meta["instance_diameter"] = typical
    if typical > 0 and tpl.diameter > size_ratio * typical:
        msg = (f"the template ({tpl.diameter:.3g} across) is {tpl.diameter / typical:.1f}× the typical "
               "instance "
               f"({typical:.3g}): ground or background left in the videos' clouds, or a broken alignment?")
        tpl.meta["size_warning"] = msg
        warnings.warn(msg, stacklevel=2)
    return tpl


def instance_correspondents(template: Template, video_vertices: np.ndarray, to_ref: Similarity,
                            max_dist: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """For each template vertex ``t_j``, the nearest vertex of one video after alignment.

    Returns ``(points [N, 3] in the video's own world frame, valid [N] bool)``; ``valid`` is false
    where the nearest vertex is farther than ``max_dist`` × the template diameter.
    """
    V = np.asarray(video_vertices, np.float32)
    d, idx = cKDTree(to_ref.apply(V).astype(np.float32)).query(template.vertices.astype(np.float64))
    return V[idx], d <= max_dist * template.diameter
