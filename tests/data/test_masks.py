"""GrabCut refinement of masks (catpose.data.masks): the boundary snapping of given masks."""

import cv2
import numpy as np

from catpose.data.masks import grabcut, snap_mask_edges


def _scene(H, W, seed=0):
    """A red-brown ellipse with a dark stripe on a grey, noisy floor: image [H, W, 3] uint8, truth [H, W]."""
    rng = np.random.default_rng(seed)
    img = (110 + 25 * rng.standard_normal((H, W, 3))).clip(0, 255)
    truth = np.zeros((H, W), np.uint8)
    cv2.ellipse(truth, (W // 2, H // 2), (W // 4, H // 5), 10, 0, 360, 1, -1)
    obj = truth > 0
    img[obj] = (np.array([170, 60, 40]) + 15 * rng.standard_normal((obj.sum(), 3))).clip(0, 255)
    img[obj & (np.abs(np.arange(H)[:, None] - H // 2) < H // 30)] = 40
    return img.astype(np.uint8), obj


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_too_wide_and_too_narrow_masks_snap_to_the_object():
    img, truth = _scene(120, 160)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    for given in (cv2.dilate(truth.astype(np.uint8), disk) > 0, cv2.erode(truth.astype(np.uint8), disk) > 0):
        out = snap_mask_edges(img, given, band=3)
        assert _iou(given, truth) < 0.93
        assert _iou(out, truth) > 0.97


def test_a_mask_on_the_edges_is_left_as_given():
    """GrabCut's own jitter on an exact mask (a fraction of a pixel) is not a reason to move it."""
    img, truth = _scene(120, 160, seed=2)
    assert np.array_equal(snap_mask_edges(img, truth, band=3), truth)
    # the same mask one pixel too wide is moved
    wide = cv2.dilate(truth.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert _iou(snap_mask_edges(img, wide, band=3), truth) > _iou(wide, truth)


def test_large_frames_are_snapped_on_a_scaled_crop():
    """A 1200 × 1600 frame, 20 px too wide: GrabCut runs on the object's box scaled to 256 px, the band with
    it."""
    img, truth = _scene(1200, 1600, seed=1)
    disk = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (41, 41))
    given = cv2.dilate(truth.astype(np.uint8), disk) > 0
    out = snap_mask_edges(img, given, band=30)
    assert _iou(given, truth) < 0.9 and _iou(out, truth) > 0.97


def test_nothing_to_snap():
    img, truth = _scene(60, 80)
    assert np.array_equal(snap_mask_edges(img, np.ones_like(truth), band=3), np.ones_like(truth))
    assert not snap_mask_edges(img, np.zeros_like(truth), band=3).any()
    assert np.array_equal(snap_mask_edges(img, truth, band=0), truth)
    # a label map with no background at all: nothing to learn colours from, the object is what was given
    labels = np.full(truth.shape, cv2.GC_PR_FGD, np.uint8)
    assert grabcut(img, labels).all()
