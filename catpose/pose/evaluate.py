"""``catpose evaluate``: pose accuracy of a training run on an annotated image set, with a baseline.

For every object of the set the run's :class:`~catpose.pose.estimate.PoseEstimator` gives a camera
rotation in the template frame; one frame rotation ``G`` (template → the dataset's canonical frame)
maps it into the dataset's frame, where the geodesic error to the annotation is measured. ``G`` comes
from the synthetic ground truth of the run's training data when it exists (``frame=gt``), or is fitted
on a calibration share of the objects and scored on the rest (``frame=fit``; an unsupervised template
has no names for its axes, so every label-free method needs this one rotation).

The baseline, scored in the same run: the nearest neighbour of the image's features among the
training frames (pooled features of the same encoder, cosine similarity), whose rotation in the
template frame comes from the video's camera and its alignment — zero-shot viewpoint retrieval, as
done with DINO features, without the 3D template.

Writes ``evaluation.json``, ``evaluation.md`` (table), ``errors.png`` (histogram), ``results.jsonl``
(one line per object: its errors, the estimated rotation ``R_template`` in the template's frame and the
annotation's ``R_gt``; failures with their error) and ``overlays/``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from catpose.align.table import read_alignment
from catpose.config import PoseConfig, PoseEvalConfig, WildConfig
from catpose.data.co3d import decode_image
from catpose.data.groundtruth import has_ground_truth, load_ground_truth
from catpose.data.shards import row_camera
from catpose.devices import resolve_device
from catpose.errors import CatposeError, ConfigError
from catpose.geometry import crop_image, fit_frame, geodesic_deg, object_box, pose_metrics
from catpose.learn.checkpoint import load_trained
from catpose.learn.evaluate import category_rows
from catpose.plotting import png_bytes
from catpose.pose.datasets import PoseSample, load_co3d, load_objectnet3d, load_pascal3d
from catpose.pose.estimate import PoseEstimate, PoseEstimator, descriptor, load_image, load_mask, overlay
from catpose.pose.protocol import load_pascal3d_paper, paper_split, same_category
from catpose.storage import Store
from catpose.tensorfile import pack, require, unpack

DATASETS = ("synth-wild", "pascal3d", "objectnet3d", "co3d")


def load_samples(
    cfg: PoseEvalConfig, split: dict | None, to_reference=None
) -> tuple[list[PoseSample], list[dict], str]:
    """The objects of ``cfg.dataset`` and the frame their rotations are in (canonical or template)."""
    if cfg.dataset == "synth-wild":
        s, p = load_pascal3d(cfg.root, cfg.category, ("synth",), cfg.split, real_camera=True)
        return s, p, "canonical"
    if cfg.dataset == "pascal3d":
        levels = paper_split(cfg.split)  # the paper's protocol (catpose.pose.protocol): one level at a time
        if levels is not None:
            if len(levels) != 1:
                raise ValueError(f"--split {cfg.split}: one level at a time here (catpose evaluate scores "
                                 "each)")
            s, p = load_pascal3d_paper(cfg.root, cfg.category, levels[0])
        else:
            s, p = load_pascal3d(cfg.root, cfg.category, None, cfg.split)
        return s, p, "canonical"
    if cfg.dataset == "objectnet3d":
        s, p = load_objectnet3d(
            cfg.root, cfg.category, "test" if cfg.split == "paper" else cfg.split or "val"
        )
        return s, p, "canonical"
    if cfg.dataset == "co3d":
        seqs = list(cfg.sequences) or (split or {}).get("held_out", [])
        if not seqs:
            raise ValueError("co3d: name --sequences (the run records no held-out videos)")
        return load_co3d(cfg.root, cfg.category, seqs, to_reference=to_reference)
    raise ValueError(f"unknown dataset {cfg.dataset!r}; choose from {DATASETS}")


def ground_truth_frame(split: dict | None, category: str) -> np.ndarray | None:
    """``G`` from the synthetic ground truth of the run's training data (its ``split.json`` names the
    data and the reference video): the reference video's world → canonical rotation."""

    root = (split or {}).get("config", {}).get("ground_truth")
    endpoint = (split or {}).get("config", {}).get("endpoint_url")
    if not root or not has_ground_truth(root, endpoint):
        return None
    gt = load_ground_truth(root, category, endpoint)
    ref = split.get("reference")
    return np.asarray(gt[ref].R) if ref in gt else None


