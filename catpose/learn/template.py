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


def build_template(clouds: list[np.ndarray], n_vertices: int = 1000, voxel: float = 0.02,
                   support: float = 0.3) -> Template:
    """Mean shape of aligned clouds (each [M_i, 3] in the reference frame).

    ``voxel`` is the cell size as a fraction of the pooled bounding-box diagonal; a cell is kept when
    at least ``support`` of the clouds have a point in it; each kept cell contributes the mean of its
    points; then FPS picks ``n_vertices`` of them. Raises when fewer than 4 cells survive.
    """
    if not clouds:
        raise ValueError("no aligned clouds to build a template from")
    pts = np.concatenate(clouds).astype(np.float64)
    owner = np.concatenate([np.full(len(c), i) for i, c in enumerate(clouds)])
    lo = pts.min(0)
    cell = voxel * float(np.linalg.norm(pts.max(0) - lo))
    keys = np.floor((pts - lo) / cell).astype(np.int64)
    _, inv = np.unique(keys, axis=0, return_inverse=True)
    inv = inv.ravel()
    n_cells = inv.max() + 1
    # distinct videos per cell
    pair = np.unique(inv * len(clouds) + owner)
    videos_per_cell = np.bincount(pair // len(clouds), minlength=n_cells)
    share = videos_per_cell / len(clouds)
    sums = np.zeros((n_cells, 3))
    np.add.at(sums, inv, pts)
    centres = sums / np.bincount(inv, minlength=n_cells)[:, None]
    keep = share >= support
    if keep.sum() < 4:
        raise ValueError(f"only {keep.sum()} template cells are shared by {support:.0%} of the videos; "
                         "is the alignment broken?")
    centres, share = centres[keep], share[keep]
    idx = farthest_point_sample(centres, min(n_vertices, len(centres)))
    return Template(centres[idx].astype(np.float32), share[idx].astype(np.float32),
                    meta={"videos": len(clouds), "voxel": voxel, "support": support})


def instance_correspondents(template: Template, video_vertices: np.ndarray, to_ref: Similarity,
                            max_dist: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """For each template vertex ``t_j``, the nearest vertex of one video after alignment.

    Returns ``(points [N, 3] in the video's own world frame, valid [N] bool)``; ``valid`` is false
    where the nearest vertex is farther than ``max_dist`` × the template diameter.
    """
    V = np.asarray(video_vertices, np.float32)
    d, idx = cKDTree(to_ref.apply(V).astype(np.float32)).query(template.vertices.astype(np.float64))
    return V[idx], d <= max_dist * template.diameter
