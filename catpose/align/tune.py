"""Ray Tune sweep of α and τ with a label-free objective.

Every trial aligns all pairs of the same random subset of videos with its (α, τ) and reports:

* ``cycle_deg`` (the objective, minimised): over every triangle (a, b, c) of the subset, the angle
  between ``R_bc · R_ab`` and ``R_ac`` — pairwise rotations of a good setting compose consistently —
  averaged with each triangle's error capped at 60° (one flipped pair should not dominate);
* ``sync_agree``: the share of pairs whose rotation agrees within 15° with the one implied by the
  synchronised absolute rotations;
* where ground truth exists (synthetic data), ``acc_pi_6``, ``acc_pi_18`` and ``median_deg`` of the
  synchronised alignment — reported, never used to choose.

Results: ``OUT/sweep_results.md`` (table), ``OUT/sweep_heatmaps.png`` (objective and, when present,
ground-truth median error over (α, τ)), ``OUT/best_config.yaml`` (``align: {search: {alpha, tau}}``, which
``jobs/full_pipeline.py --config`` reads; the main job's ``--tune`` uses it directly), and Tune's own
per-trial logs (TensorBoard, progress.csv) under ``OUT/<name>/``. Rerunning resumes the sweep.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np

from catpose.align.batched import align_pairs
from catpose.align.evaluate import rotation_errors, summarise
from catpose.align.reference import Edge, reduce_to_reference
from catpose.config import FeaturesConfig, SearchConfig, SweepConfig
from catpose.data.groundtruth import GT_FILE, has_ground_truth, load_ground_truth
from catpose.devices import resolve_device
from catpose.features.runner import load_surface_features, run_features
from catpose.geometry import geodesic_deg
from catpose.parallel import init_ray
from catpose.storage import Store, is_s3


def triangle_cycle_error(
    rel: dict[tuple[str, str], np.ndarray], names: list[str], cap: float = 60.0
) -> float:
    """Mean over triangles of angle(R_bc R_ab, R_ac) in degrees, each capped at ``cap``."""

    def R(a, b):
        return rel[(a, b)] if (a, b) in rel else rel[(b, a)].T

    errs = [
        min(cap, float(geodesic_deg(R(b, c) @ R(a, b), R(a, c))))
        for a, b, c in itertools.combinations(names, 3)
    ]
    return float(np.mean(errs)) if errs else float("nan")


def trial_metrics(config: dict, data: str, category: str, store: str, names: list[str], search: dict,
                  device: str = "auto", endpoint_url: str | None = None) -> dict:
    """Aligns every pair of ``names`` with the trial's α and τ (the batched engine, on the trial's
    device, with the alignment stage's other settings ``search``) and scores the result."""

    feats = {n: load_surface_features(store, category, n, endpoint_url) for n in names}
    scfg = SearchConfig(**{**search, "alpha": float(config["alpha"]), "tau": float(config["tau"])})
    pairs = list(itertools.combinations(names, 2))
    results = align_pairs([feats[n] for n in names], pairs, scfg, resolve_device(device))
    edges, rel = [], {}
    for (a, b), T in zip(pairs, results):
        edges.append(Edge(a, b, T))
        rel[(a, b)] = T.R
    cents = {n: f.vertices.mean(0).astype(np.float64) for n, f in feats.items()}
    _, synced, _ = reduce_to_reference(edges, cents)
    agree = [float(geodesic_deg(synced[e.b].R.T @ synced[e.a].R, e.T.R)) < 15 for e in edges]
    out = {"cycle_deg": triangle_cycle_error(rel, names), "sync_agree": float(np.mean(agree)),
           "mean_cost": float(np.mean([e.T.cost for e in edges]))}
    if has_ground_truth(data, endpoint_url):
        gt = {k: g.R for k, g in load_ground_truth(data, category, endpoint_url).items()}
        s = summarise(rotation_errors({k: T.R for k, T in synced.items()}, gt))
        out.update({k: s[k] for k in ("acc_pi_6", "acc_pi_18", "median_deg")})
    return out


def _trainable(config: dict) -> None:
    from ray import tune

    tune.report(
        trial_metrics(
            config,
            config["_data"],
            config["_category"],
            config["_store"],
            config["_names"],
            config["_search"],
            config["_device"],
            config.get("_endpoint"),
        )
    )


