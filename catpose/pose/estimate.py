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

**Batches.** :meth:`PoseEstimator.estimate_batch` is the implementation, for B images at once (what
``catpose estimate`` over many files and ``catpose evaluate`` use, ``PoseConfig.batch`` at a time;
:meth:`PoseEstimator.estimate` is a batch of one):
one encoder pass over the B crops, s_j as one [B, N, S, S] tensor, E(R, T) of all B × grid poses
(:func:`search_poses`), each image's distinct hypotheses by greedy suppression written with tensors
(:func:`distinct_batch`), and all B × top_k hypotheses refined as one [B, top_k] set of poses for the
same fixed number of steps (hypotheses that an image lacks are masked). Decoding and boxes stay per
image on the CPU; the crops are resampled on the device, one call per image shape
(:func:`crop_batch`). Translations are fitted on the template's hull vertices
(:func:`extreme_vertices`: the same T). Each image gets the pose that the one-image reference path
(``tests/pose/reference.py``) gives it, up to float rounding (``tests/pose/test_batched.py``).

The camera is catpose's (CO3D) convention; without a known focal length the full image is assumed
to have a ``focal_ndc`` (≈ 45° field of view) camera. Rotations are in the template's frame; with a
frame rotation ``G`` (template → a category's canonical frame) the pose is also given as azimuth,
elevation and in-plane angle in that frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from catpose.config import PoseConfig
from catpose.data.co3d import decode_image, read_file_bytes
from catpose.devices import resolve_device
from catpose.errors import CatposeError, DataFormatError, NoObjectError
from catpose.geometry import object_box, object_crops, project, so3_grid
from catpose.learn.checkpoint import load_trained
from catpose.pose.scores import (  # noqa: F401 (the batched scores; names kept importable from here)
    descriptor,
    distinct_batch,
    fit_translation,
    fit_translation_batch,
    pooled_descriptor,
    render_compare_batch,
    sample_similarity_batch,
    similarity_maps_batch,
    template_visibility_batch,
)
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
        d = {
            "R": self.R.tolist(),
            "T": self.T.tolist(),
            "confidence": self.confidence,
            "distance": self.distance,
            "focal_px": self.focal_px,
            "principal_px": self.principal_px.tolist(),
            "box": self.box.tolist(),
            "object_fraction": self.object_fraction,
        }
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
def extreme_vertices(vertices: torch.Tensor) -> torch.Tensor:
    """The vertices of the template's convex hull [H, 3] (all vertices when the hull is degenerate).

    The projected bounding box of a cloud in front of the camera is that of its hull's vertices (the
    image coordinates of a perspective projection are linear-fractional, so their extremes over a
    polytope lie at its vertices), and so are its axis-aligned box and diagonal: :func:`fit_translation`
    on them gives the T it gives on all vertices, for a fraction of the work (about 1 in 8 of a car's
    1000 vertices)."""
    from scipy.spatial import ConvexHull, QhullError

    try:
        idx = np.sort(ConvexHull(vertices.detach().cpu().double().numpy()).vertices)
    except (QhullError, ValueError):
        return vertices
    return vertices[torch.as_tensor(idx, device=vertices.device)]


def crop_batch(images: list[np.ndarray], boxes: list[np.ndarray], size: int, device) -> torch.Tensor:
    """:func:`crop_image` of B images [H_b, W_b, 3] uint8 around their boxes, on ``device``: [B, 3, S, S].
    Images of one shape are stacked, uploaded as uint8 and resampled by one ``grid_sample``."""
    out = torch.empty((len(images), 3, size, size), device=device)
    groups: dict[tuple, list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    for shape, idx in groups.items():
        H, W = shape[:2]
        imgs = (
            torch.from_numpy(np.stack([images[i] for i in idx])).to(device).permute(0, 3, 1, 2).float() / 255
        )
        b = torch.as_tensor(np.stack([boxes[i] for i in idx]), dtype=torch.float32, device=device)
        n = len(idx)
        crops = object_crops(
            imgs,
            torch.zeros((n, H, W), device=device),
            torch.zeros((n, 0, 2), device=device),
            torch.zeros((n, 0), dtype=torch.bool, device=device),
            size,
            b,
        )[0]
        out[torch.as_tensor(idx, device=device)] = crops
    return out


def search_poses(
    sims: torch.Tensor,
    vertices: torch.Tensor,
    f: torch.Tensor,
    pp: torch.Tensor,
    size: int,
    margin: float,
    cfg: PoseConfig,
    grid: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
    max_points: int = 0,
    box_vertices: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Coarse search and refinement for B images at once: coarse scores E(R, T) of every image × grid
    rotation, each image's ``cfg.top_k`` distinct hypotheses, all B × top_k refined together in one
    optimisation of ``cfg.refine_steps`` steps, each image's best.

    sims [B, N, S, S] are the images' s_j; f [B] and pp [B, 2] their scoring cameras (pixels of the S
    grid); ``prior`` [B, len(grid)] (optional) the retrieval prior per image. The coarse pass scores
    the grid in chunks of 1024 rotations (the chunks pick the z-buffer cell) for as many images at a time as
    keep ``images × 1024 × N`` under ``max_points`` (0: 2^24 on a GPU, one image at a time on a CPU). The
    summed objective Σ E keeps the hypotheses independent (Adam's update is per parameter), so each image
    gets the pose it gets alone, up to float rounding. ``box_vertices`` (optional,
    :func:`extreme_vertices`): the vertices that fit the translations (the same T, less work).
    Returns R [B, 3, 3], T [B, 3] and E [B]."""
    import roma

    grid = so3_grid(cfg.grid).to(sims.device) if grid is None else grid
    bv = vertices if box_vertices is None else box_vertices
    B, N, G = len(sims), len(vertices), len(grid)
    diam = float((vertices.amax(0) - vertices.amin(0)).norm())
    dev = sims.device
    f, pp = f.float().to(dev), pp.float().to(dev)
    target = torch.tensor([size / 2, size / 2], device=dev)
    extent = size / margin
    scores = torch.empty(B, G, device=dev)
    Ts = torch.empty(B, G, 3, device=dev)
    # images per coarse pass: on a GPU as many as keep images × 1024 × N under 2^24 points; on a CPU one
    # (its caches want the one-image path's working set: larger passes measured slower there)
    max_points = max_points or (2**24 if dev.type == "cuda" else 1024 * N)
    per = max(1, max_points // (1024 * N))
    with torch.no_grad():
        for s in range(0, G, 1024):
            Rc = grid[s:s + 1024]
            for b in range(0, B, per):
                nb = min(B, b + per) - b
                Rb = Rc[None].expand(nb, len(Rc), 3, 3)
                Tb = fit_translation_batch(bv, Rb, f[b:b + nb], pp[b:b + nb], target, extent)
                E, _ = render_compare_batch(
                    sims[b : b + nb], vertices, Rb, Tb, f[b : b + nb], pp[b : b + nb], size, diam
                )
                scores[b:b + nb, s:s + len(Rc)] = E
                Ts[b:b + nb, s:s + len(Rc)] = Tb
    bonus = torch.zeros(B, G, device=dev) if prior is None else prior.to(dev).float()
    best, valid = distinct_batch(grid, scores + bonus, cfg.top_k)  # [B, K]
    rows = torch.arange(B, device=dev)
    R0, T0 = grid[best], Ts[rows[:, None], best]  # [B, K, 3, 3], [B, K, 3]
    if cfg.refine_steps <= 0:
        return R0[:, 0], T0[:, 0], scores[rows, best[:, 0]]
    bonus = torch.where(valid, bonus.gather(1, best), torch.full_like(bonus[:, :1], float("-inf")))
    K = best.shape[1]
    # parameters per hypothesis: rotation update ω, image position (u, v) of the template centre, log depth
    m = (vertices.amax(0) + vertices.amin(0)) / 2
    c0 = m @ R0 + T0  # [B, K, 3] centre in camera coordinates
    uv0 = pp[:, None] - f[:, None, None] * c0[..., :2] / c0[..., 2:3]
    omega = torch.zeros(B, K, 3, device=dev, requires_grad=True)
    uv = uv0.clone().requires_grad_(True)
    logd = c0[..., 2].log().clone().requires_grad_(True)
    opt = torch.optim.Adam([{"params": [omega], "lr": 0.02}, {"params": [uv], "lr": 0.5},
                            {"params": [logd], "lr": 0.01}])

    def pose():
        R = (roma.rotvec_to_rotmat(omega.reshape(B * K, 3)) @ R0.reshape(B * K, 3, 3)).view(B, K, 3, 3)
        if cfg.translation == "box":
            return R, fit_translation_batch(bv, R, f, pp, target, extent)
        d = logd.exp()
        c = (
            torch.cat([(pp[:, None] - uv) / f[:, None, None], torch.ones(B, K, 1, device=dev)], 2)
            * d[..., None]
        )
        return R, c - m @ R

    for _ in range(cfg.refine_steps):  # a fixed number of steps for all B × K hypotheses
        R, T = pose()
        E, _ = render_compare_batch(sims, vertices, R, T, f, pp, size, diam, valid)
        opt.zero_grad()
        (-E.sum()).backward()
        opt.step()
    with torch.no_grad():
        R, T = pose()
        E, _ = render_compare_batch(sims, vertices, R, T, f, pp, size, diam, valid)
    i = (E + bonus).argmax(1)
    return R[rows, i].detach(), T[rows, i].detach(), E[rows, i]


class PoseEstimator:
    """Estimates poses with a trained run's encoder Φ and template Θ (see the module docstring).

    ``encoder`` maps images [B, 3, S, S] in [0, 1] to unit features [B, D, h, w]; ``theta`` [N, D],
    ``beta`` [M, D] or None, ``vertices`` [N, 3]; ``frame`` (3×3, optional) rotates template-frame
    camera rotations into a canonical frame for the angles: ``R_canonical = frame · R``.
    """

    def __init__(self, encoder, theta, vertices, beta=None, size: int = 128, cfg: PoseConfig | None = None,
                 frame: np.ndarray | None = None):
        cfg = cfg or PoseConfig()
        # auto → the GPU this process has
        self.cfg = dataclasses.replace(cfg, device=resolve_device(cfg.device))
        self.encoder = encoder
        self.theta = F.normalize(torch.as_tensor(theta).float(), dim=1).to(self.cfg.device)
        self.beta = (
            None if beta is None else F.normalize(torch.as_tensor(beta).float(), dim=1).to(self.cfg.device)
        )
        self.vertices = torch.as_tensor(vertices).float().to(self.cfg.device)
        self.box_vertices = extreme_vertices(self.vertices)  # what fits the translations (the same T)
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
        self.view_descriptors, self.view_rotations = (
            torch.as_tensor(descriptors).float(),
            np.asarray(rotations),
        )
        self.views = (self.view_descriptors, cos > np.cos(np.radians(self.cfg.prior_radius)))

    def retrieval_priors(self, crop_descs: torch.Tensor) -> torch.Tensor | None:
        """The retrieval prior of crops' pooled descriptors [B, d]: w · (max similarity of a crop's
        descriptor to the training views near each grid rotation − its best similarity overall),
        [B, len(grid)]: ≤ 0, 0 where the best-matching training views are (None without views)."""
        if self.views is None or self.cfg.prior_weight <= 0:
            return None
        D, near = self.views
        c = crop_descs.float().cpu() @ D.T  # [B, V]
        out = []
        for b in range(0, len(c), 8):  # [8, G, V] at a time bounds the memory
            cb = c[b:b + 8]
            per = torch.where(near[None], cb[:, None], torch.full((1, 1, 1), -2.0)).amax(2)  # [b, G]
            out.append(self.cfg.prior_weight * (torch.maximum(per, cb.amin(1, keepdim=True))
                                                - cb.amax(1, keepdim=True)))
        return torch.cat(out)

    @classmethod
    def from_run(cls, run: str, endpoint_url: str | None = None, cfg: PoseConfig | None = None,
                 frame: np.ndarray | None = None) -> PoseEstimator:
        cfg = cfg or PoseConfig()
        model, tpl = load_trained(run, endpoint_url, resolve_device(cfg.device))
        size = int(model.config.size)
        est = cls(model.encoder, model.template.vertex_features().detach(), tpl.vertices,
                  model.template.background_features().detach(), size, cfg, frame)
        est.run_config = model.config
        return est

    @torch.no_grad()
    def features(self, crops: torch.Tensor) -> torch.Tensor:
        return self.encoder(crops.to(self.cfg.device)).float()

    def estimate(
        self,
        image: np.ndarray,
        bbox=None,
        mask: np.ndarray | None = None,
        focal_px: float | None = None,
        principal_px=None,
        source: str = "<image>",
    ) -> PoseEstimate:
        """Pose of the object in ``image`` [H, W, 3] uint8 (see the module docstring): :meth:`estimate_batch`
        of a batch of one; its error (bad shape, empty box or mask, no object) is raised."""
        out = self.estimate_batch([image], [bbox], [mask], [focal_px], [principal_px], sources=[source])[0]
        if isinstance(out, CatposeError):
            raise out
        return out

    def estimate_batch(
        self,
        images: list[np.ndarray],
        bboxes=None,
        masks=None,
        focal_px=None,
        principal_px=None,
        sources: list[str] | None = None,
    ) -> list[PoseEstimate | CatposeError]:
        """Poses of the objects in B images [H_b, W_b, 3] uint8 together: :meth:`estimate` for each, with
        one encoder pass over the B crops and :func:`search_poses` scoring and refining all B × top_k
        hypotheses as one tensor. ``bboxes``, ``masks``, ``focal_px``, ``principal_px``, ``sources``: None
        or one entry (possibly None) per image. Returns one entry per image: its PoseEstimate, or the
        error the one-image path raises for it (bad shape, empty box or mask, no object), while the rest
        of the batch goes on. Timings are the batch's, shared out per image."""
        import time

        t0 = time.perf_counter()
        B = len(images)
        each = lambda x: x if x is not None else [None] * B
        bboxes, masks, focal_px, principal_px = each(bboxes), each(masks), each(focal_px), each(principal_px)
        sources = sources if sources is not None else [f"<image {i}>" for i in range(B)]
        out: list = [None] * B
        S = self.size
        keep, boxes = [], []
        for i, image in enumerate(images):  # per image on the CPU: checks and boxes
            try:
                if image.ndim != 3 or image.shape[2] != 3 or min(image.shape[:2]) < 8:
                    raise DataFormatError(sources[i], "expected an RGB image of at least 8x8 pixels, got "
                                                      "shape "
                                                      f"{image.shape}")
                box = object_box(image.shape[:2], bboxes[i], masks[i], self.cfg.margin, sources[i])
            except CatposeError as e:
                out[i] = e
                continue
            keep.append(i)
            boxes.append(box)
        if not keep:
            return out
        # the crops on the device, one resampling per image shape (uint8 uploads)
        crops = crop_batch([images[i] for i in keep], boxes, S, self.cfg.device)
        fmap = self.features(crops)
        sims, bg = similarity_maps_batch(fmap, self.theta, self.beta, self.cfg.sim_size)
        objectness = (sims.amax(1) > bg.amax(1)).float().mean((1, 2)).tolist()
        go = []
        for j, i in enumerate(keep):
            # without a box or mask the features decide whether there is an object; a given box is trusted
            if (self.beta is not None and bboxes[i] is None and masks[i] is None
                    and objectness[j] < self.cfg.min_object):
                out[i] = NoObjectError(sources[i], f"no object found: {objectness[j]:.1%} of the crop looks "
                                                   "like "
                                                   f"the category (at least {self.cfg.min_object:.0%} "
                                                   "needed)")
            else:
                go.append(j)
        if not go:
            return out
        t1 = time.perf_counter()
        f_img, pp_img, f_crop, pp_crop = [], [], [], []
        for j in go:
            i = keep[j]
            H, W = images[i].shape[:2]
            f_img.append(float(focal_px[i]) if focal_px[i] else self.cfg.focal_ndc * min(H, W) / 2)
            pp_img.append(np.asarray(principal_px[i], np.float64) if principal_px[i] is not None
                          else np.array([W / 2, H / 2]))
            k = S / boxes[j][2]
            f_crop.append(f_img[-1] * k)
            pp_crop.append((pp_img[-1] - boxes[j][:2]) * k + S / 2)
        # similarity maps are on a sim_size grid over the crop: scale the scoring camera to it
        r = self.cfg.sim_size / S
        sel = torch.tensor(go, device=fmap.device)
        prior = None
        if self.views is not None and self.cfg.prior_weight > 0:
            prior = self.retrieval_priors(pooled_descriptor(fmap[sel]))
        f_t = torch.tensor(f_crop, dtype=torch.float32, device=self.cfg.device) * r
        pp_t = torch.as_tensor(np.stack(pp_crop), dtype=torch.float32, device=self.cfg.device) * r
        R, T, E = search_poses(
            sims[sel],
            self.vertices,
            f_t,
            pp_t,
            self.cfg.sim_size,
            self.cfg.margin,
            self.cfg,
            self.grid,
            prior,
            box_vertices=self.box_vertices,
        )
        R, T, E = R.cpu().numpy().astype(np.float64), T.cpu().numpy().astype(np.float64), E.tolist()
        t2 = time.perf_counter()
        m = (self.vertices.amax(0) + self.vertices.amin(0)).cpu().numpy() / 2
        timings = {"features_s": round((t1 - t0) / len(go), 4), "search_s": round((t2 - t1) / len(go), 4),
                   "batch": len(go)}
        for n, j in enumerate(go):
            i = keep[j]
            p = PoseEstimate(
                R[n],
                T[n],
                E[n],
                float(np.linalg.norm(m @ R[n] + T[n])),
                f_img[n],
                pp_img[n],
                boxes[j],
                objectness[j],
                timings=dict(timings),
            )
            if self.frame is not None:
                a, e, t = rotation_to_viewpoint(self.frame @ R[n])
                p.azimuth, p.elevation, p.theta = float(a), float(e), float(t)
            out[i] = p
        return out

    def estimate_files(self, images: list[str], bboxes=None, masks=None, progress: bool = True,
                       batch: int | None = None):
        """Pose estimation over image files, ``batch`` (default ``cfg.batch``) at a time through
        :meth:`estimate_batch`: yields (path, PoseEstimate or None, error message or None) in order; a
        bad image is reported and the batch goes on."""
        from catpose.parallel import progress_bar

        batch = max(1, batch or self.cfg.batch)
        bar = progress_bar(len(images), "estimate", disable=not progress or len(images) < 2)
        for s in range(0, len(images), batch):
            idx = range(s, min(s + batch, len(images)))
            res: dict[int, PoseEstimate | str] = {}
            loaded = []
            for i in idx:  # decoding stays per file, on the CPU
                try:
                    img = load_image(images[i])
                    mask = load_mask(masks[i], img.shape[:2]) if masks is not None and masks[i] else None
                    loaded.append((i, img, bboxes[i] if bboxes is not None else None, mask))
                except (CatposeError, OSError, ValueError) as e:
                    res[i] = str(e)
            if loaded:
                poses = self.estimate_batch(
                    [x[1] for x in loaded],
                    [x[2] for x in loaded],
                    [x[3] for x in loaded],
                    sources=[str(images[x[0]]) for x in loaded],
                )
                for x, p in zip(loaded, poses):
                    res[x[0]] = p if isinstance(p, PoseEstimate) else str(p)
            for i in idx:
                r = res[i]
                yield (images[i], r, None) if isinstance(r, PoseEstimate) else (images[i], None, r)
            bar.update(len(idx))
        bar.close()


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
    vis = template_visibility_batch(uv[None], z[None], max(H, W), diam, len(V))[0, 0].numpy()
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
