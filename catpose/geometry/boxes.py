"""Object boxes and square crops. A box is (centre u, centre v, side) in pixels (continuous
coordinates, pixel centres at +0.5); a crop of side ``S`` maps pixel ``uv`` to ``(uv − centre)·S/side + S/2``.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from catpose.errors import NoObjectError

BOX_MARGIN = 1.15
"""A box's side over the object's larger extent, for training crops and pose estimation alike."""


def object_box(
    image_shape: tuple[int, int],
    bbox=None,
    mask: np.ndarray | None = None,
    margin: float = BOX_MARGIN,
    source: str = "<image>",
) -> np.ndarray:
    """Square crop (centre u, centre v, side) around ``bbox`` (x0, y0, x1, y1 pixels), else around the
    mask's object, else the whole image. Empty masks and empty boxes raise :class:`NoObjectError`."""
    H, W = image_shape
    if bbox is not None:
        x0, y0, x1, y1 = (float(b) for b in bbox)
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if not (x1 - x0 >= 2 and y1 - y0 >= 2):
            raise NoObjectError(source, f"the object box {list(bbox)} is empty inside the {W}x{H} image")
    elif mask is not None:
        ys, xs = np.nonzero(mask > 0.5)
        if len(xs) < 4:
            raise NoObjectError(source, "the object mask is empty")
        x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1
    else:
        x0, y0, x1, y1 = 0, 0, W, H
        margin = 1.0
    return np.array([(x0 + x1) / 2, (y0 + y1) / 2, margin * max(x1 - x0, y1 - y0)], np.float64)


def crop_image(image: np.ndarray, box: np.ndarray, size: int) -> torch.Tensor:
    """[1, 3, S, S] float crop of an [H, W, 3] uint8 image: pixel ``uv`` → ``(uv − c)·S/side + S/2``."""
    img = torch.as_tensor(np.ascontiguousarray(image).copy()).permute(2, 0, 1)[None].float() / 255
    H, W = image.shape[:2]
    out, _, _, _ = object_crops(
        img,
        torch.zeros(1, H, W),
        torch.zeros(1, 0, 2),
        torch.zeros(1, 0, dtype=torch.bool),
        size,
        torch.as_tensor(box, dtype=torch.float32)[None],
    )
    return out


def mask_boxes(masks: torch.Tensor, fallback: torch.Tensor | None = None, margin: float = BOX_MARGIN,
               fallback_valid: torch.Tensor | None = None) -> torch.Tensor:
    """Square boxes (centre u, centre v, side) [B, 3] around each mask's object (> 0.5) of masks [B, H, W],
    the side ``margin`` times the object's larger extent (at least 4 pixels).

    Where a mask has fewer than 4 object pixels, the box around ``fallback`` points [B, N, 2] (those
    with ``fallback_valid`` [B, N], default all) is used, or the whole image. Batched, no host sync.
    """
    B, H, W = masks.shape
    dev = masks.device
    m = masks > 0.5
    rows, cols = m.any(2), m.any(1)  # [B, H], [B, W]
    ar_v = torch.arange(H, device=dev, dtype=torch.float32)
    ar_u = torch.arange(W, device=dev, dtype=torch.float32)
    inf = torch.tensor(float("inf"), device=dev)
    u0 = torch.where(cols, ar_u, inf).amin(1)
    u1 = torch.where(cols, ar_u, -inf).amax(1) + 1
    v0 = torch.where(rows, ar_v, inf).amin(1)
    v1 = torch.where(rows, ar_v, -inf).amax(1) + 1
    full = torch.tensor([0.0, float(W), 0.0, float(H)], device=dev).expand(B, 4)
    box = torch.where((m.flatten(1).sum(1) >= 4)[:, None], torch.stack([u0, u1, v0, v1], 1), full)
    if fallback is not None and fallback.shape[1]:
        ok = (
            torch.ones(fallback.shape[:2], dtype=torch.bool, device=dev)
            if fallback_valid is None
            else fallback_valid
        )
        f = fallback.float()
        fb = torch.stack(
            [
                torch.where(ok, f[..., 0], inf).amin(1),
                torch.where(ok, f[..., 0], -inf).amax(1),
                torch.where(ok, f[..., 1], inf).amin(1),
                torch.where(ok, f[..., 1], -inf).amax(1),
            ],
            1,
        )
        use = (m.flatten(1).sum(1) < 4) & ok.any(1)
        box = torch.where(use[:, None], fb, box)
    u0, u1, v0, v1 = box.unbind(1)
    side = margin * torch.maximum(torch.maximum(u1 - u0, v1 - v0), torch.full_like(u0, 4.0))
    return torch.stack([(u0 + u1) / 2, (v0 + v1) / 2, side], 1)


def object_crops(images: torch.Tensor, masks: torch.Tensor, uv: torch.Tensor, vis: torch.Tensor, size: int,
                 boxes: torch.Tensor, generator: torch.Generator | None = None, scale_jitter: float = 0.0,
                 shift_jitter: float = 0.0):
    """Square crops resampled to ``size``: images [B, 3, H, W] float, masks [B, H, W], uv [B, N, 2].

    Box b (centre, side) maps to the crop by ``uv' = (uv − centre)·size/side + size/2`` (continuous
    pixel coordinates, pixel centres at +0.5), with optional random scale/shift. Returns the
    cropped images, masks, uv' and the visibility restricted to the crop.
    """
    B = images.shape[0]
    H, W = images.shape[-2:]
    boxes = boxes.clone()
    if scale_jitter or shift_jitter:
        gdev = generator.device if generator is not None else images.device
        r = (torch.rand(B, 3, generator=generator, device=gdev) * 2 - 1).to(boxes.device)
        boxes[:, 2] *= torch.exp(r[:, 2] * scale_jitter)
        boxes[:, :2] += r[:, :2] * shift_jitter * boxes[:, 2:3]
    c, side = boxes[:, :2], boxes[:, 2:3]
    pix = torch.arange(size, dtype=torch.float32, device=images.device) + 0.5
    u_in = c[:, 0:1] + (pix[None] - size / 2) * side / size  # [B, size]
    v_in = c[:, 1:2] + (pix[None] - size / 2) * side / size
    grid = torch.stack([(u_in / W * 2 - 1)[:, None, :].expand(B, size, size),
                        (v_in / H * 2 - 1)[:, :, None].expand(B, size, size)], dim=-1)
    img = F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)
    msk = F.grid_sample(
        masks[:, None].float(), grid, mode="bilinear", padding_mode="zeros", align_corners=False
    )[:, 0]
    uv2 = (uv - c[:, None]) * (size / side[:, None]) + size / 2
    inside = (uv2 >= 0).all(-1) & (uv2 < size).all(-1)
    return img, msk, uv2, vis & inside
