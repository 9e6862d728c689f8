"""Training crops made on the worker's device, inside the training loop.

Ray Data only reads and shuffles the shards' rows (encoded frame and mask, camera) on the CPU;
:class:`DeviceFeed` turns a batch of those rows into training crops on the worker's device (CUDA or
CPU, the same code):

1. decode — nvJPEG through ``torchvision.io.decode_jpeg`` on CUDA, batched, where torchvision exists;
   else PIL (libjpeg-turbo) on the CPU. Masks (PNG) decode on the CPU. A frame that does not decode is
   dropped and counted (``stats['dropped']``), the rest of the batch goes on;
2. per-frame targets — the template vertices' pixels ``uv`` [N, 2] and visibility [N] (z-buffer of the
   video's vertices and the mask, :func:`catpose.learn.frames.frame_targets`) and the object's box,
   batched per video;
3. the decoded frame and its targets are kept in a per-worker cache (``cache_mb``); once a worker's
   frames all fit (:attr:`DeviceFeed.complete`), later epochs draw batches from the cache
   (:meth:`DeviceFeed.cached_epoch`) without Ray Data, and pay only for 4.;
4. crops (``grid_sample``, :func:`catpose.geometry.object_crops`) with scale/shift jitter, compositing
   on procedural backgrounds cached on the device (randomly resampled per crop), occluders and colour
   jitter, as batched tensor ops with a generator on the device.

:func:`prefetched` runs the feed one or two batches ahead of the training step in a thread, so that the
host work (Ray Data, decoding) overlaps the step; on CUDA the kernels of both queue on the same stream.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from catpose.data.co3d import decode_image
from catpose.data.shards import row_camera
from catpose.errors import DataFormatError
from catpose.geometry import mask_boxes, object_crops
from catpose.learn.frames import (
    AugmentConfig,
    colour_jitter,
    frame_targets,
    random_backgrounds,
    refine_masks,
    snap_masks,
)


def _nvjpeg_available(device: torch.device) -> bool:
    if device.type != "cuda":
        return False
    try:
        from torchvision.io import decode_jpeg  # noqa: F401
    except (ImportError, RuntimeError, OSError):  # torchvision is optional (not a dependency of catpose)
        return False
    return True


def looks_like_jpeg(data: bytes) -> bool:
    """Start-of-image and end-of-image markers present (a truncated JPEG has no end marker)."""
    return len(data) > 4 and data[:3] == b"\xff\xd8\xff" and data.rstrip(b"\x00")[-2:] == b"\xff\xd9"


@dataclass
class _Frame:
    image: torch.Tensor  # uint8 [3, H, W] on the device
    mask: torch.Tensor  # uint8 [H, W]
    uv: torch.Tensor  # float32 [N, 2] pixels of the frame
    vis: torch.Tensor  # bool [N]
    box: torch.Tensor  # float32 [3] (centre u, centre v, side)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.image, self.mask, self.uv, self.vis, self.box))


def background_bank(n: int, size: int, seed: int, device: torch.device) -> torch.Tensor:
    """``n`` procedural backgrounds (:func:`catpose.learn.frames.random_backgrounds`) as uint8
    [n, 3, size, size] on ``device``; crops resample them with random zoom, shift and flips."""
    g = torch.Generator().manual_seed(seed)
    bank = random_backgrounds(n, size, g)
    return (bank * 255).round().to(torch.uint8).to(device)


def sample_backgrounds(bank: torch.Tensor, B: int, generator: torch.Generator) -> torch.Tensor:
    """B float backgrounds [B, 3, S, S]: random bank entries under a random zoom (×1–2), shift and
    horizontal/vertical flips (one ``affine_grid``/``grid_sample`` for the batch)."""
    dev = bank.device
    idx = torch.randint(len(bank), (B,), generator=generator, device=dev)
    r = torch.rand(B, 5, generator=generator, device=dev)
    zoom = 1 / (1 + r[:, 0])  # the sampled window is 1/zoom of the background's side
    flip_x = torch.where(r[:, 1] < 0.5, -1.0, 1.0)
    flip_y = torch.where(r[:, 2] < 0.5, -1.0, 1.0)
    tx = (r[:, 3] * 2 - 1) * (1 - zoom)
    ty = (r[:, 4] * 2 - 1) * (1 - zoom)
    theta = torch.zeros(B, 2, 3, device=dev)
    theta[:, 0, 0], theta[:, 1, 1] = zoom * flip_x, zoom * flip_y
    theta[:, 0, 2], theta[:, 1, 2] = tx, ty
    S = bank.shape[-1]
    grid = F.affine_grid(theta, [B, 3, S, S], align_corners=False)
    return F.grid_sample(bank[idx].float() / 255, grid, mode="bilinear", padding_mode="reflection",
                         align_corners=False)


def composite_batch(images: torch.Tensor, masks: torch.Tensor, uv: torch.Tensor, vis: torch.Tensor,
                    generator: torch.Generator, bank: torch.Tensor, p_background: float = 0.7,
                    p_occluder: float = 0.4):
    """:func:`catpose.learn.frames.composite` as batched tensor ops on the images' device.

    images [B, 3, S, S], soft masks [B, S, S], uv [B, N, 2] (crop pixels), vis [B, N]. With probability
    ``p_background`` a crop's background becomes a bank background (70 %) or another crop of the batch
    (30 %, a distracting object included); with probability ``p_occluder`` a rectangle or ellipse of
    noise (half-sides 8–25 % of S) centred on a random object pixel covers part of the object. Returns
    images, the visible foreground ``fg`` [B, S, S] and the visibility without the occluded vertices.
    """
    B, _, S, _ = images.shape
    dev = images.device
    r = torch.rand(B, 8, generator=generator, device=dev)
    m = masks[:, None]
    if B:
        other = images.roll(1, dims=0) if B > 1 else images
        bgs = torch.where(
            (r[:, 1] < 0.3)[:, None, None, None] & (B > 1), other, sample_backgrounds(bank, B, generator)
        )
        out = torch.where((r[:, 0] < p_background)[:, None, None, None], m * images + (1 - m) * bgs, images)
    else:
        out = images
    # occluders: centre on an object pixel (uniform over the mask), half-sides rx, ry
    obj = (masks > 0.5).flatten(1)
    has = obj.sum(1) >= 4
    weights = obj.float() + (~has).float()[:, None]  # any pixel where there is no object (not used then)
    k = (
        torch.multinomial(weights, 1, generator=generator)[:, 0]
        if B
        else torch.zeros(0, dtype=torch.long, device=dev)
    )
    cx, cy = (k % S).float() + 0.5, (k // S).float() + 0.5
    rx, ry = S * (0.08 + 0.17 * r[:, 2]), S * (0.08 + 0.17 * r[:, 3])
    pix = torch.arange(S, device=dev, dtype=torch.float32) + 0.5
    dx = (pix[None, None, :] - cx[:, None, None]) / rx[:, None, None]  # [B, 1, S]
    dy = (pix[None, :, None] - cy[:, None, None]) / ry[:, None, None]  # [B, S, 1]
    rect = (dx.abs() < 1) & (dy.abs() < 1)
    ellipse = dx ** 2 + dy ** 2 < 1
    occ = (
        torch.where((r[:, 4] < 0.5)[:, None, None], rect, ellipse)
        & ((r[:, 5] < p_occluder) & has)[:, None, None]
    )
    tex = (torch.rand(B, 3, 1, 1, generator=generator, device=dev)
           + 0.15 * torch.randn(B, 3, S, S, generator=generator, device=dev)).clamp(0, 1)
    out = torch.where(occ[:, None], tex, out)
    fg = torch.where(occ, torch.zeros((), device=dev), masks)
    pu = uv[..., 0].floor().long().clamp(0, S - 1)
    pv = uv[..., 1].floor().long().clamp(0, S - 1)
    under = torch.gather(occ.flatten(1), 1, pv * S + pu)
    return out, fg, vis & ~under


class DeviceFeed:
    """Shard rows (numpy columns of :data:`catpose.learn.data.COLUMNS`) → training crops on ``device``.

    ``videos``: the :class:`~catpose.learn.data.VideoTargets` of the training videos (rows of other
    videos are skipped); ``augment`` None: centred crops, no augmentation (evaluation, tests).
    ``cache_mb``: decoded frames and their targets kept per worker (0: decode every time).
    ``mask_fill``: mask holes and eroded borders are filled from the video's vertices first
    (:func:`~catpose.learn.frames.refine_masks`); ``mask_snap``: then the boundaries are moved to the
    image's edges (:func:`~catpose.learn.frames.snap_masks`, band share; 0: off). ``__call__`` returns
    ``image`` float [B, 3, S, S] in [0, 1], ``uv`` [B, N, 2], ``vis`` [B, N] bool, ``fg`` float [B, S, S],
    ``key`` (sequence, frame) per crop; ``stats`` counts decoded, cached and dropped frames.
    """

    def __init__(
        self,
        videos: dict,
        size: int = 128,
        augment: AugmentConfig | None = None,
        device: str | torch.device = "cpu",
        seed: int = 0,
        cache_mb: float = 2048,
        tol: float = 0.05,
        backgrounds: int = 0,
        nvjpeg: bool | None = None,
        mask_fill: bool = True,
        mask_snap: float = 0.0,
    ):
        self.device = torch.device(device)
        self.size, self.augment, self.tol, self.mask_fill, self.mask_snap = (
            size,
            augment,
            tol,
            mask_fill,
            mask_snap,
        )
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=self.device)  # noqa: E731
        self.videos = {n: (t(v.points), torch.as_tensor(np.asarray(v.valid), device=self.device), t(v.dense))
                       for n, v in videos.items()}
        self.n_vertices = next(iter(videos.values())).points.shape[0] if videos else 0
        self.generator = torch.Generator(device=self.device).manual_seed(seed)
        self.nvjpeg = _nvjpeg_available(self.device) if nvjpeg is None else nvjpeg
        self.cache: dict[tuple[str, int], _Frame] = {}
        self.cache_bytes, self.cache_limit = 0, int(cache_mb * 2**20)
        self.stats = {"decoded": 0, "cached": 0, "dropped": 0, "not_cached": 0}
        self._index_gen = torch.Generator().manual_seed(seed)
        self.bank = None
        if augment is not None and augment.background > 0:
            n = backgrounds or (512 if self.device.type == "cuda" else 64)
            self.bank = background_bank(n, size, seed + 1, self.device)

    # ---------------------------------------------------------------- decoding and per-frame targets

    def _decode(self, images: list[bytes], masks: list, what: list[str]) -> list:
        """[(image uint8 [3, H, W], mask uint8 [H, W]) on the device, or None where a frame fails]."""
        out: list = [None] * len(images)
        gpu_idx = []
        for i, (data, m, w) in enumerate(zip(images, masks, what)):
            try:
                mask = (torch.from_numpy(decode_image(m, w + " mask", "L").copy()) if m is not None else None)
                if self.nvjpeg and looks_like_jpeg(data):
                    out[i] = (None, mask)
                    gpu_idx.append(i)
                else:
                    img = torch.from_numpy(decode_image(data, w, "RGB").copy()).permute(2, 0, 1)
                    out[i] = (img, mask)
            except DataFormatError:
                out[i] = None
        if gpu_idx:
            from torchvision.io import ImageReadMode, decode_jpeg

            raw = [torch.frombuffer(bytearray(images[i]), dtype=torch.uint8) for i in gpu_idx]
            try:
                decoded = decode_jpeg(raw, mode=ImageReadMode.RGB, device=self.device)
            except RuntimeError:  # one bad frame fails the batched call: decode one by one to find it
                decoded = []
                for r in raw:
                    try:
                        decoded.append(decode_jpeg(r, mode=ImageReadMode.RGB, device=self.device))
                    except RuntimeError:
                        decoded.append(None)
            for i, img in zip(gpu_idx, decoded):
                out[i] = None if img is None else (img, out[i][1])
        res = []
        for o in out:
            if o is None:
                res.append(None)
                continue
            img, mask = o
            img = img.to(self.device, non_blocking=True)
            if mask is None:
                mask = torch.full(img.shape[1:], 255, dtype=torch.uint8)
            if tuple(mask.shape) != tuple(img.shape[1:]):
                res.append(None)
                continue
            res.append((img, mask.to(self.device, non_blocking=True)))
        return res

    def _add_frames(self, batch: dict, rows: list[int]) -> dict:
        """Decodes rows, computes their targets (batched per video and image size) → {key: _Frame}."""
        names = [str(batch["sequence_name"][i]) for i in rows]
        keys = [(n, int(batch["frame_number"][i])) for n, i in zip(names, rows)]
        dec = self._decode([batch["image"][i] for i in rows], [batch["mask"][i] for i in rows],
                           [f"{n}/{f}" for n, f in keys])
        groups: dict[tuple, list] = {}
        for i, key, d in zip(rows, keys, dec):
            if d is None:
                self.stats["dropped"] += 1
                continue
            try:
                cam = row_camera(
                    {
                        k: batch[k][i]
                        for k in (
                            "R",
                            "T",
                            "focal_length",
                            "principal_point",
                            "height",
                            "width",
                            "intrinsics_format",
                        )
                    }
                )
            except (DataFormatError, ValueError, KeyError, TypeError):
                self.stats["dropped"] += 1
                continue
            groups.setdefault((key[0], tuple(d[0].shape[1:])), []).append((key, d, cam))
        frames = {}
        t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32, device=self.device)  # noqa: E731
        for (name, hw), items in groups.items():
            pts, valid, dense = self.videos[name]
            cams = [c for _, _, c in items]
            msk = torch.stack([d[1] for _, d, _ in items]).float() / 255
            R, T, f, pp = (t([c.R for c in cams]), t([c.T for c in cams]), t([c.focal_px for c in cams]),
                           t([c.principal_point_px for c in cams]))
            if self.mask_fill:
                msk = refine_masks(msk, dense, R, T, f, pp)
            if self.mask_snap > 0:
                msk = snap_masks(torch.stack([d[0] for _, d, _ in items]), msk, self.mask_snap)
            uv, vis = frame_targets(pts, valid, dense, R, T, f, pp, hw, msk, tol=self.tol)
            boxes = mask_boxes(msk, uv, fallback_valid=vis)
            self.stats["decoded"] += len(items)
            m8 = (msk * 255).round().to(torch.uint8)
            for k, (key, d, _) in enumerate(items):
                frames[key] = _Frame(d[0], m8[k], uv[k], vis[k], boxes[k])
        return frames

    # ---------------------------------------------------------------- batches

    def __call__(self, batch: dict) -> dict:
        keys, missing = [], []
        for i, name in enumerate(batch["sequence_name"]):
            name = str(name)
            if name not in self.videos:
                continue
            key = (name, int(batch["frame_number"][i]))
            keys.append(key)
            if key not in self.cache:
                missing.append(i)
        fresh = self._add_frames(batch, missing) if missing else {}
        frames = []
        for key in keys:
            f = self.cache.get(key)
            if f is not None:
                self.stats["cached"] += 1
            else:
                f = fresh.get(key)
                if f is None:
                    continue
                if self.cache_bytes + f.nbytes <= self.cache_limit:
                    self.cache[key] = f
                    self.cache_bytes += f.nbytes
                else:
                    self.stats["not_cached"] += 1
            frames.append((key, f))
        return self.crops(frames)

    def from_cache(self, keys: list) -> dict:
        """Crops of cached frames (``keys`` of :attr:`cache`), as ``__call__`` makes them."""
        return self.crops([(k, self.cache[k]) for k in keys])

    def cached_epoch(self, crops: int, batch_size: int) -> list[list]:
        """Batches of cache keys for an epoch of ``crops`` crops: random permutations of the cached frames,
        repeated as needed (so an epoch keeps the length of one pass of the data pipeline)."""
        keys = list(self.cache)
        order: list[int] = []
        while len(order) < crops and keys:
            order += torch.randperm(len(keys), generator=self._index_gen).tolist()
        order = order[:crops]
        return [[keys[i] for i in order[s:s + batch_size]] for s in range(0, len(order), batch_size)]

    @property
    def complete(self) -> bool:
        """Every decodable frame seen so far is in the cache (epochs can then come from the cache)."""
        return self.stats["not_cached"] == 0 and bool(self.cache)

    def crops(self, frames: list) -> dict:
        """Crops, targets and augmentation of ``frames`` [(key, _Frame)], batched on the device."""
        S, N = self.size, self.n_vertices
        dev = self.device
        if not frames:
            return {
                "image": torch.zeros(0, 3, S, S, device=dev),
                "uv": torch.zeros(0, N, 2, device=dev),
                "vis": torch.zeros(0, N, dtype=torch.bool, device=dev),
                "fg": torch.zeros(0, S, S, device=dev),
                "key": [],
            }
        jit = self.augment or AugmentConfig(scale_jitter=0, shift_jitter=0)
        by_size: dict[tuple, list] = {}
        for j, (_, f) in enumerate(frames):
            by_size.setdefault(tuple(f.image.shape[1:]), []).append(j)
        parts, order = [], []
        for idx in by_size.values():
            fs = [frames[j][1] for j in idx]
            img = torch.stack([f.image for f in fs]).float() / 255
            msk = torch.stack([f.mask for f in fs]).float() / 255
            out = object_crops(
                img,
                msk,
                torch.stack([f.uv for f in fs]),
                torch.stack([f.vis for f in fs]),
                S,
                torch.stack([f.box for f in fs]),
                self.generator,
                jit.scale_jitter,
                jit.shift_jitter,
            )
            parts.append(out)
            order += idx
        img, msk, uv, vis = (torch.cat([p[k] for p in parts]) for k in range(4))
        if len(parts) > 1:  # back to the batch's order
            inv = torch.empty(len(order), dtype=torch.long)
            inv[torch.as_tensor(order)] = torch.arange(len(order))
            inv = inv.to(dev)
            img, msk, uv, vis = img[inv], msk[inv], uv[inv], vis[inv]
        if self.augment is not None:
            if self.bank is None:  # no background replacement: the bank is never drawn from
                self.bank = torch.zeros(1, 3, S, S, dtype=torch.uint8, device=dev)
            img, msk, vis = composite_batch(
                img, msk, uv, vis, self.generator, self.bank, self.augment.background, self.augment.occluder
            )
            img = colour_jitter(img, self.generator, self.augment.colour)
        return {"image": img, "uv": uv, "vis": vis, "fg": msk, "key": [k for k, _ in frames]}


def prefetched(batches, feed, depth: int = 2):
    """Yields ``feed(batch)`` for each of ``batches``, computed ``depth`` batches ahead in a thread.

    Exceptions of the thread are raised in the caller; stopping early (``break``) ends the thread."""
    q: queue.Queue = queue.Queue(maxsize=max(1, depth))
    stop = threading.Event()
    done = object()

    def work():
        try:
            for b in batches:
                out = feed(b)
                while not stop.is_set():
                    try:
                        q.put(out, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as e:  # noqa: BLE001 — handed to the consumer
            q.put(e)
            return
        q.put(done)

    th = threading.Thread(target=work, name="catpose-feed", daemon=True)
    th.start()
    try:
        while True:
            item = q.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        while th.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                pass
            th.join(timeout=0.05)


def crops_per_s(feed: DeviceFeed, batches: list[dict], repeat: int = 1) -> float:
    """Crops per second of ``feed`` over ``batches`` (``repeat`` passes), device work included."""
    import time

    def sync():
        if feed.device.type == "cuda":
            torch.cuda.synchronize(feed.device)

    sync()
    t0 = time.perf_counter()
    n = 0
    for _ in range(repeat):
        for b in batches:
            n += len(feed(b)["key"])
    sync()
    return n / max(time.perf_counter() - t0, 1e-9)


__all__ = ["DeviceFeed", "background_bank", "composite_batch", "crops_per_s", "looks_like_jpeg", "prefetched",
           "sample_backgrounds"]
