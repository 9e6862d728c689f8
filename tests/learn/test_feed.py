"""The device feed (decode, targets, crops, augmentation as batched tensor ops) against the per-frame
CPU reference ``prepare_batch``, a corrupt frame in a batch, and the batched compositing."""

import numpy as np
import pytest
import torch

from catpose.learn.frames import AugmentConfig


@pytest.fixture(scope="module")
def rows_and_targets(car_rows):
    return car_rows["columns"], car_rows["targets"]


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
def test_device_feed_matches_the_cpu_reference(rows_and_targets, device):
    from catpose.learn.data import prepare_batch
    from catpose.learn.feed import DeviceFeed

    cols, targets = rows_and_targets
    batch = {c: v[:12] for c, v in cols.items()}
    ref = prepare_batch(batch, targets, 64, None)
    feed = DeviceFeed(targets, 64, None, device)
    out = {k: v.cpu() if torch.is_tensor(v) else v for k, v in feed(batch).items()}
    assert [k[1] for k in out["key"]] == ref["frame_number"].tolist()
    assert out["vis"].sum() > 0.2 * out["vis"].numel()  # the cars are seen, not an empty comparison
    # same crop parameters -> the same targets: visibility identical (on CUDA, up to float rounding at
    # the mask's and z-buffer's edges), pixels within a pixel
    if device == "cpu":
        assert np.array_equal(out["vis"].numpy(), ref["vis"])
    else:
        assert (out["vis"].numpy() == ref["vis"]).mean() > 0.995
    both = ref["vis"] & out["vis"].numpy()
    assert np.abs(out["uv"].numpy()[both] - ref["uv"][both]).max() < 1.0
    assert np.abs(out["image"].numpy() * 255 - ref["image"]).mean() < 1.0
    # the second pass comes from the cache and gives the same crops (no augmentation)
    again = {k: v.cpu() if torch.is_tensor(v) else v for k, v in feed(batch).items()}
    assert feed.stats["cached"] == 12 and feed.stats["decoded"] == 12
    assert torch.equal(again["uv"], out["uv"]) and torch.equal(again["image"], out["image"])


@pytest.mark.parametrize("device", DEVICES)
def test_a_corrupt_frame_is_dropped_and_counted(rows_and_targets, device):
    from catpose.learn.feed import DeviceFeed, prefetched

    cols, targets = rows_and_targets
    batch = {c: list(v[:8]) for c, v in cols.items()}
    batch["image"][3] = batch["image"][3][: len(batch["image"][3]) // 3]  # a truncated JPEG/PNG
    feed = DeviceFeed(targets, 64, AugmentConfig(), device, seed=1)
    outs = list(prefetched([batch, batch], feed))
    assert feed.stats["dropped"] == 2  # once per pass: a bad frame is never cached
    for out in outs:
        assert (
            len(out["key"]) == 7 and (batch["sequence_name"][3], batch["frame_number"][3]) not in out["key"]
        )
        assert out["image"].shape == (7, 3, 64, 64) and 0 <= out["image"].min() and out["image"].max() <= 1
        assert out["fg"].shape == (7, 64, 64) and out["vis"].any()


def test_composite_batch_replaces_background_and_occludes_targets():
    from catpose.learn.feed import background_bank, composite_batch

    g = torch.Generator().manual_seed(0)
    B, S = 6, 48
    img = torch.linspace(0.1, 0.7, B).view(B, 1, 1, 1).expand(B, 3, S, S).clone()
    mask = torch.zeros(B, S, S)
    mask[:, 12:36, 12:36] = 1
    ys, xs = torch.meshgrid(torch.arange(12, 36), torch.arange(12, 36), indexing="ij")
    uv = torch.stack([xs.flatten(), ys.flatten()], -1).float().expand(B, -1, -1) + 0.5
    vis = torch.ones(B, uv.shape[1], dtype=torch.bool)
    out, fg, vis2 = composite_batch(
        img, mask, uv, vis, g, background_bank(8, S, 0, torch.device("cpu")), 1.0, 1.0
    )
    for b in range(B):
        occluded = (mask[b] > 0.5) & (fg[b] < 0.5)
        assert occluded.any()
        under = occluded[uv[b, :, 1].long(), uv[b, :, 0].long()]
        assert not vis2[b][under].any() and vis2[b][~under].all()
        keep = (mask[b] > 0.5) & ~occluded
        assert torch.allclose(out[b][:, keep], img[b][:, keep])
        assert (out[b][:, mask[b] < 0.5] - img[b][:, mask[b] < 0.5]).abs().mean() > 0.02
