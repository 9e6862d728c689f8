"""The main job: data → (validated) CO3D-layout category → Parquet shards → surface features →
alignment of all videos into one reference frame per category → learned template features (Ray
Train) → pose estimation scored on synthetic in-the-wild images, with a report.

Run by ``jobs/full_pipeline.py`` (locally, or on a cluster with ``ray job submit``). With no
arguments it generates the embedded synthetic categories and runs offline in minutes on 2 cores.
Every stage is idempotent and resumes from what is already in ``--out``; the status and timing of each
stage goes to ``<out>/pipeline_manifest.json``; the report to ``<out>/report.md`` with plots in
``<out>/plots/``.
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from catpose.align.evaluate import evaluate_alignment
from catpose.align.run import run_align, search_config
from catpose.align.tune import run_sweep
from catpose.cli import report_error
from catpose.config import (
    AlignConfig,
    FeaturesConfig,
    IngestConfig,
    PoseConfig,
    ShardConfig,
    SweepConfig,
    SynthConfig,
    TrainConfig,
    apply_dict,
)
from catpose.data.co3d import Co3dCategory, list_categories
from catpose.data.groundtruth import GT_FILE, load_ground_truth
from catpose.data.shards import write_shards
from catpose.data.validate import check_sequence
from catpose.errors import CatposeError, ConfigError, MissingFileError
from catpose.features.evaluate import correspondence_accuracy
from catpose.features.runner import load_surface_features, run_features
from catpose.learn.evaluate import format_table
from catpose.learn.train import run_train
from catpose.manifest import Manifest
from catpose.parallel import init_ray, set_verbose
from catpose.pose.evaluate import format_table as pose_table
from catpose.pose.evaluate import pose_stage
from catpose.storage import Store


@dataclass
class PipelineConfig:
    """The whole pipeline, one config. Values come from the defaults, then --config YAML, then flags."""

    out: Path = Path("runs/demo")
    """Where everything goes (data, shards, manifest, report)."""
    data: Path | None = None
    """An existing CO3D-layout dataset root; default: generate the synthetic categories."""
    raw_frames: Path | None = None
    """A folder of raw frames/videos per sequence to run SfM on first (``catpose ingest``)."""
    config: Path | None = None
    """YAML file with any of these fields (nested sections: synth, ingest, shard)."""
    workers: int = 2
    """Ray tasks in flight for per-sequence work (0: everything in this process)."""
    synth: SynthConfig = field(default_factory=lambda: SynthConfig(category=("car", "mug"), videos=30))
    ingest: IngestConfig = field(default_factory=IngestConfig)
    shard: ShardConfig = field(default_factory=lambda: ShardConfig(out=""))
    features: FeaturesConfig = field(default_factory=lambda: FeaturesConfig(out="", category=()))
    eval_pairs: int = 20
    """Pairs of videos per category on which appearance correspondences are scored (synthetic data)."""
    align: AlignConfig = field(default_factory=lambda: AlignConfig(partners=10))
    """Alignment settings (data, category, out and features are set per category by the job)."""
    tune: bool = False
    """Sweep alpha and tau per category with Ray Tune (label-free objective) and align with the best."""
    sweep: SweepConfig = field(default_factory=SweepConfig)
    """Sweep settings for --tune (data, category, out and features are set per category by the job)."""
    train_categories: tuple[str, ...] = ("car",)
    """Categories whose template features are learned with Ray Train (empty: no training stage)."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(data="", out="", epochs=30, size=64, vertices=300,
                                                                   batch_size=8, cpus_per_worker=0.5,
                                                                   eval_frames=64))
    """Training settings (data, alignment, features, category and out are set by the job). The demo's
    defaults fit 2 CPU cores: 64 px crops and a template of 300 vertices (a step costs about 1/7 of one
    with 1000 vertices, whose [B, N, N] contrastive logits dominate on a CPU), 30 epochs from the
    workers' frame caches in steps of 2 × 8 crops (twice the steps of 2 × 16 for the same crops); on GPU clusters use larger crops and templates (see README)."""
    pose_images: int = 60
    """Synthetic in-the-wild images per trained synthetic category, scored by the pose stage (0: no stage)."""
    pose: PoseConfig = field(default_factory=lambda: PoseConfig(prior_weight=1.0))
    """Pose estimation settings of the pose stage (with the retrieval prior of the run's training views)."""