def run_sweep(cfg: SweepConfig, features: FeaturesConfig | None = None) -> dict:
    """Runs (or resumes) the sweep; returns the best config and the results table rows.

    Every trial aligns with ``cfg.trial`` (the alignment stage's search settings in the main job) and its
    own α and τ. ``features``: the settings the feature store must have been made with (as for
    :func:`catpose.align.run.run_align`).
    """
    import tempfile

    import ray  # the driver's Ray; Ray Tune is imported only where a sweep runs
    from ray import tune

    from catpose.align.run import features_for_align
    from catpose.config import AlignConfig

    store = Store(cfg.out, cfg.endpoint_url)
    store.check()
    # the results tables and plots are made here, then copied to an s3:// store (node-local scratch)
    local_out = Path(cfg.out) if not is_s3(cfg.out) else Path(tempfile.mkdtemp(prefix="catpose-tune-"))
    local_out.mkdir(parents=True, exist_ok=True)
    feat_store = cfg.features or store.url("features")
    fcfg, _ = features_for_align(
        AlignConfig(
            data=cfg.data,
            category=cfg.category,
            workers=cfg.workers,
            device=cfg.device,
            endpoint_url=cfg.endpoint_url,
        ),
        features,
        feat_store,
    )
    fman = run_features(fcfg, keep_existing=features is None)
    ok = fman[cfg.category].keys_with("ok")
    if len(ok) < 3:
        raise ValueError(f"category '{cfg.category}' has {len(ok)} usable videos; the sweep needs 3 or more")
    rng = np.random.default_rng(cfg.seed)
    names = sorted(rng.choice(ok, min(cfg.videos, len(ok)), replace=False).tolist())
    fixed = {
        "_data": cfg.data if is_s3(cfg.data) else str(Path(cfg.data).absolute()),
        "_category": cfg.category,
        "_store": feat_store if is_s3(feat_store) else str(Path(feat_store).absolute()),
        "_names": names,
        "_endpoint": store.endpoint_url,
        "_search": dataclasses.asdict(cfg.trial),
        "_device": cfg.device,
    }
    if cfg.search == "grid":
        space = {
            "alpha": tune.grid_search(list(cfg.alphas)),
            "tau": tune.grid_search(list(cfg.taus)),
            **fixed,
        }
    elif cfg.search == "random":
        space = {
            "alpha": tune.uniform(0.0, 1.0),
            "tau": tune.loguniform(min(cfg.taus), max(cfg.taus)),
            **fixed,
        }
    else:
        raise ValueError(f"search must be 'grid' or 'random', got {cfg.search!r}")
    init_ray()
    trainable = tune.with_resources(_trainable, {"cpu": cfg.cpus_per_trial, "gpu": cfg.gpus_per_trial})
    name = f"sweep-{cfg.category}"
    if is_s3(cfg.out):
        storage_path, fs = store.root, store.arrow_fs
    else:
        storage_path, fs = str(Path(cfg.out).absolute()), None
    run_dir = f"{storage_path}/{name}"
    if not _sweep_unchanged(store, name, sweep_fingerprint(cfg, names, fixed["_search"], fman[cfg.category]),
                            tune.Tuner.can_restore(run_dir, storage_filesystem=fs)):
        store.remove(name, recursive=True)  # another sweep's trials: never restored into this one
    if tune.Tuner.can_restore(run_dir, storage_filesystem=fs):
        tuner = tune.Tuner.restore(run_dir, trainable=trainable, storage_filesystem=fs, resume_errored=True)
    else:
        total = ray.cluster_resources().get("CPU", 1)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                metric="cycle_deg",
                mode="min",
                num_samples=cfg.num_samples,
                max_concurrent_trials=max(1, int(total // max(cfg.cpus_per_trial, 1e-3))),
            ),
            run_config=tune.RunConfig(name=name, storage_path=storage_path, storage_filesystem=fs),
        )
    grid = tuner.fit()
    rows = []
    for r in grid:
        if r.error or not r.metrics or "cycle_deg" not in r.metrics:
            continue
        rows.append(
            {
                "alpha": float(r.config["alpha"]),
                "tau": float(r.config["tau"]),
                **{
                    k: r.metrics[k]
                    for k in ("cycle_deg", "sync_agree", "mean_cost", "acc_pi_6", "acc_pi_18", "median_deg")
                    if k in r.metrics
                },
            }
        )
    if not rows:
        raise RuntimeError(f"every trial of {run_dir} failed: {[str(r.error) for r in grid]}")
    rows.sort(key=lambda r: (r["cycle_deg"], -r["sync_agree"]))
    best = rows[0]
    write_results(local_out, rows, best, names)
    if is_s3(cfg.out):
        for f in ("sweep_results.md", "sweep_heatmaps.png", "best_config.yaml"):
            store.write_bytes(f, (local_out / f).read_bytes())
    return {"best": {"alpha": best["alpha"], "tau": best["tau"]}, "rows": rows, "videos": names,
            "results": str(local_out)}


