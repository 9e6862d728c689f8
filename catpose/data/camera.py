"""catpose's one camera type, in exactly CO3D's (PyTorch3D's) convention. Torch-free.

Conventions (CO3D v2 ``viewpoint`` = PyTorch3D ``PerspectiveCameras(in_ndc=True)``):

* Extrinsics, row vectors: ``X_cam = X_world @ R + T``. Camera axes: +X left, +Y up, +Z forward.
* Intrinsics in NDC: ``x_ndc = f_x · X/Z + p_x``, ``y_ndc = f_y · Y/Z + p_y``; NDC +x points left and
  +y up, so the image's left/top edges are at positive NDC.
* ``intrinsics_format`` says how NDC maps to pixels. With ``half = (W/2, H/2)``:
  ``ndc_norm_image_bounds``: ``s = half`` per axis (each image side spans [-1, 1]);
  ``ndc_isotropic``: ``s = min(half)`` on both axes (the shorter side spans [-1, 1]).
  Then ``f_px = f_ndc · s`` and ``p_px = half − p_ndc · s``, and a point projects to pixel
  ``u = p_px,x − f_px,x · X/Z``, ``v = p_px,y − f_px,y · Y/Z``.
* Pixel coordinates are continuous with the image spanning ``[0, W] × [0, H]``: the centre of pixel
  (column i, row j) is ``(i + 0.5, j + 0.5)`` — COLMAP's convention, and PyTorch3D's screen space.

OpenCV/COLMAP cameras (+X right, +Y down, +Z forward, column vectors ``x_cam = R x + t``) relate by
``R_cv = diag(-1, -1, 1) · Rᵀ`` and ``t_cv = diag(-1, -1, 1) · T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from catpose.data.types import INTRINSICS_FORMATS, ViewpointAnnotation

_FLIP_XY = np.diag([-1.0, -1.0, 1.0])


@dataclass
class Camera:
    """One perspective camera: CO3D ``viewpoint`` fields plus the image size it refers to."""

    R: np.ndarray  # (3, 3) row-vector convention
    T: np.ndarray  # (3,)
    focal_length: np.ndarray  # (2,) NDC
    principal_point: np.ndarray  # (2,) NDC
    image_size: tuple[int, int]  # (H, W)
    intrinsics_format: str = "ndc_isotropic"

    def __post_init__(self) -> None:
        self.R = np.asarray(self.R, dtype=np.float64).reshape(3, 3)
        self.T = np.asarray(self.T, dtype=np.float64).reshape(3)
        self.focal_length = np.asarray(self.focal_length, dtype=np.float64).reshape(2)
        self.principal_point = np.asarray(self.principal_point, dtype=np.float64).reshape(2)
        self.image_size = (int(self.image_size[0]), int(self.image_size[1]))
        if self.intrinsics_format not in INTRINSICS_FORMATS:
            raise ValueError(f"intrinsics_format must be one of {INTRINSICS_FORMATS}, got "
                             f"{self.intrinsics_format!r}")

    # ---------------------------------------------------------------- construction / conversion
    @classmethod
    def from_viewpoint(cls, vp: ViewpointAnnotation, image_size: tuple[int, int]) -> Camera:
        return cls(vp.R, vp.T, vp.focal_length, vp.principal_point, image_size, vp.intrinsics_format)

    def to_viewpoint(self) -> ViewpointAnnotation:
        return ViewpointAnnotation(
            R=tuple(tuple(float(x) for x in row) for row in self.R),
            T=tuple(float(x) for x in self.T),
            focal_length=tuple(float(x) for x in self.focal_length),
            principal_point=tuple(float(x) for x in self.principal_point),
            intrinsics_format=self.intrinsics_format,
        )

    def _ndc_scale(self) -> np.ndarray:
        half = np.array([self.image_size[1], self.image_size[0]], dtype=np.float64) / 2.0
        return half if self.intrinsics_format == "ndc_norm_image_bounds" else np.full(2, half.min())

    @property
    def focal_px(self) -> np.ndarray:
        """(f_x, f_y) in pixels."""
        return self.focal_length * self._ndc_scale()

    @property
    def principal_point_px(self) -> np.ndarray:
        """(c_x, c_y) in pixels (continuous, image spans [0, W] x [0, H])."""
        half = np.array([self.image_size[1], self.image_size[0]], dtype=np.float64) / 2.0
        return half - self.principal_point * self._ndc_scale()

    @property
    def K(self) -> np.ndarray:
        """3x3 pixel intrinsics for the OpenCV/COLMAP axes (see :meth:`to_opencv`)."""
        f, c = self.focal_px, self.principal_point_px
        return np.array([[f[0], 0, c[0]], [0, f[1], c[1]], [0, 0, 1.0]])

    def to_opencv(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(K, R_cv, t_cv) with ``x_cam_cv = R_cv @ x_world + t_cv`` and ``uv ~ K @ x_cam_cv``."""
        return self.K, _FLIP_XY @ self.R.T, _FLIP_XY @ self.T

    @classmethod
    def from_opencv(
        cls, K: np.ndarray, R_cv: np.ndarray, t_cv: np.ndarray, image_size: tuple[int, int],
        intrinsics_format: str = "ndc_isotropic",
    ) -> Camera:
        """Inverse of :meth:`to_opencv`; ``K`` must have zero skew."""
        K = np.asarray(K, dtype=np.float64)
        R = (_FLIP_XY @ np.asarray(R_cv, dtype=np.float64)).T
        T = _FLIP_XY @ np.asarray(t_cv, dtype=np.float64).reshape(3)
        cam = cls(R, T, np.ones(2), np.zeros(2), image_size, intrinsics_format)
        s = cam._ndc_scale()
        half = np.array([image_size[1], image_size[0]], dtype=np.float64) / 2.0
        cam.focal_length = np.array([K[0, 0], K[1, 1]]) / s
        cam.principal_point = (half - np.array([K[0, 2], K[1, 2]])) / s
        return cam

    def to_pytorch3d(self, device: str = "cpu"):
        """A ``pytorch3d.renderer.PerspectiveCameras`` (needs the optional pytorch3d extra).

        PyTorch3D's NDC is isotropic, so ``ndc_norm_image_bounds`` intrinsics are converted first.
        """
        try:
            import torch
            from pytorch3d.renderer import PerspectiveCameras
        except ImportError as e:  # pragma: no cover - depends on the optional extra
            raise ImportError("Camera.to_pytorch3d needs pytorch3d: pip install 'catpose[pytorch3d]'") from e
        iso = self.with_intrinsics_format("ndc_isotropic")
        t = lambda a: torch.as_tensor(a, dtype=torch.float32, device=device)[None]
        return PerspectiveCameras(
            R=t(iso.R), T=t(iso.T), focal_length=t(iso.focal_length), principal_point=t(iso.principal_point),
            image_size=t(self.image_size), in_ndc=True, device=device,
        )

    def with_intrinsics_format(self, fmt: str) -> Camera:
        """The same camera with its intrinsics expressed in another NDC format."""
        out = Camera(self.R, self.T, self.focal_length, self.principal_point, self.image_size, fmt)
        s_new = out._ndc_scale()
        out.focal_length = self.focal_px / s_new
        half = np.array([self.image_size[1], self.image_size[0]], dtype=np.float64) / 2.0
        out.principal_point = (half - self.principal_point_px) / s_new
        return out

    def resized(self, new_size: tuple[int, int]) -> Camera:
        """The camera for the image resized to ``new_size`` = (H, W) (pixel intrinsics scale with it)."""
        sy, sx = new_size[0] / self.image_size[0], new_size[1] / self.image_size[1]
        K = self.K.copy()
        K[0] *= sx
        K[1] *= sy
        _, R_cv, t_cv = self.to_opencv()
        return Camera.from_opencv(K, R_cv, t_cv, new_size, self.intrinsics_format)

    # ---------------------------------------------------------------- geometry
    @property
    def center(self) -> np.ndarray:
        """Camera centre in world coordinates: ``C = −T Rᵀ``."""
        return -self.T @ self.R.T

    def world_to_camera(self, points: np.ndarray) -> np.ndarray:
        """(..., 3) world points to PyTorch3D camera coordinates."""
        return np.asarray(points, dtype=np.float64) @ self.R + self.T

    def project(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(..., 3) world points to (pixels (..., 2) as (u, v), depth Z (...,)).

        Points with Z <= 0 get NaN pixels.
        """
        X = self.world_to_camera(points)
        z = X[..., 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            xy = X[..., :2] / z[..., None]
        uv = self.principal_point_px - self.focal_px * xy
        uv[z <= 0] = np.nan
        return uv, z

    def unproject(self, uv: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """Pixels (..., 2) and depths Z (...,) to world points (..., 3)."""
        uv = np.asarray(uv, dtype=np.float64)
        depth = np.asarray(depth, dtype=np.float64)
        xy = (self.principal_point_px - uv) / self.focal_px * depth[..., None]
        X = np.concatenate([xy, depth[..., None]], axis=-1)
        return (X - self.T) @ self.R.T

    def pixel_rays(self) -> tuple[np.ndarray, np.ndarray]:
        """World-space ray origins and unit directions through every pixel centre, (H*W, 3) each,
        row-major (row j, column i)."""
        H, W = self.image_size
        v, u = np.mgrid[0:H, 0:W].astype(np.float64) + 0.5
        uv = np.stack([u.ravel(), v.ravel()], axis=-1)
        pts = self.unproject(uv, np.ones(len(uv)))
        c = self.center
        d = pts - c
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        return np.broadcast_to(c, d.shape).copy(), d


def look_at_rotation(eye: np.ndarray, target: np.ndarray, up: np.ndarray = (0.0, 0.0, 1.0)) -> np.ndarray:
    """Row-convention R (world→PyTorch3D camera) for a camera at ``eye`` looking at ``target``."""
    eye, target, up = (np.asarray(a, dtype=np.float64) for a in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(up, z)  # +X points left of the viewing direction when +Y is up
    if np.linalg.norm(x) < 1e-8:
        x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    # columns of R are the camera axes in world coordinates (X_cam = X_world @ R)
    return np.stack([x, y, z], axis=1)