def _merge(obj, values: dict, source: str = "<config>"):
    """A copy of dataclass ``obj`` with ``values`` (nested dicts for nested dataclasses) applied and
    checked (see :func:`catpose.config.apply_dict`)."""

    return apply_dict(obj, values, source)


def read_yaml_config(path: Path) -> dict:
    """The mapping in a YAML config file; a missing or malformed file is an error naming it."""

    path = Path(path)
    if not path.is_file():
        raise MissingFileError(str(path), "config file")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(str(path), "not valid YAML: " + " ".join(str(e).replace('"<unicode string>", ', "").split()))
    except UnicodeDecodeError as e:
        raise ConfigError(str(path), f"not a text file ({e})")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(str(path), f"expected a mapping of config fields, got {type(data).__name__}")
    return data


def check_config(cfg: PipelineConfig, source: str = "flags") -> None:
    """Checks that need several fields (before any work): names of training categories."""

    known: list[str] | None = None
    if cfg.shard.category:
        known = list(cfg.shard.category)
    elif cfg.raw_frames is not None:
        known = None if cfg.data is not None else [cfg.ingest.category]
    elif cfg.data is None:
        known = list(cfg.synth.category)
    elif Path(cfg.data).is_dir():
        known = list_categories(cfg.data)
    unknown = [c for c in cfg.train_categories if known is not None and c not in known]
    if unknown and tuple(cfg.train_categories) != PipelineConfig().train_categories:  # named by the user
        raise ConfigError(source, f"{unknown} are not among the run's categories {known}", field="train_categories")


def load_config(argv: list[str] | None = None) -> PipelineConfig:
    """Defaults, overridden by ``--config FILE.yaml``, overridden by flags."""
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = PipelineConfig()
    source = "flags"
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        path = Path(argv[argv.index("--config") + 1])
        cfg = _merge(cfg, read_yaml_config(path), str(path))
        source = f"{path} (or its flags)"
    cfg = tyro.cli(PipelineConfig, args=argv, default=cfg, prog="full_pipeline")
    check_config(cfg, source)
    return cfg


