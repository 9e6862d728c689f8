"""Per-frame training targets and augmentation, as plain batched functions (numpy/torch, no Ray).

For a frame of video i, template vertex j should be seen at the projection of its instance
correspondent ``c_ij`` (:func:`catpose.learn.template.instance_correspondents`) with the frame's
camera, when visible: in front of the camera, inside the image and the mask, and not behind the
z-buffer of the video's own vertices. :func:`catpose.geometry.object_crops` then cuts a square around the
object
(scale and shift jitter when training) and resamples image, mask and targets to ``S × S``;
:func:`composite` pastes the object on other backgrounds and adds occluders, and
:func:`colour_jitter` changes the lighting — the compositional augmentation that narrows the gap
between object-centric videos and in-the-wild photos.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from catpose.geometry import project, visibility, zbuffer


@dataclass
class AugmentConfig:
    """Augmentation of training crops (all probabilities per sample)."""

    scale_jitter: float = 0.25
    """Crop side multiplied by exp(U(-j, j))."""
    shift_jitter: float = 0.15
    """Crop centre moved by up to this fraction of the side."""
    background: float = 0.7
    """Probability to paste the object on another background."""
    occluder: float = 0.4
    """Probability of an occluder over the object."""
    colour: float = 0.8
    """Probability of a brightness/contrast/colour change."""


def frame_targets(points: torch.Tensor, valid: torch.Tensor, dense: torch.Tensor, R: torch.Tensor,
                  T: torch.Tensor, focal_px: torch.Tensor, pp_px: torch.Tensor, image_size: tuple[int, int],
                  masks: torch.Tensor | None = None, tol: float = 0.05) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel targets of the template vertices in K frames of one video.

    points [N, 3]: the instance correspondents ``c_ij`` in the video's world frame; valid [N];
    dense [M, 3]: the video's vertices (the occluding surface); cameras R [K, 3, 3], T [K, 3],
    focal_px, pp_px [K, 2] (CO3D convention); masks [K, H, W] or None; ``tol``: depth tolerance as a
    fraction of the video's diameter. Returns uv [K, N, 2] (pixels) and visible [K, N] (bool).
    """
    uv, z = project(points, R, T, focal_px, pp_px)
    duv, dz = project(dense, R, T, focal_px, pp_px)
    diam = float((dense.max(0).values - dense.min(0).values).norm())
    # a per-pixel z-buffer of the video's vertices; the holes between them (about ``spacing`` pixels
    # wide, with M/4 vertices on the visible side) are closed, so the far side cannot show through
    span = (duv.amax(1) - duv.amin(1)).clamp(min=1).prod(-1).mean().item()
    spacing = (span / max(len(dense) / 4, 1)) ** 0.5
    zb = zbuffer(duv, dz, image_size, cell=1, fill=math.ceil(spacing) + 1, margin=2 * tol * diam)
    vis = visibility(uv, z, image_size, zb, tol=tol * diam, masks=masks)
    return uv, vis & valid[None]


def _dilate(x: torch.Tensor, r: int) -> torch.Tensor:
    """Binary dilation of float masks [K, H, W] by a (2r+1)² square."""
    return F.max_pool2d(x[:, None], 2 * r + 1, stride=1, padding=r)[:, 0] if r > 0 else x


def _erode(x: torch.Tensor, r: int) -> torch.Tensor:
    """Binary erosion by a (2r+1)² square; the image border does not erode (an object may touch it)."""
    return -F.max_pool2d(-x[:, None], 2 * r + 1, stride=1, padding=r)[:, 0] if r > 0 else x


