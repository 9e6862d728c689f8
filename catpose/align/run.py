"""``catpose align``: pairwise alignments as batched Ray tasks, reduced to one category reference.

Pairs are cut into chunks (``--chunk`` pairs per task, GPU fractions when the cluster has GPUs); each
finished chunk is written to ``OUT/pairs/<settings>/chunk-<k>.json``, so an interrupted run resumes
without redoing finished chunks. Outputs:

* ``OUT/alignment.parquet``: one row per sequence — ``sequence_name``, ``rotation`` (9, row-major),
  ``translation`` (3), ``scale``, ``cost``, ``is_reference``; ``x_ref = scale · R · x + translation``
  maps the sequence's CO3D world frame into the category reference frame;
* ``OUT/alignment_paths.parquet``: the same without synchronisation (each video via its cheapest path);
* ``OUT/pairs.parquet``: ``seq_i``, ``seq_j``, ``rotation``, ``translation``, ``scale``, ``cost`` (i → j);
* ``OUT/aligned_clouds.png``: the point clouds in the reference frame.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from catpose.align.reference import Edge, pair_graph, reduce_to_reference
from catpose.align.search import PairAlignment, SearchConfig, align_pair
from catpose.config import AlignConfig, FeaturesConfig
from catpose.parallel import map_items, ray_has_gpus

_CACHE: dict = {}


def search_config(cfg: AlignConfig) -> SearchConfig:
    return SearchConfig(alpha=cfg.alpha, tau=cfg.tau, rotations=cfg.rotations, vertices=cfg.vertices)


def _features(store: str, category: str, name: str, endpoint: str | None):
    from catpose.features.runner import load_surface_features

    key = (store, category, name)
    if key not in _CACHE:
        if len(_CACHE) > 256:
            _CACHE.clear()
        _CACHE[key] = load_surface_features(store, category, name, endpoint)
    return _CACHE[key]


def _chunk_task(args) -> list[dict]:
    import torch

    _, store, category, pairs, scfg, device, endpoint = args  # the first field is the chunk index
    device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device
    out = []
    for a, b in pairs:
        T = align_pair(_features(store, category, a, endpoint), _features(store, category, b, endpoint), scfg, device)
        out.append({"seq_i": a, "seq_j": b, "rotation": T.R.ravel().tolist(), "translation": T.t.tolist(),
                    "scale": T.scale, "cost": T.cost})
    return out


def _settings_key(scfg: SearchConfig, feat_store: str) -> str:
    blob = json.dumps({"search": dataclasses.asdict(scfg), "features": feat_store}, sort_keys=True, default=str)
    return hashlib.sha1(blob.encode()).hexdigest()[:10]


def run_align(cfg: AlignConfig, progress: bool = True) -> dict:
    from catpose.features.runner import run_features

    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    feat_store = cfg.features or str(out / "features")
    fman = run_features(FeaturesConfig(data=cfg.data, category=(cfg.category,), out=feat_store,
                                       workers=cfg.workers, endpoint_url=cfg.endpoint_url), progress=progress,
                        keep_existing=True)
    names = fman[cfg.category].keys_with("ok")
    if len(names) < 2:
        raise ValueError(f"category '{cfg.category}' has {len(names)} usable videos; alignment needs 2 or more")
    scfg = search_config(cfg)
    pairs = pair_graph(names, cfg.partners)
    chunk_dir = out / "pairs" / _settings_key(scfg, feat_store)
    chunk_dir.mkdir(parents=True, exist_ok=True)
    chunks = [pairs[i:i + cfg.chunk] for i in range(0, len(pairs), cfg.chunk)]
    todo = []
    for k, ch in enumerate(chunks):
        f = chunk_dir / f"chunk-{k:05d}.json"
        if not (f.is_file() and [tuple(p) for p in json.loads(f.read_text())["pairs"]] == ch):
            todo.append((k, ch))
    use_gpu = ray_has_gpus(cfg.workers, cfg.device)
    print(f"align {cfg.category}: {len(names)} videos, {len(pairs)} pairs in {len(chunks)} chunks "
          f"({len(chunks) - len(todo)} done before), alpha {cfg.alpha}, tau {cfg.tau}", flush=True)
    device = "cuda" if use_gpu else cfg.device
    tasks = [(k, feat_store, cfg.category, ch, scfg, device, cfg.endpoint_url) for k, ch in todo]
    failed = {}
    for task, res, err, _ in map_items(_chunk_task, tasks, workers=cfg.workers, desc=f"align {cfg.category}",
                                       num_gpus=0.25 if use_gpu else 0, progress=progress):
        k = task[0]
        if err:
            failed[f"chunk-{k:05d}"] = err
            continue
        (chunk_dir / f"chunk-{k:05d}.json").write_text(json.dumps({"pairs": chunks[k], "results": res}))
    rows = []
    for k in range(len(chunks)):
        f = chunk_dir / f"chunk-{k:05d}.json"
        if f.is_file():
            rows += json.loads(f.read_text())["results"]
    if not rows:
        raise RuntimeError(f"no pair of '{cfg.category}' could be aligned: {failed}")
    pq.write_table(pa.Table.from_pylist(rows), out / "pairs.parquet")
    edges = [Edge(r["seq_i"], r["seq_j"], PairAlignment(np.reshape(r["rotation"], (3, 3)), np.asarray(r["translation"]),
                                                         r["scale"], r["cost"])) for r in rows]
    centroids = {n: _features(feat_store, cfg.category, n, cfg.endpoint_url).vertices.mean(0).astype(np.float64)
                 for n in names}
    ref, synced, paths = reduce_to_reference(edges, centroids, sync=cfg.sync)
    write_alignment(out / "alignment.parquet", synced, ref)
    write_alignment(out / "alignment_paths.parquet", paths, ref)
    plot_aligned_clouds(out / "aligned_clouds.png", synced, feat_store, cfg.category, cfg.endpoint_url)
    return {"reference": ref, "videos": len(synced), "pairs": len(rows), "failed_chunks": failed,
            "unaligned": sorted(set(names) - set(synced))}


def write_alignment(path: Path, transforms: dict[str, PairAlignment], ref: str) -> None:
    rows = [{"sequence_name": k, "rotation": T.R.ravel().tolist(), "translation": np.asarray(T.t).tolist(),
             "scale": float(T.scale), "cost": float(T.cost), "is_reference": k == ref}
            for k, T in sorted(transforms.items())]
    schema = pa.schema([("sequence_name", pa.string()), ("rotation", pa.list_(pa.float64())),
                        ("translation", pa.list_(pa.float64())), ("scale", pa.float64()), ("cost", pa.float64()),
                        ("is_reference", pa.bool_())])
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def read_alignment(path: str | Path) -> dict[str, PairAlignment]:
    t = pq.read_table(path).to_pylist()
    return {r["sequence_name"]: PairAlignment(np.reshape(r["rotation"], (3, 3)), np.asarray(r["translation"]),
                                              r["scale"], r["cost"]) for r in t}


def plot_aligned_clouds(path: Path, transforms: dict[str, PairAlignment], store: str, category: str,
                        endpoint: str | None, max_videos: int = 12) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(9, 3.2))
    views = [(20, -60), (20, 30), (80, -90)]
    axes = [fig.add_subplot(1, 3, i + 1, projection="3d") for i in range(3)]
    cmap = plt.get_cmap("tab20")
    allx = []
    for n, (name, T) in enumerate(sorted(transforms.items())[:max_videos]):
        V = _features(store, category, name, endpoint).vertices.astype(np.float64)
        X = T.scale * V @ T.R.T + T.t
        allx.append(X)
        for ax in axes:
            ax.scatter(X[::3, 0], X[::3, 1], X[::3, 2], s=0.5, color=cmap(n % 20))
    span = np.ptp(np.concatenate(allx), axis=0)
    for ax, (el, az) in zip(axes, views):
        ax.view_init(el, az)
        ax.set_box_aspect(np.maximum(span, 1e-3 * span.max()))
        ax.set_axis_off()
    fig.suptitle(f"{category}: {min(len(transforms), max_videos)} videos in the reference frame")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