# ------------------------------------------------------------------------------ nearest neighbour
def training_views(estimator: PoseEstimator, run_cfg, split: dict, max_frames: int = 600, batch: int = 32,
                   progress: bool = True) -> tuple[torch.Tensor, np.ndarray]:
    """Descriptors [F, D'] and template-frame camera rotations [F, 3, 3] of the run's training frames."""
    from catpose.parallel import progress_bar


    transforms, _ = read_alignment(run_cfg.alignment, run_cfg.endpoint_url)
    train = set(split["train"])
    rows = [
        r for r in category_rows(run_cfg) if r["sequence_name"] in train and r["sequence_name"] in transforms
    ]
    if len(rows) > max_frames:
        rows = [rows[i] for i in np.linspace(0, len(rows) - 1, max_frames).round().astype(int)]
    descs, rots = [], []
    steps = range(0, len(rows), batch)
    for s in progress_bar(len(steps), "baseline: training views", disable=not progress, iterable=steps):
        crops = []
        for r in rows[s:s + batch]:
            img = decode_image(r["image"], f"{r['sequence_name']}/{r['frame_number']}")
            mask = decode_image(r["mask"], f"{r['sequence_name']}/{r['frame_number']} mask", "L") / 255.0 \
                if r.get("mask") else None
            crops.append(
                crop_image(img, object_box(img.shape[:2], None, mask, estimator.cfg.margin), estimator.size)
            )
            rots.append(np.asarray(transforms[r["sequence_name"]].R) @ row_camera(r).R)
        descs.append(descriptor(estimator.encoder, torch.cat(crops).to(estimator.cfg.device)).cpu())
    return torch.cat(descs), np.stack(rots)


def views_key(store: Store) -> dict:
    """The key of a run's cached training views: digests of the ``model.pt`` and the ``split.json`` (its
    training videos and the fingerprint of its shards and alignment) they are made from."""
    from catpose import fingerprint as fp

    return fp.make(
        {"views": 1}, {f: store.read_bytes(f) if store.exists(f) else b"" for f in ("model.pt", "split.json")}
    )


def attach_views(
    est: PoseEstimator, run: str, endpoint_url: str | None = None, progress: bool = True
) -> bool:
    """Gives ``est`` the run's training views for the retrieval prior (and the baseline): read from
    ``RUN/retrieval_views.pt``, else computed from the run's training frames (its shards and alignment)
    and cached there. Returns False, with a message, where neither is possible."""
    store = Store(run, endpoint_url)
    key = views_key(store)
    cached = store.exists("retrieval_views.pt")
    if cached and store.read_json("retrieval_views.key.json", default=None) != key:
        print(f"retrieval views: {store.url('retrieval_views.pt')} was made from another model.pt or "
              "training "
              "split than the run's; recomputing it", flush=True)
        cached = False
    if cached:
        where = store.url("retrieval_views.pt")  # a tensorfile: never unpickled
        v = require(unpack(store.read_bytes("retrieval_views.pt"), where, kind="retrieval_views"),
                    ("descriptors", "rotations"), where)
        est.set_views(v["descriptors"], v["rotations"])
        return True
    try:
        run_cfg = est.run_config or load_trained(run, endpoint_url)[0].config
        split = store.read_json("split.json")
        desc, rots = training_views(est, run_cfg, split, progress=progress)
    except (CatposeError, OSError, KeyError, ValueError) as e:
        print(f"retrieval prior off: the run's training frames are not readable here ({e})", flush=True)
        return False
    try:
        store.remove("retrieval_views.key.json")  # the key goes last: a torn update is never trusted
        store.write_bytes("retrieval_views.pt", pack({"descriptors": desc, "rotations": np.asarray(rots)},
                                                     kind="retrieval_views"))
        store.write_json("retrieval_views.key.json", key)
    except OSError as e:
        print(f"(could not cache the training views in {store.url('retrieval_views.pt')}: {e})", flush=True)
    est.set_views(desc, rots)
    return True