def refine_masks(masks: torch.Tensor, dense: torch.Tensor, R: torch.Tensor, T: torch.Tensor,
                 focal_px: torch.Tensor, pp_px: torch.Tensor, min_iou: float = 0.5) -> torch.Tensor:
    """Object masks with their holes and eroded borders filled from the video's own (cleaned) geometry.

    Segmentation masks of real captures have holes and eroded borders; training on them teaches object
    pixels to look like background (the background loss samples outside the mask) and pastes new
    backgrounds into the object. The silhouette of the video's vertices ``dense`` [M, 3] in each frame —
    its points splatted and closed (dilated, then eroded, by about half their spacing), less one pixel —
    is object wherever it lies. The geometry only adds to a mask, never removes from it: a cleaned cloud
    misses parts of the object (the bottom of the wheels goes with the ground plane, a partial orbit sees
    only part of it), and cutting masks to it taught those parts to be background (the realistic car lost
    7 points of in-the-wild Acc@π/6). Where the filled mask differs strongly from the given one (IoU below
    ``min_iou``: a bad camera, a cloud that misses the object) the mask is kept as given, and so is a
    frame without a mask (all ones).

    masks [K, H, W] in [0, 1]; cameras R [K, 3, 3], T [K, 3], focal_px, pp_px [K, 2]. Returns [K, H, W].
    """
    K, H, W = masks.shape
    if len(dense) == 0:
        return masks
    duv, dz = project(dense, R, T, focal_px, pp_px)
    span = (duv.amax(1) - duv.amin(1)).clamp(min=1).prod(-1).mean().item()
    spacing = (span / max(len(dense) / 4, 1)) ** 0.5  # as in frame_targets: M/4 vertices on the visible side
    r = math.ceil(spacing / 2) + 1
    u, v = duv[..., 0].floor().long(), duv[..., 1].floor().long()
    ok = (dz > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
    splat = torch.zeros(K, H * W, dtype=masks.dtype, device=masks.device)
    splat.scatter_(1, (v * W + u).clamp(0, H * W - 1), ok.to(masks.dtype))
    inner = _erode(_erode(_dilate(splat.view(K, H, W), r), r), 1)
    refined = torch.maximum(masks, inner)
    a, b = refined > 0.5, masks > 0.5
    iou = (a & b).flatten(1).sum(1) / (a | b).flatten(1).sum(1).clamp(min=1)
    use = (iou >= min_iou) & (~b).flatten(1).any(1)
    return torch.where(use[:, None, None], refined, masks)


def snap_masks(images: torch.Tensor, masks: torch.Tensor, share: float) -> torch.Tensor:
    """Mask boundaries moved to the object's edges in the images (:func:`catpose.data.masks.snap_mask_edges`,
    GrabCut on the CPU), within a band of ``share`` of each frame's shorter side (at least 1 px). Frames
    without a mask (all object) or without object pixels are returned as they are; pixels the snapping
    leaves alone keep their soft value.

    images [K, 3, H, W] uint8, masks [K, H, W] in [0, 1] (any device) → [K, H, W] on the masks' device."""
    from catpose.data.masks import snap_mask_edges

    if share <= 0:
        return masks
    K, H, W = masks.shape
    band = max(1, round(share * min(H, W)))
    hard = (masks > 0.5).cpu().numpy()
    imgs = images.permute(0, 2, 3, 1).cpu().numpy()
    out = masks.clone()
    for k in range(K):
        if hard[k].all() or not hard[k].any():
            continue
        snapped = torch.from_numpy(snap_mask_edges(imgs[k], hard[k], band)).to(masks.device)
        changed = snapped != torch.from_numpy(hard[k]).to(masks.device)
        out[k] = torch.where(changed, snapped.to(masks.dtype), masks[k])
    return out


def random_backgrounds(n: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Procedural backgrounds [n, 3, size, size] in [0, 1]: smooth colour fields at random scales plus
    random rectangles (clutter)."""
    out = torch.empty(n, 3, size, size)
    for i in range(n):
        g = int(torch.randint(2, 12, (1,), generator=generator))
        field = torch.rand(1, 3, g, g, generator=generator)
        bg = F.interpolate(field, size=(size, size), mode="bicubic", align_corners=False)[0]
        for _ in range(int(torch.randint(0, 8, (1,), generator=generator))):
            x0, y0 = torch.randint(0, size, (2,), generator=generator).tolist()
            w, h = torch.randint(size // 16 + 1, size // 3 + 2, (2,), generator=generator).tolist()
            bg[:, y0:y0 + h, x0:x0 + w] = torch.rand(3, 1, 1, generator=generator)
        bg += 0.04 * torch.randn(bg.shape, generator=generator)
        out[i] = bg.clamp(0, 1)
    return out


def composite(images: torch.Tensor, masks: torch.Tensor, uv: torch.Tensor, vis: torch.Tensor,
              generator: torch.Generator, p_background: float = 0.7, p_occluder: float = 0.4):
    """Pastes objects (soft masks [B, S, S]) on new backgrounds and adds occluders.

    A background is procedural or another sample's whole frame (a distracting object included).
    Occluders are rectangles or ellipses of noise over part of the object; vertices under them become
    invisible and the returned foreground ``fg`` [B, S, S] (visible object pixels) loses them too.
    """
    B, _, S, _ = images.shape
    out = images.clone()
    fg = masks.clone()
    vis = vis.clone()
    new_bg = torch.rand(B, generator=generator) < p_background
    if new_bg.any():
        procedural = random_backgrounds(B, S, generator)
        other = images.roll(1, dims=0)
        use_other = (torch.rand(B, generator=generator) < 0.3)[:, None, None, None] & (B > 1)
        bgs = torch.where(use_other, other, procedural)
        m = masks[:, None]
        out = torch.where(new_bg[:, None, None, None], m * images + (1 - m) * bgs, out)
    yy, xx = torch.meshgrid(torch.arange(S) + 0.5, torch.arange(S) + 0.5, indexing="ij")
    for b in range(B):
        if torch.rand(1, generator=generator).item() >= p_occluder:
            continue
        ys, xs = torch.nonzero(masks[b] > 0.5, as_tuple=True)
        if len(xs) < 4:
            continue
        k = int(torch.randint(len(xs), (1,), generator=generator))
        cx, cy = xs[k].item() + 0.5, ys[k].item() + 0.5
        rx, ry = (S * (0.08 + 0.17 * torch.rand(2, generator=generator))).tolist()
        if torch.rand(1, generator=generator).item() < 0.5:
            occ = ((xx - cx).abs() < rx) & ((yy - cy).abs() < ry)
        else:
            occ = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        tex = torch.rand(3, 1, 1, generator=generator) + 0.15 * torch.randn(3, S, S, generator=generator)
        out[b] = torch.where(occ, tex.clamp(0, 1), out[b])
        fg[b] = torch.where(occ, torch.zeros(()), fg[b])
        pu = uv[b, :, 0].floor().long().clamp(0, S - 1)
        pv = uv[b, :, 1].floor().long().clamp(0, S - 1)
        vis[b] &= ~occ[pv, pu]
    return out, fg, vis


def colour_jitter(images: torch.Tensor, generator: torch.Generator, p: float = 0.8) -> torch.Tensor:
    """Lighting change: brightness ×[0.6, 1.4], contrast ×[0.7, 1.3], per-channel gain ×[0.85, 1.15]."""
    B = images.shape[0]
    gdev = generator.device if generator is not None else images.device
    draw = lambda *shape: torch.rand(*shape, generator=generator, device=gdev).to(images.device)  # noqa: E731
    on = (draw(B, 1, 1, 1) < p).float()
    r = draw(B, 5)
    bright = (0.6 + 0.8 * r[:, 0]).view(B, 1, 1, 1)
    contrast = (0.7 + 0.6 * r[:, 1]).view(B, 1, 1, 1)
    gain = 0.85 + 0.3 * draw(B, 3, 1, 1)
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    jittered = ((images - mean) * contrast + mean) * bright * gain
    return (on * jittered + (1 - on) * images).clamp(0, 1)
