"""The one-image pose path, kept only to check the batched estimator against: catpose.pose.estimate's
functions for one image (similarity maps [N, S, S], render-and-compare of B poses of one image, greedy
distinct hypotheses as a Python loop, the coarse search and refinement of one image) and the one-image
PoseEstimator.estimate and retrieval prior they made up. ``tests/pose/test_batched.py`` compares them with
the batched path (PoseEstimator.estimate_batch, search_poses, distinct_batch), which catpose uses."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from catpose.config import PoseConfig
from catpose.errors import DataFormatError, NoObjectError
from catpose.geometry import crop_image, object_box, project, so3_grid, visibility, zbuffer
from catpose.pose.estimate import PoseEstimate, PoseEstimator, descriptor, fit_translation
from catpose.pose.viewpoint import rotation_to_viewpoint


def similarity_maps(fmap: torch.Tensor, theta: torch.Tensor, beta: torch.Tensor | None, size: int):
    """s_j [N, size, size] and b [size, size] (−1 without β) from unit features fmap [1, D, h, w]."""
    f = F.normalize(
        F.interpolate(fmap.float(), size=(size, size), mode="bilinear", align_corners=False)[0], dim=0
    )
    sim = torch.einsum("nd,dhw->nhw", theta.float(), f)
    bg = (torch.einsum("md,dhw->mhw", beta.float(), f) if beta is not None
          else torch.full((1, size, size), -1.0, device=f.device))
    return sim, bg


def sample_similarity(sim: torch.Tensor, uv: torch.Tensor, crop_size: int) -> torch.Tensor:
    """s_j at the projections uv [B, N, 2] (crop pixels), bilinear: [B, N] (0 outside the crop)."""
    g = (uv / crop_size * 2 - 1).permute(1, 0, 2)[:, :, None, :]  # [N, B, 1, 2]
    out = F.grid_sample(
        sim[:, None], g.to(sim.dtype), mode="bilinear", padding_mode="zeros", align_corners=False
    )
    return out[:, 0, :, 0].T


def template_visibility(
    uv: torch.Tensor, z: torch.Tensor, size: int, diameter: float, n_vertices: int
) -> torch.Tensor:
    """Vertices that the template's own point z-buffer shows: [B, N] bool."""
    span = (uv.amax(1) - uv.amin(1)).clamp(min=1).prod(-1).mean().item()
    cell = max(1, round((span / max(n_vertices / 4, 1)) ** 0.5))
    tol = 0.04 * diameter
    zb = zbuffer(uv, z, (size, size), cell=cell, fill=2, margin=2 * tol)
    return visibility(uv, z, (size, size), zb, tol=tol, cell=cell)


