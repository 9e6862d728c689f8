"""Training data: Parquet frame shards → (crop, targets, augmentation) batches.

:func:`training_dataset` builds the Ray Data pipeline over the shards of one category (local or
``s3://``): it reads and shuffles encoded rows only; :class:`catpose.learn.feed.DeviceFeed` decodes,
crops and augments them on the worker's device inside the training loop. :func:`prepare_batch` is the
per-frame CPU reference of the same transform (numpy in, numpy out), used by the held-out evaluation
and by the tests that check the device feed against it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch

from catpose.data.co3d import decode_image
from catpose.data.shards import read_shards_ray, row_camera
from catpose.errors import DataFormatError
from catpose.geometry import mask_boxes, object_crops
from catpose.learn.frames import (
    AugmentConfig,
    colour_jitter,
    composite,
    frame_targets,
    refine_masks,
    snap_masks,
)

COLUMNS = ["sequence_name", "frame_number", "image", "mask", "height", "width", "R", "T", "focal_length",
           "principal_point", "intrinsics_format"]


@dataclass
class VideoTargets:
    """What the data pipeline needs of one video: template correspondents and occluding vertices."""

    points: np.ndarray  # [N, 3] float32, instance correspondents c_ij in the video's world frame
    valid: np.ndarray  # [N] bool
    dense: np.ndarray  # [M, 3] float32, the video's vertices (z-buffer)


def _camera(batch: dict, i: int):
    return row_camera(
        {
            k: batch[k][i]
            for k in ("R", "T", "focal_length", "principal_point", "height", "width", "intrinsics_format")
        }
    )


def prepare_batch(batch: dict, videos: dict[str, VideoTargets], size: int = 128,
                  augment: AugmentConfig | None = None, seed: int | None = None, tol: float = 0.05,
                  mask_fill: bool = True, mask_snap: float = 0.0) -> dict:
    """Shard rows (numpy columns, see ``COLUMNS``) → model inputs.

    Rows of sequences not in ``videos`` and frames that do not decode are dropped. Returns numpy
    columns: ``image`` uint8 [B, 3, S, S], ``uv`` float32 [B, N, 2] (pixels of the crop), ``vis`` bool
    [B, N], ``fg`` uint8 [B, S, S] (visible object pixels, 0/255), ``sequence_name``, ``frame_number``.
    With ``mask_fill``, mask holes and eroded borders are first filled from the video's vertices
    (:func:`~catpose.learn.frames.refine_masks`), and with ``mask_snap`` their boundaries moved to the
    image's edges (:func:`~catpose.learn.frames.snap_masks`).
    """
    gen = torch.Generator().manual_seed(
        int.from_bytes(os.urandom(8), "little") >> 1 if seed is None else seed
    )
    # decode, then compute the targets of each video's frames in one batched call
    decoded: dict[str, list] = {}
    for i, name in enumerate(batch["sequence_name"]):
        name = str(name)
        if name not in videos:
            continue
        what = f"{name}/{int(batch['frame_number'][i])}"
        try:
            img = decode_image(batch["image"][i], what, "RGB")
            img = torch.from_numpy(img.copy()).permute(2, 0, 1).float() / 255
            m = batch["mask"][i]
            msk = (
                torch.from_numpy(decode_image(m, what + " mask", "L").copy()).float() / 255
                if m is not None
                else torch.ones(img.shape[1:])
            )
        except DataFormatError:  # an undecodable frame is dropped (the shard stage verifies frames)
            continue
        decoded.setdefault(name, []).append((i, img, msk, _camera(batch, i)))
    jit = augment or AugmentConfig(scale_jitter=0, shift_jitter=0)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    imgs, masks, uvs, viss, names, numbers = [], [], [], [], [], []
    for name, items in decoded.items():
        v = videos[name]
        by_size: dict[tuple, list] = {}
        for it in items:
            by_size.setdefault(it[3].image_size, []).append(it)
        for hw, group in by_size.items():
            cams = [g[3] for g in group]
            img, msk = torch.stack([g[1] for g in group]), torch.stack([g[2] for g in group])
            R, T, f, pp = (t([c.R for c in cams]), t([c.T for c in cams]), t([c.focal_px for c in cams]),
                           t([c.principal_point_px for c in cams]))
            if mask_fill:
                msk = refine_masks(msk, t(v.dense), R, T, f, pp)
            if mask_snap > 0:
                msk = snap_masks((img * 255).round().to(torch.uint8), msk, mask_snap)
            uv, vis = frame_targets(
                t(v.points), torch.as_tensor(v.valid), t(v.dense), R, T, f, pp, hw, msk, tol=tol
            )
            boxes = torch.cat([mask_boxes(msk[k:k + 1], uv[k][vis[k]][None]) for k in range(len(group))])
            ci, cm, cuv, cvis = object_crops(
                img, msk, uv, vis, size, boxes, gen, jit.scale_jitter, jit.shift_jitter
            )
            imgs += list(ci)
            masks += list(cm)
            uvs += list(cuv)
            viss += list(cvis)
            names += [name] * len(group)
            numbers += [int(batch["frame_number"][g[0]]) for g in group]
    n = len(imgs)
    N = next(iter(videos.values())).points.shape[0] if videos else 0
    if n == 0:
        return {"image": np.zeros((0, 3, size, size), np.uint8), "uv": np.zeros((0, N, 2), np.float32),
                "vis": np.zeros((0, N), bool), "fg": np.zeros((0, size, size), np.uint8),
                "sequence_name": np.array([], dtype=object), "frame_number": np.zeros(0, np.int64)}
    img, msk, uv, vis = torch.stack(imgs), torch.stack(masks), torch.stack(uvs), torch.stack(viss)
    if augment is not None:
        img, msk, vis = composite(img, msk, uv, vis, gen, augment.background, augment.occluder)
        img = colour_jitter(img, gen, augment.colour)
    return {"image": (img * 255).round().clamp(0, 255).to(torch.uint8).numpy(), "uv": uv.numpy(),
            "vis": vis.numpy(), "fg": (msk * 255).round().clamp(0, 255).to(torch.uint8).numpy(),
            "sequence_name": np.array(names, dtype=object), "frame_number": np.array(numbers, np.int64)}


def training_dataset(
    shards: str,
    category: str,
    videos: dict[str, VideoTargets],
    endpoint_url: str | None = None,
    batch_rows: int = 64,
):
    """Ray Data pipeline of the encoded rows (``COLUMNS``) of ``videos``' frames in the category's shards.

    Only reading, filtering and shuffling run in Ray Data (on the CPU); decoding, targets, crops and
    augmentation run on the worker's device in the training loop (:class:`catpose.learn.feed.DeviceFeed`).
    """
    import ray.data
    from ray.data.expressions import col

    # one bar for the whole pipeline in logs (per-operator bars flood `ray job logs`)
    ray.data.DataContext.get_current().enable_operator_progress_bars = False
    ds = read_shards_ray(shards, endpoint_url, columns=COLUMNS, categories=[category])
    ds = ds.filter(expr=col("sequence_name").is_in(sorted(videos)))
    # a shard file holds hundreds of frames of a few videos: small blocks in a new order every epoch
    # (plus the local shuffle buffer of the loop) mix videos within a batch
    ds = ds.repartition(target_num_rows_per_block=batch_rows)
    return ds.randomize_block_order().select_columns(COLUMNS)
