"""Benchmark of the data stage: synthetic rendering and Parquet sharding throughput.

Rendering: frames/s of catpose's renderer (Embree ray casting + shading), against the simplest
correct baseline (brute-force Möller–Trumbore over all triangles in numpy, on the same rays) and the
limit of the ray caster itself (Embree first-hit queries alone, no shading or I/O).
Sharding: MB/s of `write_shards`, against copying the same image/mask files (the disk's limit here).

    python bench/data.py [--size 128] [--frames 12] [--out bench/results/data.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np


def first_hit_bruteforce(o: np.ndarray, d: np.ndarray, tri: np.ndarray, chunk: int = 256) -> np.ndarray:
    """Index of the first triangle hit by each ray (-1: none), testing every ray against every triangle."""
    v0, e1, e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    out = np.full(len(o), -1)
    for s in range(0, len(o), chunk):
        oo, dd = o[s:s + chunk, None, :], d[s:s + chunk, None, :]
        p = np.cross(dd, e2[None])
        det = (e1[None] * p).sum(-1)
        inv = 1.0 / np.where(np.abs(det) < 1e-12, np.nan, det)
        tv = oo - v0[None]
        u = (tv * p).sum(-1) * inv
        q = np.cross(tv, e1[None])
        v = (dd * q).sum(-1) * inv
        t = (e2[None] * q).sum(-1) * inv
        ok = (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 1e-9)
        t = np.where(ok, t, np.inf)
        best = t.argmin(1)
        out[s:s + chunk] = np.where(np.isfinite(t[np.arange(len(t)), best]), best, -1)
    return out


def bench_render(size: int, frames: int) -> dict:
    from catpose.data.synth.generate import orbit_cameras
    from catpose.data.synth.render import SceneRenderer
    from catpose.data.synth.shapes import make_instance

    rng = np.random.default_rng(0)
    inst = make_instance("car", rng)
    renderer = SceneRenderer(inst, rng)
    mesh, _ = inst.merged()
    cams = orbit_cameras(rng, inst.extent, mesh.bounds.mean(0), frames, size)
    t0 = time.perf_counter()
    for c in cams:
        renderer.render(c, supersample=2)
    full = frames / (time.perf_counter() - t0)
    # ray-caster limit: only the Embree first-hit query for the same 4 samples per pixel
    rays = []
    for c in cams:
        from catpose.data.camera import Camera

        hi = Camera(c.R, c.T, c.focal_length, c.principal_point, (2 * size, 2 * size), c.intrinsics_format)
        rays.append(hi.pixel_rays())
    t0 = time.perf_counter()
    for o, d in rays:
        renderer.intersector.intersects_first(o, d)
    limit = frames / (time.perf_counter() - t0)
    # baseline: brute-force Möller–Trumbore, every ray against every triangle (on a sample of rays)
    tri = renderer.mesh.triangles
    o, d = rays[0]
    sample = np.random.default_rng(0).choice(len(d), 2048, replace=False)
    t0 = time.perf_counter()
    hits = first_hit_bruteforce(o[sample], d[sample], tri)
    baseline = 1.0 / ((time.perf_counter() - t0) * len(d) / len(sample))
    ref = renderer.intersector.intersects_first(o[sample], d[sample])
    agree = float(((hits >= 0) == (ref >= 0)).mean())
    n_rays = 4 * size * size
    return {"size": size, "frames": frames, "triangles": len(renderer.mesh.faces),
            "frames_per_s": round(full, 2), "mrays_per_s": round(full * n_rays / 1e6, 2),
            "baseline_bruteforce_frames_per_s": round(baseline, 4), "baseline_hit_agreement": round(agree, 4),
            "embree_only_frames_per_s": round(limit, 2),
            "speedup_vs_baseline": round(full / baseline, 1),
            "fraction_of_raycast_limit": round(full / limit, 3)}


def bench_shards(size: int) -> dict:
    from catpose.config import ShardConfig, SynthConfig
    from catpose.data.shards import write_shards
    from catpose.data.synth.generate import generate

    tmp = Path(tempfile.mkdtemp(prefix="catpose_bench_"))
    try:
        generate(
            SynthConfig(
                workers=0, out=tmp / "d", category=("car",), videos=6, frames=16, size=size, depth=False
            )
        )
        files = [p for p in (tmp / "d" / "car").rglob("*") if p.suffix in (".jpg", ".png")]
        mb = sum(p.stat().st_size for p in files) / 1e6
        t0 = time.perf_counter()
        for i, p in enumerate(files):
            shutil.copyfile(p, tmp / f"copy_{i}")
            os.fsync(os.open(tmp / f"copy_{i}", os.O_RDONLY))
        copy_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_shards(ShardConfig(data=tmp / "d", out=str(tmp / "shards")), progress=False)
        shard_s = time.perf_counter() - t0
        return {
            "frames": len(files) // 2,
            "megabytes": round(mb, 2),
            "shard_mb_per_s": round(mb / shard_s, 2),
            "shard_frames_per_s": round(len(files) / 2 / shard_s, 1),
            "file_copy_mb_per_s": round(mb / copy_s, 2),
            "ratio_to_copy": round(copy_s / shard_s, 3),
        }
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--frames", type=int, default=12)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "data.json"))
    a = ap.parse_args()
    res = {"device": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
           "host": platform.node(), "render": bench_render(a.size, a.frames), "shards": bench_shards(a.size)}
    print(json.dumps(res, indent=1))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