def render_compare(
    sim: torch.Tensor,
    vertices: torch.Tensor,
    R: torch.Tensor,
    T: torch.Tensor,
    f: torch.Tensor,
    pp: torch.Tensor,
    size: int,
    diameter: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """E(R, T) = mean over visible vertices of s_j at their projections, for B poses: ([B], vis [B, N])."""
    B = R.shape[0]
    uv, z = project(vertices, R, T, f.expand(B, 2), pp.expand(B, 2))
    with torch.no_grad():
        vis = template_visibility(uv, z, size, diameter, len(vertices))
    s = sample_similarity(sim, uv, size)
    n = vis.sum(1)
    E = (s * vis).sum(1) / n.clamp_min(1)
    return torch.where(n >= max(4, len(vertices) // 20), E, torch.full_like(E, -1.0)), vis


def distinct(R: torch.Tensor, scores: torch.Tensor, k: int, min_deg: float = 20.0) -> list[int]:
    order = scores.argsort(descending=True).tolist()
    chosen: list[int] = []
    cos_min = np.cos(np.radians(min_deg))
    for i in order:
        if all(((torch.einsum("ij,ij->", R[i], R[j]) - 1) / 2).item() < cos_min for j in chosen):
            chosen.append(i)
        if len(chosen) == k:
            break
    return chosen


def search_pose(
    sim: torch.Tensor,
    vertices: torch.Tensor,
    f: float,
    pp: torch.Tensor,
    size: int,
    margin: float,
    cfg: PoseConfig,
    grid: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
    box_vertices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Coarse search over ``grid`` then refinement; returns (R [3, 3], T [3], E).

    ``prior`` [len(grid)] (optional) is added to the coarse scores and to the final choice between the
    refined hypotheses (the retrieval prior of :meth:`PoseEstimator.retrieval_prior`); ``box_vertices``
    (optional, :func:`extreme_vertices`) the vertices that fit the translations."""
    import roma

    grid = so3_grid(cfg.grid) if grid is None else grid
    bv = vertices if box_vertices is None else box_vertices
    diam = float((vertices.amax(0) - vertices.amin(0)).norm())
    dev = sim.device
    target = torch.tensor([size / 2, size / 2], device=dev)
    fT = torch.tensor([float(f), float(f)], device=dev)
    scores, Ts = [], []
    for s in range(0, len(grid), 1024):
        Rc = grid[s:s + 1024]
        Tc = fit_translation(bv, Rc, f, pp, target, size / margin)
        with torch.no_grad():
            E, _ = render_compare(sim, vertices, Rc, Tc, fT, pp, size, diam)
        scores.append(E)
        Ts.append(Tc)
    scores, Ts = torch.cat(scores), torch.cat(Ts)
    bonus = torch.zeros(len(grid), device=dev) if prior is None else prior.to(dev)
    best = distinct(grid, scores + bonus, cfg.top_k)
    R0, T0 = grid[best], Ts[best]
    if cfg.refine_steps <= 0:
        return R0[0], T0[0], float(scores[best[0]])
    bonus = bonus[best]
    # parameters: rotation update ω, image position (u, v) of the template centre, log depth
    m = (vertices.amax(0) + vertices.amin(0)) / 2
    c0 = m @ R0 + T0  # [K, 3] centre in camera coordinates
    uv0 = pp - f * c0[:, :2] / c0[:, 2:3]
    omega = torch.zeros(len(best), 3, device=dev, requires_grad=True)
    uv = uv0.clone().requires_grad_(True)
    logd = c0[:, 2].log().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [omega], "lr": 0.02}, {"params": [uv], "lr": 0.5},
                            {"params": [logd], "lr": 0.01}])

    def pose():
        R = roma.rotvec_to_rotmat(omega) @ R0
        if cfg.translation == "box":
            return R, fit_translation(bv, R, f, pp, target, size / margin)
        d = logd.exp()
        c = torch.cat([(pp - uv) / f, torch.ones(len(best), 1, device=dev)], 1) * d[:, None]
        return R, c - m @ R

    for _ in range(cfg.refine_steps):
        R, T = pose()
        E, _ = render_compare(sim, vertices, R, T, fT, pp, size, diam)
        opt.zero_grad()
        (-E.sum()).backward()
        opt.step()
    with torch.no_grad():
        R, T = pose()
        E, _ = render_compare(sim, vertices, R, T, fT, pp, size, diam)
    i = int((E + bonus).argmax())
    return R[i].detach(), T[i].detach(), float(E[i])


def retrieval_prior(self: PoseEstimator, crop_desc: torch.Tensor) -> torch.Tensor | None:
    """w · (max similarity of the crop's descriptor to the training views near each grid rotation −
    the best similarity overall), [len(grid)]: ≤ 0, 0 where the best-matching training views are."""
    if self.views is None or self.cfg.prior_weight <= 0:
        return None
    D, near = self.views
    c = D @ crop_desc.float().cpu()
    per = torch.where(near, c[None], torch.full_like(near, -2.0, dtype=torch.float32)).amax(1)
    return self.cfg.prior_weight * (per.clamp_min(c.min()) - c.max())


def estimate(
    self: PoseEstimator,
    image: np.ndarray,
    bbox=None,
    mask: np.ndarray | None = None,
    focal_px: float | None = None,
    principal_px=None,
    source: str = "<image>",
) -> PoseEstimate:
    """The one-image path as it was before the batched estimator became the only one: PoseEstimator.estimate
    of ``image`` [H, W, 3] uint8, with the one-image functions above."""
    import time

    t0 = time.perf_counter()
    if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
        raise DataFormatError(source, "expected an RGB image of at least 8x8 pixels, got shape "
                                      f"{image.shape}")
    H, W = image.shape[:2]
    box = object_box((H, W), bbox, mask, self.cfg.margin, source)
    S = self.size
    crops = crop_image(image, box, S)
    fmap = self.features(crops)
    sim, bg = similarity_maps(fmap, self.theta, self.beta, self.cfg.sim_size)
    objectness = float((sim.amax(0) > bg.amax(0)).float().mean())
    # without a box or mask the features decide whether there is an object; a given box is trusted
    if self.beta is not None and bbox is None and mask is None and objectness < self.cfg.min_object:
        raise NoObjectError(source, f"no object found: {objectness:.1%} of the crop looks like the category "
                                    f"(at least {self.cfg.min_object:.0%} needed)")
    t1 = time.perf_counter()
    f_img = float(focal_px) if focal_px else self.cfg.focal_ndc * min(H, W) / 2
    pp_img = np.asarray(principal_px, np.float64) if principal_px is not None else np.array([W / 2, H / 2])
    k = S / box[2]
    f_crop = f_img * k
    pp_crop = torch.as_tensor((pp_img - box[:2]) * k + S / 2, dtype=torch.float32, device=self.cfg.device)
    # similarity maps are on a sim_size grid over the crop: scale the scoring camera to it
    r = self.cfg.sim_size / S
    prior = None
    if self.views is not None and self.cfg.prior_weight > 0:
        prior = retrieval_prior(self, descriptor(self.encoder, crops.to(self.cfg.device))[0])
    R, T, E = search_pose(sim, self.vertices, f_crop * r, pp_crop * r, self.cfg.sim_size, self.cfg.margin,
                          self.cfg, self.grid, prior, self.box_vertices)
    R, T = R.cpu().numpy().astype(np.float64), T.cpu().numpy().astype(np.float64)
    m = (self.vertices.amax(0) + self.vertices.amin(0)).cpu().numpy() / 2
    out = PoseEstimate(
        R,
        T,
        E,
        float(np.linalg.norm(m @ R + T)),
        f_img,
        pp_img,
        box,
        objectness,
        timings={"features_s": round(t1 - t0, 3), "search_s": round(time.perf_counter() - t1, 3)},
    )
    if self.frame is not None:
        a, e, t = rotation_to_viewpoint(self.frame @ R)
        out.azimuth, out.elevation, out.theta = float(a), float(e), float(t)
    return out
