"""Object boxes and square crops (catpose.geometry.boxes)."""

import numpy as np
import pytest
import torch

from catpose.errors import NoObjectError
from catpose.geometry import BOX_MARGIN, crop_image, mask_boxes, object_box, object_crops


def test_object_crop_moves_targets_with_the_pixels():
    H, W, S = 60, 80, 32
    img = torch.zeros(1, 3, H, W)
    img[0, :, 23, 51] = 1.0  # one bright pixel: centre at (51.5, 23.5)
    mask = torch.zeros(1, H, W)
    mask[0, 10:40, 30:70] = 1
    uv = torch.tensor([[[51.5, 23.5]]])
    box = mask_boxes(mask)
    assert torch.allclose(box[0], torch.tensor([50.0, 25.0, BOX_MARGIN * 40]))
    ci, cm, cuv, cvis = object_crops(img, mask, uv, torch.ones(1, 1, dtype=torch.bool), S, box)
    peak = torch.nonzero(ci[0, 0] == ci[0, 0].max())[0]  # (row, col) of the brightest crop pixel
    assert (
        abs(peak[1].item() + 0.5 - cuv[0, 0, 0].item()) <= 0.5
        and abs(peak[0].item() + 0.5 - cuv[0, 0, 1].item()) <= 0.5
    )
    assert cvis.all() and cm.max() > 0.99
    # jittered crops stay consistent too, and points pushed outside the crop become invisible
    g = torch.Generator().manual_seed(3)
    far = torch.tensor([[[51.5, 23.5], [-100.0, 5.0]]])
    ci, _, cuv, cvis = object_crops(img, mask, far, torch.ones(1, 2, dtype=torch.bool), S, box, g, 0.3, 0.2)
    peak = torch.nonzero(ci[0, 0] == ci[0, 0].max())[0]
    assert (
        abs(peak[1].item() + 0.5 - cuv[0, 0, 0].item()) <= 1.0
        and abs(peak[0].item() + 0.5 - cuv[0, 0, 1].item()) <= 1.0
    )
    assert cvis[0, 0] and not cvis[0, 1]


def test_one_box_rule_for_masks_given_boxes_and_training_crops():
    """object_box (pose, numpy) and mask_boxes (training, torch) give the same box for the same mask."""
    mask = np.zeros((50, 70), np.float32)
    mask[5:30, 20:64] = 1
    one = object_box(mask.shape, None, mask)
    batch = mask_boxes(torch.as_tensor(mask)[None])[0].numpy()
    np.testing.assert_allclose(one, batch, rtol=1e-6)
    np.testing.assert_allclose(one, [42.0, 17.5, BOX_MARGIN * 44])
    np.testing.assert_allclose(object_box(mask.shape, (20, 5, 64, 30)), one)  # the same object as a bbox
    # no box: the whole image, no margin
    np.testing.assert_allclose(object_box(mask.shape), [35.0, 25.0, 70.0])


def test_empty_boxes_and_masks_are_no_object():
    with pytest.raises(NoObjectError, match="img.png: the object box .* is empty inside the 70x50 image"):
        object_box((50, 70), (80, 10, 90, 20), source="img.png")
    with pytest.raises(NoObjectError, match="the object mask is empty"):
        object_box((50, 70), None, np.zeros((50, 70)))


def test_crop_image_maps_pixels_like_object_crops():
    img = np.zeros((40, 60, 3), np.uint8)
    img[10, 30] = 255  # centre (30.5, 10.5)
    box = np.array([30.0, 12.0, 16.0])
    out = crop_image(img, box, 32)
    assert out.shape == (1, 3, 32, 32)
    r, c = np.unravel_index(int(out[0, 0].argmax()), (32, 32))
    expect = (np.array([30.5, 10.5]) - box[:2]) * 32 / box[2] + 16  # uv -> (uv - c)·S/side + S/2
    assert abs(c + 0.5 - expect[0]) <= 1.0 and abs(r + 0.5 - expect[1]) <= 1.0


def test_pose_and_training_crops_share_the_margin():
    from catpose.config import PoseConfig

    assert PoseConfig().margin == BOX_MARGIN  # config.py stays torch-free, so it repeats the number
