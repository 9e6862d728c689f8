"""Pose of an object in one image from the learned features and the neural template.

For an image and its object box (given, or from a mask, or the whole image), with ``Φ`` the trained
encoder and ``Θ = {θ_j}`` the template features at vertices ``t_j``:

1. **Crop and features.** A square crop around the box, resampled to ``S`` pixels; ``f = Φ(crop)``;
   the per-vertex similarity maps ``s_j(p) = θ_j · f(p)`` and the background score
   ``b(p) = max_m β_m · f(p)``. Pixels where ``max_j s_j > b`` are *object-like*; without a box or mask,
   too few of them and the image is rejected (:class:`NoObjectError`).
2. **Coarse search.** For each rotation ``R`` of an even SO(3) grid, the translation that puts the
   template's projected bounding box on the object box; the score of a pose is the render-and-compare
   similarity ``E(R, T) = (1/|V|) Σ_{j∈V} s_j(π(t_j; R, T))`` over the vertices ``V`` that the template's
   own z-buffer shows (a point z-buffer, so no mesh and no rasteriser are needed). With the run's
   training views attached, a retrieval prior is added: ``w·(max similarity of the crop's pooled
   features to the training frames whose camera lies within 20° of R − the best similarity)``.
3. **Refinement.** The best distinct hypotheses are refined by gradient ascent of ``E`` (bilinear
   sampling of ``s_j``, visibility recomputed every step) over a rotation update ``R = exp(ω)·R₀``, with
   the translation that keeps the projected box on the object box (``translation="box"``) or with the
   image position of the template centre and its log depth as free parameters (``"free"``); the best
   refined pose (plus its retrieval prior, when training views are attached) is returned with ``E`` as
   its confidence.

The camera is catpose's (CO3D) convention; without a known focal length the full image is assumed
to have a ``focal_ndc`` (≈ 45° field of view) camera. Rotations are in the template's frame; with a
frame rotation ``G`` (template → a category's canonical frame) the pose is also given as azimuth,
elevation and in-plane angle in that frame.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catpose.config import PoseConfig
from catpose.data.co3d import decode_image, read_file_bytes
from catpose.errors import CatposeError, DataFormatError, NoObjectError
from catpose.geometry import crop_image, object_box, project, so3_grid, visibility, zbuffer
from catpose.learn.train import load_trained
from catpose.pose.viewpoint import rotation_to_viewpoint


@dataclass
class PoseEstimate:
    """One object's pose. ``R``, ``T``: ``X_cam = X_template @ R + T`` (CO3D convention, template frame)."""

    R: np.ndarray
    T: np.ndarray
    confidence: float
    distance: float
    focal_px: float
    principal_px: np.ndarray
    box: np.ndarray  # crop (centre u, centre v, side) in image pixels
    object_fraction: float
    azimuth: float | None = None
    elevation: float | None = None
    theta: float | None = None
    timings: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        d = {"R": self.R.tolist(), "T": self.T.tolist(), "confidence": self.confidence, "distance": self.distance,
             "focal_px": self.focal_px, "principal_px": self.principal_px.tolist(), "box": self.box.tolist(),
             "object_fraction": self.object_fraction}
        if self.azimuth is not None:
            d.update(azimuth=self.azimuth, elevation=self.elevation, theta=self.theta)
        return d


# ------------------------------------------------------------------------------------------ inputs
def load_image(path: str | Path) -> np.ndarray:
    """An RGB image [H, W, 3] uint8; errors name the file."""

    return decode_image(read_file_bytes(Path(path), "image"), str(path), "RGB")


