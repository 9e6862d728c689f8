"""Vertex-to-pixel matching accuracy of learned features on held-out videos.

For a held-out crop and a visible template vertex j, the predicted pixel is
``argmax_p f(p)·θ_j`` over every pixel of the crop (features upsampled to the crop); the vertex is
matched when that pixel lies within ``eval_threshold`` pixels of its true projection. Scored for
the trained Φ/Θ and, in the same run, for baselines whose θ_j are the mean of their features at
the vertex's projections in training frames: the untrained network (same initialisation) and the
colorsift features used by the alignment. Reported on clean held-out crops, on the same crops
composited with new backgrounds, occluders and lighting, and per viewpoint (azimuth in the
canonical frame, synthetic data) to show whether accuracy depends on where the camera is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from catpose.config import TrainConfig
from catpose.data.groundtruth import load_ground_truth
from catpose.data.shards import iter_shard_rows, row_camera
from catpose.features.backbones import ColorSift, sample_features
from catpose.learn.data import COLUMNS, prepare_batch
from catpose.learn.frames import AugmentConfig
from catpose.learn.model import build_model
from catpose.plotting import png_bytes

AZIMUTH_BINS = 8


@torch.no_grad()
def match_vertices(fmap: torch.Tensor, theta: torch.Tensor, size: int) -> torch.Tensor:
    """Best pixel of every vertex: fmap [B, D, h, w], theta [N, D] → uv [B, N, 2] (pixel centres)."""
    out = []
    th = F.normalize(theta.float(), dim=1)
    for b in range(fmap.shape[0]):
        f = F.normalize(F.interpolate(fmap[b:b + 1].float(), size=(size, size), mode="bilinear",
                                      align_corners=False)[0], dim=0)
        idx = (th @ f.flatten(1)).argmax(1)
        out.append(torch.stack([idx % size, idx // size], -1).float() + 0.5)
    return torch.stack(out)


@torch.no_grad()
def mean_vertex_features(encode: Callable, batches: list[dict], n_vertices: int, device: str) -> torch.Tensor:
    """θ_j = normalised mean of the features at vertex j's visible projections over ``batches``."""
    acc = None
    for b in batches:
        img = torch.as_tensor(b["image"], device=device).float() / 255
        fmap = encode(img).float()
        f = F.normalize(
            sample_features(fmap, torch.as_tensor(b["uv"], device=device), img.shape[-2:]), dim=-1
        )
        vis = torch.as_tensor(b["vis"], device=device)[..., None].float()
        s = (f * vis).sum(0)
        acc = s if acc is None else acc + s
    return F.normalize(acc, dim=1) if acc is not None else torch.zeros(n_vertices, 1, device=device)


@torch.no_grad()
def matching_errors(
    encode: Callable, theta: torch.Tensor, batches: list[dict], device: str
) -> tuple[np.ndarray, np.ndarray]:
    """Per-vertex pixel errors [F, N] (inf where not visible) and per-frame counts of visible vertices."""
    errs = []
    for b in batches:
        img = torch.as_tensor(b["image"], device=device).float() / 255
        pred = match_vertices(encode(img), theta, img.shape[-1]).cpu()
        e = (pred - torch.as_tensor(b["uv"])).norm(dim=-1)
        errs.append(torch.where(torch.as_tensor(b["vis"]), e, torch.full_like(e, float("inf"))).numpy())
    E = np.concatenate(errs) if errs else np.zeros((0, len(theta)))
    return E, np.isfinite(E).sum(1)


def accuracy(E: np.ndarray, threshold: float) -> float:
    n = np.isfinite(E).sum()
    return float((E <= threshold).sum() / n) if n else float("nan")


def category_rows(cfg: TrainConfig) -> list[dict]:
    """The shard rows (``COLUMNS``) of ``cfg.category``, read once with pyarrow (no Ray)."""

    return list(iter_shard_rows(cfg.data, cfg.endpoint_url, columns=COLUMNS, categories=[cfg.category]))


def load_frames(
    cfg: TrainConfig,
    rows: list[dict],
    targets: dict,
    augment: AugmentConfig | None = None,
    seed: int = 0,
    max_frames: int | None = None,
    batch: int = 16,
) -> tuple[list[dict], list[dict]]:
    """Crops of the frames of ``targets``' videos among ``rows``, and the row of each crop (same order)."""
    rows = [r for r in rows if r["sequence_name"] in targets]
    if max_frames is not None and len(rows) > max_frames:
        keep = np.random.default_rng(seed).choice(len(rows), max_frames, replace=False)
        rows = [rows[i] for i in sorted(keep)]
    out, metas = [], []
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        b = prepare_batch(
            {c: [r[c] for r in chunk] for c in COLUMNS},
            targets,
            cfg.size,
            augment,
            seed=seed + s,
            mask_fill=cfg.mask_fill,
            mask_snap=cfg.mask_snap,
        )
        by_key = {(r["sequence_name"], r["frame_number"]): r for r in chunk}
        metas += [by_key[(n, f)] for n, f in zip(b["sequence_name"], b["frame_number"])]
        out.append(b)
    return out, metas


def azimuths(metas: list[dict], ground_truth, centres: dict[str, np.ndarray]) -> np.ndarray:
    """Camera azimuth (degrees, [0, 360)) around the object in the canonical frame (x front, z up)."""

    az = []
    for r in metas:
        g = ground_truth[r["sequence_name"]]
        c = g.apply(row_camera(r).center[None])[0] - g.apply(centres[r["sequence_name"]][None])[0]
        az.append(np.degrees(np.arctan2(c[1], c[0])) % 360)
    return np.asarray(az)


