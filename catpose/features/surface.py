"""Surface features ``S = {V, F}`` of one video, as pure batched tensor functions plus one driver.

* ``V``: N vertices, from the sequence's point cloud after statistical outlier removal, by farthest
  point sampling (``fpsample``; pytorch3d's ``sample_farthest_points`` when installed).
* ``F``: for each of K frames, ``f_i^k`` = the backbone's feature at the projection of ``v_i`` in frame
  k, bilinearly sampled, kept only where ``v_i`` is visible in frame k: in front of the camera, inside
  the image and the mask, and not behind the surface by a z-buffer test against the dense cloud
  (and against the frame's depth map when it has one).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from catpose.data.co3d import Co3dSequence
from catpose.data.pointcloud import PointCloud
from catpose.errors import DataFormatError
from catpose.features.backbones import sample_features

# --------------------------------------------------------------------------------------------------
# vertices


def remove_outliers(points: np.ndarray, k: int = 16, std_ratio: float = 2.0) -> np.ndarray:
    """Statistical outlier removal: keep points whose mean distance to their k nearest neighbours is
    at most ``mean + std_ratio · std`` of that statistic over the cloud. Returns a boolean mask."""
    from scipy.spatial import cKDTree

    if len(points) <= k + 1:
        return np.ones(len(points), dtype=bool)
    d, _ = cKDTree(points).query(points, k=k + 1)
    md = d[:, 1:].mean(1)
    return md <= md.mean() + std_ratio * md.std()


def farthest_point_sample(points: np.ndarray, n: int) -> np.ndarray:
    """Indices of ``n`` farthest-point samples (deterministic start at index 0)."""
    if len(points) <= n:
        return np.arange(len(points))
    try:
        from pytorch3d.ops import sample_farthest_points  # optional extra

        _, idx = sample_farthest_points(torch.as_tensor(points)[None].float(), K=n, random_start_point=False)
        return idx[0].numpy()
    except ImportError:
        import fpsample

        h = min(7, int(np.log2(len(points))))  # the k-d tree's height must leave a point per leaf
        return np.sort(fpsample.bucket_fps_kdline_sampling(points.astype(np.float32), n, h=h, start_idx=0))


# --------------------------------------------------------------------------------------------------
# projection and visibility (batched over K frames)


def project(X: torch.Tensor, R: torch.Tensor, T: torch.Tensor, focal_px: torch.Tensor, pp_px: torch.Tensor):
    """CO3D-convention projection of points ``X`` [N, 3] into K cameras.

    R [K, 3, 3], T [K, 3] (row vectors: ``X_cam = X @ R + T``), focal_px, pp_px [K, 2] in pixels.
    Returns uv [K, N, 2] (``u = p_x − f_x·X/Z``, ``v = p_y − f_y·Y/Z``) and z [K, N].
    """
    Xc = torch.einsum("nd,kde->kne", X, R) + T[:, None]
    z = Xc[..., 2]
    uv = pp_px[:, None] - focal_px[:, None] * Xc[..., :2] / z.clamp_min(1e-9)[..., None]
    return uv, z


def zbuffer(uv: torch.Tensor, z: torch.Tensor, image_size: tuple[int, int], cell: int = 1,
            fill: int = 2, margin: float = float("inf")) -> torch.Tensor:
    """Per-cell minimum depth of points splatted into a grid of ``cell``-pixel cells.

    uv, z: [K, P, 2], [K, P]. Returns [K, H/cell, W/cell], ``inf`` where no point lands. Holes between
    sparse points are closed with the minimum of the 3x3 neighbours, ``fill`` times: empty cells, and
    cells whose depth is more than ``margin`` behind that minimum (the far side showing through a
    hole in the near side). Other cells keep their own depth, so slanted surfaces do not hide
    themselves.
    """
    K = uv.shape[0]
    H, W = image_size
    h, w = (H + cell - 1) // cell, (W + cell - 1) // cell
    cu = torch.floor(uv[..., 0] / cell).long()
    cv = torch.floor(uv[..., 1] / cell).long()
    ok = (cu >= 0) & (cu < w) & (cv >= 0) & (cv < h) & (z > 0)
    flat = torch.full((K, h * w), float("inf"), dtype=z.dtype, device=z.device)
    idx = (cv * w + cu).clamp(0, h * w - 1)
    zz = torch.where(ok, z, torch.full_like(z, float("inf")))
    flat.scatter_reduce_(1, idx, zz, reduce="amin", include_self=True)
    buf = flat.view(K, h, w)
    for _ in range(fill):
        grown = -F.max_pool2d(-buf[:, None], 3, stride=1, padding=1)[:, 0]
        hole = torch.isinf(buf) | (buf > grown + margin)
        if not hole.any():
            break
        buf = torch.where(hole, grown, buf)
    return buf


def visibility(uv: torch.Tensor, z: torch.Tensor, image_size: tuple[int, int], zbuf: torch.Tensor,
               tol: float, cell: int = 1, masks: torch.Tensor | None = None,
               depths: torch.Tensor | None = None) -> torch.Tensor:
    """Which of the projected vertices are visible: [K, N] bool.

    Visible = in front of the camera, inside the image, not more than ``tol`` behind the z-buffer
    of the dense cloud, inside the mask (> 0.5) when ``masks`` [K, H, W] is given, and within ``tol``
    of the depth map when ``depths`` [K, H, W] is given (0 = unknown depth, not used).
    """
    H, W = image_size
    u, v = uv[..., 0], uv[..., 1]
    vis = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    pu = torch.floor(u).long().clamp(0, W - 1)
    pv = torch.floor(v).long().clamp(0, H - 1)
    k = torch.arange(uv.shape[0], device=uv.device)[:, None]
    zb = zbuf[k, (pv // cell).clamp(0, zbuf.shape[1] - 1), (pu // cell).clamp(0, zbuf.shape[2] - 1)]
    vis &= z <= zb + tol
    if masks is not None:
        vis &= masks[k, pv, pu] > 0.5
    if depths is not None:
        d = depths[k, pv, pu]
        vis &= (d <= 0) | ((z - d).abs() <= tol)
    return vis


# --------------------------------------------------------------------------------------------------
# the per-video result


@dataclass
class SurfaceFeatures:
    """``S = {V, F}`` of one video."""

    sequence: str
    vertices: np.ndarray  # [N, 3] float32, the sequence's world frame
    features: np.ndarray  # [K, N, C] float16, zero where not visible
    visible: np.ndarray  # [K, N] bool
    frame_numbers: np.ndarray  # [K]
    normals: np.ndarray | None = None  # [N, 3]
    meta: dict = field(default_factory=dict)

    def to_bytes(self) -> bytes:
        buf = io.BytesIO()
        arrays = dict(vertices=self.vertices, features=self.features, visible=self.visible,
                      frame_numbers=self.frame_numbers,
                      meta=np.frombuffer(json.dumps({"sequence": self.sequence, **self.meta}).encode(), np.uint8))
        if self.normals is not None:
            arrays["normals"] = self.normals
        np.savez(buf, **arrays)
        return buf.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<bytes>") -> SurfaceFeatures:
        try:
            z = np.load(io.BytesIO(data))
            meta = json.loads(z["meta"].tobytes().decode())
            return cls(meta.pop("sequence"), z["vertices"], z["features"], z["visible"], z["frame_numbers"],
                       z["normals"] if "normals" in z else None, meta)
        except Exception as e:
            raise DataFormatError(source, f"not a catpose surface-feature file ({type(e).__name__}: {e})") from e

    def check(self, source: str, vertices: int | None = None, frames: int | None = None) -> None:
        """Raises :class:`DataFormatError` naming ``source`` unless the arrays have consistent shapes
        (and ``vertices``/``frames`` rows when given) and finite vertices."""
        N = len(self.vertices)
        K = len(self.frame_numbers)
        problems = []
        if self.vertices.ndim != 2 or self.vertices.shape[1:] != (3,):
            problems.append(f"vertices has shape {self.vertices.shape}, expected (N, 3)")
        if self.features.ndim != 3 or self.features.shape[:2] != (K, N):
            problems.append(f"features has shape {self.features.shape}, expected ({K}, {N}, C)")
        if self.visible.shape != (K, N):
            problems.append(f"visible has shape {self.visible.shape}, expected ({K}, {N})")
        if vertices is not None and N != vertices:
            problems.append(f"{N} vertices, the manifest says {vertices}")
        if frames is not None and K != frames:
            problems.append(f"{K} frames, the manifest says {frames}")
        if not problems and not np.isfinite(self.vertices).all():
            problems.append("vertices are not finite")
        if problems:
            raise DataFormatError(source, "; ".join(problems), field="features")


def sequence_vertices(cloud: PointCloud, n: int, outlier_k: int = 16, outlier_std: float = 2.0):
    """Cleans the cloud and picks N vertices; returns (vertices, normals or None, clean dense points)."""
    pts = cloud.points.astype(np.float64)
    keep = remove_outliers(pts, outlier_k, outlier_std)
    dense = pts[keep]
    if len(dense) < 4:
        raise DataFormatError("pointcloud.ply", f"only {len(dense)} points left after outlier removal")
    idx = farthest_point_sample(dense, n)
    normals = cloud.normals[keep][idx].astype(np.float32) if cloud.normals is not None else None
    return dense[idx].astype(np.float32), normals, dense.astype(np.float32)


@torch.no_grad()
def compute_surface_features(seq: Co3dSequence, backbone, n_vertices: int = 1000, n_frames: int = 8,
                             batch: int = 8, device: str = "cpu", outlier_k: int = 16, outlier_std: float = 2.0,
                             vis_tol: float = 0.05, max_dense: int = 20000) -> SurfaceFeatures:
    """The surface features of one sequence (frames evenly subsampled to ``n_frames``)."""
    cloud = seq.load_point_cloud()
    V, normals, dense = sequence_vertices(cloud, n_vertices, outlier_k, outlier_std)
    if len(dense) > max_dense:
        dense = dense[np.random.default_rng(0).choice(len(dense), max_dense, replace=False)]
    dense = np.concatenate([dense, V])  # every vertex lies on the z-buffered surface itself
    diam = float(np.linalg.norm(dense.max(0) - dense.min(0)))
    frames = seq.subsample(n_frames)
    cams = [f.camera for f in frames]
    sizes = {c.image_size for c in cams}
    if len(sizes) != 1:
        raise DataFormatError(seq.source, f"sequence '{seq.name}' mixes image sizes {sorted(sizes)}")
    (hw,) = sizes
    t = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float32, device=device)
    R, T = t([c.R for c in cams]), t([c.T for c in cams])
    fpx, ppx = t([c.focal_px for c in cams]), t([c.principal_point_px for c in cams])
    Vt = torch.as_tensor(V, device=device)
    uv, z = project(Vt, R, T, fpx, ppx)
    duv, dz = project(torch.as_tensor(dense, device=device), R, T, fpx, ppx)
    zb = zbuffer(duv, dz, hw, margin=2 * vis_tol * diam)
    masks = t([f.load_mask() for f in frames]) if all(f.mask_path is not None for f in frames) else None
    depths = None
    if any(f.depth_path is not None for f in frames):  # a frame without depth: no depth test there (0)
        depths = t([f.load_depth() if f.depth_path is not None else np.zeros(hw, np.float32) for f in frames])
    vis = visibility(uv, z, hw, zb, tol=vis_tol * diam, masks=masks, depths=depths)
    if not bool(vis.any()):  # all-zero features must never pass as a result
        raise DataFormatError(seq.source, f"sequence '{seq.name}': no vertex of the point cloud is visible in any of "
                              f"its {len(frames)} frames (wrong cameras, masks or point cloud?)", field="viewpoint")
    feats = []
    for s in range(0, len(frames), batch):
        imgs = torch.as_tensor(np.stack([f.load_image() for f in frames[s:s + batch]]), device=device)
        imgs = imgs.permute(0, 3, 1, 2).float() / 255.0
        fmap = backbone(imgs)
        feats.append(sample_features(fmap.float(), uv[s:s + batch], hw))
    Fk = torch.cat(feats) * vis[..., None]
    return SurfaceFeatures(
        sequence=seq.name, vertices=V, features=Fk.half().cpu().numpy(), visible=vis.cpu().numpy(),
        frame_numbers=np.array([f.frame_number for f in frames]), normals=normals,
        meta={"backbone": getattr(backbone, "describe", lambda: str(backbone))(), "image_size": list(hw),
              "diameter": diam},
    )

