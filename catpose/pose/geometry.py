"""Rotations for pose estimation: viewpoint angles, rotation grids, errors. Pure numpy/torch.

catpose's camera rotation ``R`` is CO3D's (PyTorch3D's): ``X_cam = X_obj @ R + T`` with camera axes
+X left, +Y up, +Z forward (:mod:`catpose.data.camera`). PASCAL3D+ and ObjectNet3D describe a view by
azimuth ``a``, elevation ``e`` and in-plane rotation ``θ`` of a camera at distance ``d`` looking at the
object's origin: camera centre ``C = d·(cos e sin a, −cos e cos a, sin e)``, world→camera rotation
``R_p = R_z(θ)·R_x(e − π/2)·R_z(−a)`` in an OpenGL-like camera (+X right, +Y up, looking along −Z;
their image ``u = p_x + f·X/(−Z)``, ``v = p_y − f·Y/(−Z)`` after the in-plane turn by ``θ``). The two
cameras differ by ``diag(−1, 1, −1)``, so ``R = R_pᵀ · diag(−1, 1, −1)``.

The error between two rotations is the geodesic angle ``arccos((tr(R₁ᵀR₂) − 1)/2)``; Acc@π/6 and
Acc@π/18 are the shares of errors below 30° and 10°. ``geodesic_deg`` and the robust frame fit
``fit_frame`` are the alignment stage's (:mod:`catpose.align.evaluate`), re-exported here.
"""

from __future__ import annotations

import numpy as np
import torch

from catpose.align.evaluate import fit_frame, geodesic_deg

__all__ = ["fit_frame", "geodesic_deg", "pose_metrics", "rotation_to_viewpoint", "so3_grid", "viewpoint_to_rotation"]

_GL_FROM_CO3D = np.diag([-1.0, 1.0, -1.0])


def _rz(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def _rx(a: np.ndarray) -> np.ndarray:
    c, s = np.cos(a), np.sin(a)
    o, z = np.ones_like(a), np.zeros_like(a)
    return np.stack([np.stack([o, z, z], -1), np.stack([z, c, -s], -1), np.stack([z, s, c], -1)], -2)


def viewpoint_to_rotation(azimuth, elevation, theta, degrees: bool = True) -> np.ndarray:
    """PASCAL3D+/ObjectNet3D viewpoint angles (batched) → catpose camera rotations ``R`` [..., 3, 3]."""
    a, e, t = (np.asarray(x, np.float64) for x in (azimuth, elevation, theta))
    if degrees:
        a, e, t = np.radians(a), np.radians(e), np.radians(t)
    Rp = _rz(t) @ _rx(e - np.pi / 2) @ _rz(-a)
    return np.swapaxes(Rp, -1, -2) @ _GL_FROM_CO3D


def rotation_to_viewpoint(R, degrees: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """catpose camera rotations [..., 3, 3] → (azimuth, elevation, theta), the inverse of
    :func:`viewpoint_to_rotation` (azimuth in [0, 360), elevation in [−90, 90], theta in (−180, 180])."""
    R = np.asarray(R, np.float64)
    Rp = _GL_FROM_CO3D @ np.swapaxes(R, -1, -2)
    back = Rp[..., 2, :]  # the camera's +Z (pointing back at the camera) in object coordinates = C / d
    a = np.arctan2(back[..., 0], -back[..., 1])
    e = np.arcsin(np.clip(back[..., 2], -1, 1))
    M = Rp @ np.swapaxes(_rx(e - np.pi / 2) @ _rz(-a), -1, -2)  # = R_z(θ)
    t = np.arctan2(M[..., 1, 0], M[..., 0, 0])
    if degrees:
        return np.degrees(a) % 360, np.degrees(e), np.degrees(t)
    return a % (2 * np.pi), e, t


def pose_metrics(errors_deg) -> dict:
    """Acc@π/6, Acc@π/18 and median geodesic error of a list of errors (NaN = failed → counted wrong)."""
    e = np.asarray(errors_deg, np.float64)
    if len(e) == 0:
        return {"n": 0, "acc_pi_6": float("nan"), "acc_pi_18": float("nan"), "median_deg": float("nan")}
    filled = np.where(np.isfinite(e), e, 180.0)
    return {"n": len(e), "acc_pi_6": float((filled < 30).mean()), "acc_pi_18": float((filled < 10).mean()),
            "median_deg": float(np.median(filled))}


def so3_grid(n: int) -> torch.Tensor:
    """``n`` rotations [n, 3, 3] spread evenly over SO(3) (super-Fibonacci spirals, Alexa, CVPR 2022).

    Written here: none of the installed libraries (roma, kornia, scipy) makes a deterministic, even
    SO(3) grid of arbitrary size.
    """
    phi, psi = np.sqrt(2.0), 1.533751168755204288118041
    s = np.arange(n) + 0.5
    r, R = np.sqrt(s / n), np.sqrt(1 - s / n)
    alpha, beta = 2 * np.pi * s / phi, 2 * np.pi * s / psi
    q = np.stack([r * np.sin(alpha), r * np.cos(alpha), R * np.sin(beta), R * np.cos(beta)], -1)  # x y z w
    import roma

    return roma.unitquat_to_rotmat(torch.as_tensor(q, dtype=torch.float32))
