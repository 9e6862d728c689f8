"""The batched scoring functions of pose estimation (catpose.pose.estimate): pooled descriptors of crops,
per-vertex similarity maps of the learned features against the neural template, their samples at
projected vertices, the template's visibility, render-and-compare scores and the distinct coarse optima.
Pure tensor functions over a batch of B images (G grid rotations, N template vertices, C channels);
shapes in each docstring.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from catpose.geometry import project, visibility, zbuffer


def fit_translation(vertices: torch.Tensor, R: torch.Tensor, f: float | torch.Tensor, pp: torch.Tensor,
                    target: torch.Tensor, extent: float, iters: int = 3) -> torch.Tensor:
    """T [B, 3] that puts the projected bounding box of the template (rotated by R [B, 3, 3]) on the box
    with centre ``target`` (crop pixels) and longer side ``extent``. The camera: focal length ``f`` (a
    number, or [B] with one per pose) and principal point ``pp`` ([2], or [B, 2])."""
    B = R.shape[0]
    m = (vertices.amax(0) + vertices.amin(0)) / 2
    diam = (vertices.amax(0) - vertices.amin(0)).norm()
    dev = R.device
    if torch.is_tensor(f) and f.ndim > 0:  # a camera per pose
        d = (f.float() * diam / extent).to(dev).expand(B).clone()
        fc = f.float().to(dev)[:, None]  # [B, 1]
        fB = fc.expand(B, 2)
    else:
        d = torch.full((B,), float(f * diam / extent), device=dev)
        fc, fB = f, torch.full((B, 2), float(f), device=dev)
    f = fc
    aim = target.expand(B, 2).clone()
    for _ in range(iters):
        ray = torch.cat([(pp - aim) / f, torch.ones(B, 1, device=dev)], 1)
        T = d[:, None] * ray - m @ R
        uv, _ = project(vertices, R, T, fB, pp.expand(B, 2))
        lo, hi = uv.amin(1), uv.amax(1)
        d = d * (hi - lo).amax(1) / extent
        aim = aim - ((lo + hi) / 2 - target)
    ray = torch.cat([(pp - aim) / f, torch.ones(B, 1, device=dev)], 1)
    return d[:, None] * ray - m @ R


@torch.no_grad()
def descriptor(encoder, crops: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """Pooled features of crops [B, 3, S, S]: the feature map averaged to ``grid × grid``, flattened, unit."""
    return pooled_descriptor(encoder(crops).float(), grid)


def pooled_descriptor(fmap: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """:func:`descriptor` from feature maps fmap [B, D, h, w] already computed: [B, D·grid²], unit."""
    return F.normalize(F.adaptive_avg_pool2d(fmap.float(), grid).flatten(1), dim=1)


# ------------------------------------------------------------------------------ batched scoring
# The scores for B images × P poses each in one pass; tests/pose/reference.py keeps the one-image
# versions that tests/pose/test_batched.py compares these with.
def similarity_maps_batch(fmap: torch.Tensor, theta: torch.Tensor, beta: torch.Tensor | None, size: int):
    """s_j [B, N, size, size] and b [B, M, size, size] (M = 1, all −1, without β) from unit features
    fmap [B, D, h, w]: each crop's per-vertex similarity maps s_j = θ_j · f and background score
    b = β_m · f on a size × size grid."""
    f = F.normalize(
        F.interpolate(fmap.float(), size=(size, size), mode="bilinear", align_corners=False), dim=1
    )
    sim = torch.einsum("nd,bdhw->bnhw", theta.float(), f)
    bg = (torch.einsum("md,bdhw->bmhw", beta.float(), f) if beta is not None
          else torch.full((len(f), 1, size, size), -1.0, device=f.device))
    return sim, bg


def sample_similarity_batch(sims: torch.Tensor, uv: torch.Tensor, crop_size: int) -> torch.Tensor:
    """s_j of image b at the projections uv [B, P, N, 2] of its P poses (crop pixels), bilinear, from
    sims [B, N, S, S]: [B, P, N] (0 outside the crop)."""
    B, P, N, _ = uv.shape
    g = (uv / crop_size * 2 - 1).permute(0, 2, 1, 3).reshape(B * N, P, 1, 2)
    out = F.grid_sample(sims.reshape(B * N, 1, *sims.shape[-2:]), g.to(sims.dtype), mode="bilinear",
                        padding_mode="zeros", align_corners=False)  # [B·N, 1, P, 1]
    return out.view(B, N, P).transpose(1, 2)


def template_visibility_batch(uv: torch.Tensor, z: torch.Tensor, size: int, diameter: float, n_vertices: int,
                              valid: torch.Tensor | None = None) -> torch.Tensor:
    """The vertices that the template's own point z-buffer shows, for B images × P poses: uv [B, P, N, 2],
    z [B, P, N] → [B, P, N] bool. Each image's z-buffer cell comes from the mean projected box of its own P
    poses (of those ``valid`` [B, P] only, when given)."""
    B, P, N = z.shape
    area = (uv.amax(2) - uv.amin(2)).clamp(min=1).prod(-1)  # [B, P]
    span = area.mean(1) if valid is None else (area * valid).sum(1) / valid.sum(1).clamp_min(1)
    cell = (
        torch.round((span.double() / max(n_vertices / 4, 1)).sqrt()).clamp_min(1).long().repeat_interleave(P)
    )
    tol = 0.04 * diameter
    uvf, zf = uv.reshape(B * P, N, 2), z.reshape(B * P, N)
    zb = zbuffer(uvf, zf, (size, size), cell=cell, fill=2, margin=2 * tol)
    return visibility(uvf, zf, (size, size), zb, tol=tol, cell=cell).view(B, P, N)


def render_compare_batch(sims: torch.Tensor, vertices: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
                         f: torch.Tensor, pp: torch.Tensor, size: int, diameter: float,
                         valid: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """E(R, T) = mean over visible vertices V of s_j(π(t_j; R, T)) for B images × P poses each:
    sims [B, N, S, S] (image b's s_j), R [B, P, 3, 3], T [B, P, 3], image b's scoring camera f [B],
    pp [B, 2]; ``valid`` [B, P] (optional) names the poses that choose the z-buffer cell.
    Returns (E [B, P], vis [B, P, N]); E = −1 where too few vertices are visible."""
    B, P = R.shape[:2]
    N = len(vertices)
    cam = lambda x: x[:, None].expand(B, P, 2).reshape(B * P, 2)
    uv, z = project(
        vertices, R.reshape(B * P, 3, 3), T.reshape(B * P, 3), cam(f[:, None].expand(B, 2)), cam(pp)
    )
    uv, z = uv.view(B, P, N, 2), z.view(B, P, N)
    with torch.no_grad():
        vis = template_visibility_batch(uv, z, size, diameter, N, valid)
    s = sample_similarity_batch(sims, uv, size)
    n = vis.sum(2)
    E = (s * vis).sum(2) / n.clamp_min(1)
    return torch.where(n >= max(4, N // 20), E, torch.full_like(E, -1.0)), vis


def fit_translation_batch(vertices: torch.Tensor, R: torch.Tensor, f: torch.Tensor, pp: torch.Tensor,
                          target: torch.Tensor, extent: float) -> torch.Tensor:
    """:func:`fit_translation` for B images × P rotations R [B, P, 3, 3], image b's camera f [B], pp [B, 2]:
    T [B, P, 3]."""
    B, P = R.shape[:2]
    T = fit_translation(vertices, R.reshape(B * P, 3, 3), f.repeat_interleave(P), pp.repeat_interleave(P, 0),
                        target, extent)
    return T.view(B, P, 3)


def distinct_batch(grid: torch.Tensor, scores: torch.Tensor, k: int,
                   min_deg: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Each image's ``k`` best grid rotations that are at least ``min_deg`` apart (greedy
    non-maximum suppression written with tensors), from scores [B, G] of the
    rotations grid [G, 3, 3]: (indices [B, k], valid [B, k]). Where fewer than ``k`` exist, the
    rest repeat the best one and are not valid. Tensor ops only: ``k`` rounds, none per candidate."""
    cos_min = float(np.cos(np.radians(min_deg)))
    free = scores.clone()
    idx, ok = [], []
    for _ in range(k):
        best, i = free.max(1)  # the best rotation not within min_deg of one chosen before
        idx.append(i)
        ok.append(torch.isfinite(best))
        cos = (torch.einsum("bij,gij->bg", grid[i], grid) - 1) / 2
        free = free.masked_fill(cos >= cos_min, float("-inf"))
    idx, ok = torch.stack(idx, 1), torch.stack(ok, 1)
    return torch.where(ok, idx, idx[:, :1]), ok