# ------------------------------------------------------------------------------ the evaluation
def check_category(trained: str, images: str, allow: bool, checkpoint: str, endpoint_url: str | None = None,
                   what: str = "score it on") -> None:
    """A :class:`ConfigError` naming the run's ``model.pt`` when the run was trained on another category
    than ``images`` (unless ``allow``: ``--allow-other-category``)."""
    if not same_category(trained, images) and not allow:
        raise ConfigError(Store(checkpoint, endpoint_url).url("model.pt"),
                          f"the run was trained on category '{trained}', not '{images}'; "
                          f"give --allow-other-category to {what} another category's "
                          "images", field="config.category")


def evaluate_pose(cfg: PoseEvalConfig, progress: bool = True) -> dict:
    t_start = time.perf_counter()
    cfg = dataclasses.replace(cfg, pose=dataclasses.replace(cfg.pose, device=resolve_device(cfg.pose.device)))
    model, tpl = load_trained(cfg.checkpoint, cfg.endpoint_url, cfg.pose.device)
    run_cfg = model.config
    check_category(run_cfg.category, cfg.category, cfg.allow_other_category, cfg.checkpoint, cfg.endpoint_url)
    store = Store(cfg.checkpoint, cfg.endpoint_url)
    split = store.read_json("split.json") if store.exists("split.json") else None
    est = PoseEstimator(model.encoder, model.template.vertex_features().detach(), tpl.vertices,
                        model.template.background_features().detach(), int(run_cfg.size), cfg.pose)
    est.run_config = run_cfg
    to_ref = None
    if cfg.dataset == "co3d":
        to_ref, _ = read_alignment(run_cfg.alignment, run_cfg.endpoint_url)
    samples, problems, frame_kind = load_samples(cfg, split, to_ref)
    if cfg.limit and len(samples) > cfg.limit:
        samples = [samples[i] for i in np.linspace(0, len(samples) - 1, cfg.limit).round().astype(int)]
    if not samples:
        raise ValueError(f"{cfg.root}: no {cfg.category} objects with a viewpoint to score "
                         f"({len(problems)} problems, e.g. {problems[:1]})")
    # the frame G: R_dataset = G · R_template
    G, frame_how = None, cfg.frame
    if frame_kind == "template":
        G, frame_how = np.eye(3), "template (pseudo ground truth from the alignment)"
    elif cfg.frame in ("gt", "auto"):
        G = ground_truth_frame(split, run_cfg.category)
        if G is not None:
            frame_how = "gt"
        elif cfg.frame == "gt":
            raise FileNotFoundError("frame=gt: the run's training data has no catpose_gt.json (use "
                                    "frame=fit)")
        else:
            frame_how = "fit"
    n_cal = int(np.ceil(cfg.calibration * len(samples))) if frame_how == "fit" else 0
    order = np.random.default_rng(0).permutation(len(samples))
    calib = set(order[:n_cal].tolist())

    attached = (cfg.baseline or cfg.pose.prior_weight > 0) and attach_views(
        est, cfg.checkpoint, cfg.endpoint_url, progress
    )
    views = (est.view_descriptors, est.view_rotations) if attached and cfg.baseline else None

    out = Path(cfg.out)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    records = []
    from catpose.parallel import progress_bar

    bar = progress_bar(len(samples), f"pose {cfg.category}", disable=not progress)
    batch = max(1, cfg.pose.batch)  # 0: one image at a time
    for start in range(0, len(samples), batch):  # cfg.pose.batch images estimated together
        chunk = range(start, min(start + batch, len(samples)))
        recs, loaded = {}, []
        for i in chunk:  # decoding stays per image, on the CPU
            s = samples[i]
            recs[i] = {"name": s.name, "image": s.image, "calibration": i in calib,
                       **{k: v for k, v in s.meta.items() if k in ("occluded", "truncated")}}
            try:
                img = load_image(s.image)
                loaded.append(
                    (i, img, load_mask(s.mask, img.shape[:2]) if s.mask and s.bbox is None else None)
                )
            except (CatposeError, OSError, ValueError) as e:
                recs[i]["failed"] = str(e)
        if loaded:
            got = [samples[i] for i, _, _ in loaded]
            t0 = time.perf_counter()
            poses = est.estimate_batch([img for _, img, _ in loaded], [s.bbox for s in got],
                                       [m for _, _, m in loaded], [s.focal_px for s in got],
                                       [s.principal_px for s in got], sources=[s.image for s in got])
            seconds = round((time.perf_counter() - t0) / len(loaded), 3)  # the batch's time, shared out
            ok = []
            for (i, img, _), p in zip(loaded, poses):
                if isinstance(p, PoseEstimate):
                    recs[i].update(R_template=p.R.tolist(), confidence=p.confidence, seconds=seconds)
                    ok.append((i, img, p))
                else:
                    recs[i]["failed"] = str(p)
            if views is not None and ok:
                crops = torch.cat([crop_image(img, p.box, est.size) for _, img, p in ok]).to(cfg.pose.device)
                nearest = (descriptor(est.encoder, crops).cpu() @ views[0].T).argmax(1).tolist()
                for (i, _, _), j in zip(ok, nearest):
                    recs[i]["R_baseline_template"] = views[1][j].tolist()
            for i, img, p in ok:
                if i >= cfg.overlays:
                    continue
                cap = None
                if G is not None:
                    cap = (
                        f"error {float(geodesic_deg(G @ p.R, samples[i].R)):.0f} deg  conf {p.confidence:.2f}"
                    )
                try:
                    overlay(img, p, tpl.vertices, cap).save(out / "overlays" / f"{i:04d}.png")
                except (OSError, ValueError) as e:
                    recs[i]["failed"] = str(e)
        for i in chunk:
            recs[i]["R_gt"] = samples[i].R.tolist()
            records.append(recs[i])
        bar.update(len(chunk))
    bar.close()

    def errors(key: str) -> tuple[np.ndarray, np.ndarray | None, list]:
        ok = [r for r in records if key in r and r["calibration"]]
        Gm = G
        if frame_how == "fit":
            Gm = (
                fit_frame(np.array([r[key] for r in ok]), np.array([r["R_gt"] for r in ok]))
                if len(ok) >= 1
                else None
            )
        scored = [r for r in records if not r["calibration"]]
        e = np.array(
            [
                float(geodesic_deg(Gm @ np.array(r[key]), np.array(r["R_gt"])))
                if key in r and Gm is not None
                else np.nan
                for r in scored
            ]
        )
        return e, Gm, scored

    e_m, G_m, scored = errors("R_template")
    for r, e in zip(scored, e_m):
        r["error_deg"] = None if np.isnan(e) else float(e)
    results = {
        "dataset": cfg.dataset,
        "root": str(cfg.root),
        "category": cfg.category,
        "run": cfg.checkpoint,
        "frame": frame_how,
        "objects": len(samples),
        "scored": len(scored),
        "calibration": n_cal,
        "failed": sum("failed" in r for r in scored),
        "skipped_annotations": len(problems),
        "methods": {"catpose (features + render-and-compare)": pose_metrics(e_m)},
        "seconds_per_image": float(np.mean([r["seconds"] for r in records if "seconds" in r] or [np.nan])),
        "device": cfg.pose.device,
    }
    hist = {"catpose (features + render-and-compare)": e_m}
    if views is not None:
        e_b, _, _ = errors("R_baseline_template")
        for r, e in zip(scored, e_b):
            r["baseline_error_deg"] = None if np.isnan(e) else float(e)
        results["methods"]["nearest training view (same features)"] = pose_metrics(e_b)
        hist["nearest training view (same features)"] = e_b
    if G_m is not None:
        results["frame_rotation"] = np.asarray(G_m).tolist()
        (out / "frame.json").write_text(json.dumps({"rotation": np.asarray(G_m).tolist(), "how": frame_how,
                                                    "run": cfg.checkpoint}))
    results["seconds"] = round(time.perf_counter() - t_start, 1)
    (out / "evaluation.json").write_text(json.dumps(results, indent=1))
    (out / "evaluation.md").write_text(format_table(results))
    (out / "errors.png").write_bytes(plot_errors(hist, f"{cfg.category} on {cfg.dataset}"))
    with open(out / "results.jsonl", "w") as fh:
        for r in records:
            fh.write(json.dumps(r) + "\n")  # with its rotations: R_template (estimate), R_gt (annotation)
    with open(out / "problems.jsonl", "w") as fh:
        for p in problems:
            fh.write(json.dumps(p) + "\n")
    return results


