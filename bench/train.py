"""Benchmark of feature learning: images/s of the data pipeline, of the training step, and of whole
Ray Train runs with 1..n workers, on this machine's CPU or one/several GPUs.

Data: a synthetic car category (``--data`` root, or generated here: 4 videos × 24 frames, 128 px),
sharded to Parquet, with the ground-truth alignment (so the benchmark does not depend on the
alignment stage) and a 1000-vertex template.

* ``data``: ``prepare_batch`` (decode, targets, crop, backgrounds, occluders, lighting) in one process,
  against decoding the same JPEG/PNG bytes only (the least any pipeline must do);
* ``step``: forward + backward + AdamW of Φ/Θ at ``--batch`` crops, fp32 and (GPU) bf16 autocast, with
  the model's FLOPs per image and the share of a large matmul's FLOP rate measured in the same run;
* ``ray``: ``TorchTrainer`` over the Ray Data pipeline with each worker count in ``--ray-workers``
  (same per-worker batch), images/s from the epochs after the first, scaling efficiency against
  one worker. ``--gpus-per-worker 0.5`` puts two workers on one GPU (gloo instead of NCCL).

    python bench/train.py [--device auto] [--batch 32] [--ray-workers 1,2] [--gpus-per-worker 1]
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from catpose.config import ShardConfig, SynthConfig, TrainConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.groundtruth import load_ground_truth
from catpose.data.shards import iter_shard_rows, write_shards
from catpose.features.surface import sequence_vertices
from catpose.learn.data import COLUMNS, VideoTargets, prepare_batch, training_dataset
from catpose.learn.frames import AugmentConfig
from catpose.learn.model import build_model
from catpose.learn.template import build_template, instance_correspondents
from catpose.learn.train import ground_truth_to_reference, make_trainer


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def setup(data: Path | None, work: Path, repeat: int = 1):
    if data is None:
        from catpose.data.synth.generate import generate

        data = work / "synth"
        generate(SynthConfig(out=data, category=("car",), videos=4, frames=24, size=128, seed=5, depth=False))
    shards = str(work / "shards")
    write_shards(ShardConfig(data=data, out=shards, category=("car",)), progress=False)
    # a larger epoch without a larger dataset: copies of the shard files (same rows, same targets)
    for f in sorted((work / "shards" / "category=car").glob("part-*.parquet")):
        for k in range(1, repeat):
            shutil.copy(f, f.with_name(f"{f.stem}-copy{k}.parquet"))
    tf = ground_truth_to_reference(data, "car", sorted(load_ground_truth(data, "car"))[0])
    verts = {s.name: sequence_vertices(s.load_point_cloud(), 1000)[0] for s in Co3dCategory(data, "car")}
    tpl = build_template([tf[n].apply(v).astype(np.float32) for n, v in verts.items()], 1000)
    targets = {}
    for n, v in verts.items():
        pts, valid = instance_correspondents(tpl, v, tf[n])
        targets[n] = VideoTargets(pts, valid, v)
    return shards, tpl, targets


def bench_data(shards: str, targets: dict, size: int, n_rows: int = 64) -> dict:
    rows = list(iter_shard_rows(shards, columns=COLUMNS))[:n_rows]
    cols = {c: [r[c] for r in rows] for c in COLUMNS}
    prepare_batch(cols, targets, size, AugmentConfig(), seed=0)
    t0 = time.perf_counter()
    for s in range(0, len(rows), 16):
        prepare_batch({c: v[s:s + 16] for c, v in cols.items()}, targets, size, AugmentConfig(), seed=s)
    full = len(rows) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    for r in rows:
        np.asarray(Image.open(io.BytesIO(r["image"])).convert("RGB"))
        np.asarray(Image.open(io.BytesIO(r["mask"])).convert("L"))
    decode = len(rows) / (time.perf_counter() - t0)
    return {"images_per_s_per_process": round(full, 1), "decode_only_images_per_s": round(decode, 1),
            "ratio_to_decode_only": round(full / decode, 3), "frame_px": int(rows[0]["height"])}


def bench_step(cfg: TrainConfig, vertices: np.ndarray, batches: list[dict], dev: str, steps: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg, torch.as_tensor(vertices)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    B = cfg.batch_size
    cat = lambda k: torch.as_tensor(np.concatenate([b[k] for b in batches]))  # noqa: E731
    n = min(B, len(cat("image")))
    data = {k: cat(k)[:n].to(dev) for k in ("image", "uv", "vis", "fg")}
    images, uv, vis, fg = data["image"].float() / 255, data["uv"], data["vis"], data["fg"].float() / 255

    def step(amp: bool):
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss, _ = model(images, uv, vis, fg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step(False)
    flops_per_image = fc.get_total_flops() / n
    out = {"batch": n, "gflop_per_image": round(flops_per_image / 1e9, 3)}
    for label, amp in (("fp32", False), ("bf16", True)) if dev == "cuda" else (("fp32", False),):
        for _ in range(3):
            step(amp)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(amp)
        sync(dev)
        ips = steps * n / (time.perf_counter() - t0)
        out[f"{label}_images_per_s"] = round(ips, 1)
        out[f"{label}_tflops"] = round(ips * flops_per_image / 1e12, 3)
    # the device's matmul rate, same run
    m = 8192 if dev == "cuda" else 1024
    for label, dt in (("fp32", torch.float32), ("bf16", torch.bfloat16)) if dev == "cuda" else (("fp32", torch.float32),):
        x, y = torch.randn(m, m, device=dev, dtype=dt), torch.randn(m, m, device=dev, dtype=dt)
        x @ y
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(5):
            x @ y
        sync(dev)
        peak = 5 * 2 * m**3 / (time.perf_counter() - t0) / 1e12
        out[f"matmul_{label}_tflops"] = round(peak, 2)
        out[f"{label}_share_of_matmul"] = round(out[f"{label}_tflops"] / peak, 4)
    return out


def bench_ray(cfg: TrainConfig, shards: str, tpl, targets: dict, workers: list[int], use_gpu: bool,
              work: Path) -> list[dict]:
    rows = []
    for n in workers:
        c = TrainConfig(**{**cfg.__dict__, "num_workers": n, "out": str(work / f"ray-{n}")})
        ds = training_dataset(shards, "car", targets, c.size, AugmentConfig())
        t0 = time.perf_counter()
        res = make_trainer(c, ds, tpl.vertices, f"bench-{n}", use_gpu).fit()
        if res.error:
            raise RuntimeError(res.error)
        hist = torch.load(Path(res.checkpoint.path) / "state.pt", weights_only=False)["history"]
        steady = [h["images_per_s"] for h in hist[1:]] or [hist[-1]["images_per_s"]]
        rows.append({"workers": n, "images_per_epoch": hist[-1]["images"], "epochs": len(hist),
                     "images_per_s": round(float(np.mean(steady)), 1),
                     "wall_s": round(time.perf_counter() - t0, 1)})
        print(rows[-1], flush=True)
    base = rows[0]["images_per_s"] / rows[0]["workers"]
    for r in rows:
        r["scaling_efficiency"] = round(r["images_per_s"] / (r["workers"] * base), 3)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", type=Path, default=None, help="synthetic dataset root (default: generate one)")
    ap.add_argument("--batch", type=int, default=0, help="crops per worker per step (default 64 GPU, 16 CPU)")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ray-workers", default="1,2", help="worker counts of the Ray Train runs ('' to skip)")
    ap.add_argument("--gpus-per-worker", type=float, default=1.0)
    ap.add_argument("--cpus-per-worker", type=float, default=0.0, help="default: 1 on GPU, 0.5 on CPU")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=0,
                    help="copies of the shard files, i.e. passes over the frames per epoch (default 16 GPU, 2 CPU)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    gpu = dev == "cuda"
    name = torch.cuda.get_device_name() if gpu else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    cfg = TrainConfig(size=a.size, batch_size=a.batch or (64 if gpu else 16), epochs=a.epochs,
                      gpus_per_worker=a.gpus_per_worker, cpus_per_worker=a.cpus_per_worker or (1.0 if gpu else 0.5),
                      use_gpu="yes" if gpu else "no")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repeat = a.repeat or (16 if gpu else 2)
        shards, tpl, targets = setup(a.data, work, repeat)
        res = {"device": name, "crop_px": a.size, "shard_copies": repeat, "template_vertices": len(tpl.vertices),
               "feature_dim": cfg.dim,
               "width": cfg.width, "stride": cfg.stride}
        res["parameters"] = sum(p.numel() for p in build_model(cfg, torch.as_tensor(tpl.vertices)).parameters())
        res["data"] = bench_data(shards, targets, a.size)
        print(json.dumps(res, indent=1), flush=True)
        rows = list(iter_shard_rows(shards, columns=COLUMNS))[:cfg.batch_size]
        batch = prepare_batch({c: [r[c] for r in rows] for c in COLUMNS}, targets, a.size, AugmentConfig(), seed=0)
        res["step"] = bench_step(cfg, tpl.vertices, [batch], dev, a.steps)
        print(json.dumps(res["step"], indent=1), flush=True)
        if a.ray_workers:
            import ray

            ray.init(include_dashboard=False, log_to_driver=False, object_store_memory=1024**3 if gpu else 256 * 1024**2)
            res["ray"] = {"gpus_per_worker": a.gpus_per_worker if gpu else 0, "cpus_per_worker": cfg.cpus_per_worker,
                          "batch_per_worker": cfg.batch_size, "cluster": ray.cluster_resources(),
                          "runs": bench_ray(cfg, shards, tpl, targets, [int(x) for x in a.ray_workers.split(",")],
                                            gpu, work)}
            ray.shutdown()
    print(json.dumps(res, indent=1))
    tag = "gpu" if gpu else "cpu"
    if gpu and a.gpus_per_worker < 1:
        tag += "-shared"
    out = Path(a.out or Path(__file__).parent / "results" / f"train-{tag}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
