"""Benchmark of the many-to-one reduction at scale: rotation synchronisation of 10⁴ videos.

Simulated category: random ground-truth rotations, the pair graph of ``catpose align`` (``--partners``
per video: nearest videos by a random descriptor plus random long-range edges, and a ring), each
edge's relative rotation perturbed by ``--noise-deg`` and ``--wrong`` of the edges replaced by random
rotations (costs random, so the paths cannot tell wrong edges apart). Times the whole
``reduce_to_reference`` (medoid, cheapest paths, robust synchronisation) and reports the error of
every video's rotation against the ground truth.

    python bench/sync.py [--videos 10000 --partners 20 --wrong 0.1 --noise-deg 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from results_io import write_result  # bench/results_io.py (the script's folder is on sys.path)

from catpose.align.reference import reduce_to_reference
from catpose.align.simulate import errors_deg, simulate


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=10000)
    ap.add_argument("--partners", type=int, default=20)
    ap.add_argument("--wrong", type=float, default=0.1)
    ap.add_argument("--noise-deg", type=float, default=1.0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    t0 = time.perf_counter()
    names, gt, edges, wrong = simulate(a.videos, a.partners, a.wrong, a.noise_deg)
    t_sim = time.perf_counter() - t0
    cents = {n: np.zeros(3) for n in names}
    t0 = time.perf_counter()
    ref, synced, paths = reduce_to_reference(edges, cents)
    t_sync = time.perf_counter() - t0
    e, e_path = errors_deg(synced, gt, ref), errors_deg(paths, gt, ref)
    res = {"device": f"{platform.machine()} CPU, {os.cpu_count()} cores", "videos": a.videos,
           "edges": len(edges), "partners": a.partners, "wrong_edge_share": round(wrong, 4),
           "noise_deg": a.noise_deg, "simulate_s": round(t_sim, 2), "sync_wall_s": round(t_sync, 2),
           "median_deg": round(float(np.median(e)), 3), "acc30": round(float(np.mean(e < 30)), 4),
           "max_deg": round(float(e.max()), 2), "paths_only_median_deg": round(float(np.median(e_path)), 2),
           "paths_only_acc30": round(float(np.mean(e_path < 30)), 4)}
    write_result(res, a.out, "sync-cpu.json")


if __name__ == "__main__":
    main()