def pose_stage(
    run: str,
    category: str,
    out: Path,
    images: int,
    pose: PoseConfig | None = None,
    endpoint_url: str | None = None,
    wild: WildConfig | None = None,
    progress: bool = True,
) -> dict:
    """The main job's pose stage for one trained category: a synthetic in-the-wild set of ``images``
    images (unseen instances on clutter, with occluders; ``wild`` for other image settings) in
    ``OUT/wild/<category>``, scored with catpose and the nearest-training-view baseline of the same run
    (:func:`evaluate_pose`, ``OUT/pose/<category>``: evaluation.json/.md, results.jsonl with each image's
    errors), and its error histogram in ``OUT/plots/pose_errors_<category>.png``. Returns the evaluation."""
    from catpose.pose.wild import generate_wild  # the renderer: only for the synthetic in-the-wild set

    out = Path(out)
    wdir = out / "wild" / category
    wcfg = dataclasses.replace(wild or WildConfig(), out=wdir, category=category, images=images)
    generate_wild(wcfg, progress=progress)
    res = evaluate_pose(PoseEvalConfig(checkpoint=run, dataset="synth-wild", root=wdir, category=category,
                                       out=out / "pose" / category, endpoint_url=endpoint_url,
                                       pose=pose or PoseConfig()), progress=progress)
    (out / "plots").mkdir(parents=True, exist_ok=True)
    (out / "plots" / f"pose_errors_{category}.png").write_bytes(
        (out / "pose" / category / "errors.png").read_bytes()
    )
    return res


