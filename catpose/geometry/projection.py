"""Projection into CO3D-convention cameras, a per-pixel point z-buffer and visibility, batched over K
frames (torch). catpose's camera convention is CO3D's (PyTorch3D's): ``X_cam = X @ R + T`` (row
vectors), +X left, +Y up, +Z forward; :mod:`catpose.data.camera` has the camera type.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def project(X: torch.Tensor, R: torch.Tensor, T: torch.Tensor, focal_px: torch.Tensor, pp_px: torch.Tensor):
    """CO3D-convention projection of points ``X`` [N, 3] into K cameras.

    R [K, 3, 3], T [K, 3] (row vectors: ``X_cam = X @ R + T``), focal_px, pp_px [K, 2] in pixels.
    Returns uv [K, N, 2] (``u = p_x − f_x·X/Z``, ``v = p_y − f_y·Y/Z``) and z [K, N].
    """
    Xc = torch.einsum("nd,kde->kne", X, R) + T[:, None]
    z = Xc[..., 2]
    uv = pp_px[:, None] - focal_px[:, None] * Xc[..., :2] / z.clamp_min(1e-9)[..., None]
    return uv, z


def zbuffer(uv: torch.Tensor, z: torch.Tensor, image_size: tuple[int, int], cell: int | torch.Tensor = 1,
            fill: int = 2, margin: float = float("inf")) -> torch.Tensor:
    """Per-cell minimum depth of points splatted into a grid of ``cell``-pixel cells.

    uv, z: [K, P, 2], [K, P]. Returns [K, H/cell, W/cell], ``inf`` where no point lands. Holes between
    sparse points are closed with the minimum of the 3x3 neighbours, ``fill`` times: empty cells, and
    cells whose depth is more than ``margin`` behind that minimum (the far side showing through a
    hole in the near side). Other cells keep their own depth, so slanted surfaces do not hide
    themselves.

    ``cell`` is one size for all K frames, or a [K] integer tensor with a size per frame: the buffer
    then has the shape of the smallest cell, and each frame's cells outside its own ``H/cell × W/cell``
    grid stay ``inf`` (frame k's buffer is the one a call with ``cell=cell[k]`` gives, padded).
    """
    K = uv.shape[0]
    H, W = image_size
    per_frame = torch.is_tensor(cell)
    if per_frame:
        ck = cell.to(uv.device).long()
        hk, wk = (H + ck - 1) // ck, (W + ck - 1) // ck  # [K]
        h, w = int(hk.max()), int(wk.max())
        c = ck.to(uv.dtype)[:, None]
        inside = ((torch.arange(h, device=uv.device)[None, :, None] < hk[:, None, None])
                  & (torch.arange(w, device=uv.device)[None, None, :] < wk[:, None, None]))
        hmax, wmax = hk[:, None], wk[:, None]
    else:
        h, w = (H + cell - 1) // cell, (W + cell - 1) // cell
        c, hmax, wmax = cell, h, w
    cu = torch.floor(uv[..., 0] / c).long()
    cv = torch.floor(uv[..., 1] / c).long()
    ok = (cu >= 0) & (cu < wmax) & (cv >= 0) & (cv < hmax) & (z > 0)
    flat = torch.full((K, h * w), float("inf"), dtype=z.dtype, device=z.device)
    idx = (cv * w + cu).clamp(0, h * w - 1)
    zz = torch.where(ok, z, torch.full_like(z, float("inf")))
    flat.scatter_reduce_(1, idx, zz, reduce="amin", include_self=True)
    buf = flat.view(K, h, w)
    for _ in range(fill):
        grown = -F.max_pool2d(-buf[:, None], 3, stride=1, padding=1)[:, 0]
        hole = torch.isinf(buf) | (buf > grown + margin)
        if per_frame:
            hole &= inside
        if uv.device.type != "cuda" and not hole.any():  # a GPU fills all `fill` times: no host sync
            break
        buf = torch.where(hole, grown, buf)
    return buf


def visibility(uv: torch.Tensor, z: torch.Tensor, image_size: tuple[int, int], zbuf: torch.Tensor,
               tol: float, cell: int | torch.Tensor = 1, masks: torch.Tensor | None = None,
               depths: torch.Tensor | None = None) -> torch.Tensor:
    """Which of the projected vertices are visible: [K, N] bool.

    ``cell``: the z-buffer's cell size, one for all frames or a [K] integer tensor (see :func:`zbuffer`).

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
    c = cell.to(uv.device).long()[:, None] if torch.is_tensor(cell) else cell
    zb = zbuf[k, (pv // c).clamp(0, zbuf.shape[1] - 1), (pu // c).clamp(0, zbuf.shape[2] - 1)]
    vis &= z <= zb + tol
    if masks is not None:
        vis &= masks[k, pv, pu] > 0.5
    if depths is not None:
        d = depths[k, pv, pu]
        vis &= (d <= 0) | ((z - d).abs() <= tol)
    return vis
