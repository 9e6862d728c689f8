"""Benchmark of the alignment engine: pairs/s, against a per-hypothesis loop and the device's limits.

Fixed size (``--vertices`` N per video, ``--frames`` K, ``--rotations`` hypotheses, C feature
channels): random clouds and features, so the numbers do not depend on data.

* ``batched``: catpose's coarse search — D for all rotations in batches (cdist + min reductions);
* ``loop``: the straightforward baseline — one ``alignment_cost`` call per rotation, measured on a
  sample of rotations and scaled;
* limits: the batched search writes and reads the [B, N, N] distance tensor; its FLOP/s are compared
  with a large matmul and its bytes/s with a device-to-device copy, both measured in the same run;
* ``pair``: one whole ``align_pair`` with the default settings (FPS to 500 vertices, appearance
  distances over all frame pairs, 2048-rotation coarse search on 128 vertices, IRLS refinement).

    python bench/align.py [--device auto] [--vertices 1000 --frames 8 --rotations 5000]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

from catpose.align.cost import alignment_cost, apply_similarity, pair_terms
from catpose.align.search import SearchConfig, align_pair, coarse_search, super_fibonacci
from catpose.features.matching import appearance_distance
from catpose.features.surface import SurfaceFeatures


def sync(device):
    if device.startswith("cuda"):
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
    V = rng.normal(size=(n, 3)).astype(np.float32) * [2.0, 1.0, 0.6]
    return SurfaceFeatures(f"v{seed}", V.astype(np.float32), rng.normal(size=(k, n, c)).astype(np.float16),
                           rng.random((k, n)) > 0.5, np.arange(k))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--vertices", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--channels", type=int, default=384)
    ap.add_argument("--rotations", type=int, default=5000)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    name = torch.cuda.get_device_name() if dev == "cuda" else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    src, ref = fake_video(a.vertices, a.frames, a.channels, 0), fake_video(a.vertices, a.frames, a.channels, 1)
    t = lambda x: torch.as_tensor(x, device=dev)  # noqa: E731
    A = appearance_distance(t(src.features), t(src.visible), t(ref.features), t(ref.visible))
    terms = pair_terms(t(src.vertices), t(ref.vertices), A, 1.0, 1.0)
    rots = super_fibonacci(a.rotations, device=dev)
    t_batched = timed(lambda: coarse_search(terms, rots, 0.2), dev, reps=2)
    n_loop = 50 if dev == "cuda" else 20
    one, zero = torch.ones(1, device=dev), torch.zeros(1, 3, device=dev)

    def loop():
        for R in rots[:n_loop]:
            alignment_cost(apply_similarity(terms.V, one, R[None], zero), terms, 0.2)
    t_loop = timed(loop, dev, reps=1) * a.rotations / n_loop
    N = M = a.vertices
    flops = a.rotations * (N * M * 3 * 3 + N * 9 * 2)  # cdist (sub, square, add) + rotating the cloud
    bytes_ = a.rotations * N * M * 4 * 3  # write the distances, read them for both minima
    n = 4096 if dev == "cuda" else 1024
    x, y = torch.randn(n, n, device=dev), torch.randn(n, n, device=dev)
    mm = 2 * n**3 / timed(lambda: x @ y, dev)
    big = torch.empty(256 * 2**20 // 4 * (4 if dev == "cuda" else 1), device=dev)
    bw = 2 * big.numel() * 4 / timed(lambda: big.clone(), dev)
    t_app = timed(lambda: appearance_distance(t(src.features), t(src.visible), t(ref.features), t(ref.visible)), dev)
    t_pair = timed(lambda: align_pair(src, ref, SearchConfig(), dev), dev, reps=2)
    res = {"device": name, "vertices": N, "frames": a.frames, "channels": a.channels, "rotations": a.rotations,
           "batched_search_s": round(t_batched, 4), "loop_search_s": round(t_loop, 3),
           "speedup_vs_loop": round(t_loop / t_batched, 1),
           "batched_gflop_per_s": round(flops / t_batched / 1e9, 1), "matmul_gflop_per_s": round(mm / 1e9, 1),
           "fraction_of_flop_limit": round(flops / t_batched / mm, 4),
           "batched_gb_per_s": round(bytes_ / t_batched / 1e9, 1), "copy_gb_per_s": round(bw / 1e9, 1),
           "fraction_of_bandwidth": round(bytes_ / t_batched / bw, 3),
           "appearance_distance_s": round(t_app, 4),
           "pairs_per_s_search_fixed_size": round(1 / t_batched, 3),
           "pairs_per_s_align_pair_default": round(1 / t_pair, 2)}
    print(json.dumps(res, indent=1))
    out = Path(a.out or Path(__file__).parent / "results" / f"align-{'gpu' if dev == 'cuda' else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