def evaluate_run(cfg: TrainConfig, prep: dict, model, store, name: str, device: str = "cpu") -> dict:
    """Scores the trained model and the baselines on the held-out videos; writes evaluation.json,
    evaluation.md and viewpoint_accuracy.png next to the run."""

    torch.manual_seed(cfg.seed)
    model = model.to(device).eval()
    untrained = build_model(cfg, torch.as_tensor(prep["template"].vertices), backbone_weights=False)
    if hasattr(model.encoder, "vit"):  # the base model: the same frozen ViT under an untrained head
        untrained.encoder.vit.load_state_dict(model.encoder.vit.state_dict())
    untrained = untrained.to(device).eval()
    colorsift = ColorSift().to(device).eval()
    N = len(prep["template"].vertices)
    rows = category_rows(cfg)
    train_frames, _ = load_frames(cfg, rows, prep["train_targets"], max_frames=96, seed=cfg.seed)
    cap = cfg.eval_frames or None
    clean, metas = load_frames(cfg, rows, prep["held_targets"], seed=cfg.seed, max_frames=cap)
    wild, _ = load_frames(cfg, rows, prep["held_targets"], AugmentConfig(), seed=cfg.seed, max_frames=cap)
    methods = {
        "trained": (model.encoder, model.template.vertex_features().detach().to(device)),
        "untrained network": (untrained.encoder, None),
        "colorsift (alignment features)": (colorsift, None),
    }
    results: dict = {
        "threshold_px": cfg.eval_threshold,
        "crop_px": cfg.size,
        "held_out_videos": len(prep["held_targets"]),
        "frames": int(sum(len(b["image"]) for b in clean)),
        "methods": {},
    }
    az = None
    if cfg.ground_truth is not None:
        gt = load_ground_truth(cfg.ground_truth, cfg.category, cfg.endpoint_url)
        centres = {n: t.dense.mean(0) for n, t in prep["held_targets"].items()}
        az = azimuths(metas, gt, centres)
    for label, (enc, theta) in methods.items():
        if theta is None:
            theta = mean_vertex_features(enc, train_frames, N, device)
        E, _ = matching_errors(enc, theta, clean, device)
        Ew, _ = matching_errors(enc, theta, wild, device)
        r = {
            "accuracy": accuracy(E, cfg.eval_threshold),
            "accuracy_composited": accuracy(Ew, cfg.eval_threshold),
            "median_px": float(np.median(E[np.isfinite(E)])) if np.isfinite(E).any() else float("nan"),
        }
        if az is not None:
            bins = (az // (360 / AZIMUTH_BINS)).astype(int)
            r["by_azimuth"] = [accuracy(E[bins == k], cfg.eval_threshold) for k in range(AZIMUTH_BINS)]
            r["frames_by_azimuth"] = [int((bins == k).sum()) for k in range(AZIMUTH_BINS)]
        results["methods"][label] = r
    store.write_json(f"{name}/evaluation.json", results)
    store.write_bytes(f"{name}/evaluation.md", format_table(results, cfg.category).encode())
    if az is not None:
        store.write_bytes(f"{name}/viewpoint_accuracy.png", plot_viewpoints(results, cfg.category))
    return results


def format_table(results: dict, category: str) -> str:
    t = results["threshold_px"]
    lines = [f"### {category}: vertex-to-pixel matching on {results['held_out_videos']} held-out videos "
             f"({results['frames']} frames, {results['crop_px']} px crops, within {t:g} px)", "",
             "| features | accuracy | composited (new background, occluders, lighting) | median error px |",
             "|---|---|---|---|"]
    for k, r in results["methods"].items():
        lines.append(f"| {k} | {r['accuracy']:.1%} | {r['accuracy_composited']:.1%} | {r['median_px']:.1f} |")
    first = next(iter(results["methods"].values()))
    if "by_azimuth" in first:
        w = 360 // AZIMUTH_BINS
        lines += ["", "By camera azimuth (canonical frame, 0° = front):", "",
                  "| features | "
                  "" + " | ".join(f"{k * w}–{(k + 1) * w}°" for k in range(AZIMUTH_BINS)) + " | min/max |",
                  "|---|" + "---|" * (AZIMUTH_BINS + 1)]
        for k, r in results["methods"].items():
            v = np.array(r["by_azimuth"], float)
            ratio = np.nanmin(v) / np.nanmax(v) if np.isfinite(v).any() and np.nanmax(v) > 0 else float("nan")
            lines.append(
                f"| {k} | " + " | ".join("–" if np.isnan(x) else f"{x:.0%}" for x in v) + f" | {ratio:.2f} |"
            )
    return "\n".join(lines) + "\n"


def plot_viewpoints(results: dict, category: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w = 360 / AZIMUTH_BINS
    centres = np.arange(AZIMUTH_BINS) * w + w / 2
    fig, ax = plt.subplots(figsize=(5.5, 3))
    for k, r in results["methods"].items():
        ax.plot(centres, r["by_azimuth"], marker="o", label=k)
    ax.set_xlabel("camera azimuth (°, 0 = front)")
    ax.set_ylabel(f"matched within {results['threshold_px']:g} px")
    ax.set_ylim(0, 1)
    ax.set_xticks(np.arange(0, 361, 90))
    ax.legend(fontsize=7)
    ax.set_title(f"{category}: held-out matching by viewpoint")
    return png_bytes(fig)