def load_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask [H, W] float in [0, 1] (> 0.5 = object)."""

    m = decode_image(read_file_bytes(Path(path), "mask"), str(path), "L").astype(np.float32) / 255
    if shape is not None and m.shape != tuple(shape):
        raise DataFormatError(str(path), f"mask is {m.shape[1]}x{m.shape[0]}, image is {shape[1]}x{shape[0]}")
    return m


# ------------------------------------------------------------------------------------------ scoring
def similarity_maps(fmap: torch.Tensor, theta: torch.Tensor, beta: torch.Tensor | None, size: int):
    """s_j [N, size, size] and b [size, size] (−1 without β) from unit features fmap [1, D, h, w]."""
    f = F.normalize(F.interpolate(fmap.float(), size=(size, size), mode="bilinear", align_corners=False)[0], dim=0)
    sim = torch.einsum("nd,dhw->nhw", theta.float(), f)
    bg = (torch.einsum("md,dhw->mhw", beta.float(), f) if beta is not None
          else torch.full((1, size, size), -1.0, device=f.device))
    return sim, bg


def sample_similarity(sim: torch.Tensor, uv: torch.Tensor, crop_size: int) -> torch.Tensor:
    """s_j at the projections uv [B, N, 2] (crop pixels), bilinear: [B, N] (0 outside the crop)."""
    g = (uv / crop_size * 2 - 1).permute(1, 0, 2)[:, :, None, :]  # [N, B, 1, 2]
    out = F.grid_sample(sim[:, None], g.to(sim.dtype), mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[:, 0, :, 0].T


def template_visibility(uv: torch.Tensor, z: torch.Tensor, size: int, diameter: float, n_vertices: int) -> torch.Tensor:
    """Vertices that the template's own point z-buffer shows: [B, N] bool."""
    span = (uv.amax(1) - uv.amin(1)).clamp(min=1).prod(-1).mean().item()
    cell = max(1, round((span / max(n_vertices / 4, 1)) ** 0.5))
    tol = 0.04 * diameter
    zb = zbuffer(uv, z, (size, size), cell=cell, fill=2, margin=2 * tol)
    return visibility(uv, z, (size, size), zb, tol=tol, cell=cell)


