"""Profile of one batched alignment call (torch.profiler): where the engine's time goes, by kernel and
by phase; the same random videos and sizes as ``bench/align.py``.

    python bench/profile_align.py [--pairs 1024] [--out DIR]   # writes DIR/profile-align.txt
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from align import fake_video, sync  # bench/align.py

from catpose.align import batched as B
from catpose.align.search import SearchConfig
from catpose.geometry import so3_grid


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=1024)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=".")
    a = ap.parse_args()
    dev = a.device
    cfg = SearchConfig()
    nv = max(4, a.pairs // 8)
    videos = [fake_video(500, 8, 384, s) for s in range(nv)]
    rng = np.random.default_rng(0)
    pairs = []
    while len(pairs) < a.pairs:
        i, j = rng.choice(nv, 2, replace=False)
        pairs.append((videos[i].sequence, videos[j].sequence))
    rot = so3_grid(cfg.rotations, device=dev)
    B.align_pairs(videos, pairs[:64], cfg, dev, rotations=rot)
    lines = []
    for name, fn in (("video_arrays_many", lambda: B.video_arrays_many(videos, cfg)),
                     ("prepare_videos", lambda: B.prepare_videos(videos, cfg, dev)),
                     ("align_pairs", lambda: B.align_pairs(videos, pairs, cfg, dev, rotations=rot))):
        fn()
        sync(dev)
        t0 = time.perf_counter()
        fn()
        sync(dev)
        lines.append(f"{name}: {(time.perf_counter() - t0) * 1e3:.1f} ms")
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        B.align_pairs(videos, pairs, cfg, dev, rotations=rot)
        sync(dev)
    ka = prof.key_averages()
    lines.append(ka.table(sort_by="cuda_time_total", row_limit=45, max_name_column_width=70))
    lines.append(ka.table(sort_by="cpu_time_total", row_limit=30, max_name_column_width=70))
    text = "\n".join(lines)
    print(text)
    Path(a.out).mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "profile-align.txt").write_text(text)


if __name__ == "__main__":
    main()
