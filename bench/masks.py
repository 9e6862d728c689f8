"""Mask refinement before training: how close imperfect masks come to the true ones after filling from the
video's vertices (``refine_masks``) and snapping to the image's edges (``snap_masks``, GrabCut), and what
snapping costs per frame on one CPU core, next to decoding the same frame (JPEG image and PNG mask) in
the same run.

Data: ``catpose synth`` videos with exact masks (the truth) and the realistic preset's mask noise drawn on
them (eroded or dilated by 1-3 px, holes in a third of the frames), at the training frames' 128 px and at
600 px, the size of CO3D's frames (snapping works on the object's box scaled to at most 256 px; the
noise stays 1-3 px, so the 600-px rows measure the cost more than the gain).

    python bench/masks.py [--videos 3] [--frames 12] [--out bench/results/mask-snap.json]
"""

from __future__ import annotations

import argparse
import io
import platform
import tempfile
import time

import numpy as np
import torch
from PIL import Image

from catpose.config import SynthConfig, TrainConfig
from catpose.data.co3d import Co3dCategory, decode_image
from catpose.data.synth.generate import generate, imperfect_mask
from catpose.features.surface import sequence_vertices
from catpose.learn.frames import refine_masks, snap_masks
from results_io import write_result


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def measure(root, category: str, share: float, rng: np.random.Generator) -> dict:
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
    iou = {"given": [], "filled": [], "filled_snapped": [], "exact_snapped": []}
    snap_s, decode_s, size = [], [], None
    for seq in Co3dCategory(root, category):
        V = t(sequence_vertices(seq.load_point_cloud(), 1000)[0])
        for fr in seq.frames:
            c = fr.camera
            truth = fr.load_mask() > 0.5
            size = truth.shape
            img_bytes = io.BytesIO()
            Image.fromarray(fr.load_image()).save(img_bytes, "JPEG", quality=90)
            mask_bytes = io.BytesIO()
            Image.fromarray((truth * 255).astype(np.uint8)).save(mask_bytes, "PNG")
            t0 = time.perf_counter()
            image = decode_image(img_bytes.getvalue(), "bench", "RGB")
            decode_image(mask_bytes.getvalue(), "bench mask", "L")
            decode_s.append(time.perf_counter() - t0)
            noisy = imperfect_mask(truth.astype(np.float32), rng)
            args = (t(c.R)[None].expand(2, 3, 3), t(c.T)[None].expand(2, 3), t(c.focal_px)[None].expand(2, 2),
                    t(c.principal_point_px)[None].expand(2, 2))
            filled = refine_masks(t(np.stack([noisy, truth])), V, *args)
            img = torch.from_numpy(image.copy()).permute(2, 0, 1)[None]
            t0 = time.perf_counter()
            snapped = snap_masks(img, filled[:1], share)
            snap_s.append(time.perf_counter() - t0)
            exact = snap_masks(img, filled[1:], share)
            iou["given"].append(_iou(noisy > 0.5, truth))
            iou["filled"].append(_iou(filled[0].numpy() > 0.5, truth))
            iou["filled_snapped"].append(_iou(snapped[0].numpy() > 0.5, truth))
            iou["exact_snapped"].append(_iou(exact[0].numpy() > 0.5, truth))
    ms_snap, ms_dec = 1000 * float(np.median(snap_s)), 1000 * float(np.median(decode_s))
    return {
        "frames": len(snap_s),
        "frame_size_hw": list(size),
        "mask_iou_mean": {k: round(float(np.mean(v)), 4) for k, v in iou.items()},
        "mask_iou_p10": {k: round(float(np.quantile(v, 0.1)), 4) for k, v in iou.items()},
        "snap_ms_per_frame_median": round(ms_snap, 2),
        "decode_ms_per_frame_median": round(ms_dec, 2),
        "snap_over_decode": round(ms_snap / ms_dec, 2),
        "snap_frames_per_s_one_core": round(1000 / ms_snap, 1),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--videos", type=int, default=3)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(1)
    import cv2

    cv2.setNumThreads(1)
    share = TrainConfig.mask_snap
    res = {"device": f"{platform.machine()} CPU, one thread", "mask_snap": share, "sizes": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for size, frames in ((128, a.frames), (600, max(2, a.frames // 3))):
            root = f"{tmp}/s{size}"
            generate(SynthConfig(workers=0, out=root, category=("car", "mug"), videos=a.videos, frames=frames,
                                 size=size, seed=size))
            for cat in ("car", "mug"):
                r = measure(root, cat, share, np.random.default_rng(0))
                res["sizes"][f"{cat} {r['frame_size_hw'][0]}x{r['frame_size_hw'][1]}"] = r
                print(cat, size, r, flush=True)
    write_result(res, a.out, "mask-snap.json")


if __name__ == "__main__":
    main()
