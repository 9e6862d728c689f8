"""Raw frames of a realistic synthetic category, no masks → ``catpose ingest`` (SfM, cleaning, GrabCut
masks) → surface features → alignment, scored against the generator's ground truth (issue 18's
must-show: Acc@π/6 ≥ 90 %).

The ingested sequences live in SfM's own world frames; their ground truth is the generator's
world → canonical similarity composed with the SfM → generator-world similarity fitted (Umeyama,
with scale) to the camera centres of the registered frames, matched by file name. Also reported per
category: frames registered, SfM points, points kept by the cleaning, the share of the kept points
on the object (the generator's depth maps tell), the GrabCut masks' IoU with the generator's masks,
and the videos skipped.

    python bench/ingest_align.py --work /tmp/ia --categories car,mug --videos 10 --frames 24 --size 256
        [--out bench/results/ingest-align.json] [--ingest.KEY VALUE ...]

Each step is kept in ``--work`` and skipped when its output exists (delete the folder to redo).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np


def umeyama(src: np.ndarray, dst: np.ndarray):
    """Similarity (s, R, t) with dst ≈ s R src + t (least squares), src/dst [N, 3]."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    U, S, Vt = np.linalg.svd(b.T @ a / len(src))
    D = np.eye(3)
    D[2, 2] = np.sign(np.linalg.det(U @ Vt))
    R = U @ D @ Vt
    s = float((S * np.diag(D)).sum() / (a ** 2).sum(1).mean())
    return s, R, mu_d - s * R @ mu_s


def ingested_ground_truth(synth_root: Path, ingest_root: Path, category: str) -> dict:
    """Ground truth of the ingested sequences (world_sfm → canonical) and the camera-fit residuals."""
    from catpose.data.co3d import Co3dCategory
    from catpose.data.groundtruth import load_ground_truth
    from catpose.geometry import Similarity

    gts = load_ground_truth(synth_root, category)
    truth = Co3dCategory(synth_root, category)
    out, resid = {}, {}
    for seq in Co3dCategory(ingest_root, category):
        ref = {f.image_path.name: f.camera.center for f in truth[seq.name].frames}
        pairs = [(f.camera.center, ref[f.image_path.name]) for f in seq.frames if f.image_path.name in ref]
        src, dst = (np.array(x) for x in zip(*pairs))
        s, R, t = umeyama(src, dst)
        sim = Similarity(R, t, s)
        resid[seq.name] = float(np.linalg.norm(sim.apply(src) - dst, axis=1).mean()
                                / np.linalg.norm(dst - dst.mean(0), axis=1).mean())
        out[seq.name] = gts[seq.name].compose(sim)
    return {"gt": out, "camera_fit_residual": resid}


