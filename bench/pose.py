"""Benchmark of pose estimation: seconds per image on this machine's CPU and (when present) GPU.

Model: a trained run (``--run``) or, for speed alone, a freshly initialised network of the default
size with a 1000-vertex template (time does not depend on the weights). Images: synthetic in-the-wild
images (192×160) generated here. Measured per image (``PoseEstimator.estimate``): the encoder, the
coarse search (``--grid`` rotations) and the refinement; the same images estimated together
(``PoseEstimator.estimate_batch``, ``--batch`` at a time) against one at a time in the same run
(``images_per_s_batched``, ``images_per_s_single``, and the largest rotation difference between the two);
and, as the simplest correct baseline of the coarse search, the same render-and-compare score evaluated one
rotation at a time (extrapolated from 64 rotations), so the ratio shows what batching the hypotheses buys.

    python bench/pose.py [--run RUNS/train-car] [--images 16] [--batch 16] [--grid 4096] [--root WILD_SET]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from catpose.config import PoseConfig, TrainConfig, WildConfig
from catpose.geometry import crop_image, object_box, so3_grid
from catpose.learn.template import Template
from catpose.pose.datasets import load_pascal3d
from catpose.pose.estimate import (
    PoseEstimator,
    fit_translation,
    load_image,
    render_compare_batch,
    similarity_maps_batch,
)
from catpose.pose.wild import generate_wild


def _estimator(run: str | None, cfg: PoseConfig) -> PoseEstimator:
    if run:
        return PoseEstimator.from_run(run, cfg=cfg)
    from catpose.learn.model import build_model

    tc = TrainConfig(data="", out="")
    V = torch.randn(1000, 3) * torch.tensor([2.0, 0.9, 0.6])
    model = build_model(tc, V).to(cfg.device).eval()
    tpl = Template(V.numpy(), np.ones(1000, np.float32))
    # no background prototypes: an untrained template would call every crop "no object"
    return PoseEstimator(
        model.encoder, model.template.vertex_features().detach(), tpl.vertices, None, tc.size, cfg
    )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def bench_device(device: str, samples, run: str | None, grid: int, batch: int = 16, single: int = 0) -> dict:
    est = _estimator(run, PoseConfig(device=device, grid=grid, prior_weight=0, batch=batch))
    imgs = [(load_image(s.image), s) for s in samples]
    est.estimate(
        imgs[0][0], imgs[0][1].bbox, focal_px=imgs[0][1].focal_px, principal_px=imgs[0][1].principal_px
    )
    feats, search, total, single_R = [], [], [], []
    for img, s in imgs[:single or len(imgs)]:  # the one-image path on the first ``single`` images
        _sync(device)
        t0 = time.perf_counter()
        p = est.estimate(img, s.bbox, focal_px=s.focal_px, principal_px=s.principal_px)
        _sync(device)
        total.append(time.perf_counter() - t0)
        feats.append(p.timings["features_s"])
        search.append(p.timings["search_s"])
        single_R.append(p.R)
    # the same images estimated batch by batch
    warm = imgs[:batch]  # warm-up with a full batch (kernels, allocator)
    est.estimate_batch([i for i, _ in warm], [s.bbox for _, s in warm])
    _sync(device)
    t0 = time.perf_counter()
    batched_R = []
    for b in range(0, len(imgs), batch):
        part = imgs[b:b + batch]
        res = est.estimate_batch(
            [i for i, _ in part],
            [s.bbox for _, s in part],
            focal_px=[s.focal_px for _, s in part],
            principal_px=[s.principal_px for _, s in part],
        )
        batched_R += [r.R for r in res]
    _sync(device)
    batched_s = time.perf_counter() - t0
    diff = [float(np.degrees(np.arccos(np.clip((np.trace(a.T @ b) - 1) / 2, -1, 1))))
            for a, b in zip(single_R, batched_R)]
    # baseline: the coarse score one rotation at a time
    img, s = imgs[0]
    box = object_box(img.shape[:2], s.bbox, None, est.cfg.margin)
    sim, _ = similarity_maps_batch(est.features(crop_image(img, box, est.size)), est.theta, est.beta,
                                   est.cfg.sim_size)  # [1, N, S, S]: one image
    rots = so3_grid(64).to(device)
    f = 100.0
    pp = torch.tensor([32.0, 32.0], device=device)
    fB, ppB = torch.tensor([f], device=device), pp[None]
    diam = float((est.vertices.amax(0) - est.vertices.amin(0)).norm())
    with torch.no_grad():
        _sync(device)
        t0 = time.perf_counter()
        for R in rots:
            T = fit_translation(est.vertices, R[None], f, pp, pp, 64 / 1.15)
            render_compare_batch(sim, est.vertices, R[None, None], T[None], fB, ppB, est.cfg.sim_size, diam)
        _sync(device)
        one_by_one = (time.perf_counter() - t0) / len(rots) * grid
        _sync(device)
        t0 = time.perf_counter()
        g = so3_grid(grid).to(device)
        for c in range(0, grid, 1024):
            T = fit_translation(est.vertices, g[c:c + 1024], f, pp, pp, 64 / 1.15)
            render_compare_batch(sim, est.vertices, g[None, c:c + 1024], T[None], fB, ppB, est.cfg.sim_size,
                                 diam)
        _sync(device)
        batched = time.perf_counter() - t0
    name = (
        torch.cuda.get_device_name()
        if device.startswith("cuda")
        else platform.processor() or platform.machine()
    )
    return {
        "device": device,
        "device_name": name,
        "threads": torch.get_num_threads(),
        "images": len(imgs),
        "grid": grid,
        "seconds_per_image": float(np.mean(total)),
        "images_per_s": float(1 / np.mean(total)),
        "images_per_s_single": float(1 / np.mean(total)),
        "images_per_s_batched": len(imgs) / batched_s,
        "batch": batch,
        "single_images": len(single_R),
        "batched_vs_single": float(np.mean(total)) * len(imgs) / batched_s,
        "max_rotation_difference_deg": max(diff),
        "images_differing_over_1deg": int(sum(d > 1 for d in diff)),
        "encoder_s": float(np.mean(feats)),
        "search_and_refine_s": float(np.mean(search)),
        "coarse_scores_batched_s": batched,
        "coarse_scores_one_by_one_s": one_by_one,
        "batching_speedup": one_by_one / batched,
        "rotations_scored_per_s": grid / batched,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", default=None)
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--root", default=None, help="an existing synth-wild set (default: generate one here)")
    ap.add_argument("--grid", type=int, default=4096)
    ap.add_argument("--batch", type=int, default=16, help="images per estimate_batch call")
    ap.add_argument("--single", type=int, default=0, help="images through the one-image path (default: all)")
    ap.add_argument("--devices", default="", help="comma-separated (default: cpu, and cuda when present)")
    ap.add_argument("--out", default="bench/results")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root or tmp
        if args.root is None:
            generate_wild(WildConfig(out=Path(tmp), images=args.images), progress=False)
        samples, _ = load_pascal3d(root, "car", ("synth",), real_camera=True)
        samples = samples[:args.images]
        devices = (args.devices.split(",") if args.devices
                   else ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
        rows = [bench_device(d, samples, args.run, args.grid, args.batch, args.single) for d in devices]
    res = {
        "benchmark": "pose",
        "torch": torch.__version__,
        "run": args.run or "untrained (speed only)",
        "rows": rows,
    }
    if len(rows) == 2:
        res["gpu_vs_cpu_speedup"] = rows[0]["seconds_per_image"] / rows[1]["seconds_per_image"]
    gpu_rows = [r for r in rows if r["device"].startswith("cuda")]
    if gpu_rows:  # the headline: batched images/s on the GPU
        res["images_per_s_batched"] = gpu_rows[0]["images_per_s_batched"]
        res["batch"] = gpu_rows[0]["batch"]
    for r in rows:
        print(f"{r['device']:5s} {r['device_name'][:30]:30s} {r['seconds_per_image'] * 1000:8.1f} ms/image "
              f"(encoder {r['encoder_s'] * 1000:.1f} ms, search+refine {r['search_and_refine_s'] * 1000:.1f} "
              "ms); "
              f"{args.grid} coarse scores {r['coarse_scores_batched_s'] * 1000:.1f} ms batched vs "
              f"{r['coarse_scores_one_by_one_s'] * 1000:.0f} ms one by one ({r['batching_speedup']:.0f}x); "
              f"images/s batched {r['images_per_s_batched']:.2f} vs one at a time "
              f"{r['images_per_s_single']:.2f} "
              f"({r['batched_vs_single']:.1f}x, poses within {r['max_rotation_difference_deg']:.2g}°)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "gpu" if gpu_rows else "cpu"
    (out / f"pose-{tag}.json").write_text(json.dumps(res, indent=1))
    print(f"-> {out / f'pose-{tag}.json'}")


if __name__ == "__main__":
    main()
