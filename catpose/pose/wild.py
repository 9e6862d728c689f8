"""A synthetic *in-the-wild* pose set, written in the PASCAL3D+ layout.

Single photos of instances the training videos never showed (another random stream than
``catpose synth``), unlike the object-centric videos in every way the method must survive: cluttered
backgrounds instead of the video's floor, partial occlusion, objects anywhere in the frame and at
any size, other lights and colour casts, other lenses, in-plane camera roll. Each image gets a
PASCAL3D+-style annotation (``record.objects.viewpoint`` azimuth/elevation/theta/distance, focal,
viewport, px/py, bbox of the visible part, occluded/truncated flags) in the category's canonical frame
(x front, y left, z up, origin at the centre of the object's bounding box), and a mask of the visible
object, so that the same loader and command that read PASCAL3D+ score it::

    root/Images/<cat>_synth/00012.jpg
    root/Masks/<cat>_synth/00012.png
    root/Annotations/<cat>_synth/00012.mat
    root/Image_sets/<cat>_synth_val.txt

The cameras are PASCAL3D+'s model made real: the camera looks at the object's centre, the principal
point is where that centre appears (``px``, ``py``) and ``focal · viewport`` is the focal length in
pixels.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from catpose.config import WildConfig
from catpose.data.camera import Camera
from catpose.data.synth.generate import sequence_rng
from catpose.data.synth.render import SceneRenderer
from catpose.data.synth.shapes import make_instance
from catpose.learn.frames import colour_jitter, random_backgrounds
from catpose.pose.viewpoint import viewpoint_to_rotation


def _record(
    name: str, category: str, H: int, W: int, bbox, az, el, th, dist, f_px, px, py, occluded, truncated
):
    obj = np.zeros((1,), dtype=[("class", "O"), ("bbox", "O"), ("viewpoint", "O"), ("occluded", "O"),
                                ("truncated", "O"), ("difficult", "O")])
    obj[0] = (category, np.asarray(bbox, np.float64),
              {"azimuth": float(az), "elevation": float(el), "theta": float(th), "distance": float(dist),
               "focal": 1.0, "viewport": float(f_px), "px": float(px), "py": float(py)},
              int(occluded), int(truncated), 0)
    return {"record": {"filename": f"{name}.jpg", "imgsize": np.array([W, H, 3], np.float64), "objects": obj}}


def render_wild_image(cfg: WildConfig, index: int) -> dict:
    """One image, its visible mask and its annotation values."""

    rng = sequence_rng(cfg.seed, f"{cfg.category}-wild", index)
    inst = make_instance(cfg.category, rng)
    light = np.array([rng.uniform(-1, 1), rng.uniform(-1, 1), rng.uniform(0.2, 1.0)])
    renderer = SceneRenderer(inst, rng, light_dir=light, ground=False)
    mesh, _ = inst.merged()
    centre = mesh.bounds.mean(axis=0)
    H, W = cfg.height, cfg.width
    az, el, th = rng.uniform(0, 360), rng.uniform(0, 45), float(np.clip(rng.normal(0, 8), -20, 20))
    fov = np.radians(rng.uniform(30, 60))
    f_px = (min(H, W) / 2) / np.tan(fov / 2)
    fill = rng.uniform(0.3, 0.85)  # object size / shorter image side
    dist = f_px * inst.extent * 0.85 / (fill * min(H, W))
    half = 0.5 * (1 - fill) * np.array([W, H]) * 0.9
    px, py = np.array([W / 2, H / 2]) + rng.uniform(-1, 1, 2) * half
    R = viewpoint_to_rotation(az, el, th)
    a, e = np.radians(az), np.radians(el)
    C = centre + dist * np.array([np.cos(e) * np.sin(a), -np.cos(e) * np.cos(a), np.sin(e)])
    s = min(H, W) / 2
    cam = Camera(
        R, -C @ R, (f_px / s, f_px / s), ((W / 2 - px) / s, (H / 2 - py) / s), (H, W), "ndc_isotropic"
    )
    out = renderer.render(cam, supersample=cfg.supersample)
    g = torch.Generator().manual_seed(int(rng.integers(2**31)))
    side = max(H, W)
    bg = random_backgrounds(1, side, g)[0, :, :H, :W].permute(1, 2, 0).numpy()
    m = out.mask[..., None]
    img = m * out.image / 255.0 + (1 - m) * bg
    vis = out.mask.copy()
    occluded = False
    if rng.uniform() < cfg.occlusion and (out.mask > 0.5).sum() > 16:
        ys, xs = np.nonzero(out.mask > 0.5)
        k = rng.integers(len(xs))
        bw, bh = xs.max() - xs.min() + 1, ys.max() - ys.min() + 1
        rx, ry = bw * rng.uniform(0.15, 0.3), bh * rng.uniform(0.2, 0.45)
        yy, xx = np.mgrid[0:H, 0:W] + 0.5
        if rng.uniform() < 0.5:
            occ = (np.abs(xx - xs[k]) < rx) & (np.abs(yy - ys[k]) < ry)
        else:
            occ = ((xx - xs[k]) / rx) ** 2 + ((yy - ys[k]) / ry) ** 2 < 1
        tex = np.clip(rng.uniform(0, 1, 3) + 0.15 * rng.normal(size=(H, W, 3)), 0, 1)
        img = np.where(occ[..., None], tex, img)
        vis = np.where(occ, 0.0, vis)
        occluded = True
    img = colour_jitter(torch.as_tensor(img, dtype=torch.float32).permute(2, 0, 1)[None], g, p=1.0)[0]
    img = (img.permute(1, 2, 0).numpy() * 255 + 0.5).clip(0, 255).astype(np.uint8)
    mask = (vis * 255 + 0.5).astype(np.uint8)
    ys, xs = np.nonzero(mask > 127)  # the box of the mask as written
    if len(xs) == 0:
        bbox = None
    else:
        bbox = [xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1]  # MATLAB 1-based, inclusive
    full = out.mask > 0.5
    truncated = bool(full[0].any() or full[-1].any() or full[:, 0].any() or full[:, -1].any())
    return {"image": img, "mask": mask, "bbox": bbox, "azimuth": az, "elevation": el,
            "theta": th, "distance": dist, "f_px": f_px, "px": px + 0.5, "py": py + 0.5, "occluded": occluded,
            "truncated": truncated, "instance": {k: float(v) for k, v in inst.params.items()}}


def generate_wild(cfg: WildConfig, progress: bool = True) -> dict:
    """Writes ``cfg.images`` images (resuming: existing ones are kept); returns a summary."""
    import scipy.io
    from PIL import Image

    from catpose.parallel import progress_bar

    root = Path(cfg.out)
    sub = f"{cfg.category}_synth"
    for d in ("Images", "Masks", "Annotations"):
        (root / d / sub).mkdir(parents=True, exist_ok=True)
    (root / "Image_sets").mkdir(exist_ok=True)
    names, skipped = [], []
    for i in progress_bar(cfg.images, f"synth-wild {cfg.category}", disable=not progress,
                          iterable=range(cfg.images)):
        name = f"{i:05d}"
        ann = root / "Annotations" / sub / f"{name}.mat"
        if ann.is_file() and (root / "Images" / sub / f"{name}.jpg").is_file():
            names.append(name)
            continue
        r = render_wild_image(cfg, i)
        if r["bbox"] is None:
            skipped.append(name)  # the object left the frame or was fully covered
            continue
        Image.fromarray(r["image"]).save(root / "Images" / sub / f"{name}.jpg", quality=92)
        Image.fromarray(r["mask"]).save(root / "Masks" / sub / f"{name}.png")
        scipy.io.savemat(
            str(ann),
            _record(
                name,
                cfg.category,
                cfg.height,
                cfg.width,
                r["bbox"],
                r["azimuth"],
                r["elevation"],
                r["theta"],
                r["distance"],
                r["f_px"],
                r["px"],
                r["py"],
                r["occluded"],
                r["truncated"],
            ),
        )
        names.append(name)
    (root / "Image_sets" / f"{sub}_val.txt").write_text("".join(n + "\n" for n in names))
    info = {"category": cfg.category, "images": len(names), "skipped": skipped, "seed": cfg.seed,
            "size": [cfg.width, cfg.height],
            "canonical_frame": "x front, y left, z up, origin at the centre of the object's bounding box "
                               "(the same canonical frame as catpose_gt.json of `catpose synth`)"}
    (root / "catpose_wild.json").write_text(json.dumps(info, indent=1))
    return info