def _plot_frames(root: Path, category: str, out_png: Path, n_seq: int = 4, n_frames: int = 6) -> None:
    """A grid of frames with the sequence's point cloud projected on them (green dots)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt


    cat = Co3dCategory(root, category)
    names = cat.sequence_names[:n_seq]
    fig, axes = plt.subplots(len(names), n_frames, figsize=(1.6 * n_frames, 1.6 * len(names)), squeeze=False)
    for r, name in enumerate(names):
        seq = cat[name]
        try:
            pts = seq.load_point_cloud().points[::40]
        except Exception:  # reported by the validation; draw the frames alone
            pts = np.zeros((0, 3))
        for c, fr in enumerate(seq.subsample(n_frames)):
            ax = axes[r][c]
            ax.imshow(fr.load_image())
            uv, _ = fr.camera.project(pts)
            ax.scatter(uv[:, 0], uv[:, 1], s=0.2, c="lime", alpha=0.6)
            ax.set_xlim(0, fr.image_size[1])
            ax.set_ylim(fr.image_size[0], 0)
            ax.axis("off")
        axes[r][0].set_title(name, fontsize=7, loc="left")
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)


def run(cfg: PipelineConfig) -> dict:


    out = Path(cfg.out)
    Store(str(out)).check()  # a file in the way or a read-only folder: one clear error before any work
    man = Manifest.load_or_new(out / "pipeline_manifest.json", "pipeline")
    check_config(cfg)  # also when run() is called directly
    report: dict = {"stages": {}}

    def stage(name: str):
        def deco(fn):
            t0 = time.perf_counter()
            print(f"== {name}", flush=True)
            try:
                res = fn()
            except Exception as e:
                man.record(name, "failed", error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
                raise
            man.record(name, "ok", seconds=time.perf_counter() - t0, **(
                {"unusable": report["unusable"]} if name == "validate" and report.get("unusable") else {}))
            report["stages"][name] = round(time.perf_counter() - t0, 1)
            return res
        return deco

    if cfg.workers > 0:
        init_ray()

    if cfg.raw_frames is not None:
        data_root = cfg.data or out / "data"

        @stage("ingest")
        def _():
            from catpose.data.ingest import ingest  # pycolmap: only when raw frames are given
            m = ingest(dataclasses.replace(cfg.ingest, frames=cfg.raw_frames, out=data_root, workers=cfg.workers))
            report["ingest"] = m.summary()
    elif cfg.data is not None:
        data_root = Path(cfg.data)
    else:
        data_root = out / "data"

        @stage("synth")
        def _():
            from catpose.data.synth.generate import (
                generate,  # the renderer (trimesh, Embree): only for synthetic data
            )
            ms = generate(dataclasses.replace(cfg.synth, out=data_root, workers=cfg.workers))
            report["synth"] = {c: m.summary() for c, m in ms.items()}

    categories = list(cfg.shard.category) or list_categories(data_root)

    @stage("validate")
    def _():
        rows = []
        for c in list(categories):
            try:
                cat = Co3dCategory(data_root, c)
                cat.frame_annotations  # parsed record by record: a bad record costs its frame or video
            except (CatposeError, OSError) as e:  # unreadable annotation files cost their category only
                msg = f"{type(e).__name__}: {e}"
                print(f"  unusable category {c}: {msg}")
                report.setdefault("unusable", {})[c] = msg
                report.setdefault("failed_categories", {})[c] = f"{c}: {msg}"
                categories.remove(c)
                continue
            for name, reason in sorted(cat.excluded.items()):
                print(f"  unusable {c}/{name}: {reason}")
                report.setdefault("unusable", {})[f"{c}/{name}"] = reason
            for k, reason in sorted(cat.skipped_frames.items()):
                report.setdefault("skipped_frames", {})[f"{c}/{k}"] = reason
            if cat.annotation_summary():
                print(f"  {cat.annotation_summary()}")
            checks = []
            for seq in cat:
                try:
                    checks.append(check_sequence(seq))
                except Exception as e:  # a broken sequence is reported, the others are checked
                    msg = f"{type(e).__name__}: {e}"
                    print(f"  unusable {c}/{seq.name}: {msg}")
                    report.setdefault("unusable", {})[f"{c}/{seq.name}"] = msg
            in_mask = [k.in_mask for k in checks]
            rows.append({"category": c, "sequences": len(cat), "frames": sum(k.frames for k in checks),
                         "mean points": int(np.mean([k.points for k in checks])) if checks else 0,
                         "cloud in masks": float(np.nanmean(in_mask)) if checks else float("nan"),
                         "unusable": len(cat) - len(checks) + len(cat.excluded)})
            _plot_frames(data_root, c, out / "plots" / f"frames_{c}.png")
        report["validate"] = rows

    shard_out = cfg.shard.out or str(out / "shards")

    @stage("shard")
    def _():
        m = write_shards(dataclasses.replace(cfg.shard, data=data_root, out=shard_out))
        report["shard"] = {"uri": shard_out, "categories": m["categories"], "skipped": len(m["skipped"])}

    feat_out = cfg.features.out or str(out / "features")

    @stage("features")
    def _():
        fcfg = dataclasses.replace(cfg.features, data=data_root, out=feat_out,
                                   category=tuple(cfg.features.category) or tuple(categories), workers=cfg.workers)
        mans = run_features(fcfg)
        for c, m in mans.items():  # a category whose every video failed costs that category, and is said
            if not m.keys_with("ok"):
                k, err = next(iter(sorted({**m.failed, **m.skipped}.items())), ("-", "no videos"))
                msg = (f"features: no video of category '{c}' could be computed (first, '{k}': {err}); "
                       f"see {feat_out}/{c}/_manifest.json")
                print(f"  FAILED category {c}: {msg}", flush=True)
                report.setdefault("failed_categories", {})[c] = msg
                if c in categories:
                    categories.remove(c)
        rows = []
        for c, m in mans.items():
            row = {"category": c, "backbone": m.info.get("backbone", "?"), "ok": len(m.keys_with("ok")),
                   "failed": len(m.keys_with("failed")), "visible": m.info.get("mean_visible", float("nan"))}
            if (data_root / GT_FILE).is_file() and cfg.eval_pairs > 0:  # synthetic: measure against truth
                gts = load_ground_truth(data_root, c)
                feats = {n: load_surface_features(feat_out, c, n, fcfg.endpoint_url) for n in m.keys_with("ok")}
                if len(feats) >= 2:
                    acc = correspondence_accuracy(feats, gts, max_pairs=cfg.eval_pairs)
                    row.update({"acc@10%": acc["accuracy"], "chance": acc["chance"], "pairs": acc["pairs"]})
            rows.append(row)
        report["features"] = rows

    best: dict[str, dict] = {}
    if cfg.tune:

        @stage("tune")
        def _():
            rows = []
            for c in categories:
                # trials align exactly as the alignment stage will (only alpha and tau vary)
                res = run_sweep(dataclasses.replace(cfg.sweep, data=data_root, category=c,
                                                    out=str(out / "tune" / c), features=feat_out,
                                                    rotations=cfg.align.rotations, vertices=cfg.align.vertices,
                                                    device=cfg.align.device),
                                search=search_config(cfg.align))
                best[c] = res["best"]
                top = res["rows"][0]
                rows.append({"category": c, **res["best"], "cycle_deg": top["cycle_deg"], "trials": len(res["rows"]),
                             **({"acc_pi_6": top["acc_pi_6"]} if "acc_pi_6" in top else {})})
                (out / "plots").mkdir(exist_ok=True)
                shutil.copy(out / "tune" / c / "sweep_heatmaps.png", out / "plots" / f"sweep_{c}.png")
            report["tune"] = rows

    @stage("align")
    def _():
        rows = []
        for c in categories:
            acfg = dataclasses.replace(cfg.align, data=data_root, category=c, out=out / "align" / c,
                                       features=feat_out, workers=cfg.workers,
                                       endpoint_url=cfg.align.endpoint_url or cfg.features.endpoint_url,
                                       **best.get(c, {}))
            res = run_align(acfg)
            row = {"category": c, "videos": res["videos"], "pairs": res["pairs"], "reference": res["reference"],
                   "failed_chunks": len(res["failed_chunks"]), "failed_pairs": len(res["failed_pairs"])}
            if (data_root / GT_FILE).is_file():
                for key, fname in (("sync", "alignment.parquet"), ("paths", "alignment_paths.parquet")):
                    r = evaluate_alignment(acfg.out / fname, data_root, c,
                                           plot=out / "plots" / f"alignment_errors_{c}_{key}.png")
                    row[key] = {k: r[k] for k in ("acc_pi_6", "acc_pi_18", "median_deg")}
            rows.append(row)
            (out / "plots").mkdir(exist_ok=True)
            shutil.copy(acfg.out / "aligned_clouds.png", out / "plots" / f"aligned_clouds_{c}.png")
        report["align"] = rows

    train_cats = [c for c in cfg.train_categories if c in categories]
    if len(train_cats) < len(cfg.train_categories):  # the default's "car" on data without cars: said, not silent
        print(f"no training for {[c for c in cfg.train_categories if c not in categories]}: not among this run's "
              f"usable categories {categories} (train_categories)", flush=True)
    if train_cats:

        @stage("train")
        def _():
            rows = []
            train_out = cfg.train.out or str(out / "train")
            for c in train_cats:
                tcfg = dataclasses.replace(
                    cfg.train, data=shard_out, alignment=out / "align" / c, features=feat_out, category=c,
                    out=train_out, endpoint_url=cfg.train.endpoint_url or cfg.shard.endpoint_url,
                    ground_truth=data_root if (data_root / GT_FILE).is_file() else None)
                res = run_train(tcfg)
                rows.append({"category": c, "run": res["run"], "epochs": res["epochs"],
                             "loss": [res["history"][0]["loss"], res["history"][-1]["loss"]] if res["history"] else [],
                             "evaluation": res.get("evaluation")})
                run_store = Store(res["run"], tcfg.endpoint_url)
                (out / "plots").mkdir(exist_ok=True)
                for f in ("training_curves.png", "viewpoint_accuracy.png"):
                    if run_store.exists(f):
                        (out / "plots" / f"{f[:-4]}_{c}.png").write_bytes(run_store.read_bytes(f))
            report["train"] = rows


    if train_cats and cfg.pose_images > 0 and (data_root / GT_FILE).is_file():

        @stage("pose")
        def _():
            rows = []
            for r in report.get("train", []):
                rows.append(pose_stage(r["run"], r["category"], out, cfg.pose_images, cfg.pose,
                                       cfg.train.endpoint_url or cfg.shard.endpoint_url))
            report["pose"] = rows

    write_report(out, data_root, report)
    if report.get("failed_categories"):  # the others finished; the run must still not end as a success
        raise CatposeError(f"the run finished without {sorted(report['failed_categories'])}: "
                           + "; ".join(report["failed_categories"].values()) + f" (report: {out / 'report.md'})")
    return report


def write_report(out: Path, data_root: Path, report: dict) -> None:
    lines = ["# catpose pipeline report", "", f"data: `{data_root}`", ""]
    lines += ["## Data", "", "| category | sequences | frames | mean points | cloud in masks | unusable |",
              "|---|---|---|---|---|---|"]
    for r in report.get("validate", []):
        lines.append(f"| {r['category']} | {r['sequences']} | {r['frames']} | {r['mean points']} | "
                     f"{r['cloud in masks']:.1%} | {r['unusable']} |")
    lines += [""] + [f"![frames of {r['category']}](plots/frames_{r['category']}.png)" for r in report.get("validate", [])]
    if report.get("unusable"):
        lines += ["", "Unusable sequences:", ""] + [f"- `{k}`: {v}" for k, v in report["unusable"].items()]
    if report.get("failed_categories"):
        lines += ["", "**Failed categories** (left out of every later stage):", ""] + [
            f"- `{k}`: {v}" for k, v in report["failed_categories"].items()]
    if "shard" in report:
        s = report["shard"]
        lines += ["", "## Shards", "", f"`{s['uri']}`: " + ", ".join(
            f"{c}: {v['frames']} frames in {v['shards']} files" for c, v in s["categories"].items())
            + f"; {s['skipped']} frames skipped (see _catpose_shards.json)"]
    if report.get("features"):
        lines += ["", "## Surface features", "",
                  "| category | backbone | videos ok | failed | visible / frame | appearance match acc@10% | chance |",
                  "|---|---|---|---|---|---|---|"]
        for r in report["features"]:
            acc = f"{r['acc@10%']:.1%} ({r['pairs']} pairs)" if "acc@10%" in r else "n/a (no ground truth)"
            ch = f"{r['chance']:.1%}" if "chance" in r else ""
            lines.append(f"| {r['category']} | {r['backbone'].split(' (')[0]} | {r['ok']} | {r['failed']} | "
                         f"{r['visible']:.1%} | {acc} | {ch} |")
        lines += ["", "Backbones: " + "; ".join(sorted({r["backbone"] for r in report["features"]})),
                  ("acc@10%: share of vertices whose nearest feature in another video (min over frame pairs) "
                   "lies within 10 % of the object size of the same point on that instance.")]
    if report.get("tune"):
        lines += ["", "## α/τ sweep (chosen without labels)", "", "| category | α | τ | cycle error | trials |",
                  "|---|---|---|---|---|"]
        lines += [f"| {r['category']} | {r['alpha']:.2f} | {r['tau']:.3g} | {r['cycle_deg']:.2f}° | {r['trials']} |"
                  for r in report["tune"]]
        lines += [""] + [f"![sweep {r['category']}](plots/sweep_{r['category']}.png)" for r in report["tune"]]
    if report.get("align"):
        lines += ["", "## Alignment into one reference frame per category", "",
                  "| category | videos | pairs | Acc@π/6 | Acc@π/18 | median error | without sync: Acc@π/6 | median |",
                  "|---|---|---|---|---|---|---|---|"]
        for r in report["align"]:
            if "sync" in r:
                a, p = r["sync"], r["paths"]
                lines.append(f"| {r['category']} | {r['videos']} | {r['pairs']} | {a['acc_pi_6']:.1%} | "
                             f"{a['acc_pi_18']:.1%} | {a['median_deg']:.1f}° | {p['acc_pi_6']:.1%} | {p['median_deg']:.1f}° |")
            else:
                lines.append(f"| {r['category']} | {r['videos']} | {r['pairs']} | n/a | n/a | n/a | | |")
        lines += [""] + [f"![aligned {r['category']}](plots/aligned_clouds_{r['category']}.png)" for r in report["align"]]
    if report.get("train"):
        lines += ["", "## Learned template features (Ray Train)", ""]
        for r in report["train"]:
            loss = f", loss {r['loss'][0]:.2f} → {r['loss'][1]:.2f}" if r["loss"] else ""
            lines += [f"`{r['run']}`: {r['epochs']} epochs{loss}.", ""]
            if r.get("evaluation"):
                lines += format_table(r["evaluation"], r["category"]).splitlines() + [""]
            lines += [f"![training {r['category']}](plots/training_curves_{r['category']}.png)",
                      f"![viewpoints {r['category']}](plots/viewpoint_accuracy_{r['category']}.png)", ""]
    if report.get("pose"):
        lines += ["", "## Pose estimation on synthetic in-the-wild images (unseen instances, clutter, occlusion)", ""]
        for r in report["pose"]:
            lines += pose_table(r).splitlines() + ["", f"![pose errors {r['category']}](plots/pose_errors_{r['category']}.png)", ""]
    lines += ["", "## Stage times (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in report["stages"].items()]
    (out / "report.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[6:8 + len(report.get("validate", []))]))
    if report.get("features"):
        i = lines.index("## Surface features")
        print("\n".join(lines[i + 2:i + 4 + len(report["features"])] + [lines[i + 5 + len(report["features"])]]))
    if report.get("align"):
        i = lines.index("## Alignment into one reference frame per category")
        print("\n".join(lines[i + 2:i + 4 + len(report["align"])]))
    if report.get("train"):
        i = lines.index("## Learned template features (Ray Train)")
        j = next((k for k in range(i + 1, len(lines)) if lines[k].startswith("By camera azimuth")), len(lines))
        print("\n".join(lines[i + 2:j]))
    if report.get("pose"):
        i = lines.index("## Pose estimation on synthetic in-the-wild images (unseen instances, clutter, occlusion)")
        j = next((k for k in range(i + 6, len(lines)) if not lines[k].startswith("|")), len(lines))
        print("\n".join(lines[i + 2:j]))
    print(f"\nreport: {out / 'report.md'}  plots: {out / 'plots'}")


def main(argv: list[str] | None = None) -> int:
    """The main job; an error ends it with one line on stderr and exit code 2 (``--debug``: the
    traceback). ``--verbose`` brings back Ray's and Ray Data's own progress and log lines."""
    import sys


    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    if "--verbose" in argv:  # Ray's and Ray Data's own progress and log lines (off by default)
        set_verbose(True)
    argv = [a for a in argv if a not in ("--debug", "--verbose")]
    try:
        cfg = load_config(argv)
        t0 = time.perf_counter()
        run(cfg)
    except Exception as e:
        if debug:
            raise
        return report_error(e, "full_pipeline")
    print(f"done in {time.perf_counter() - t0:.0f} s")
    return 0
