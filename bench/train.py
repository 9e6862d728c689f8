"""Benchmark of feature learning per model size: crops/s of the input pipeline alone, of the training
step alone and of whole Ray Train runs, on this machine's CPU or GPU(s).

Data: a synthetic car category (``--data`` root, or generated here: 4 videos × 24 frames, 128 px),
sharded to Parquet (``--repeat`` copies of the shard files make a longer epoch), with the
ground-truth alignment (so the benchmark does not depend on the alignment stage) and a 1000-vertex
template.

* ``feed``: :class:`catpose.learn.feed.DeviceFeed` on the device — decode (nvJPEG where torchvision
  exists on CUDA), targets, crops, backgrounds, occluders, lighting — with an empty frame cache
  (``feed_cold``: every frame decoded) and a warm one (``feed_warm``: what every epoch after the first
  pays when the frames fit the cache); and the per-frame CPU reference ``prepare_batch`` (the old
  Ray Data ``map_batches`` transform, one process) and decoding alone, for scale;
* ``step``: forward + backward + AdamW at ``--batch`` crops, fp32 and (GPU) bf16 autocast — the
  training default, which ``step_crops_per_s`` reports — with the FLOPs per crop and the share of a
  large matmul's FLOP rate measured in the same run;
* ``ray``: ``TorchTrainer`` over the Ray Data pipeline of encoded rows with each worker count in
  ``--ray-workers`` (same per-worker batch); crops/s from the epochs after the first (the first fills
  the cache), ``feed_ratio`` = Ray Train crops/s ÷ (workers × step crops/s).

Models (``--models``): small (the U-Net, ``--size`` px), base (frozen DINOv2 ViT-S/14 + head) and resnet
(ResNet-18-style, from scratch) at ``--size-large`` px. Without DINOv2 weights on the machine the base
model's ViT is randomly initialised (``base_vit_weights`` says so): same speed, no accuracy.

    python bench/train.py [--device auto] [--models small,base,resnet] [--batch 64] [--ray-workers 1]
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
from catpose.errors import CatposeError
from catpose.features.surface import sequence_vertices
from catpose.learn.data import COLUMNS, VideoTargets, prepare_batch, training_dataset
from catpose.learn.feed import DeviceFeed, crops_per_s
from catpose.learn.frames import AugmentConfig
from catpose.learn.model import build_model, count_parameters
from catpose.learn.template import build_template, instance_correspondents
from catpose.learn.train import ground_truth_to_reference, make_trainer, read_state

MODEL_SHAPES = {"small": {"dim": 64, "width": 16}, "base": {"dim": 128, "width": 64},
                "resnet": {"dim": 128, "width": 64}}


def sync(dev: str) -> None:
    if dev == "cuda":
        torch.cuda.synchronize()


def setup(data: Path | None, work: Path, repeat: int = 1):
    if data is None:
        from catpose.data.synth.generate import generate

        data = work / "synth"
        generate(
            SynthConfig(
                workers=0, out=data, category=("car",), videos=4, frames=24, size=128, seed=5, depth=False
            )
        )
    shards = str(work / "shards")
    write_shards(ShardConfig(data=data, out=shards, category=("car",)), progress=False)
    # a larger epoch without a larger dataset: copies of the shard files (same rows, same targets)
    for f in sorted((work / "shards" / "category=car").glob("part-*.parquet")):
        for k in range(1, repeat):
            shutil.copy(f, f.with_name(f"{f.stem}-copy{k}.parquet"))
    tf = ground_truth_to_reference(data, "car", sorted(load_ground_truth(data, "car"))[0])
    verts = {s.name: sequence_vertices(s.load_point_cloud(), 1000)[0] for s in Co3dCategory(data, "car")}
    held = sorted(verts)[-1]  # one video held out for the matching accuracy
    tpl = build_template([tf[n].apply(v).astype(np.float32) for n, v in verts.items() if n != held], 1000)
    targets = {}
    for n, v in verts.items():
        pts, valid = instance_correspondents(tpl, v, tf[n])
        targets[n] = VideoTargets(pts, valid, v)
    return shards, tpl, {n: t for n, t in targets.items() if n != held}, {held: targets[held]}


def held_out_accuracy(model, shards: str, held: dict, size: int, dev: str) -> dict:
    """Vertex-to-pixel matching accuracy on the held-out video's frames (clean and composited crops),
    threshold 4 px per 128 px of crop (:mod:`catpose.learn.evaluate`)."""
    from catpose.learn.evaluate import accuracy, load_frames, matching_errors

    cfg = TrainConfig(data=shards, size=size)
    rows = [r for r in iter_shard_rows(shards, columns=COLUMNS) if r["sequence_name"] in held]
    seen, uniq = set(), []
    for r in rows:  # the shard copies repeat each frame
        if (r["sequence_name"], r["frame_number"]) not in seen:
            seen.add((r["sequence_name"], r["frame_number"]))
            uniq.append(r)
    model = model.to(dev).eval()
    theta = model.template.vertex_features().detach()
    thr = 4.0 * size / 128
    out = {"threshold_px": thr, "frames": len(uniq)}
    for label, aug in (("clean", None), ("composited", AugmentConfig())):
        frames, _ = load_frames(cfg, uniq, held, aug, seed=0)
        E, _ = matching_errors(model.encoder, theta, frames, dev)
        out[f"accuracy_{label}"] = round(accuracy(E, thr), 4)
    return out


def _rows(shards: str, n: int) -> list[dict]:
    rows = []
    for r in iter_shard_rows(shards, columns=COLUMNS):
        rows.append(r)
        if len(rows) >= n:
            break
    return rows


def _batches(rows: list[dict], B: int) -> list[dict]:
    return [{c: [r[c] for r in rows[s:s + B]] for c in COLUMNS} for s in range(0, len(rows), B)]


def bench_feed(rows: list[dict], targets: dict, size: int, B: int, dev: str, reference: bool) -> dict:
    batches = _batches(rows, B)
    cold = DeviceFeed(targets, size, AugmentConfig(), dev, cache_mb=0)
    crops_per_s(cold, batches[:1])  # warm-up (allocations, kernels)
    warm = DeviceFeed(targets, size, AugmentConfig(), dev)
    crops_per_s(warm, batches)  # fills the cache
    out = {"batch": B, "frame_px": int(rows[0]["height"]), "nvjpeg": cold.nvjpeg,
           "feed_cold_crops_per_s": round(crops_per_s(cold, batches), 1),
           "feed_warm_crops_per_s": round(crops_per_s(warm, batches, repeat=3), 1)}
    if reference:
        cols = batches[0]
        t0 = time.perf_counter()
        for b in batches[:4]:
            prepare_batch(b, targets, size, AugmentConfig(), seed=0)
        n = sum(len(b["image"]) for b in batches[:4])
        out["cpu_reference_prepare_batch_crops_per_s_per_process"] = round(n / (time.perf_counter() - t0), 1)
        t0 = time.perf_counter()
        for data, m in zip(cols["image"], cols["mask"]):
            np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            np.asarray(Image.open(io.BytesIO(m)).convert("L"))
        out["cpu_decode_only_frames_per_s_per_process"] = round(
            len(cols["image"]) / (time.perf_counter() - t0), 1
        )
    return out


def bench_step(
    cfg: TrainConfig, vertices: np.ndarray, crops: dict, dev: str, steps: int, weights: bool
) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model = build_model(cfg, torch.as_tensor(vertices), backbone_weights=weights).to(dev)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    images, uv, vis, fg = crops["image"], crops["uv"], crops["vis"], crops["fg"]
    n = images.shape[0]

    def step(amp: bool):
        with torch.autocast(dev, dtype=torch.bfloat16, enabled=amp):
            loss, _ = model(images, uv, vis, fg)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    with FlopCounterMode(display=False) as fc:
        step(False)
    flops_per_image = fc.get_total_flops() / n
    out = {"batch": n, "gflop_per_crop": round(flops_per_image / 1e9, 3)}
    for label, amp in (("fp32", False), ("bf16", True)) if dev == "cuda" else (("fp32", False),):
        for _ in range(3):
            step(amp)
        sync(dev)
        t0 = time.perf_counter()
        for _ in range(steps):
            step(amp)
        sync(dev)
        ips = steps * n / (time.perf_counter() - t0)
        out[f"{label}_crops_per_s"] = round(ips, 1)
        out[f"{label}_tflops"] = round(ips * flops_per_image / 1e12, 3)
    # the device's matmul rate, same run
    m = 8192 if dev == "cuda" else 1024
    for label, dt in (
        (("fp32", torch.float32), ("bf16", torch.bfloat16)) if dev == "cuda" else (("fp32", torch.float32),)
    ):
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
    # what training runs: bf16 autocast on GPU (TrainConfig.amp), fp32 on CPU
    out["step_crops_per_s"] = out["bf16_crops_per_s" if dev == "cuda" else "fp32_crops_per_s"]
    return out


def bench_ray(cfg: TrainConfig, shards: str, tpl, targets: dict, workers: list[int], use_gpu: bool,
              work: Path, tag: str, weights: bool, held: dict | None = None) -> list[dict]:
    rows = []
    for n in workers:
        c = TrainConfig(**{**cfg.__dict__, "num_workers": n, "out": str(work / f"ray-{tag}-{n}")})
        ds = training_dataset(shards, "car", targets)
        t0 = time.perf_counter()
        res = make_trainer(c, ds, tpl.vertices, f"bench-{tag}-{n}", use_gpu, videos=targets,
                           random_backbone=not weights).fit()
        if res.error:
            raise RuntimeError(res.error)
        state = read_state(Path(res.checkpoint.path) / "state.pt")
        hist = state["history"]
        steady = [h["images_per_s"] for h in hist[1:]] or [hist[-1]["images_per_s"]]
        rows.append(
            {
                "workers": n,
                "crops_per_epoch": hist[-1]["images"],
                "epochs": len(hist),
                "crops_per_s": round(float(np.mean(steady)), 1),
                "first_epoch_crops_per_s": round(hist[0]["images_per_s"], 1),
                "final_loss": round(hist[-1]["loss"], 4),
                "dropped_frames": sum(h["dropped_frames"] for h in hist),
                "wall_s": round(time.perf_counter() - t0, 1),
            }
        )
        if held is not None and n == workers[0]:
            model = build_model(c, torch.as_tensor(tpl.vertices), backbone_weights=False)
            model.load_state_dict(state["model"])
            rows[-1]["held_out"] = held_out_accuracy(
                model, shards, held, c.size, "cuda" if use_gpu else "cpu"
            )
        print(tag, rows[-1], flush=True)
    base = rows[0]["crops_per_s"] / rows[0]["workers"]
    for r in rows:
        r["scaling_efficiency"] = round(r["crops_per_s"] / (r["workers"] * base), 3)
    return rows


def bench_model(a, m, dev, gpu, B, tpl, targets, held, rows, shards, workers, work, first: bool) -> dict:
    """Parameters, feed, step and Ray Train run (with held-out accuracy) of model size ``m``."""
    size = a.size if m == "small" else a.size_large
    cfg = TrainConfig(model=m, size=size, batch_size=B, epochs=a.epochs, gpus_per_worker=a.gpus_per_worker,
                      cpus_per_worker=a.cpus_per_worker or (2.0 if gpu else 0.5),
                      device="cuda" if gpu else "cpu", **MODEL_SHAPES[m])
    weights = True
    try:
        model = build_model(cfg, torch.as_tensor(tpl.vertices))
    except CatposeError as e:  # no DINOv2 weights here: the same ViT, randomly initialised
        print(f"{m}: {str(e).splitlines()[0]} -> random ViT weights (speed only)", flush=True)
        weights = False
        model = build_model(cfg, torch.as_tensor(tpl.vertices), backbone_weights=False)
    r = {"crop_px": size, "dim": cfg.dim, "width": cfg.width, "trainable_parameters": count_parameters(model),
         "parameters": sum(p.numel() for p in model.parameters())}
    if m == "base":
        r["base_vit"] = cfg.backbone or "dinov2_vits14"
        r["base_vit_weights"] = (
            "pretrained (local file)" if weights else "random (no weights file on this machine)"
        )
    del model
    r["feed"] = bench_feed(rows, targets, size, B, dev, reference=first)
    print(m, json.dumps(r), flush=True)
    crops = DeviceFeed(targets, size, AugmentConfig(), dev, seed=1)(_batches(rows, B)[0])
    r["step"] = bench_step(cfg, tpl.vertices, crops, dev, a.steps, weights)
    r["step_crops_per_s"] = r["step"]["step_crops_per_s"]
    r["feed_warm_over_step"] = round(r["feed"]["feed_warm_crops_per_s"] / r["step_crops_per_s"], 3)
    print(m, json.dumps(r["step"]), flush=True)
    if workers:
        r["ray"] = {
            "gpus_per_worker": a.gpus_per_worker if gpu else 0,
            "cpus_per_worker": cfg.cpus_per_worker,
            "runs": bench_ray(cfg, shards, tpl, targets, workers, gpu, work, m, weights, held),
        }
        one = r["ray"]["runs"][0]
        r["ray_train_crops_per_s"] = one["crops_per_s"]
        r["feed_ratio"] = round(one["crops_per_s"] / (one["workers"] * r["step_crops_per_s"]), 3)
    return r


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", type=Path, default=None, help="synthetic dataset root (default: generate one)")
    ap.add_argument("--models", default="small,base,resnet")
    ap.add_argument("--batch", type=int, default=0, help="crops per worker per step (default 64 GPU, 16 CPU)")
    ap.add_argument("--size", type=int, default=128, help="crop px of the small model")
    ap.add_argument("--size-large", type=int, default=224, help="crop px of the base and resnet models")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--ray-workers", default="1", help="worker counts of the Ray Train runs ('' to skip)")
    ap.add_argument("--gpus-per-worker", type=float, default=1.0)
    ap.add_argument("--cpus-per-worker", type=float, default=0.0, help="default: 2 on GPU, 0.5 on CPU")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=0,
                    help="copies of the shard files, i.e. passes over the frames per epoch (default 32 GPU, "
                         "2 CPU)")
    ap.add_argument("--out", default="")
    a = ap.parse_args()
    dev = ("cuda" if torch.cuda.is_available() else "cpu") if a.device == "auto" else a.device
    gpu = dev == "cuda"
    name = (
        torch.cuda.get_device_name()
        if gpu
        else f"{platform.machine()} CPU, {torch.get_num_threads()} threads"
    )
    B = a.batch or (64 if gpu else 16)
    models = [m for m in a.models.split(",") if m]
    workers = [int(x) for x in a.ray_workers.split(",") if x]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        repeat = a.repeat or (32 if gpu else 2)
        shards, tpl, targets, held = setup(a.data, work, repeat)
        rows = _rows(shards, 4 * B)
        res = {
            "device": name,
            "torch": torch.__version__,
            "shard_copies": repeat,
            "template_vertices": len(tpl.vertices),
            "frames": sum(1 for _ in iter_shard_rows(shards, columns=["frame_number"])),
            "frame_px": int(rows[0]["height"]),
            "batch_per_worker": B,
            "models": {},
        }
        if workers:
            import ray

            ray.init(include_dashboard=False, log_to_driver=False,
                     object_store_memory=4 * 1024**3 if gpu else 256 * 1024**2)
            res["cluster"] = ray.cluster_resources()
        for m in models:
            try:
                res["models"][m] = bench_model(
                    a, m, dev, gpu, B, tpl, targets, held, rows, shards, workers, work, first=m == models[0]
                )
            except Exception as e:  # one model's failure is recorded, the others still run
                import traceback

                traceback.print_exc()
                res["models"][m] = {"error": f"{type(e).__name__}: {e}"}
            if gpu:
                torch.cuda.empty_cache()
        if workers:
            ray.shutdown()
    for key in ("ray_train_crops_per_s", "step_crops_per_s", "feed_ratio"):
        res[key] = {m: r.get(key) for m, r in res["models"].items()}
    print(json.dumps(res, indent=1, default=str))
    tag = "gpu" if gpu else "cpu"
    if gpu and a.gpus_per_worker < 1:
        tag += "-shared"
    out = Path(a.out or Path(__file__).parent / "results" / f"train-{tag}.json")
    if out.suffix != ".json":
        out = out / f"train-{tag}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1, default=str))
    print(f"-> {out}")


if __name__ == "__main__":
    main()
