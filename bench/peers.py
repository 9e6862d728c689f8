"""Peers side by side: catpose's pair alignment against what a user would reach for instead, on the same
videos and the same pairs, accuracy and pairs/s in one run.

Methods (every one gets each video's surface-feature vertices, the points catpose aligns):

* ``catpose``: :func:`catpose.align.batched.align_pairs` with the default ``SearchConfig``
  (appearance weight α = 0.2, the paper's);
* ``catpose_geometry``: the same search with α = 0 — geometry only;
* ``open3d_fpfh_ransac_icp``: Open3D's global registration as its tutorial sets it up — both clouds
  normalised (centroid, diameter: the videos' SfM scales differ), normals, FPFH features, RANSAC on
  feature matches (edge-length and distance checkers), then point-to-plane ICP. Needs the optional
  extra ``pip install 'catpose[peers]'`` (``open3d-cpu``; without it the method is left out, said so).

Categories (written by ``catpose synth``): ``crate`` — a square box whose four quarters differ only in
colour: its shape is the same turned by 90°, 180° or 270°, so a geometric method can at best guess among
four (chance ≈ 25 % at Acc@30°) — and ``car`` and ``mug``, whose shapes are not ambiguous.

Per category and method: ``acc30`` / ``acc10`` (share of pairs whose relative rotation is within 30° / 10°
of the truth), ``median_deg``, ``pairs_per_s`` (per-video preparation included), over all pairs of the
category's videos.

    python bench/peers.py [--videos 8] [--frames 10] [--size 96] [--categories crate car mug]
                          [--data DIR] [--out bench/results/peers.json]
"""

from __future__ import annotations

import argparse
import itertools
import os
import platform
import tempfile
import time

import numpy as np
import torch
from results_io import write_result  # bench/results_io.py (the script's folder is on sys.path)

from catpose.align.batched import align_pairs
from catpose.config import FeaturesConfig, SearchConfig, SynthConfig
from catpose.data.groundtruth import load_ground_truth
from catpose.data.synth.generate import generate
from catpose.features.runner import load_surface_features, run_features
from catpose.geometry import geodesic_deg

AMBIGUOUS = {"crate": "square box, four quarters told apart only by colour (4-fold shape symmetry)",
             "car": "", "mug": ""}


def scores(err: np.ndarray, seconds: float) -> dict:
    return {"acc30": round(float((err < 30).mean()), 4), "acc10": round(float((err < 10).mean()), 4),
            "median_deg": round(float(np.median(err)), 2), "pairs_per_s": round(len(err) / seconds, 2),
            "seconds": round(seconds, 2)}


def open3d_method():
    """Open3D's FPFH + RANSAC + ICP as a function (videos, pairs) -> rotations; None without open3d."""
    try:
        import open3d as o3d
    except ImportError:
        return None
    reg = o3d.pipelines.registration
    voxel = 0.05  # of the normalised diameter

    def prepare(V: np.ndarray):
        c = V.mean(0)
        d = 2 * np.linalg.norm(V - c, axis=1).max()
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(((V - c) / d).astype(np.float64)))
        pc.estimate_normals(o3d.geometry.KDTreeSearchParamHybrid(radius=2 * voxel, max_nn=30))
        f = reg.compute_fpfh_feature(pc, o3d.geometry.KDTreeSearchParamHybrid(radius=5 * voxel, max_nn=100))
        return pc, f

    def run(vertices: dict[str, np.ndarray], pairs: list[tuple[str, str]]) -> list[np.ndarray]:
        o3d.utility.random.seed(0)
        prep = {n: prepare(V) for n, V in vertices.items()}
        out = []
        for a, b in pairs:
            (pa, fa), (pb, fb) = prep[a], prep[b]
            dist = 1.5 * voxel
            res = reg.registration_ransac_based_on_feature_matching(
                pa,
                pb,
                fa,
                fb,
                False,
                dist,
                reg.TransformationEstimationPointToPoint(False),
                3,
                [
                    reg.CorrespondenceCheckerBasedOnEdgeLength(0.9),
                    reg.CorrespondenceCheckerBasedOnDistance(dist),
                ],
                reg.RANSACConvergenceCriteria(100000, 0.999),
            )
            icp = reg.registration_icp(pa, pb, 0.4 * voxel * 2, res.transformation,
                                       reg.TransformationEstimationPointToPlane())
            out.append(np.asarray(icp.transformation)[:3, :3].copy())
        return out

    return run, f"open3d {o3d.__version__}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=int, default=8)
    ap.add_argument("--frames", type=int, default=10)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--vertices", type=int, default=500)
    ap.add_argument("--categories", nargs="+", default=["crate", "car", "mug"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--data", default=None, help="where to write the synthetic videos (default: a temporary folder)"
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.manual_seed(0)
    tmp = tempfile.mkdtemp(prefix="catpose-peers-")
    data = args.data or os.path.join(tmp, "data")
    feats = os.path.join(tmp, "features")
    t0 = time.perf_counter()
    generate(SynthConfig(workers=0, out=data, category=tuple(args.categories), videos=args.videos,
                         frames=args.frames, size=args.size, seed=args.seed))
    t_synth = time.perf_counter() - t0
    t0 = time.perf_counter()
    run_features(FeaturesConfig(data=data, category=tuple(args.categories), out=feats, vertices=args.vertices,
                                frames=min(8, args.frames), workers=0), progress=False)
    t_feat = time.perf_counter() - t0
    o3d = open3d_method()
    res = {
        "device": f"{platform.machine()} CPU, {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "peer": o3d[1] if o3d else "open3d not installed (pip install 'catpose[peers]'): left out",
        "sizes": {
            "videos": args.videos,
            "frames": args.frames,
            "size": args.size,
            "vertices": args.vertices,
            "feature_frames": min(8, args.frames),
            "backbone": FeaturesConfig.backbone,
            "rotations": SearchConfig.rotations,
        },
        "seconds": {"synth": round(t_synth, 1), "features": round(t_feat, 1)},
        "categories": {},
    }
    for cat in args.categories:
        gt = load_ground_truth(data, cat)
        names = sorted(gt)
        videos = [load_surface_features(feats, cat, n) for n in names]
        pairs = list(itertools.combinations(names, 2))
        truth = np.stack([gt[b].R.T @ gt[a].R for a, b in pairs])  # x_b ∝ R_bᵀ R_a x_a
        row = {"pairs": len(pairs), "ambiguous_shape": AMBIGUOUS.get(cat, "") or False}
        for method, alpha in (("catpose", SearchConfig.alpha), ("catpose_geometry", 0.0)):
            cfg = SearchConfig(alpha=alpha)
            align_pairs(videos[:2], pairs[:1], cfg)  # warm-up (threads, allocations)
            t0 = time.perf_counter()
            al = align_pairs(videos, pairs, cfg)
            sec = time.perf_counter() - t0
            row[method] = scores(geodesic_deg(np.stack([x.R for x in al]), truth), sec)
        if o3d:
            t0 = time.perf_counter()
            Rs = o3d[0]({n: v.vertices.astype(np.float64) for n, v in zip(names, videos)}, pairs)
            row["open3d_fpfh_ransac_icp"] = scores(
                geodesic_deg(np.stack(Rs), truth), time.perf_counter() - t0
            )
        res["categories"][cat] = row
        print(cat, {k: v for k, v in row.items()}, flush=True)
    write_result(res, args.out, "peers.json")


if __name__ == "__main__":
    main()
