"""GPU training and pose accuracy per synthetic category: ``run_train`` (Ray Train, the device feed) then
``evaluate_pose`` on a synthetic in-the-wild set, against the nearest-training-view baseline of the
same run — the estimator settings are PoseConfig's defaults, unchanged for every category.

Inputs (``--inputs``, prepared on another machine so that the GPU machine needs no renderer):
``shards/`` (catpose shard), ``align/<category>/alignment.parquet`` (catpose align),
``features/`` (the videos' surface vertices; the feature arrays are not read by training),
``gt/catpose_gt.json`` (the synthetic ground truth, for the held-out scores and the pose frame) and
``wild/<category>/`` (catpose synth-wild), or ``--wild-images N`` to render that set here (seed 1000, as
``catpose synth-wild``; torch only). Each image's errors go to the JSON (``errors_deg``, in the order of the
set), so that runs scored on the same set can be compared image by image.

The machine needs catpose's dependencies, kornia included (the held-out evaluation scores the
colorsift baseline). Pose is scored twice on the same images: batched (``--pose-batch``) and one image
at a time (the reference path); ``--keep-runs`` copies the trained runs out for later evaluation.

    python bench/accuracy.py --inputs DIR [--categories car,mug] [--epochs 150] [--model small] [--seed 0]
    [--out F.json]
                               [--pose-device cuda] [--pose-batch 32] [--keep-runs DIR] [--wild-images 300]
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

from catpose.config import PoseConfig, PoseEvalConfig, TrainConfig
from catpose.learn.train import run_train
from catpose.pose.evaluate import evaluate_pose


def check_feed(shards: str, cat: str, targets: dict, size: int, device: str) -> dict:
    """The device feed on ``device`` against the CPU reference ``prepare_batch`` on 32 frames (centred
    crops, no augmentation), and a truncated frame in a batch (dropped and counted)."""
    from catpose.data.shards import iter_shard_rows
    from catpose.learn.data import COLUMNS, prepare_batch
    from catpose.learn.feed import DeviceFeed

    rows = [
        r for r in iter_shard_rows(shards, columns=COLUMNS, categories=[cat]) if r["sequence_name"] in targets
    ][:32]
    batch = {c: [r[c] for r in rows] for c in COLUMNS}
    ref = prepare_batch(batch, targets, size, None)
    feed = DeviceFeed(targets, size, None, device)
    out = {k: v.cpu().numpy() if torch.is_tensor(v) else v for k, v in feed(batch).items()}
    both = ref["vis"] & out["vis"]
    batch["image"][5] = batch["image"][5][: len(batch["image"][5]) // 3]
    bad = DeviceFeed(targets, size, None, device)
    n = len(bad(batch)["key"])
    return {"device": device, "nvjpeg": feed.nvjpeg, "frames": len(rows),
            "visibility_agreement": float((out["vis"] == ref["vis"]).mean()),
            "max_uv_difference_px": float(np.abs(out["uv"][both] - ref["uv"][both]).max()),
            "mean_image_difference_levels": float(np.abs(out["image"] * 255 - ref["image"]).mean()),
            "truncated_frame": {"crops": n, "dropped": bad.stats["dropped"]}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--inputs", type=Path, required=True)
    ap.add_argument("--categories", default="car,mug")
    ap.add_argument("--epochs", type=int, default=150)
    ap.add_argument("--model", default="small")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the training run: its train/held-out split, initialisation and evaluation",
    )
    ap.add_argument("--out", default="bench/results/accuracy-gpu.json")
    ap.add_argument(
        "--check-feed", action="store_true", help="compare the device feed with the CPU reference first"
    )
    ap.add_argument(
        "--pose-device", default=None, help="device of pose estimation (default: cuda when present)"
    )
    ap.add_argument(
        "--pose-batch",
        type=int,
        default=32,
        help="images estimated together; the one-image path (batch 0) is scored on the same images too",
    )
    ap.add_argument("--keep-runs", type=Path, default=None, help="copy the trained runs here")
    ap.add_argument("--skip-single", action="store_true", help="score the batched path only")
    ap.add_argument(
        "--wild-images",
        type=int,
        default=0,
        help="render an in-the-wild set of this many images per category here instead of reading INPUTS/wild",
    )
    a = ap.parse_args()
    gpu = torch.cuda.is_available()
    res = {
        "device": torch.cuda.get_device_name() if gpu else f"{platform.machine()} CPU",
        "epochs": a.epochs,
        "model": a.model,
        "crop_px": a.size,
        "batch": a.batch,
        "seed": a.seed,
        "pose_config": PoseConfig().__dict__,
        "masks": {"mask_fill": TrainConfig.mask_fill, "mask_snap": TrainConfig.mask_snap},
        "categories": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        for cat in a.categories.split(","):
            wild = a.inputs / "wild" / cat
            if a.wild_images:
                from catpose.config import WildConfig
                from catpose.pose.wild import generate_wild

                wild = Path(tmp) / "wild" / cat
                generate_wild(WildConfig(out=str(wild), category=cat, images=a.wild_images), progress=False)
            cfg = TrainConfig(
                data=str(a.inputs / "shards"),
                alignment=str(a.inputs / "align" / cat),
                features=str(a.inputs / "features"),
                category=cat,
                ground_truth=str(a.inputs / "gt"),
                out=str(Path(tmp) / "runs"),
                epochs=a.epochs,
                model=a.model,
                size=a.size,
                batch_size=a.batch,
                keep_checkpoints=1,
                num_workers=1 if not gpu else 0,
                cpus_per_worker=1.0,
                seed=a.seed,
            )
            if a.check_feed:
                from catpose.learn.train import prepare

                p = prepare(cfg)
                res.setdefault("feed_check", {})[cat] = check_feed(cfg.data, cat, p["train_targets"], a.size,
                                                                  "cuda" if gpu else "cpu")
                print(cat, res["feed_check"][cat], flush=True)
            t0 = time.perf_counter()
            tr = run_train(cfg)
            train_s = time.perf_counter() - t0
            hist = tr["history"]
            pdev = a.pose_device or ("cuda" if gpu else "cpu")
            pe, *single = (
                evaluate_pose(
                    PoseEvalConfig(
                        checkpoint=tr["run"],
                        dataset="synth-wild",
                        root=wild,
                        category=cat,
                        out=Path(tmp) / f"pose{b}" / cat,
                        overlays=0,
                        baseline=b > 0,
                        pose=PoseConfig(device=pdev, batch=b),
                    )
                )
                for b in ((a.pose_batch,) if a.skip_single else (a.pose_batch, 0))
            )
            single = single[0] if single else None
            per_image = [
                json.loads(line)
                for line in (Path(tmp) / f"pose{a.pose_batch}" / cat / "results.jsonl").open()
            ]
            per_image = [r for r in per_image if not r.get("calibration")]
            if a.keep_runs:
                import shutil

                shutil.copytree(tr["run"], a.keep_runs / Path(tr["run"]).name, dirs_exist_ok=True)
            row = {
                "train_videos": tr["train_videos"],
                "held_out_videos": tr["held_out"],
                "left_out": tr.get("left_out"),
                "crops_per_epoch": hist[-1]["images"],
                "train_seconds": round(train_s, 1),
                "fit_seconds": tr["fit_seconds"],
                "final_loss": round(hist[-1]["loss"], 4),
                "crops_per_s_after_first_epoch": round(
                    float(np.mean([h["images_per_s"] for h in hist[1:]] or [0])), 1
                ),
                "first_epoch_crops_per_s": round(hist[0]["images_per_s"], 1),
                "epoch_compute_s_median": round(float(np.median([h["seconds"] for h in hist[1:]] or [0])), 3),
                "epoch_wall_s_median": round(
                    float(np.median([h.get("wall_s", 0) for h in hist[1:]] or [0])), 3
                ),
                "held_out_matching": {
                    k: {
                        kk: vv
                        for kk, vv in v.items()
                        if kk in ("accuracy", "accuracy_composited", "median_px")
                    }
                    for k, v in tr.get("evaluation", {}).get("methods", {}).items()
                },
                "pose": {
                    "objects": pe["objects"],
                    "scored": pe["scored"],
                    "failed": pe["failed"],
                    "methods": pe["methods"],
                    "seconds_per_image": pe["seconds_per_image"],
                    "device": pdev,
                    "batch": a.pose_batch,
                    "wild_images": a.wild_images or "INPUTS/wild",
                    "errors_deg": {
                        k: [None if r.get(k) is None else round(r[k], 2) for r in per_image]
                        for k in ("error_deg", "baseline_error_deg")
                    },
                    "one_image_path": single
                    and {"methods": single["methods"], "seconds_per_image": single["seconds_per_image"]},
                },
            }
            res["categories"][cat] = row
            print(cat, json.dumps(row), flush=True)
            out = Path(a.out)  # after every category, so that a cut-off run keeps what it measured
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(res, indent=1, default=str))
            print(f"-> {out}")


if __name__ == "__main__":
    main()