def sweep_fingerprint(cfg: SweepConfig, names: list[str], search: dict, fman) -> dict:
    """What a sweep's trials are made from (:mod:`catpose.fingerprint`): the search space, the search
    settings every trial uses, the videos drawn and their features' fingerprints."""
    from catpose import fingerprint as fp

    space = {"alphas": list(cfg.alphas), "taus": list(cfg.taus), "search": cfg.search,
             "num_samples": cfg.num_samples, "seed": cfg.seed, "names": names, "align": search}
    return fp.make(
        space,
        {
            "features": {
                n: [fman.items[n].get("fingerprint"), fman.items[n].get("signature")] for n in names
            },
            "ground truth": fp.file_token(Store(cfg.data, cfg.endpoint_url), GT_FILE) or "",
        },
    )


def _sweep_unchanged(store: Store, name: str, fingerprint: dict, restorable: bool) -> bool:
    """Whether the stored sweep ``NAME`` was made from ``fingerprint`` (then Tune restores it); says so in
    one line and records ``fingerprint`` (in ``NAME.fingerprint.json``, next to Tune's folder) otherwise."""
    from catpose import fingerprint as fp

    key = f"{name}.fingerprint.json"
    why = fp.change(store.read_json(key, default=None), fingerprint) if restorable else "missing"
    log = fp.ResumeLog(f"tune {name.removeprefix('sweep-')}", "sweeps")
    log.keep() if why is None else log.redo(why)
    log.say()
    if why is not None:
        store.write_json(key, fingerprint)
    return why is None


def write_results(out: Path, rows: list[dict], best: dict, names: list[str]) -> None:
    import yaml

    has_gt = "acc_pi_6" in rows[0]
    head = "| α | τ | cycle error (°) | sync agreement |" + (" Acc@π/6 (GT) | Acc@π/18 (GT) | median (GT) "
                                                             "|" if has_gt else "")
    lines = [f"# α/τ sweep on {len(names)} videos ({len(names) * (len(names) - 1) // 2} pairs)", "",
             "Chosen by the label-free cycle error (lower is better); ground truth is only reported.", "",
             head, "|---" * (head.count("|") - 1) + "|"]
    for r in rows:
        line = f"| {r['alpha']:.2f} | {r['tau']:.3g} | {r['cycle_deg']:.2f} | {r['sync_agree']:.0%} |"
        if has_gt:
            line += f" {r['acc_pi_6']:.0%} | {r['acc_pi_18']:.0%} | {r['median_deg']:.1f}° |"
        lines.append(line + (" ← chosen" if r is best else ""))
    (out / "sweep_results.md").write_text("\n".join(lines) + "\n")
    best_search = {"alpha": best["alpha"], "tau": best["tau"]}
    (out / "best_config.yaml").write_text(yaml.safe_dump({"align": {"search": best_search}}))
    plot_heatmaps(out / "sweep_heatmaps.png", rows)


def plot_heatmaps(path: Path, rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("cycle_deg", "cycle error (°), label-free"), ("median_deg", "median error (°), ground truth")]
    keys = [k for k in keys if k[0] in rows[0]]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.6), squeeze=False)
    for ax, (k, title) in zip(axes[0], keys):
        sc = ax.scatter([r["alpha"] for r in rows], [r["tau"] for r in rows], c=[r[k] for r in rows], s=260,
                        marker="s", cmap="viridis_r")  # lower is better in both
        ax.set_yscale("log")
        ax.set_xlabel("α (appearance weight)")
        ax.set_ylabel("τ (cycle temperature)")
        ax.set_title(title, fontsize=9)
        fig.colorbar(sc, ax=ax)
        b = rows[0]
        ax.scatter([b["alpha"]], [b["tau"]], s=400, facecolors="none", edgecolors="r", linewidths=1.5)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


