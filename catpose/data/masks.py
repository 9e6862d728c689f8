"""Object masks refined by OpenCV's GrabCut: the one classical segmentation catpose uses, for the masks it
makes for raw frames (:func:`catpose.data.ingest.grabcut_mask`) and for the boundaries of given masks
before training (:func:`snap_mask_edges`). No learned weights; OpenCV's colour models and graph cut."""

from __future__ import annotations

import numpy as np


def grabcut(image: np.ndarray, labels: np.ndarray, iters: int = 3) -> np.ndarray:
    """GrabCut from a label map: ``image`` [H, W, 3] uint8 RGB, ``labels`` [H, W] uint8 of OpenCV's
    ``GC_BGD``/``GC_FGD`` (sure) and ``GC_PR_BGD``/``GC_PR_FGD`` (probable). Returns the object [H, W] bool.
    Without a sure or probable pixel of either side there is nothing to learn colours from: the probable
    and sure object pixels are returned as they are."""
    import cv2

    fg = (labels == cv2.GC_FGD) | (labels == cv2.GC_PR_FGD)
    if fg.all() or not fg.any():
        return fg
    gc = np.ascontiguousarray(labels, dtype=np.uint8).copy()
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(np.ascontiguousarray(image[..., ::-1]), gc, None, bgd, fgd, iters, cv2.GC_INIT_WITH_MASK)
    return (gc == cv2.GC_FGD) | (gc == cv2.GC_PR_FGD)


def snap_mask_edges(image: np.ndarray, mask: np.ndarray, band: int, max_side: int = 256, iters: int = 3,
                    min_shift: float = 0.2) -> np.ndarray:
    """A segmentation mask whose boundary is moved to the image's own object edge, within ``band`` pixels.

    Segmentation masks of real captures are a few pixels too wide or too narrow; a mask that is too wide
    carries a fringe of floor into every composite of the training augmentation, which the object then
    seems to have (most of the realistic car's in-the-wild gap to clean videos, see README). Pixels deeper
    than
    ``band`` inside the mask are object for sure, pixels farther than ``band`` outside background for sure;
    GrabCut decides the band between them from the colours of both sides. Large frames are cut to the
    object's box and scaled so that its longer side is at most ``max_side`` pixels (the band with them).

    A boundary that already sits on the image's edges is left alone: GrabCut moves an exact mask by about
    0.35 px on average (its own noise, which cost a GPU-trained car 2.3 points), a mask 1-3 px off by
    0.7-2 px. Unless the boundary moves by at least ``min_shift`` of the band (and 0.6 px) on average —
    changed pixels over boundary pixels, at the working scale — the mask is returned as given.

    image [H, W, 3] uint8 RGB, mask [H, W] bool → [H, W] bool (unchanged outside the band).
    """
    import cv2

    H, W = mask.shape
    m = mask.astype(np.uint8)
    if band < 1 or not m.any() or m.all():
        return mask.copy()
    ys, xs = np.nonzero(m)
    pad = 3 * band + 2
    y0, y1 = max(0, ys.min() - pad), min(H, ys.max() + pad + 1)
    x0, x1 = max(0, xs.min() - pad), min(W, xs.max() + pad + 1)
    img, mc = image[y0:y1, x0:x1], m[y0:y1, x0:x1]
    s = min(1.0, max_side / max(img.shape[:2]))
    if s < 1.0:
        size = (max(1, round(img.shape[1] * s)), max(1, round(img.shape[0] * s)))
        img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
        mc = cv2.resize(mc, size, interpolation=cv2.INTER_NEAREST)
    b = max(1, round(band * s))
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * b + 1, 2 * b + 1))
    labels = np.full(mc.shape, cv2.GC_BGD, np.uint8)
    labels[cv2.dilate(mc, disk) > 0] = cv2.GC_PR_BGD
    labels[mc > 0] = cv2.GC_PR_FGD
    labels[cv2.erode(mc, disk, borderType=cv2.BORDER_REPLICATE) > 0] = cv2.GC_FGD
    fg = grabcut(img, labels, iters).astype(np.uint8)
    boundary = int((mc - cv2.erode(mc, np.ones((3, 3), np.uint8), borderType=cv2.BORDER_REPLICATE)).sum())
    if (fg != mc).sum() < max(min_shift * b, 0.6) * max(boundary, 1):
        return mask.copy()
    if s < 1.0:
        fg = cv2.resize(fg, (x1 - x0, y1 - y0), interpolation=cv2.INTER_NEAREST)
    out = mask.copy()
    full = m.copy()
    full[y0:y1, x0:x1] = fg
    d = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * band + 1, 2 * band + 1))
    inband = (cv2.dilate(m, d) > 0) & ~(cv2.erode(m, d, borderType=cv2.BORDER_REPLICATE) > 0)
    out[inband] = full[inband] > 0
    return out
