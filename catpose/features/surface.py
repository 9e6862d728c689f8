"""Surface features ``S = {V, F}`` of one video, as pure batched tensor functions plus one driver.

* ``V``: N vertices, from the sequence's point cloud cleaned to the object
  (:func:`catpose.data.cleaning.clean_object_points`: a vote of the masks over the frames, or without
  masks the supporting plane and what lies outside the common view removed) and after statistical
  outlier removal, by farthest point sampling (``fpsample``; pytorch3d's ``sample_farthest_points`` when
  installed).
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

from catpose.data.cleaning import CleanSettings, clean_object_points, view_size
from catpose.data.co3d import Co3dSequence
from catpose.data.pointcloud import PointCloud
from catpose.data.quality import bad_masks, mask_agreement, pick_frames
from catpose.errors import DataFormatError
from catpose.features.backbones import sample_features
from catpose.geometry import farthest_point_sample, project, remove_outliers, visibility, zbuffer

DEFAULT_CLEAN = CleanSettings()  # frozen: one shared default

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
        arrays = dict(
            vertices=self.vertices,
            features=self.features,
            visible=self.visible,
            frame_numbers=self.frame_numbers,
            meta=np.frombuffer(json.dumps({"sequence": self.sequence, **self.meta}).encode(), np.uint8),
        )
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
            raise DataFormatError(source, f"not a catpose surface-feature file ({type(e).__name__}: "
                                          f"{e})") from e

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


def clean_sequence_cloud(
    seq: Co3dSequence, settings: CleanSettings = DEFAULT_CLEAN
) -> tuple[PointCloud, dict]:
    """The sequence's cloud with only the object's points (see :mod:`catpose.data.cleaning`) and the
    cleaning's summary (share removed by each step). Masks are used when every frame has one.
    Raises :class:`~catpose.errors.CleaningError` when too little is left."""
    cloud = seq.load_point_cloud()
    if settings.mode == "off":
        return cloud, {"mode": "off", "points": len(cloud), "kept": len(cloud), "removed_share": 0.0}
    frames = seq.subsample(settings.frames)
    has_masks = all(f.mask_path is not None for f in frames)
    masks = [f.load_mask() for f in frames] if has_masks and settings.mode != "geometry" else None
    res = clean_object_points(cloud.points, [f.camera for f in frames], masks, settings,
                              source=f"{seq.point_cloud_path} (sequence '{seq.name}')")
    k = res.keep
    cleaned = PointCloud(cloud.points[k], None if cloud.colors is None else cloud.colors[k],
                         None if cloud.normals is None else cloud.normals[k])
    return cleaned, res.summary()


@torch.no_grad()
def compute_surface_features(
    seq: Co3dSequence,
    backbone,
    n_vertices: int = 1000,
    n_frames: int = 8,
    batch: int = 8,
    device: str = "cpu",
    outlier_k: int = 16,
    outlier_std: float = 2.0,
    vis_tol: float = 0.05,
    max_dense: int = 20000,
    clean: CleanSettings = DEFAULT_CLEAN,
) -> SurfaceFeatures:
    """The surface features of one sequence (frames evenly subsampled to ``n_frames``), on its cloud
    cleaned by ``clean`` (``CleanSettings(mode="off")``: the cloud as it is)."""
    cloud, cleaning = clean_sequence_cloud(seq, clean)
    V, normals, dense = sequence_vertices(cloud, n_vertices, outlier_k, outlier_std)
    if len(dense) > max_dense:
        dense = dense[np.random.default_rng(0).choice(len(dense), max_dense, replace=False)]
    dense = np.concatenate([dense, V])  # every vertex lies on the z-buffered surface itself
    diam = float(np.linalg.norm(dense.max(0) - dense.min(0)))
    frames, images, blank = pick_frames(seq, n_frames)  # an all-black or near-constant frame is replaced
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
    mask_np = [f.load_mask() for f in frames] if all(f.mask_path is not None for f in frames) else None
    masks = t(mask_np) if mask_np is not None else None
    checked = dense[np.random.default_rng(1).choice(len(dense), min(len(dense), 3000), replace=False)]
    bad = (
        bad_masks([mask_agreement(checked, f, m) for f, m in zip(frames, mask_np)], seq.name)
        if mask_np
        else {}
    )
    depths = None
    if any(f.depth_path is not None for f in frames):  # a frame without depth: no depth test there (0)
        depths = t([f.load_depth() if f.depth_path is not None else np.zeros(hw, np.float32) for f in frames])
    vis = visibility(uv, z, hw, zb, tol=vis_tol * diam, masks=masks, depths=depths)
    if not bool(vis.any()):  # all-zero features must never pass as a result
        raise DataFormatError(seq.source, f"sequence '{seq.name}': no vertex of the point cloud is visible "
                                          "in any of "
                              f"its {len(frames)} frames (wrong cameras, masks or point "
                              "cloud?)", field="viewpoint")
    feats = []
    for s in range(0, len(frames), batch):
        imgs = torch.as_tensor(np.stack(images[s:s + batch]), device=device)
        imgs = imgs.permute(0, 3, 1, 2).float() / 255.0
        fmap = backbone(imgs)
        feats.append(sample_features(fmap.float(), uv[s:s + batch], hw))
    Fk = torch.cat(feats) * vis[..., None]
    return SurfaceFeatures(
        sequence=seq.name, vertices=V, features=Fk.half().cpu().numpy(), visible=vis.cpu().numpy(),
        frame_numbers=np.array([f.frame_number for f in frames]), normals=normals,
        meta={"backbone": getattr(backbone, "describe", lambda: str(backbone))(), "image_size": list(hw),
              "diameter": diam, "cleaning": cleaning, "view_size": view_size([f.camera for f in seq.frames]),
              "cloud": seq.cloud_source, "blank_frames": blank, "bad_masks": bad},
    )