def pose_stage_into_store(item: tuple[str, str], store, images: int, pose: PoseConfig | None = None,
                          endpoint_url: str | None = None) -> dict:
    """:func:`pose_stage` for ``item = (category, run)`` on this node's scratch, its outputs then written
    to the run's ``store`` (``pose/<category>/``, ``plots/pose_errors_<category>.png``): the form the main
    job runs, in its own process or as a Ray task on a GPU node (no path of the driver is used). The
    result says where it ran (``placement``: Ray node and host, and the torch device)."""
    import socket
    import tempfile

    from catpose.devices import in_ray_worker

    category, run = item
    with tempfile.TemporaryDirectory(prefix="catpose-pose-") as tmp:
        res = pose_stage(run, category, Path(tmp), images, pose, endpoint_url, progress=not in_ray_worker())
        store.upload_dir(Path(tmp) / "pose" / category, f"pose/{category}")
        store.write_bytes(f"plots/pose_errors_{category}.png",
                          (Path(tmp) / "plots" / f"pose_errors_{category}.png").read_bytes())
    node = None
    if in_ray_worker():
        import ray

        node = ray.get_runtime_context().get_node_id()
    res["placement"] = {"ray_node": node, "host": socket.gethostname(), "device": res.get("device")}
    return res


def format_table(results: dict) -> str:
    title = (f"### {results['category']} on {results['dataset']}: {results['scored']} objects scored "
             f"(frame: {results['frame']}; {results['failed']} failed, counted as wrong)")
    lines = [title, "",
             "| method | Acc@π/6 | Acc@π/18 | median error (°) |", "|---|---|---|---|"]
    for k, m in results["methods"].items():
        lines.append(f"| {k} | {m['acc_pi_6']:.1%} | {m['acc_pi_18']:.1%} | {m['median_deg']:.1f} |")
    return "\n".join(lines) + "\n"


def plot_errors(errors: dict[str, np.ndarray], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    fig, ax = plt.subplots(figsize=(6, 3))
    bins = np.arange(0, 181, 5)
    for k, e in errors.items():
        ax.hist(np.where(np.isfinite(e), e, 180), bins=bins, alpha=0.55, label=k)
    for x, lab in ((10, "π/18"), (30, "π/6")):
        ax.axvline(x, color="k", lw=0.8, ls="--")
        ax.text(x + 1, ax.get_ylim()[1] * 0.9, lab, fontsize=7)
    ax.set_xlabel("geodesic rotation error (°)")
    ax.set_ylabel("objects")
    ax.set_title(title)
    ax.legend(fontsize=7)
    return png_bytes(fig)
