"""Clean object geometry of one video: which points of its cloud lie on the filmed object.

Real clouds (SfM, or the realistic synthetic ones) hold the ground the object stands on, background
and outliers; some videos see only part of the object. Two ways to find the object, both over all
(or ``frames`` evenly chosen) cameras of the video:

* **with masks** (:func:`mask_vote`): each point is projected into every frame; where it is in view
  and not hidden behind the cloud's own surface (a z-buffer of the cloud), the frame votes "object"
  when it lands inside the mask. A point stays when at least ``vote`` of the frames that see it say
  so: eroded, dilated or holed masks in some frames do not decide alone.
* **without masks**: what lies outside the region all cameras look at goes (:func:`in_view_share`:
  a point must be inside the image of ``view_share`` of the frames), then the supporting plane
  (:func:`fit_support_plane`: RANSAC for a plane whose normal is the cameras' up direction,
  :func:`up_direction`, with the rest of the cloud above it) and everything below it.

In both cases isolated points (:func:`isolated_points`) go last. (The masks alone decide where they
exist: objects often reach out of some frames, which a common-view test would cut.)
:func:`clean_object_points` is the driver; it returns the mask
of kept points and the share removed by each step (which the features and ingest manifests record).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from dataclasses import replace as dataclasses_replace

import numpy as np
import torch

from catpose.config import CleaningConfig
from catpose.data.camera import Camera
from catpose.errors import CleaningError
from catpose.geometry.projection import project, zbuffer
from catpose.plotting import png_bytes

# the settings of clean_object_points: the stage configs' ``cleaning`` section (declared once, catpose.config)
CleanSettings = CleaningConfig


@dataclass
class CleanResult:
    keep: np.ndarray  # [P] bool
    mode: str
    removed: dict = field(default_factory=dict)  # step → share of the input points it removed
    plane: list[float] | None = None  # [nx, ny, nz, d] with n·x + d = 0, n pointing up

    @property
    def removed_share(self) -> float:
        return float(1.0 - self.keep.mean()) if len(self.keep) else 0.0

    def summary(self) -> dict:
        return {"mode": self.mode, "points": len(self.keep), "kept": int(self.keep.sum()),
                "removed_share": round(self.removed_share, 4),
                "removed_by": {k: round(float(v), 4) for k, v in self.removed.items()},
                **({"plane": [round(float(x), 6) for x in self.plane]} if self.plane is not None else {})}


def _stack(cams: list[Camera]):
    t = lambda a: torch.as_tensor(np.stack(a), dtype=torch.float64)
    return (t([c.R for c in cams]), t([c.T for c in cams]), t([c.focal_px for c in cams]),
            t([c.principal_point_px for c in cams]))


def camera_scale(cams: list[Camera]) -> float:
    """Median distance of the cameras from the point they all look at (the scene's length unit)."""
    f = focus_point(cams)
    return float(np.median([np.linalg.norm(c.center - f) for c in cams]))


def focus_point(cameras: list[Camera]) -> np.ndarray:
    """The point closest (least squares) to all optical axes: what an object-centric video films."""
    A = np.zeros((3, 3))
    b = np.zeros(3)
    for c in cameras:
        d = c.R[:, 2]  # viewing direction (camera +Z) in world coordinates
        P = np.eye(3) - np.outer(d, d)
        A += P
        b += P @ c.center
    return np.linalg.lstsq(A, b, rcond=None)[0]


def view_size(cams: list[Camera]) -> float:
    """How large a thing the cameras frame: the median over cameras of the width of the field of view
    (its narrower side) at the distance of the point they all look at. An object-centric video's
    object is about this size or somewhat smaller, whatever its cloud holds."""
    f = focus_point(cams)
    w = [2 * np.linalg.norm(c.center - f) * (min(c.image_size) / 2) / float(np.max(c.focal_px)) for c in cams]
    return float(np.median(w))


def up_direction(cams: list[Camera]) -> np.ndarray:
    """The world's up direction of an orbit. People film with the camera's horizontal axis (+X) level,
    whatever its tilt, so up is the direction most nearly perpendicular to all cameras' +X axes (the
    smallest eigenvector of ``Σ x xᵀ``), turned towards the cameras' mean +Y. When the +X axes do not
    span a plane (cameras all facing one way) the normal of the camera centres' plane is used, and
    the mean +Y alone when both are degenerate."""
    xs = np.stack([c.R[:, 0] for c in cams])  # camera +X (left) in world coordinates
    ups = np.stack([c.R[:, 1] for c in cams])  # camera +Y (up)
    mean_up = ups.mean(0)
    mean_up /= max(np.linalg.norm(mean_up), 1e-12)
    ev, evec = np.linalg.eigh(xs.T @ xs / len(cams))
    if ev[1] > 0.02:  # the +X axes turn by more than about 8° over the video
        n = evec[:, 0]
        return n if n @ mean_up >= 0 else -n
    centres = np.stack([c.center for c in cams])
    if len(cams) >= 3:
        ev, evec = np.linalg.eigh(np.cov((centres - centres.mean(0)).T))
        if ev[1] > 0.05 * ev[2]:  # the centres span a plane
            n = evec[:, 0]
            return n if n @ mean_up >= 0 else -n
    return mean_up


def in_view_share(points: np.ndarray, cams: list[Camera]) -> np.ndarray:
    """[P] share of the cameras in whose image (and in front of which) each point lies."""
    R, T, f, pp = _stack(cams)
    uv, z = project(torch.as_tensor(points, dtype=torch.float64), R, T, f, pp)
    H = torch.tensor([c.image_size[0] for c in cams], dtype=torch.float64)[:, None]
    W = torch.tensor([c.image_size[1] for c in cams], dtype=torch.float64)[:, None]
    inside = (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < W) & (uv[..., 1] >= 0) & (uv[..., 1] < H)
    return inside.double().mean(0).numpy()


def mask_vote(
    points: np.ndarray, cams: list[Camera], masks: list[np.ndarray], tol: float
) -> tuple[np.ndarray, np.ndarray]:
    """Per point: (frames that see it and put it inside the mask, frames that see it), both [P].

    "Sees" = in front, inside the image, and not more than ``tol`` behind the z-buffer of the cloud
    itself (splatted into cells sized to the cloud's density, so sparse SfM clouds hide what lies
    behind them too). All frames must have one image size.
    """
    sizes = {m.shape for m in masks}
    if len(sizes) != 1:
        raise ValueError(f"masks of one video must share one size, got {sorted(sizes)}")
    (hw,) = sizes
    R, T, f, pp = _stack(cams)
    X = torch.as_tensor(points, dtype=torch.float64)
    uv, z = project(X, R, T, f, pp)
    H, W = hw
    # cells of about one point each were the cloud spread over the whole image
    cell = max(1, round(float(np.sqrt(H * W / max(len(points), 1)))))
    # a dense cloud (a pixel per cell) gets its holes closed, so the far side does not show through;
    # in a sparse one (SfM) each point has a cell of its own, and closing would hide the near side too
    zb = zbuffer(uv, z, hw, cell=cell, fill=2 if cell == 1 else 0, margin=tol)
    u, v = uv[..., 0], uv[..., 1]
    ok = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    pu = torch.floor(u).long().clamp(0, W - 1)
    pv = torch.floor(v).long().clamp(0, H - 1)
    k = torch.arange(len(cams))[:, None]
    seen = ok & (z <= zb[k, pv // cell, pu // cell] + tol)
    m = torch.as_tensor(np.stack(masks), dtype=torch.float32)
    inside = seen & (m[k, pv, pu] > 0.5)
    return inside.sum(0).numpy(), seen.sum(0).numpy()


def fit_support_plane(points: np.ndarray, up: np.ndarray, band: float, max_angle: float = 20.0,
                      iters: int = 500, min_share: float = 0.05, above_share: float = 0.8,
                      seed: int = 0) -> tuple[np.ndarray, float] | None:
    """The plane the object stands on: ``(n [3], d)`` with ``n·x + d = 0`` and ``n`` pointing up, or None.

    RANSAC over planes through 3 points whose normal is within ``max_angle`` of ``up``; a candidate
    counts the points within ``band`` of it. The best one is refit by least squares to its inliers and
    accepted when it holds at least ``min_share`` of the points and at least ``above_share`` of the
    others lie above it (a table under the object, not the roof of a car or the top of a box).
    Written out here rather than taken from a library: none of the project's dependencies fits
    planes under a constraint on the normal.
    """
    P = len(points)
    if P < 10:
        return None
    rng = np.random.default_rng(seed)
    cos_max = np.cos(np.deg2rad(max_angle))
    tri = rng.integers(0, P, (iters, 3))
    a, b, c = points[tri[:, 0]], points[tri[:, 1]], points[tri[:, 2]]
    n = np.cross(b - a, c - a)
    norm = np.linalg.norm(n, axis=1)
    good = norm > 1e-12
    n[good] /= norm[good, None]
    n *= np.sign(n @ up)[:, None]
    good &= (n @ up) >= cos_max
    if not good.any():
        return None
    n, a = n[good], a[good]
    d = -(n * a).sum(1)
    best, best_count = None, 0
    for s in range(0, len(n), 64):  # [C, P] distances in chunks
        dist = np.abs(points @ n[s:s + 64].T + d[s:s + 64])
        count = (dist < band).sum(0)
        j = int(count.argmax())
        if count[j] > best_count:
            best, best_count = s + j, int(count[j])
    inl = np.abs(points @ n[best] + d[best]) < band
    # least-squares refit: the normal is the smallest principal direction of the inliers
    q = points[inl]
    mu = q.mean(0)
    nn = np.linalg.eigh(np.cov((q - mu).T))[1][:, 0]
    nn = nn if nn @ up >= 0 else -nn
    if nn @ up < cos_max:
        nn = n[best]
    dd = -float(nn @ mu)
    sd = points @ nn + dd
    inl = np.abs(sd) < band
    # the points clear of the plane (3 bands: SfM's noise on a wide floor, far from the cameras, spreads
    # its points over more than one band) must lie above it
    rest = sd[np.abs(sd) >= 3 * band]
    if inl.mean() < min_share or len(rest) == 0 or (rest > 0).mean() < above_share:
        return None
    return nn, dd


def isolated_points(points: np.ndarray, factor: float, k: int = 8) -> np.ndarray:
    """[P] bool: points whose k-th nearest neighbour (scipy's k-d tree) is farther than ``factor`` ×
    the median k-th-neighbour distance. Robust where the mean-and-deviation test of
    :func:`catpose.geometry.remove_outliers` is not: scattered outliers inflate the deviation."""
    from scipy.spatial import cKDTree

    d, _ = cKDTree(points).query(points, k=k + 1)
    dk = d[:, -1]
    return dk > factor * np.median(dk)


def clean_object_points(points: np.ndarray, cams: list[Camera], masks: list[np.ndarray] | None,
                        settings: CleanSettings = CleanSettings(), source: str = "<cloud>") -> CleanResult:
    """Which of a video's cloud points ``points`` [P, 3] lie on the object (see the module doc).

    ``cams`` are the video's cameras (``settings.frames`` of them are used, evenly chosen), ``masks``
    their masks ([H, W] in [0, 1]) or None. Raises :class:`~catpose.errors.CleaningError` naming
    ``source`` when fewer than ``settings.min_points`` points are left.
    """
    s = settings
    P = len(points)
    mode = s.mode
    if mode not in ("auto", "masks", "geometry", "off"):
        raise ValueError(f"clean mode must be auto, masks, geometry or off, got {mode!r}")
    if mode == "auto":
        mode = "masks" if masks is not None and all(m is not None for m in masks) else "geometry"
    if mode == "masks" and (masks is None or any(m is None for m in masks)):
        raise CleaningError(source, "clean mode 'masks' but not every frame has a mask")
    keep = np.ones(P, bool)
    res = CleanResult(keep, mode)
    if mode == "off" or P == 0:
        return res
    idx = np.unique(np.linspace(0, len(cams) - 1, min(s.frames, len(cams))).round().astype(int))
    cams = [cams[i] for i in idx]
    scale = camera_scale(cams)
    pts = np.asarray(points, np.float64)
    if mode == "masks":
        ins, seen = mask_vote(pts, cams, [masks[i] for i in idx], tol=0.03 * scale)
        off = keep & ((seen == 0) | (ins < s.vote * seen))
        res.removed["masks"] = off.mean()
        keep &= ~off
    else:
        outside = in_view_share(pts, cams) < s.view_share
        res.removed["outside_view"] = outside.mean()
        keep &= ~outside
        plane = fit_support_plane(pts[keep], up_direction(cams), s.plane_band * scale, s.plane_angle)
        if plane is not None:
            nrm, d = plane
            below = keep & (pts @ nrm + d < s.plane_band * scale)
            res.removed["plane"] = below.mean()
            res.plane = [*nrm.tolist(), d]
            keep &= ~below
        else:
            res.removed["plane"] = 0.0
    if s.isolated > 0 and keep.sum() > 9:
        lone = isolated_points(pts[keep], s.isolated)
        gone = np.zeros(P, bool)
        gone[np.nonzero(keep)[0][lone]] = True
        res.removed["isolated"] = gone.mean()
        keep &= ~gone
    res.keep = keep
    if keep.sum() < s.min_points:
        raise CleaningError(source, f"cleaning ({mode}) left {int(keep.sum())} of {P} points, fewer than "
                            f"min_points {s.min_points}: " + ", ".join(
                                f"{k} removed {v:.0%}" for k, v in res.removed.items()))
    return res


def settings_from(cfg) -> CleanSettings:
    """The cleaning settings of a stage config (its ``cleaning`` section)."""
    return cfg.cleaning


def plot_cleaning(root, category: str, settings: CleanSettings = CleanSettings(), n_seq: int = 4,
                  max_points: int = 4000) -> bytes:
    """Before/after pictures of the cleaning: for ``n_seq`` videos of a CO3D-layout category, one frame
    with the whole cloud projected (before) and with the kept points green, the removed red (after),
    plus a side view of the cloud in the cameras' up direction. A video whose cleaning fails is drawn
    before only, its reason as the title. Returns the PNG's bytes (the caller writes them to its store)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from catpose.data.co3d import Co3dCategory

    cat = Co3dCategory(root, category)
    names = cat.sequence_names[:n_seq]
    fig, axes = plt.subplots(len(names), 3, figsize=(7.5, 2.5 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        seq = cat[name]
        try:
            pts = seq.load_point_cloud().points.astype(np.float64)
        except Exception as e:  # noqa: BLE001 (a picture: the features manifest names the error; draw nothing)
            axes[r][0].set_title(f"{name}: {type(e).__name__}", fontsize=7, loc="left")
            for ax in axes[r]:
                ax.axis("off")
            continue
        if len(pts) > max_points:
            pts = pts[np.random.default_rng(0).choice(len(pts), max_points, replace=False)]
        frames = seq.subsample(settings.frames)
        cams = [f.camera for f in frames]
        masks = [f.load_mask() for f in frames] if all(f.mask_path is not None for f in frames) else None
        try:
            res = clean_object_points(pts, cams, masks, dataclasses_replace(settings, min_points=0))
            keep = res.keep
            titles = [f"{name}: before", f"after ({res.mode}): {res.removed_share:.0%} removed"]
        except Exception as e:  # noqa: BLE001 (a picture: the manifest has the reason; draw the cloud uncleaned)
            keep = np.ones(len(pts), bool)
            titles = [f"{name}: before", f"not cleaned: {type(e).__name__}"]
        fr = frames[len(frames) // 2]
        uv, z = fr.camera.project(pts)
        for c, (ax, colors) in enumerate(zip(axes[r][:2], [np.full(len(pts), "yellow"),
                                                           np.where(keep, "lime", "red")])):
            ax.imshow(fr.load_image())
            ok = z > 0
            ax.scatter(uv[ok, 0], uv[ok, 1], s=0.3, c=colors[ok], alpha=0.6)
            ax.set_xlim(0, fr.image_size[1])
            ax.set_ylim(fr.image_size[0], 0)
            ax.axis("off")
            ax.set_title(titles[c], fontsize=7)
        up = up_direction(cams)
        side = np.cross(up, cams[0].R[:, 2])
        side /= max(np.linalg.norm(side), 1e-12)
        ax = axes[r][2]
        ax.scatter(pts[~keep] @ side, pts[~keep] @ up, s=0.3, c="red", alpha=0.4)
        ax.scatter(pts[keep] @ side, pts[keep] @ up, s=0.3, c="green", alpha=0.6)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title("side view (up = cameras' up)", fontsize=7)
    fig.tight_layout()
    return png_bytes(fig)