def render_compare(sim: torch.Tensor, vertices: torch.Tensor, R: torch.Tensor, T: torch.Tensor, f: torch.Tensor,
                   pp: torch.Tensor, size: int, diameter: float) -> tuple[torch.Tensor, torch.Tensor]:
    """E(R, T) = mean over visible vertices of s_j at their projections, for B poses: ([B], vis [B, N])."""
    B = R.shape[0]
    uv, z = project(vertices, R, T, f.expand(B, 2), pp.expand(B, 2))
    with torch.no_grad():
        vis = template_visibility(uv, z, size, diameter, len(vertices))
    s = sample_similarity(sim, uv, size)
    n = vis.sum(1)
    E = (s * vis).sum(1) / n.clamp_min(1)
    return torch.where(n >= max(4, len(vertices) // 20), E, torch.full_like(E, -1.0)), vis


def fit_translation(vertices: torch.Tensor, R: torch.Tensor, f: float, pp: torch.Tensor, target: torch.Tensor,
                    extent: float, iters: int = 3) -> torch.Tensor:
    """T [B, 3] that puts the projected bounding box of the template (rotated by R [B, 3, 3]) on the box
    with centre ``target`` (crop pixels) and longer side ``extent``."""
    B = R.shape[0]
    m = (vertices.amax(0) + vertices.amin(0)) / 2
    diam = (vertices.amax(0) - vertices.amin(0)).norm()
    dev = R.device
    d = torch.full((B,), float(f * diam / extent), device=dev)
    aim = target.expand(B, 2).clone()
    for _ in range(iters):
        ray = torch.cat([(pp - aim) / f, torch.ones(B, 1, device=dev)], 1)
        T = d[:, None] * ray - m @ R
        uv, _ = project(vertices, R, T, torch.full((B, 2), float(f), device=dev), pp.expand(B, 2))
        lo, hi = uv.amin(1), uv.amax(1)
        d = d * (hi - lo).amax(1) / extent
        aim = aim - ((lo + hi) / 2 - target)
    ray = torch.cat([(pp - aim) / f, torch.ones(B, 1, device=dev)], 1)
    return d[:, None] * ray - m @ R


@torch.no_grad()
def descriptor(encoder, crops: torch.Tensor, grid: int = 4) -> torch.Tensor:
    """Pooled features of crops [B, 3, S, S]: the feature map averaged to ``grid × grid``, flattened, unit."""
    f = encoder(crops).float()
    return F.normalize(F.adaptive_avg_pool2d(f, grid).flatten(1), dim=1)


def _distinct(R: torch.Tensor, scores: torch.Tensor, k: int, min_deg: float = 20.0) -> list[int]:
    order = scores.argsort(descending=True).tolist()
    chosen: list[int] = []
    cos_min = np.cos(np.radians(min_deg))
    for i in order:
        if all(((torch.einsum("ij,ij->", R[i], R[j]) - 1) / 2).item() < cos_min for j in chosen):
            chosen.append(i)
        if len(chosen) == k:
            break
    return chosen


def search_pose(sim: torch.Tensor, vertices: torch.Tensor, f: float, pp: torch.Tensor, size: int, margin: float,
                cfg: PoseConfig, grid: torch.Tensor | None = None,
                prior: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Coarse search over ``grid`` then refinement; returns (R [3, 3], T [3], E).

    ``prior`` [len(grid)] (optional) is added to the coarse scores and to the final choice between the
    refined hypotheses (the retrieval prior of :meth:`PoseEstimator.retrieval_prior`)."""
    import roma

    grid = so3_grid(cfg.grid) if grid is None else grid
    diam = float((vertices.amax(0) - vertices.amin(0)).norm())
    dev = sim.device
    target = torch.tensor([size / 2, size / 2], device=dev)
    fT = torch.tensor([float(f), float(f)], device=dev)
    scores, Ts = [], []
    for s in range(0, len(grid), 1024):
        Rc = grid[s:s + 1024]
        Tc = fit_translation(vertices, Rc, f, pp, target, size / margin)
        with torch.no_grad():
            E, _ = render_compare(sim, vertices, Rc, Tc, fT, pp, size, diam)
        scores.append(E)
        Ts.append(Tc)
    scores, Ts = torch.cat(scores), torch.cat(Ts)
    bonus = torch.zeros(len(grid), device=dev) if prior is None else prior.to(dev)
    best = _distinct(grid, scores + bonus, cfg.top_k)
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
            return R, fit_translation(vertices, R, f, pp, target, size / margin)
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


class PoseEstimator:
    """Estimates poses with a trained run's encoder Φ and template Θ (see the module docstring).

    ``encoder`` maps images [B, 3, S, S] in [0, 1] to unit features [B, D, h, w]; ``theta`` [N, D],
    ``beta`` [M, D] or None, ``vertices`` [N, 3]; ``frame`` (3×3, optional) rotates template-frame
    camera rotations into a canonical frame for the angles: ``R_canonical = frame · R``.
    """

    def __init__(self, encoder, theta, vertices, beta=None, size: int = 128, cfg: PoseConfig | None = None,
                 frame: np.ndarray | None = None):
        self.cfg = cfg or PoseConfig()
        self.encoder = encoder
        self.theta = F.normalize(torch.as_tensor(theta).float(), dim=1).to(self.cfg.device)
        self.beta = None if beta is None else F.normalize(torch.as_tensor(beta).float(), dim=1).to(self.cfg.device)
        self.vertices = torch.as_tensor(vertices).float().to(self.cfg.device)
        self.size = size
        self.frame = None if frame is None else np.asarray(frame, np.float64)
        self.grid = so3_grid(self.cfg.grid).to(self.cfg.device)
        self.views: tuple[torch.Tensor, torch.Tensor] | None = None
        self.run_config = None  # the training run's TrainConfig, when built from a run

    def set_views(self, descriptors: torch.Tensor, rotations) -> None:
        """Training views for the retrieval prior: pooled descriptors [V, d] and their template-frame
        camera rotations [V, 3, 3]; each grid rotation keeps the views within ``prior_radius`` of it."""
        Rv = torch.as_tensor(np.asarray(rotations), dtype=torch.float32)
        cos = (torch.einsum("gij,vij->gv", self.grid.cpu(), Rv) - 1) / 2
        self.view_descriptors, self.view_rotations = torch.as_tensor(descriptors).float(), np.asarray(rotations)
        self.views = (self.view_descriptors, cos > np.cos(np.radians(self.cfg.prior_radius)))

    def retrieval_prior(self, crop_desc: torch.Tensor) -> torch.Tensor | None:
        """w · (max similarity of the crop's descriptor to the training views near each grid rotation −
        the best similarity overall), [len(grid)]: ≤ 0, 0 where the best-matching training views are."""
        if self.views is None or self.cfg.prior_weight <= 0:
            return None
        D, near = self.views
        c = D @ crop_desc.float().cpu()
        per = torch.where(near, c[None], torch.full_like(near, -2.0, dtype=torch.float32)).amax(1)
        return self.cfg.prior_weight * (per.clamp_min(c.min()) - c.max())

    @classmethod
    def from_run(cls, run: str, endpoint_url: str | None = None, cfg: PoseConfig | None = None,
                 frame: np.ndarray | None = None) -> PoseEstimator:
        cfg = cfg or PoseConfig()
        model, tpl = load_trained(run, endpoint_url, cfg.device)
        size = int(model.config.size)
        est = cls(model.encoder, model.template.vertex_features().detach(), tpl.vertices,
                  model.template.background_features().detach(), size, cfg, frame)
        est.run_config = model.config
        return est

    @torch.no_grad()
    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return self.encoder(crops.to(self.cfg.device)).float()

    def estimate(self, image: np.ndarray, bbox=None, mask: np.ndarray | None = None, focal_px: float | None = None,
                 principal_px=None, source: str = "<image>") -> PoseEstimate:
        """Pose of the object in ``image`` [H, W, 3] uint8 (see the module docstring)."""
        import time

        t0 = time.perf_counter()
        if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
            raise DataFormatError(source, f"expected an RGB image of at least 8x8 pixels, got shape {image.shape}")
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
            prior = self.retrieval_prior(descriptor(self.encoder, crops.to(self.cfg.device))[0])
        R, T, E = search_pose(sim, self.vertices, f_crop * r, pp_crop * r, self.cfg.sim_size, self.cfg.margin,
                              self.cfg, self.grid, prior)
        R, T = R.cpu().numpy().astype(np.float64), T.cpu().numpy().astype(np.float64)
        m = (self.vertices.amax(0) + self.vertices.amin(0)).cpu().numpy() / 2
        out = PoseEstimate(R, T, E, float(np.linalg.norm(m @ R + T)), f_img, pp_img, box, objectness,
                           timings={"features_s": round(t1 - t0, 3), "search_s": round(time.perf_counter() - t1, 3)})
        if self.frame is not None:
            a, e, t = rotation_to_viewpoint(self.frame @ R)
            out.azimuth, out.elevation, out.theta = float(a), float(e), float(t)
        return out

    def estimate_files(self, images: list[str], bboxes=None, masks=None, progress: bool = True):
        """Batch over image files: yields (path, PoseEstimate or None, error message or None); a bad
        image is reported and the batch goes on."""
        from tqdm import tqdm

        for i, path in enumerate(tqdm(images, desc="estimate", disable=not progress or len(images) < 2)):
            try:
                img = load_image(path)
                mask = load_mask(masks[i], img.shape[:2]) if masks is not None and masks[i] else None
                bbox = bboxes[i] if bboxes is not None else None
                yield path, self.estimate(img, bbox, mask, source=str(path)), None
            except (CatposeError, OSError, ValueError) as e:
                yield path, None, str(e)


def overlay(image: np.ndarray, est: PoseEstimate, vertices: np.ndarray, caption: str | None = None):
    """The image with the template drawn at the estimated pose: visible vertices as dots coloured by
    their position in the template (the same colour is the same part in every picture), the crop box,
    and a caption. Returns a PIL image."""
    from PIL import Image, ImageDraw

    H, W = image.shape[:2]
    V = torch.as_tensor(vertices).float()
    R, T = torch.as_tensor(est.R).float()[None], torch.as_tensor(est.T).float()[None]
    f = torch.tensor([[est.focal_px, est.focal_px]], dtype=torch.float32)
    pp = torch.as_tensor(est.principal_px).float()[None]
    uv, z = project(V, R, T, f, pp)
    diam = float((V.amax(0) - V.amin(0)).norm())
    vis = template_visibility(uv, z, max(H, W), diam, len(V))[0].numpy()
    uv = uv[0].numpy()
    lo, hi = vertices.min(0), vertices.max(0)
    col = ((vertices - lo) / np.maximum(hi - lo, 1e-9) * 200 + 55).astype(np.uint8)
    scale = max(1, 256 // max(H, W))  # small images are drawn larger
    im = Image.fromarray(image).convert("RGB").resize((W * scale, H * scale), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    r = max(1.0, 0.6 * scale)
    for j in np.nonzero(vis)[0]:
        u, v = uv[j] * scale
        draw.ellipse([u - r, v - r, u + r, v + r], fill=tuple(int(c) for c in col[j]))
    cu, cv, s = est.box * scale
    draw.rectangle([cu - s / 2, cv - s / 2, cu + s / 2, cv + s / 2], outline=(255, 255, 255))
    text = caption or f"conf {est.confidence:.2f}"
    if est.azimuth is not None and caption is None:
        text += f"  az {est.azimuth:.0f} el {est.elevation:.0f} th {est.theta:.0f}"
    draw.rectangle([0, 0, 7 * len(text) + 4, 12], fill=(0, 0, 0))
    draw.text((2, 0), text, fill=(255, 255, 255))
    return im
