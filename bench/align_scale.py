"""Benchmark of the alignment stage at category scale: a 1,000-video synthetic category, end to end.

1. ``generate``: a synthetic category of ``--videos`` videos (CO3D layout, small frames), Ray tasks;
2. ``features``: their surface features (default ``FeaturesConfig``: 1,000 vertices, 8 frames,
   colorsift), Ray tasks (on CPUs by default: this stage is not what is measured here);
3. ``align``: ``catpose align`` (the CLI call, in this process, timed as ``wall_s``) with ``--partners``
   partners per video: video summaries, pair chunks through Ray on the GPU with the batched engine,
   synchronisation, outputs;
4. accuracy of the synchronised alignment against the generator's ground truth.

Writes wall time per stage, pairs/s and accuracy (``videos``, ``pairs``, ``wall_s``, ``acc30``,
``median_deg``) to ``bench/results/align-scale-{gpu,cpu}.json``.

    python bench/align_scale.py [--videos 1000 --partners 10 --size 128 --workers 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import torch
from results_io import write_result  # bench/results_io.py (the script's folder is on sys.path)

from catpose import cli
from catpose.align.evaluate import evaluate_alignment
from catpose.config import FeaturesConfig, SynthConfig
from catpose.data.synth.generate import generate
from catpose.features.runner import run_features
from catpose.parallel import init_ray


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--videos", type=int, default=1000)
    ap.add_argument("--frames", type=int, default=8)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--partners", type=int, default=10)
    ap.add_argument("--workers", type=int, default=0, help="Ray tasks in flight for generation and features "
                    "(default: CPUs)")
    ap.add_argument("--features-device", default="cpu", help="features stage device (its per-video work is "
                    "CPU-bound: on the H100 machine 16 CPU tasks beat 4 GPU-fraction tasks)")
    ap.add_argument("--root", default=None, help="working folder (default: a temporary one)")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    gpu = torch.cuda.is_available()
    root = Path(a.root or tempfile.mkdtemp(prefix="catpose-align-scale-"))
    workers = a.workers or os.cpu_count()
    init_ray()
    import ray

    res = {
        "device": torch.cuda.get_device_name() if gpu else f"{platform.machine()} CPU",
        "cpus": int(ray.cluster_resources().get("CPU", 0)),
        "gpus": int(ray.cluster_resources().get("GPU", 0)),
        "videos": a.videos,
        "frames": a.frames,
        "size": a.size,
        "partners": a.partners,
        "features_device": a.features_device,
    }
    t0 = time.perf_counter()
    man = generate(
        SynthConfig(
            out=root / "data",
            category=("car",),
            videos=a.videos,
            frames=a.frames,
            size=a.size,
            seed=7,
            workers=workers,
        )
    )
    res["generate_s"] = round(time.perf_counter() - t0, 1)
    res["generated"] = man["car"].summary()
    print(f"generated {res['generated']} in {res['generate_s']} s", flush=True)
    t0 = time.perf_counter()
    fman = run_features(FeaturesConfig(data=root / "data", category=("car",), out=str(root / "features"),
                                       workers=workers, frames=a.frames, device=a.features_device))
    res["features_s"] = round(time.perf_counter() - t0, 1)
    res["features"] = fman["car"].summary()
    print(f"features {res['features']} in {res['features_s']} s", flush=True)

    out = root / "align"
    argv = ["align", "--data", str(root / "data"), "--category", "car", "--out", str(out),
            "--features", str(root / "features"), "--partners", str(a.partners), "--workers", "2"]
    t0 = time.perf_counter()
    rc = cli.main(argv)
    res["wall_s"] = round(time.perf_counter() - t0, 1)
    res["align_exit_code"] = rc
    timings = json.loads((out / "timings.json").read_text())
    res["align_stages_s"] = timings["stages_s"]
    res["pairs"] = timings["pairs"]
    res["chunks"] = timings["chunks"]
    res["pairs_per_s"] = round(res["pairs"] / res["wall_s"], 1)
    res["pairs_per_s_pair_stage"] = round(res["pairs"] / timings["stages_s"]["pairs"], 1)
    r = evaluate_alignment(out / "alignment.parquet", root / "data", "car")
    res.update({"aligned": r["videos"], "acc30": round(r["acc_pi_6"], 4),
                "acc10": round(r["acc_pi_18"], 4), "median_deg": round(r["median_deg"], 3)})
    write_result(res, a.out, f"align-scale-{'gpu' if gpu else 'cpu'}.json")


if __name__ == "__main__":
    main()
