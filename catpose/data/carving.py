"""A dense object cloud from registered cameras and object masks: the visual hull by space carving.

Sparse SfM finds points where the images have corner-like texture: on a weakly textured object (or
small frames) it leaves a few dozen points on the object and thousands on the textured ground and
background around it. Surface features, alignment and the template need the object's surface sampled
densely and evenly (CO3D's clouds are dense multi-view stereo). Dense stereo in COLMAP needs CUDA;
on any machine the classical answer for object-centric videos with masks is the visual hull (Laurentini
1994; space carving, Kutulakos & Seitz 2000): a point belongs to the object when it projects inside
the object's mask in the frames that see it. Its surface approximates the object's (concavities
are filled), needs no texture, and the masks (given, or GrabCut's) decide it, not the ground.

Written out here, not taken from a library: none of the project's dependencies carves volumes (Open3D
and others would be a large dependency for one voxel test); the vote (:func:`carve`) makes it robust to
imperfect masks in a few frames, which the strict intersection of a textbook visual hull is not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from catpose.data.camera import Camera
from catpose.geometry.projection import project, zbuffer


@dataclass(frozen=True)
class HullSettings:
    """Settings of :func:`visual_hull` (``IngestConfig`` carries them as ``hull_*`` fields)."""

    voxels: int = 112
    """Voxels along each side of the carved cube (0: no carving)."""
    vote: float = 0.95
    """A voxel is object when inside the mask in at least this share of the frames whose image it is in."""
    view_share: float = 0.5
    """... and inside the image of at least this share of the frames (what the orbit looks at)."""
    half_size: float = 0.75
    """Half the cube's side as a multiple of the cameras' view size
    (:func:`catpose.data.cleaning.view_size`)."""


def _stack(cams: list[Camera]):
    t = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float32)
    return (t([c.R for c in cams]), t([c.T for c in cams]), t([c.focal_px for c in cams]),
            t([c.principal_point_px for c in cams]))


def carve(points: np.ndarray, cams: list[Camera], masks: list[np.ndarray], vote: float, view_share: float,
          chunk: int = 1 << 17) -> np.ndarray:
    """Space-carving vote of points ``X`` [P, 3] against K frames' masks ([H, W] in [0, 1]) → [P] bool.

    With ``in_k(X)`` = X in front of camera k and inside its image, ``m_k(X)`` = in_k and inside
    its mask: keep X when ``Σ_k m_k ≥ vote · Σ_k in_k`` and ``Σ_k in_k ≥ view_share · K``.
    """
    R, T, f, pp = _stack(cams)
    M = torch.as_tensor(np.stack(masks) > 0.5)  # [K, H, W]
    K, H, W = M.shape
    kk = torch.arange(K)[:, None]
    out = np.zeros(len(points), bool)
    for s in range(0, len(points), chunk):
        X = torch.as_tensor(points[s:s + chunk], dtype=torch.float32)
        uv, z = project(X, R, T, f, pp)  # [K, N, 2], [K, N]
        u, v = uv[..., 0], uv[..., 1]
        inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        pu = torch.floor(u).long().clamp(0, W - 1)
        pv = torch.floor(v).long().clamp(0, H - 1)
        in_mask = inside & M[kk, pv, pu]
        n_in, n_m = inside.sum(0), in_mask.sum(0)
        out[s:s + chunk] = ((n_in >= view_share * K) & (n_m >= vote * n_in) & (n_in > 0)).numpy()
    return out


def visual_hull(cams: list[Camera], masks: list[np.ndarray], center: np.ndarray, half_size: float,
                plane: list[float] | None = None, settings: HullSettings = HullSettings()) -> np.ndarray:
    """Surface points [Q, 3] of the carved object: the voxels of a cube (``center`` ± ``half_size``,
    ``settings.voxels`` per side) that pass :func:`carve`, above the supporting ``plane``
    (``[nx, ny, nz, d]``, ``n`` up, when given), their largest 6-connected piece, and of it the voxels
    with an empty 6-neighbour. Empty when nothing is carved."""
    from scipy import ndimage

    n = int(settings.voxels)
    step = 2 * half_size / n
    ax = (np.arange(n) + 0.5) * step - half_size
    grid = np.stack(np.meshgrid(ax, ax, ax, indexing="ij"), -1).reshape(-1, 3) + np.asarray(center)[None]
    occ = carve(grid, cams, masks, settings.vote, settings.view_share)
    if plane is not None:
        nrm, d = np.asarray(plane[:3], np.float64), float(plane[3])
        occ &= grid @ nrm + d > 0.5 * step
    occ = occ.reshape(n, n, n)
    lab, k = ndimage.label(occ)
    if k == 0:
        return np.zeros((0, 3))
    if k > 1:
        occ = lab == 1 + int(np.argmax(ndimage.sum(occ, lab, index=np.arange(1, k + 1))))
    shell = occ & ~ndimage.binary_erosion(occ)
    return grid.reshape(n, n, n, 3)[shell]


def point_colors(points: np.ndarray, cams: list[Camera], images: list[np.ndarray]) -> np.ndarray:
    """[P, 3] uint8: each point's mean colour over the frames in which it is visible (in the image, and
    in front of the z-buffer of the points themselves, 1-px cells closed over holes); grey where none."""
    R, T, f, pp = _stack(cams)
    X = torch.as_tensor(points, dtype=torch.float32)
    uv, z = project(X, R, T, f, pp)
    H, W = images[0].shape[:2]
    ext = (z.amax(1) - z.amin(1)).clamp_min(1e-9)  # [K] depth range of the points per frame
    zb = zbuffer(uv, z, (H, W), cell=1, fill=2, margin=float(0.02 * ext.max()))
    u, v = uv[..., 0], uv[..., 1]
    ok = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    pu, pv = torch.floor(u).long().clamp(0, W - 1), torch.floor(v).long().clamp(0, H - 1)
    kk = torch.arange(len(cams))[:, None]
    seen = ok & (z <= zb[kk, pv, pu] + 0.02 * ext[:, None])
    img = torch.as_tensor(np.stack(images), dtype=torch.float32)  # [K, H, W, 3]
    col = img[kk, pv, pu] * seen[..., None]  # [K, P, 3]
    cnt = seen.sum(0)
    mean = col.sum(0) / cnt.clamp_min(1)[:, None]
    mean[cnt == 0] = 128.0
    return mean.round().clamp(0, 255).to(torch.uint8).numpy()
