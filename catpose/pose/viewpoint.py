"""Viewpoint angles (PASCAL3D+/ObjectNet3D azimuth, elevation, in-plane rotation) ↔ catpose camera
rotations. Pure numpy, batched.

catpose's camera rotation ``R`` is CO3D's (PyTorch3D's): ``X_cam = X_obj @ R + T`` with camera axes
+X left, +Y up, +Z forward (:mod:`catpose.data.camera`). PASCAL3D+ and ObjectNet3D describe a view by
azimuth ``a``, elevation ``e`` and in-plane rotation ``θ`` of a camera at distance ``d`` looking at the
object's origin: camera centre ``C = d·(cos e sin a, −cos e cos a, sin e)``, world→camera rotation
``R_p = R_z(θ)·R_x(e − π/2)·R_z(−a)`` in an OpenGL-like camera (+X right, +Y up, looking along −Z;
their image ``u = p_x + f·X/(−Z)``, ``v = p_y − f·Y/(−Z)`` after the in-plane turn by ``θ``). The two
cameras differ by ``diag(−1, 1, −1)``, so ``R = R_pᵀ · diag(−1, 1, −1)``.

Errors, metrics and the SO(3) grid are :mod:`catpose.geometry`'s.
"""

from __future__ import annotations

import numpy as np

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
