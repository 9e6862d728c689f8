"""Benchmark of the alignment engine: end-to-end pairs/s of the batched engine against the per-pair
reference, measured in the same run, with each phase's share and the device's limits.

Realistic sizes by default: ``--vertices`` 500 per video, ``--frames`` 8 (about half of the vertices
visible in each), ``--channels`` 384, ``--rotations`` 4096, the default ``SearchConfig`` otherwise
(128-vertex coarse subsets, top 4 refined by 15 IRLS iterations). Random clouds and features, so the
numbers do not depend on data; features are precomputed (in memory), as the engine receives them.

* ``pairs_per_s_batched``: ``align_pairs`` on ``--pairs`` pairs among ``--videos`` videos — per-video
  preparation (FPS, normalisation, upload), appearance distances, terms, coarse search, refinement;
* ``pairs_per_s_per_pair``: ``align_pair`` called once per pair (the reference), on a sample of pairs;
* ``pairs_per_s_batched_plain_torch``: on CUDA, ``align_pairs`` with the fused kernels off
  (``catpose.align.fused``; the plain-torch path they are tested against);
* ``phases_ms_per_pair``: where the batched time goes;
* limits: the FLOPs the engine's phases must do (appearance GEMM, coarse GEMM, refinement distances)
  against a large matmul measured in the same run (``fraction_of_matmul_peak``).

    python bench/align.py [--device auto] [--pairs 1024] [--out bench/results/align-gpu.json]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
import torch
from results_io import write_result  # bench/results_io.py (the script's folder is on sys.path)

from catpose.align import batched as B
from catpose.align import fused
from catpose.align.search import SearchConfig, align_pair
from catpose.features.surface import SurfaceFeatures
from catpose.geometry import so3_grid


def sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn, device, reps=3):
    fn()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps


def fake_video(n, k, c, seed):
    rng = np.random.default_rng(seed)
    V = (rng.normal(size=(n, 3)) * [2.0, 1.0, 0.6]).astype(np.float32)
    vis = rng.random((k, n)) > 0.5
    F = (rng.normal(size=(k, n, c)) * vis[..., None]).astype(np.float16)
    return SurfaceFeatures(f"v{seed:04d}", V, F, vis, np.arange(k))


def phases(videos, pairs, cfg, dev):
    """Milliseconds per pair of each phase of one batched call (synchronised between phases)."""
    out = {}

    def tick(name, t0):
        sync(dev)
        out[name] = (time.perf_counter() - t0) * 1e3 / len(pairs)
        return time.perf_counter()

    t = time.perf_counter()
    vb = B.prepare_videos(videos, cfg, dev)
    t = tick("prepare_videos", t)
    pos = {n: i for i, n in enumerate(vb.names)}
    ia = torch.as_tensor([pos[a] for a, _ in pairs], device=dev)
    ib = torch.as_tensor([pos[b] for _, b in pairs], device=dev)
    A = B.batched_appearance_distance(vb, ia, ib)
    t = tick("appearance_distance", t)
    terms = B.batched_terms(vb, ia, ib, A, cfg.tau, cfg.tau)
    t = tick("terms", t)
    rot = so3_grid(cfg.rotations, device=dev)
    top = B.batched_coarse_search(B.coarse_terms(vb, ia, ib, terms), rot, cfg.alpha, cfg.top_k,
                                  prefilter=B.coarse_terms(vb, ia, ib, terms, 1), keep=cfg.prefilter_keep)
    t = tick("coarse_search", t)
    B.batched_refine(terms, rot[top], cfg.alpha, cfg.refine_iters)
    tick("refine", t)
    return {k: round(v, 3) for k, v in out.items()}, int(vb.F.shape[1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--vertices", type=int, default=500)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--rotations", type=int, default=4096)
    ap.add_argument("--videos", type=int, default=0, help="distinct videos (default: pairs / 8)")
    ap.add_argument("--pairs", type=int, default=0, help="pairs (default: 1024 on a GPU, 32 on a CPU)")
    ap.add_argument(
        "--per-pair", type=int, default=0, help="pairs timed with align_pair (default: 8 GPU, 3 CPU)"
    )
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    gpu = dev.startswith("cuda")
    name = (
        torch.cuda.get_device_name()
        if gpu
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    n_pairs = a.pairs or (1024 if gpu else 32)
    n_videos = a.videos or max(4, n_pairs // 8)
    cfg = SearchConfig(rotations=a.rotations, vertices=a.vertices)
    videos = [fake_video(a.vertices, a.frames, a.channels, s) for s in range(n_videos)]
    rng = np.random.default_rng(0)
    pairs = []
    while len(pairs) < n_pairs:
        i, j = rng.choice(n_videos, 2, replace=False)
        pairs.append((videos[i].sequence, videos[j].sequence))
    by = {v.sequence: v for v in videos}
    rot = so3_grid(cfg.rotations, device=dev)

    B.align_pairs(videos, pairs[: min(64, n_pairs)], cfg, dev, rotations=rot)  # warm-up (kernels, allocator)
    t_batched = timed(
        lambda: B.align_pairs(videos, pairs, cfg, dev, rotations=rot), dev, reps=2 if gpu else 1
    )
    t_plain = None
    if fused.available(dev):  # the same call on the plain-torch path (the kernels' reference), same run
        fused.ENABLED = False
        t_plain = timed(lambda: B.align_pairs(videos, pairs, cfg, dev, rotations=rot), dev, reps=1)
        fused.ENABLED = True
    k = a.per_pair or (8 if gpu else 3)
    align_pair(by[pairs[0][0]], by[pairs[0][1]], cfg, dev, rotations=rot)
    sync(dev)
    t0 = time.perf_counter()
    for p in pairs[:k]:
        align_pair(by[p[0]], by[p[1]], cfg, dev, rotations=rot)
    sync(dev)
    t_pair = (time.perf_counter() - t0) / k
    ph, _ = phases(videos, pairs, cfg, dev)
    # the appearance GEMM's work counts the visible (frame, vertex) rows only (the padded vertex-major
    # rows the GPU kernel multiplies are not counted): Q = the largest number of a video's visible rows
    Q = max(int(np.asarray(v.visible, dtype=bool).sum()) for v in videos)

    # the work the phases must do, per pair
    nc = cfg.coarse_vertices
    flop_app = 2 * Q * Q * a.channels
    flop_coarse = 2 * 10 * cfg.rotations * (nc * nc + 2 * nc)
    flop_refine = (cfg.refine_iters + 1) * cfg.top_k * 2 * 3 * a.vertices**2 * 2
    flop_pair = flop_app + flop_coarse + flop_refine
    n = 8192 if gpu else 1024
    x, y = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    mm32 = 2 * n**3 / timed(lambda: x @ y, dev)
    xh, yh = x.half() if gpu else x, y.half() if gpu else y
    mm16 = 2 * n**3 / timed(lambda: xh @ yh, dev)
    pps_b, pps_p = n_pairs / t_batched, 1 / t_pair
    res = {
        "device": name,
        "vertices": a.vertices,
        "frames": a.frames,
        "channels": a.channels,
        "rotations": cfg.rotations,
        "coarse_vertices": nc,
        "top_k": cfg.top_k,
        "refine_iters": cfg.refine_iters,
        "videos": n_videos,
        "pairs": n_pairs,
        "visible_rows_per_video": Q,
        "pairs_per_s_batched": round(pps_b, 2),
        "pairs_per_s_per_pair": round(pps_p, 3),
        "speedup_batched_vs_per_pair": round(pps_b / pps_p, 1),
        "fused_kernels": fused.available(dev),
        "kernel_configs": {
            k: str(getattr(getattr(fused, k, None), "best_config", None))
            for k in ("_coarse_kernel", "_nearest_kernel")
        }
        if fused.available(dev)
        else None,
        "pairs_per_s_batched_plain_torch": round(n_pairs / t_plain, 2) if t_plain else None,
        "phases_ms_per_pair": ph,
        "gflop_per_pair": round(flop_pair / 1e9, 3),
        "engine_gflop_per_s": round(flop_pair * pps_b / 1e9, 1),
        "matmul_fp32_gflop_per_s": round(mm32 / 1e9, 1),
        "matmul_fp16_gflop_per_s": round(mm16 / 1e9, 1),
        "fraction_of_matmul_peak": round(flop_pair * pps_b / mm32, 4),
        "pairs_per_s_at_matmul_peak": round(mm32 / flop_pair, 1),
    }
    write_result(res, a.out, f"align-{'gpu' if gpu else 'cpu'}.json")


if __name__ == "__main__":
    main()