def object_share(synth_root: Path, ingest_root: Path, category: str, gt_ing: dict) -> dict:
    """Per sequence: the share of the ingested cloud's points on the object (within 3 % of the object's
    size of the generator's object points) and the GrabCut masks' mean IoU with the generator's masks."""
    from scipy.spatial import cKDTree

    from catpose.data.co3d import Co3dCategory
    from catpose.data.groundtruth import load_ground_truth, load_point_labels

    gts = load_ground_truth(synth_root, category)
    truth = Co3dCategory(synth_root, category)
    res = {}
    for seq in Co3dCategory(ingest_root, category):
        t = truth[seq.name]
        lab = load_point_labels(synth_root, category, seq.name)
        obj_w = t.load_point_cloud().points[lab]
        obj_c = gts[seq.name].apply(obj_w)
        pts_c = gt_ing[seq.name].apply(seq.load_point_cloud().points)
        size = float(np.linalg.norm(obj_c.max(0) - obj_c.min(0)))
        d, _ = cKDTree(obj_c).query(pts_c)
        by = {f.image_path.name: f for f in t.frames}
        ious = []
        for f in seq.frames:
            if f.mask_path is None:
                continue
            m, r = f.load_mask() > 0.5, by[f.image_path.name].load_mask() > 0.5
            ious.append((m & r).sum() / max((m | r).sum(), 1))
        res[seq.name] = {
            "points": len(pts_c),
            "on_object": float((d < 0.03 * size).mean()) if len(d) else 0.0,
            "mask_iou": float(np.mean(ious)) if ious else float("nan"),
        }
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--categories", default="car,mug")
    ap.add_argument("--videos", type=int, default=10)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--ingest", nargs=2, action="append", default=[], metavar=("KEY", "VALUE"),
                    help="IngestConfig field and value (repeatable)")
    args = ap.parse_args()

    import dataclasses

    from catpose.align.evaluate import evaluate_alignment
    from catpose.align.run import run_align
    from catpose.config import AlignConfig, FeaturesConfig, IngestConfig, SynthConfig
    from catpose.data.ingest import ingest
    from catpose.data.synth.generate import generate
    from catpose.features.runner import run_features, signature

    work = args.work
    cats = args.categories.split(",")
    synth = work / "synth"
    if not (synth / "catpose_gt.json").is_file():
        generate(
            SynthConfig(
                out=str(synth),
                category=tuple(cats),
                videos=args.videos,
                frames=args.frames,
                size=args.size,
                depth=False,
                realistic=True,
                seed=args.seed,
                workers=args.workers,
            )
        )
    result = {"command": "python bench/ingest_align.py " + " ".join(
        f"--{k} {v}" for k, v in vars(args).items() if k not in ("ingest", "work", "out")) + "".join(
        f" --ingest {k} {v}" for k, v in args.ingest), "machine": platform.node(), "categories": {}}
    for cat in cats:
        from catpose.data.co3d import Co3dCategory

        raw = work / "raw" / cat
        if not raw.is_dir():
            for seq in Co3dCategory(synth, cat):
                (raw / seq.name).mkdir(parents=True)
                for fr in seq.frames:  # images only: no masks, no cameras, no cloud
                    shutil.copy(fr.image_path, raw / seq.name / fr.image_path.name)
        ing = work / "ingest"
        icfg = IngestConfig(
            frames=str(raw), out=str(ing), category=cat, max_frames=args.frames, workers=args.workers
        )
        for k, v in args.ingest:
            cur = getattr(icfg, k)
            icfg = dataclasses.replace(icfg, **{k: type(cur)(v) if cur is not None else v})
        t0 = time.perf_counter()
        man = ingest(icfg)
        t_ing = time.perf_counter() - t0
        g = ingested_ground_truth(synth, ing, cat)
        gt_file = ing / "catpose_gt.json"
        data = json.loads(gt_file.read_text()) if gt_file.is_file() else {"categories": {}}
        data["categories"][cat] = {"sequences": {k: v.to_json() for k, v in g["gt"].items()}}
        gt_file.write_text(json.dumps(data, indent=1))
        quality = object_share(synth, ing, cat, g["gt"])
        fcfg = FeaturesConfig(
            data=str(ing), category=(cat,), out=str(work / "features"), workers=args.workers
        )
        acfg = AlignConfig(data=str(ing), category=cat, out=str(work / "align" / cat), features=fcfg.out,
                           partners=10, workers=args.workers)
        t0 = time.perf_counter()
        run_features(fcfg)  # the engine aligns the features it is given
        run_align(acfg, made_with=signature(fcfg))
        t_al = time.perf_counter() - t0
        ev = evaluate_alignment(work / "align" / cat / "alignment.parquet", ing, cat)
        items = man.items
        result["categories"][cat] = {
            "videos": args.videos, "ingested_ok": len(man.keys_with("ok")),
            "skipped_or_failed": {k: v.get("error") for k, v in items.items() if v["status"] != "ok"},
            "registered": f"{sum(v.get('registered', 0) for v in items.values())}/"
                          f"{sum(v.get('frames', args.frames) for v in items.values())}",
            "sfm_settings": {k: v.get("sfm") for k, v in items.items()},
            "cloud_points_mean": float(np.mean([q["points"] for q in quality.values()])) if quality else 0,
            "cloud_points_min": int(min([q["points"] for q in quality.values()], default=0)),
            "on_object_mean": float(np.mean([q["on_object"] for q in quality.values()])) if quality else 0,
            "mask_iou_mean": float(np.nanmean([q["mask_iou"] for q in quality.values()])) if quality else 0,
            "camera_fit_residual_max": max(g["camera_fit_residual"].values(), default=float("nan")),
            "aligned_videos": len(ev["errors"]),
            "acc_pi_6": ev["acc_pi_6"], "acc_pi_18": ev["acc_pi_18"], "median_deg": ev["median_deg"],
            "acc_pi_6_of_all_videos": sum(e < 30 for e in ev["errors"].values()) / args.videos,
            "errors_deg": {k: round(float(v), 1) for k, v in ev["errors"].items()},
            "per_video": quality, "seconds": {"ingest": round(t_ing, 1), "features+align": round(t_al, 1)},
        }
        print(
            json.dumps(
                {k: v for k, v in result["categories"][cat].items() if k not in ("per_video",)}, indent=1
            ),
            flush=True,
        )
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
