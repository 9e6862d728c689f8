"""The main job: data → (validated) CO3D-layout category → Parquet shards → surface features →
alignment of all videos into one reference frame per category → learned template features (Ray
Train) → pose estimation scored on synthetic in-the-wild images, with a report.

Run by ``catpose run`` or ``jobs/full_pipeline.py`` (locally, or on a cluster with ``ray job submit``).
With no arguments it generates the embedded synthetic categories and runs offline in minutes on 2 cores.

**One store.** Everything the run makes lives in its store ``--out`` (a folder or ``s3://bucket/prefix``,
endpoint ``--endpoint-url``): the generated data, shards, features, alignments, training runs, pose
results, manifests, the resolved ``config.yaml``, ``report.md`` and ``plots/``. Ray tasks are given
store URIs, never paths of the driver; a node's local disk is only scratch (a temporary folder that
may vanish at any time). A CO3D root given by ``--data`` may itself be an ``s3://`` prefix.

**A declared stage graph.** Each :class:`Stage` names the stages it needs, runs, returns a typed
artifact (a dataclass, kept in the store as ``stages/<name>.json``) and renders its report section.
:func:`run` executes them in order and skips a stage whose recorded settings hash and input
artifacts match (``pipeline_manifest.json``), so a rerun against the same store — on the same or a
fresh machine — goes straight to the first unfinished stage. Downstream stages use upstream results
as recorded and never recompute them with other settings: the alignment refuses a feature store made
with other settings than the run's (an error naming both).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from catpose.config import (
    AlignConfig,
    FeaturesConfig,
    IngestConfig,
    PoseConfig,
    RunContext,
    ShardConfig,
    SweepConfig,
    SynthConfig,
    TrainConfig,
    apply_dict,
)
from catpose.errors import CatposeError, ConfigError, MissingFileError, report_error
from catpose.manifest import Manifest
from catpose.parallel import set_verbose
from catpose.storage import Store, is_s3


@dataclass
class PipelineConfig(RunContext):
    """The whole pipeline, one config. Values come from the defaults, then --config YAML, then flags.
    Its top-level out (the store) and the inherited run context (endpoint_url, workers, device:
    catpose.config.RunContext) hold for every stage; a stage section's own out (e.g. shard.out) only moves
    that stage's outputs elsewhere."""

    out: str = "runs/demo"
    """The run's store: a folder or s3://bucket/prefix. Data, shards, features, alignments, training runs,
    pose results, manifests, config.yaml, report.md and plots/ all go here."""

    data: str | None = None
    """An existing CO3D-layout dataset root (folder or s3:// prefix, read lazily); default: generate the
    synthetic categories into the store."""
    raw_frames: str | None = None
    """A folder or s3:// prefix of raw frames/videos per sequence to run SfM on first (catpose ingest)."""
    config: Path | None = None
    """YAML file with any of these fields (nested sections: synth, ingest, shard, ...)."""
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
    train: TrainConfig = field(default_factory=lambda: TrainConfig(data="", out="", epochs=50, size=64, vertices=300,
                                                                   batch_size=8, cpus_per_worker=0.5,
                                                                   eval_frames=64))
    """Training settings (data, alignment, features, category and out are set by the job). The demo's
    defaults fit 2 CPU cores: 64 px crops and a template of 300 vertices (a step costs about 1/7 of one
    with 1000 vertices, whose [B, N, N] contrastive logits dominate on a CPU), 50 epochs from the
    workers' frame caches in steps of 2 × 8 crops (twice the steps of 2 × 16 for the same crops); on GPU clusters use larger crops and templates (see README)."""
    pose_images: int = 60
    """Synthetic in-the-wild images per trained synthetic category, scored by the pose stage (0: no stage)."""
    pose: PoseConfig = field(default_factory=lambda: PoseConfig(prior_weight=1.0))
    """Pose estimation settings of the pose stage (with the retrieval prior of the run's training views)."""


# set on every stage's section from the run context (where the section inherits the field)
CONTEXT_FIELDS = tuple(f.name for f in dataclasses.fields(RunContext))
# how, not what: changing them never reruns a stage (data, features, alignment and ground_truth are set by
# the job from the input artifacts, which are hashed themselves)
RUNTIME_FIELDS = {"workers", "endpoint_url", "data", "features", "alignment", "ground_truth", "config", "num_workers",
                  "cpus_per_worker", "gpus_per_worker", "wait_for_resources", "max_failures", "batch", "chunk"}


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
    """Checks before any work: every setting's range and the device (:func:`catpose.config.check_settings`),
    then what needs several fields: names of training categories."""
    from catpose.config import check_settings
    from catpose.data.co3d import list_categories

    check_settings(cfg, source)

    known: list[str] | None = None
    if cfg.shard.category:
        known = list(cfg.shard.category)
    elif cfg.raw_frames is not None:
        known = None if cfg.data is not None else [cfg.ingest.category]
    elif cfg.data is None:
        known = list(cfg.synth.category)
    elif not is_s3(cfg.data) and Path(cfg.data).is_dir():
        known = list_categories(cfg.data)
    # the run context is set once, at the top: a section's own copy would be silently overridden
    for sec in ("synth", "ingest", "shard", "features", "align", "sweep", "train"):
        obj, default = getattr(cfg, sec), getattr(PipelineConfig(), sec)
        for k in CONTEXT_FIELDS:
            if k != "device" and hasattr(obj, k) and getattr(obj, k) != getattr(default, k):
                raise ConfigError(source, f"set by the run context for every stage: write '{k}: "
                                  f"{getattr(obj, k)}' at the top level instead", field=f"{sec}.{k}")
    unknown = [c for c in cfg.train_categories if known is not None and c not in known]
    if unknown and tuple(cfg.train_categories) != PipelineConfig().train_categories:  # named by the user
        raise ConfigError(source, f"{unknown} are not among the run's categories {known}", field="train_categories")


def load_config(argv: list[str] | None = None) -> PipelineConfig:
    """Defaults, overridden by ``--config FILE.yaml`` (e.g. a run's own ``config.yaml``), overridden by
    flags. The YAML values become the defaults of tyro's parser (``tyro.cli(default=...)``), so flags and
    ``--help`` show and override them; every YAML value is checked against its field's type first."""
    import sys

    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    cfg = PipelineConfig()
    source = "flags"
    if "--config" in argv and argv.index("--config") + 1 < len(argv):
        path = Path(argv[argv.index("--config") + 1])
        cfg = apply_dict(cfg, read_yaml_config(path), str(path))
        source = f"{path} (or its flags)"
    cfg = tyro.cli(PipelineConfig, args=argv, default=cfg, prog="full_pipeline")
    check_config(cfg, source)
    return cfg


def config_yaml(cfg: PipelineConfig) -> str:
    """The resolved config as YAML: ``catpose run --config`` with this file repeats the run."""
    d = json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    d.pop("config", None)
    return yaml.safe_dump(d, sort_keys=False)


# ------------------------------------------------------------------------------------------- artifacts
@dataclass
class DataArtifact:
    """The dataset the run works on (generated into the store, ingested, or given)."""

    uri: str
    categories: list[str]
    ground_truth: bool
    made: dict = field(default_factory=dict)  # per category: the generator's or ingest's item summary
    fingerprint: str = ""  # of the data's files (catpose.fingerprint): a change reruns every later stage


@dataclass
class ValidateArtifact:
    rows: list[dict]
    categories: list[str]  # the usable ones
    unusable: dict[str, str] = field(default_factory=dict)
    skipped_frames: dict[str, str] = field(default_factory=dict)
    failed_categories: dict[str, str] = field(default_factory=dict)


@dataclass
class ShardsArtifact:
    uri: str
    categories: dict
    skipped: int


@dataclass
class FeaturesArtifact:
    """A feature store with the settings (backbone signature) every one of its videos was made with."""

    uri: str
    signature: dict
    rows: list[dict]
    categories: list[str]
    failed_categories: dict[str, str] = field(default_factory=dict)


@dataclass
class TuneArtifact:
    best: dict[str, dict]
    rows: list[dict]


@dataclass
class AlignArtifact:
    """Per category, the URI of its alignment output (alignment.parquet, pairs, plots)."""

    tables: dict[str, str]
    rows: list[dict]


@dataclass
class TrainArtifact:
    runs: dict[str, str]
    rows: list[dict]


@dataclass
class PoseArtifact:
    results: dict[str, str]
    rows: list[dict]


# ------------------------------------------------------------------------------------------- the graph
@dataclass
class Ctx:
    """What a running stage sees: the config, the run's store, a node-local scratch folder."""

    cfg: PipelineConfig
    store: Store
    scratch: Path
    arts: dict[str, Any] = field(default_factory=dict)  # artifacts of the stages run or skipped so far

    def section(self, obj, **overrides):
        """A copy of a stage's config section with the run context applied (where it has the field)."""
        names = {f.name for f in dataclasses.fields(obj)}
        ctx = {k: getattr(self.cfg, k) for k in CONTEXT_FIELDS if k in names}
        if "device" in ctx and getattr(obj, "device", "auto") != "auto":
            ctx.pop("device")  # a section's own device wins over the run's
        return dataclasses.replace(obj, **{**ctx, **overrides})

    def plot(self, name: str, png: bytes) -> str:
        self.store.write_bytes(f"plots/{name}", png)
        return f"plots/{name}"

    @property
    def data(self) -> DataArtifact:
        return self.arts["data"]

    @property
    def categories(self) -> list[str]:
        """The categories still in the run (after validation and features)."""
        for name in ("features", "validate"):
            if name in self.arts:
                return list(self.arts[name].categories)
        return list(self.data.categories)


@dataclass
class Stage:
    """One node of the graph: ``run(ctx)`` returns its artifact; ``settings(cfg)`` is what, besides its
    inputs, decides its result (hashed to skip it when unchanged); ``section`` renders its report
    section, ``table`` its console table with a one-line reading, ``headline`` its summary line."""

    name: str
    needs: tuple[str, ...]
    artifact: type
    settings: Callable[[PipelineConfig], Any]
    run: Callable[[Ctx], Any]
    section: Callable[[Any], list[str]] = lambda a: []
    table: Callable[[Any], list[str]] = lambda a: []
    headline: Callable[[Any], str | None] = lambda a: None


def _what(obj) -> dict:
    """A config section without its runtime fields (how and where, not what)."""
    def what(d):  # nested sections too (align.search.batch)
        return {k: what(v) if isinstance(v, dict) else v for k, v in d.items() if k not in RUNTIME_FIELDS}

    return what(json.loads(json.dumps(dataclasses.asdict(obj), default=str)))


def _hash(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------- data stages
def _synth_run(ctx: Ctx) -> DataArtifact:
    from catpose.data.synth.generate import (
        generate,  # the renderer (trimesh, Embree): only for synthetic data
    )

    uri = ctx.store.url("data")
    ms = generate(ctx.section(ctx.cfg.synth, out=uri))
    cats = list(ctx.cfg.synth.category)
    return DataArtifact(uri, cats, True, {c: m.summary() for c, m in ms.items()},
                        data_fingerprint(uri, cats, ctx.cfg.endpoint_url))


def _ingest_run(ctx: Ctx) -> DataArtifact:
    from catpose.data.co3d import list_categories
    from catpose.data.ingest import ingest  # pycolmap: only when raw frames are given

    cfg = ctx.cfg
    uri = cfg.data if cfg.data is not None else ctx.store.url("data")  # SfM tasks upload into it themselves
    m = ingest(ctx.section(cfg.ingest, frames=cfg.raw_frames, out=uri))
    cats = list_categories(uri, cfg.endpoint_url)
    return DataArtifact(uri, cats, False, {cfg.ingest.category: m.summary()},
                        data_fingerprint(uri, cats, cfg.endpoint_url))


def _given_data(ctx: Ctx) -> DataArtifact:
    from catpose.data.co3d import list_categories
    from catpose.data.groundtruth import has_ground_truth

    uri = ctx.cfg.data
    cats = list(ctx.cfg.shard.category) or list_categories(uri, ctx.cfg.endpoint_url)
    return DataArtifact(uri, cats, has_ground_truth(uri, ctx.cfg.endpoint_url),
                        fingerprint=data_fingerprint(uri, cats, ctx.cfg.endpoint_url))


def data_fingerprint(uri: str, categories: list[str], endpoint_url: str | None = None) -> str:
    """The digest of every file of the run's categories (and the ground truth), from one listing per
    category: sizes and modification times, or S3 ETags (:func:`catpose.fingerprint.file_tokens`)."""
    from catpose import fingerprint as fp
    from catpose.data.groundtruth import GT_FILE

    st = Store(str(uri), endpoint_url)
    return fp.digest({c: fp.file_tokens(st, c) for c in categories} | {GT_FILE: fp.file_token(st, GT_FILE)})


def _plot_frames(root: str, endpoint: str | None, category: str, n_seq: int = 4, n_frames: int = 6) -> bytes:
    """A grid of frames with the sequence's point cloud projected on them (green dots), as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from catpose.data.co3d import Co3dCategory

    cat = Co3dCategory(root, category, endpoint)
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
    buf = io.BytesIO()
    fig.savefig(buf, dpi=110)
    plt.close(fig)
    return buf.getvalue()


def _validate_run(ctx: Ctx) -> ValidateArtifact:
    from catpose.data.co3d import Co3dCategory
    from catpose.data.validate import check_sequence

    ep = ctx.cfg.endpoint_url
    art = ValidateArtifact(rows=[], categories=list(ctx.data.categories))
    for c in list(art.categories):
        try:
            cat = Co3dCategory(ctx.data.uri, c, ep)
            cat.frame_annotations  # parsed record by record: a bad record costs its frame or video
        except (CatposeError, OSError) as e:  # unreadable annotation files cost their category only
            msg = f"{type(e).__name__}: {e}"
            print(f"  unusable category {c}: {msg}")
            art.unusable[c] = msg
            art.failed_categories[c] = f"{c}: {msg}"
            art.categories.remove(c)
            continue
        for name, reason in sorted(cat.excluded.items()):
            print(f"  unusable {c}/{name}: {reason}")
            art.unusable[f"{c}/{name}"] = reason
        for k, reason in sorted(cat.skipped_frames.items()):
            art.skipped_frames[f"{c}/{k}"] = reason
        if cat.annotation_summary():
            print(f"  {cat.annotation_summary()}")
        checks = []
        for seq in cat:
            try:
                checks.append(check_sequence(seq))
            except Exception as e:  # a broken sequence is reported, the others are checked
                msg = f"{type(e).__name__}: {e}"
                print(f"  unusable {c}/{seq.name}: {msg}")
                art.unusable[f"{c}/{seq.name}"] = msg
        in_mask = [k.in_mask for k in checks]
        art.rows.append({"category": c, "sequences": len(cat), "frames": sum(k.frames for k in checks),
                         "mean points": int(np.mean([k.points for k in checks])) if checks else 0,
                         "cloud in masks": float(np.nanmean(in_mask)) if checks else float("nan"),
                         "unusable": len(cat) - len(checks) + len(cat.excluded)})
        ctx.plot(f"frames_{c}.png", _plot_frames(ctx.data.uri, ep, c))
    return art


def _validate_section(a: ValidateArtifact) -> list[str]:
    lines = ["## Data", "", "| category | sequences | frames | mean points | cloud in masks | unusable |",
             "|---|---|---|---|---|---|"]
    lines += _validate_rows(a)
    lines += [""] + [f"![frames of {r['category']}](plots/frames_{r['category']}.png)" for r in a.rows]
    if a.unusable:
        lines += ["", "Unusable sequences:", ""] + [f"- `{k}`: {v}" for k, v in a.unusable.items()]
    return lines


def _validate_rows(a: ValidateArtifact) -> list[str]:
    return [f"| {r['category']} | {r['sequences']} | {r['frames']} | {r['mean points']} | "
            f"{r['cloud in masks']:.1%} | {r['unusable']} |" for r in a.rows]


def _validate_table(a: ValidateArtifact) -> list[str]:
    return ["| category | sequences | frames | mean points | cloud in masks | unusable |", "|---|---|---|---|---|---|",
            *_validate_rows(a), "Reading: 'cloud in masks' is the share of each video's point cloud that projects "
            "inside its object masks (cameras, clouds and masks agree; ground truth: the data's own masks); good: above "
            "95 %, and no unusable video."]


def _shard_run(ctx: Ctx) -> ShardsArtifact:
    from catpose.data.shards import write_shards

    uri = ctx.cfg.shard.out or ctx.store.url("shards")
    m = write_shards(ctx.section(ctx.cfg.shard, data=ctx.data.uri, out=uri,
                                 category=tuple(ctx.cfg.shard.category) or tuple(ctx.categories)))
    return ShardsArtifact(uri, m["categories"], len(m["skipped"]))


def _shard_section(a: ShardsArtifact) -> list[str]:
    return ["## Shards", "", f"`{a.uri}`: " + ", ".join(
        f"{c}: {v['frames']} frames in {v['shards']} files" for c, v in a.categories.items())
        + f"; {a.skipped} frames skipped (see _catpose_shards.json)"]


# ------------------------------------------------------------------------------------------ features
def _features_cfg(ctx: Ctx) -> FeaturesConfig:
    cfg = ctx.cfg
    return ctx.section(cfg.features, data=ctx.data.uri, out=cfg.features.out or ctx.store.url("features"),
                       category=tuple(cfg.features.category) or tuple(ctx.categories))


def _features_run(ctx: Ctx) -> FeaturesArtifact:
    from catpose.data.cleaning import plot_cleaning, settings_from
    from catpose.data.groundtruth import load_ground_truth
    from catpose.features.evaluate import cleaning_summary, correspondence_accuracy
    from catpose.features.runner import load_surface_features, run_features, signature

    fcfg = _features_cfg(ctx)
    mans = run_features(fcfg)
    cats = list(ctx.categories)
    failed = {}
    for c, m in mans.items():  # a category whose every video failed costs that category, and is said
        if not m.keys_with("ok"):
            k, err = next(iter(sorted({**m.failed, **m.skipped}.items())), ("-", "no videos"))
            msg = (f"features: no video of category '{c}' could be computed (first, '{k}': {err}); "
                   f"see {fcfg.out}/{c}/_manifest.json")
            print(f"  FAILED category {c}: {msg}", flush=True)
            failed[c] = msg
            if c in cats:
                cats.remove(c)
    rows = []
    for c, m in mans.items():
        row = {"category": c, "backbone": m.info.get("backbone", "?"), "ok": len(m.keys_with("ok")),
               "failed": len(m.keys_with("failed")), "visible": m.info.get("mean_visible", float("nan"))}
        if ctx.data.ground_truth and ctx.cfg.eval_pairs > 0:  # synthetic: measure against truth
            gts = load_ground_truth(ctx.data.uri, c, ctx.cfg.endpoint_url)
            feats = {n: load_surface_features(fcfg.out, c, n, fcfg.endpoint_url) for n in m.keys_with("ok")}
            if len(feats) >= 2:
                acc = correspondence_accuracy(feats, gts, max_pairs=ctx.cfg.eval_pairs)
                row.update({"acc@10%": acc["accuracy"], "chance": acc["chance"], "pairs": acc["pairs"]})
        # what the object cleaning removed (and, with point labels, the vertices left off the object)
        row.update(cleaning_summary(ctx.data.uri, c, m, fcfg.out, fcfg.endpoint_url))
        ctx.plot(f"cleaning_{c}.png", plot_cleaning(ctx.data.uri, c, settings_from(fcfg)))
        rows.append(row)
    return FeaturesArtifact(fcfg.out, signature(fcfg), rows, cats, failed)


def _features_rows(a: FeaturesArtifact) -> list[str]:
    out = []
    for r in a.rows:
        acc = f"{r['acc@10%']:.1%} ({r['pairs']} pairs)" if "acc@10%" in r else "n/a (no ground truth)"
        ch = f"{r['chance']:.1%}" if "chance" in r else ""
        off = f"{r['vertices off object']:.1%}" if "vertices off object" in r else "n/a"
        out.append(f"| {r['category']} | {r['backbone'].split(' (')[0]} | {r['ok']} | {r['failed']} | "
                   f"{r['visible']:.1%} | {acc} | {ch} | {r.get('cleaned away', float('nan')):.1%} | {off} |")
    return out


FEATURES_HEADER = ["| category | backbone | videos ok | failed | visible / frame | appearance match acc@10% | chance "
                   "| cloud cleaned away | vertices off object |", "|---|---|---|---|---|---|---|---|---|"]


def _features_section(a: FeaturesArtifact) -> list[str]:
    return ["## Surface features", "", *FEATURES_HEADER, *_features_rows(a), "",
            "Backbones: " + "; ".join(sorted({r["backbone"] for r in a.rows})),
            ("acc@10%: share of vertices whose nearest feature in another video (min over frame pairs) "
             "lies within 10 % of the object size of the same point on that instance. Cloud cleaned away: mean "
             "share of each video's point cloud removed as ground, background or outliers; vertices off object: "
             "share of the surface-feature vertices not on the object (synthetic ground truth)."),
            "", *[f"![cleaning {r['category']}](plots/cleaning_{r['category']}.png)" for r in a.rows]]


def _features_table(a: FeaturesArtifact) -> list[str]:
    return [*FEATURES_HEADER, *_features_rows(a), "Backbones: " + "; ".join(sorted({r["backbone"] for r in a.rows})),
            "Reading: acc@10% is how often a vertex's nearest feature in another video lands on the same part "
            "of that object (within 10 % of its size); good: far above chance, colorsift reaches about 50 % on the car."]


def _features_headline(a: FeaturesArtifact) -> str | None:
    parts = [f"{r['category']} {r['acc@10%']:.0%} (chance {r['chance']:.0%})" for r in a.rows if "acc@10%" in r]
    return ("appearance matching acc@10%: " + ", ".join(parts)) if parts else None


# ------------------------------------------------------------------------------------- tune and align
def _tune_run(ctx: Ctx) -> TuneArtifact:
    from catpose.align.tune import run_sweep

    cfg, feats = ctx.cfg, ctx.arts["features"]
    art = TuneArtifact({}, [])
    for c in ctx.categories:
        # trials align exactly as the alignment stage will (only alpha and tau vary)
        out = ctx.store.sub("tune", c)
        res = run_sweep(ctx.section(cfg.sweep, data=ctx.data.uri, category=c, out=out.uri, features=feats.uri,
                                    trial=cfg.align.search, device=ctx.section(cfg.align).device),
                        features=_features_cfg(ctx))
        art.best[c] = res["best"]
        top = res["rows"][0]
        art.rows.append({"category": c, **res["best"], "cycle_deg": top["cycle_deg"], "trials": len(res["rows"]),
                         **({"acc_pi_6": top["acc_pi_6"]} if "acc_pi_6" in top else {})})
        ctx.plot(f"sweep_{c}.png", out.read_bytes("sweep_heatmaps.png"))
    return art


def _tune_section(a: TuneArtifact) -> list[str]:
    lines = ["## α/τ sweep (chosen without labels)", "", "| category | α | τ | cycle error | trials |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['category']} | {r['alpha']:.2f} | {r['tau']:.3g} | {r['cycle_deg']:.2f}° | {r['trials']} |"
              for r in a.rows]
    return lines + [""] + [f"![sweep {r['category']}](plots/sweep_{r['category']}.png)" for r in a.rows]


def _align_run(ctx: Ctx) -> AlignArtifact:
    from catpose.align.evaluate import evaluate_alignment
    from catpose.align.run import run_align

    cfg, feats = ctx.cfg, ctx.arts["features"]
    best = ctx.arts["tune"].best if "tune" in ctx.arts else {}
    fcfg = _features_cfg(ctx)
    art = AlignArtifact({}, [])
    for c in ctx.categories:
        out = ctx.store.sub("align", c)
        acfg = ctx.section(cfg.align, data=ctx.data.uri, category=c, out=out.uri, features=feats.uri,
                           search=dataclasses.replace(cfg.align.search, **best.get(c, {})))
        res = run_align(acfg, features=fcfg)  # never recomputes features with other settings than the run's
        art.tables[c] = out.uri
        row = {"category": c, "videos": res["videos"], "pairs": res["pairs"], "reference": res["reference"],
               "failed_chunks": len(res["failed_chunks"]), "failed_pairs": len(res["failed_pairs"]),
               "ambiguous": res.get("ambiguous", [])}
        if ctx.data.ground_truth:
            for key, fname in (("sync", "alignment.parquet"), ("paths", "alignment_paths.parquet")):
                r = evaluate_alignment(out.url(fname), ctx.data.uri, c, endpoint_url=cfg.endpoint_url,
                                       plot=ctx.store.url("plots", f"alignment_errors_{c}_{key}.png"))
                row[key] = {k: r[k] for k in ("acc_pi_6", "acc_pi_18", "median_deg")}
        art.rows.append(row)
        ctx.plot(f"aligned_clouds_{c}.png", out.read_bytes("aligned_clouds.png"))
    return art


ALIGN_HEADER = ["| category | videos | pairs | Acc@π/6 | Acc@π/18 | median error | without sync: Acc@π/6 | median |",
                "|---|---|---|---|---|---|---|---|"]


def _align_rows(a: AlignArtifact) -> list[str]:
    out = []
    for r in a.rows:
        if "sync" in r:
            s, p = r["sync"], r["paths"]
            out.append(f"| {r['category']} | {r['videos']} | {r['pairs']} | {s['acc_pi_6']:.1%} | "
                       f"{s['acc_pi_18']:.1%} | {s['median_deg']:.1f}° | {p['acc_pi_6']:.1%} | {p['median_deg']:.1f}° |")
        else:
            out.append(f"| {r['category']} | {r['videos']} | {r['pairs']} | n/a | n/a | n/a | | |")
    return out


def _align_section(a: AlignArtifact) -> list[str]:
    return ["## Alignment into one reference frame per category", "", *ALIGN_HEADER, *_align_rows(a),
            *_align_ambiguous(a), ""] + [
        f"![aligned {r['category']}](plots/aligned_clouds_{r['category']}.png)" for r in a.rows]


def _align_ambiguous(a: AlignArtifact) -> list[str]:
    parts = [f"{r['category']}: {', '.join(r['ambiguous'])}" for r in a.rows if r.get("ambiguous")]
    return ["", f"No majority of pairs agrees with the rotation of {'; '.join(parts)} (training leaves them out)."] \
        if parts else []


def _align_table(a: AlignArtifact) -> list[str]:
    return [*ALIGN_HEADER, *_align_rows(a), *_align_ambiguous(a),
            "Reading: Acc@π/6 is the share of videos whose rotation into the common frame is within 30° of the "
            "truth (ground truth: the generator's or the fitted cameras' frames, up to one global rotation; n/a "
            "without it); good: close to 100 %, with synchronisation at least as good as without it."]


def _align_headline(a: AlignArtifact) -> str | None:
    parts = [f"{r['category']} {r['sync']['acc_pi_6']:.0%} (without sync {r['paths']['acc_pi_6']:.0%})"
             for r in a.rows if "sync" in r]
    return ("alignment Acc@π/6: " + ", ".join(parts)) if parts else None


# ------------------------------------------------------------------------------------- train and pose
def _train_categories(ctx: Ctx) -> list[str]:
    cats = ctx.categories
    missing = [c for c in ctx.cfg.train_categories if c not in cats]
    if missing:  # the default's "car" on data without cars: said, not silent
        print(f"no training for {missing}: not among this run's usable categories {cats} (train_categories)",
              flush=True)
    return [c for c in ctx.cfg.train_categories if c in cats]


def _train_run(ctx: Ctx) -> TrainArtifact:
    from catpose.learn.train import run_train

    cfg = ctx.cfg
    art = TrainArtifact({}, [])
    train_out = cfg.train.out or ctx.store.url("train")
    for c in _train_categories(ctx):
        tcfg = ctx.section(cfg.train, data=ctx.arts["shard"].uri, alignment=ctx.arts["align"].tables[c],
                           features=ctx.arts["features"].uri, category=c, out=train_out,
                           ground_truth=ctx.data.uri if ctx.data.ground_truth else None,
                           # a DINOv2 model trains from the features' weights file unless given its own
                           weights=cfg.train.weights or (cfg.features.weights if cfg.train.model == "base"
                                                         or cfg.train.backbone else None))
        res = run_train(tcfg, replace_changed=True)
        art.runs[c] = res["run"]
        art.rows.append({"category": c, "run": res["run"], "epochs": res["epochs"],
                         "loss": [res["history"][0]["loss"], res["history"][-1]["loss"]] if res["history"] else [],
                         "evaluation": res.get("evaluation")})
        run_store = Store(res["run"], tcfg.endpoint_url)
        art.rows[-1]["plots"] = []  # the report names only the plots the run made (no evaluation: no viewpoints)
        for f in ("training_curves.png", "viewpoint_accuracy.png"):
            if run_store.exists(f):
                art.rows[-1]["plots"].append(ctx.plot(f"{f[:-4]}_{c}.png", run_store.read_bytes(f)))
    return art


def _train_section(a: TrainArtifact) -> list[str]:
    from catpose.learn.evaluate import format_table

    lines = ["## Learned template features (Ray Train)", ""]
    for r in a.rows:
        loss = f", loss {r['loss'][0]:.2f} → {r['loss'][1]:.2f}" if r["loss"] else ""
        lines += [f"`{r['run']}`: {r['epochs']} epochs{loss}.", ""]
        if r.get("evaluation"):
            lines += format_table(r["evaluation"], r["category"]).splitlines() + [""]
        c = r["category"]
        plots = r.get("plots", [f"plots/training_curves_{c}.png", f"plots/viewpoint_accuracy_{c}.png"])
        lines += [f"![{'training' if 'training_curves' in p else 'viewpoints'} {c}]({p})" for p in plots] + [""]
    return lines


def _train_table(a: TrainArtifact) -> list[str]:
    from catpose.learn.evaluate import format_table

    lines = []
    for r in a.rows:
        if r.get("evaluation"):
            t = format_table(r["evaluation"], r["category"]).splitlines()
            j = next((k for k, ln in enumerate(t) if ln.startswith("By camera azimuth")), len(t))
            lines += [ln for ln in t[:j] if ln]
    return lines + ["Reading: accuracy is the share of template vertices whose best-matching pixel in a held-out "
                    "frame lies within the threshold of the truth (ground truth: the held-out videos' cameras, aligned "
                    "by the synthetic truth when the data has it, else by the alignment); good: well above the "
                    "untrained network and "
                    "colorsift rows (a GPU-trained car reaches about 44 %)."] if lines else []


def _train_headline(a: TrainArtifact) -> str | None:
    parts = []
    for r in a.rows:
        m = (r.get("evaluation") or {}).get("methods", {})
        if "trained" in m and "untrained network" in m:
            parts.append(f"{r['category']} {m['trained']['accuracy']:.1%} "
                         f"(untrained network {m['untrained network']['accuracy']:.1%})")
    return ("learned features, vertex-to-pixel matching: " + ", ".join(parts)) if parts else None


def _pose_run(ctx: Ctx) -> PoseArtifact:
    """Each trained category's pose stage, with the run context's device: on a cluster with GPUs (and
    ``device`` auto or cuda) as a Ray task holding one GPU, else in this process. Either way the wild images
    and the evaluation are made on that node's scratch and go to the store."""
    import functools

    from catpose.parallel import map_items, ray_has_gpus
    from catpose.pose.evaluate import pose_stage_into_store

    cfg = ctx.cfg
    pose = ctx.section(cfg.pose)
    gpu = ray_has_gpus(cfg.workers, pose.device)
    fn = functools.partial(pose_stage_into_store, store=ctx.store, images=cfg.pose_images, pose=pose,
                           endpoint_url=cfg.endpoint_url)
    art = PoseArtifact({}, [])
    done = {}
    for (c, _), res, err, _sec in map_items(fn, list(ctx.arts["train"].runs.items()), workers=cfg.workers if gpu else 0,
                                            desc="pose", num_gpus=1 if gpu else 0, progress=gpu):
        if err is not None:
            raise CatposeError(f"pose stage of category '{c}' failed: {err}")
        done[c] = res
    for c in ctx.arts["train"].runs:  # in the order of the training runs, whatever order the tasks ended in
        art.results[c] = ctx.store.url("pose", c)
        art.rows.append(done[c])
    return art


def _pose_section(a: PoseArtifact) -> list[str]:
    from catpose.pose.evaluate import format_table

    lines = ["## Pose estimation on synthetic in-the-wild images (unseen instances, clutter, occlusion)", ""]
    for r in a.rows:
        lines += format_table(r).splitlines() + ["", f"![pose errors {r['category']}](plots/pose_errors_{r['category']}.png)", ""]
    return lines


def _pose_table(a: PoseArtifact) -> list[str]:
    from catpose.pose.evaluate import format_table

    lines = [ln for r in a.rows for ln in format_table(r).splitlines() if ln]
    return lines + ["Reading: Acc@π/6 is the share of images whose estimated rotation is within 30° of the truth "
                    "(ground truth: the synthetic in-the-wild images' rendered viewpoints); "
                    "good: the catpose row above the nearest-training-view baseline."] if lines else []


def _pose_headline(a: PoseArtifact) -> str | None:
    parts = []
    for r in a.rows:
        m = list(r["methods"].items())
        base = next((v for k, v in m[1:] if k.startswith("nearest")), None)
        parts.append(f"{r['category']} {m[0][1]['acc_pi_6']:.0%}"
                     + (f" (nearest training view {base['acc_pi_6']:.0%})" if base else ""))
    return ("pose Acc@π/6 on synthetic in-the-wild images: " + ", ".join(parts)) if parts else None


def stages(cfg: PipelineConfig) -> list[Stage]:
    """The stages of this config, in order (each after the stages it needs)."""
    out: list[Stage] = []
    if cfg.raw_frames is not None:
        out.append(Stage("ingest", (), DataArtifact, lambda c: _what(c.ingest), _ingest_run))
    elif cfg.data is None:
        out.append(Stage("synth", (), DataArtifact, lambda c: _what(c.synth), _synth_run))
    out += [
        Stage("validate", ("data",), ValidateArtifact, lambda c: {}, _validate_run, _validate_section, _validate_table),
        Stage("shard", ("data", "validate"), ShardsArtifact, lambda c: _what(c.shard), _shard_run, _shard_section),
        Stage("features", ("data", "validate"), FeaturesArtifact, lambda c: {**_what(c.features), "eval": c.eval_pairs},
              _features_run, _features_section, _features_table, _features_headline),
    ]
    if cfg.tune:
        out.append(Stage("tune", ("features",), TuneArtifact, lambda c: {**_what(c.sweep), **_what(c.align)},
                         _tune_run, _tune_section))
    out.append(Stage("align", ("features",) + (("tune",) if cfg.tune else ()), AlignArtifact,
                     lambda c: _what(c.align), _align_run, _align_section, _align_table, _align_headline))
    if cfg.train_categories:
        out.append(Stage("train", ("shard", "align"), TrainArtifact,
                         lambda c: {**_what(c.train), "categories": list(c.train_categories)},
                         _train_run, _train_section, _train_table, _train_headline))
        if cfg.pose_images > 0:
            out.append(Stage("pose", ("train",), PoseArtifact,
                             lambda c: {**_what(c.pose), "images": c.pose_images}, _pose_run, _pose_section,
                             _pose_table, _pose_headline))
    return out


def _applies(stage: Stage, ctx: Ctx) -> bool:
    """Whether a stage has anything to do here (training: categories left; pose: synthetic ground truth)."""
    if stage.name == "train":
        return bool(_train_categories(ctx))
    if stage.name == "pose":
        return "train" in ctx.arts and bool(ctx.arts["train"].runs) and ctx.data.ground_truth
    return True


# ------------------------------------------------------------------------------------------- the runner
def _load_artifact(store: Store, stage: Stage):
    d = store.read_json(f"stages/{stage.name}.json", default=None)
    if not isinstance(d, dict) or "artifact" not in d:
        return None, None
    try:
        return stage.artifact(**d["artifact"]), d.get("hash")
    except TypeError:  # an artifact of an older catpose: recomputed
        return None, None


def _jsonable(obj):
    return json.loads(json.dumps(dataclasses.asdict(obj), default=str))


def _why_again(item: dict | None, parts: dict) -> str:
    """Why a stage runs (again): "" the first time, else what changed since it was recorded."""
    from catpose import fingerprint as fp

    if not item:
        return ""
    if item.get("status") != "ok":
        return f" ({item.get('status')} before)"
    old = item.get("fingerprint")
    if not isinstance(old, dict):
        return f" ({fp.NO_FINGERPRINT})"
    why = []
    if old.get("settings") != parts["settings"]:
        why.append("settings changed")
    changed = [n for n, v in parts["inputs"].items() if (old.get("inputs") or {}).get(n) != v]
    if changed:
        why.append("inputs changed: " + ", ".join(changed))
    return f" ({'; '.join(why) or 'its recorded result is unreadable'})"


def run(cfg: PipelineConfig) -> dict:
    """Runs the stage graph of ``cfg`` against its store; returns the report (a dict). The run holds the
    store's lease (:mod:`catpose.lease`) throughout: a second run on the same store stops before any work,
    naming this one."""
    from catpose.lease import store_lease

    check_config(cfg)
    store = Store(str(cfg.out), cfg.endpoint_url)
    store.check()
    with store_lease(store.uri, cfg.endpoint_url, "catpose run"):
        return _run(cfg)


def _run(cfg: PipelineConfig) -> dict:
    """:func:`run`, with the store's lease held."""
    from catpose.parallel import init_ray

    check_config(cfg)  # also when run() is called directly
    store = Store(str(cfg.out), cfg.endpoint_url)
    store.check()  # a file in the way, a read-only folder, an unreachable bucket: one clear error before any work
    if cfg.endpoint_url:  # driver-side readers that are not handed the endpoint find it too
        os.environ.setdefault("CATPOSE_S3_ENDPOINT", cfg.endpoint_url)
    store.write_text("config.yaml", config_yaml(cfg))
    man = Manifest.load_or_new("pipeline_manifest.json", "pipeline", store=store)
    if cfg.workers > 0 and os.environ.get("RAY_ADDRESS"):  # on a cluster: join it now (else Ray starts when needed)
        init_ray()
    if cfg.workers > 0 and "ray" in sys.modules and sys.modules["ray"].is_initialized():
        import ray

        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if len(nodes) > 1 and not store.is_s3:  # said, not an error: the folder may be a shared mount
            print(f"warning: the run's store {store.uri} is a local folder but the Ray cluster has {len(nodes)} "
                  "nodes; unless it is a mount every node shares, give an s3:// store (--out s3://...)", flush=True)
    ctx = Ctx(cfg, store, Path(tempfile.mkdtemp(prefix="catpose-scratch-")))
    graph = stages(cfg)
    t_run = time.perf_counter()
    times: dict[str, float] = {}
    skipped: list[str] = []
    try:
        if graph[0].name not in ("synth", "ingest"):
            ctx.arts["data"] = _given_data(ctx)
        for st in graph:
            if not _applies(st, ctx):
                continue
            inputs = {n: _jsonable(ctx.arts[n]) for n in st.needs if n in ctx.arts}
            h = _hash({"settings": st.settings(cfg), "inputs": inputs})
            parts = {"settings": _hash(st.settings(cfg)), "inputs": {n: _hash(v) for n, v in inputs.items()}}
            if man.status(st.name) == "ok" and man.items[st.name].get("hash") == h:
                art, stored_hash = _load_artifact(store, st)
                if art is not None and stored_hash == h:
                    print(f"== {st.name}: done before with the same settings and inputs (skipped)", flush=True)
                    ctx.arts["data" if st.name in ("synth", "ingest") else st.name] = art
                    times[st.name] = man.items[st.name].get("seconds", 0.0)
                    skipped.append(st.name)
                    continue
            print(f"== {st.name}" + _why_again(man.items.get(st.name), parts), flush=True)
            t0 = time.perf_counter()
            try:
                art = st.run(ctx)
            except Exception as e:
                man.record(st.name, "failed", error=f"{type(e).__name__}: {e}", seconds=time.perf_counter() - t0)
                raise
            sec = time.perf_counter() - t0
            store.write_json(f"stages/{st.name}.json", {"hash": h, "artifact": _jsonable(art)})
            extra = {"unusable": art.unusable} if st.name == "validate" and art.unusable else {}
            man.record(st.name, "ok", seconds=sec, hash=h, fingerprint=parts, **extra)
            ctx.arts["data" if st.name in ("synth", "ingest") else st.name] = art
            times[st.name] = round(sec, 1)
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
    report = assemble_report(cfg, ctx, graph, times, skipped, time.perf_counter() - t_run)
    failed = report.get("failed_categories")
    if failed:  # the others finished; the run must still not end as a success
        raise CatposeError(f"the run finished without {sorted(failed)}: " + "; ".join(failed.values())
                           + f" (report: {store.url('report.md')})")
    return report


def assemble_report(cfg: PipelineConfig, ctx: Ctx, graph: list[Stage], times: dict, skipped: list[str],
                    wall: float) -> dict:
    """Writes ``report.md`` (a one-screen summary, then every stage's section), prints the stage tables
    with their readings, and returns the report as a dict (the artifacts' contents)."""
    store, arts = ctx.store, ctx.arts
    val = arts.get("validate")
    failed = {**(val.failed_categories if val else {}),
              **(arts["features"].failed_categories if "features" in arts else {})}
    data = arts["data"]
    n_videos = sum(r["sequences"] for r in val.rows) if val else 0
    n_frames = sum(r["frames"] for r in val.rows) if val else 0
    ran = [s.name for s in graph if s.name in times]
    summary = ["# catpose pipeline report", "",
               "## Summary", "",
               f"- **Ran**: {' → '.join(ran)}" + (f" ({', '.join(skipped)} done before, skipped)" if skipped else ""),
               f"- **Data**: `{data.uri}` — {', '.join(data.categories)}: {n_videos} videos, {n_frames} frames"
               + (" (synthetic, with ground truth)" if data.ground_truth else ""),
               f"- **Time**: {sum(times.values()):.0f} s of stages (this invocation {wall:.0f} s): "
               + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
               f"- **Store**: `{store.uri}` (config.yaml repeats the run: `catpose run --config {store.url('config.yaml')}`)"]
    heads = [h for s in graph if s.name in arts and (h := s.headline(arts[s.name]))]
    summary += [f"- {h}" for h in heads] or ["- no accuracy measured (no ground truth)"]
    summary += [f"- **Pictures**: `{store.url('plots')}/` (frames with their clouds, aligned clouds, error histograms, "
                "training curves, pose errors)"]
    if failed:
        summary += ["", "**Failed categories** (left out of every later stage):", ""] + [
            f"- `{k}`: {v}" for k, v in failed.items()]
    lines = summary + [""]
    for s in graph:
        if s.name in arts and s.name not in ("synth", "ingest"):
            lines += [""] + s.section(arts[s.name])
    lines += ["", "## Stage times (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in times.items()]
    store.write_text("report.md", "\n".join(lines) + "\n")
    html_note = ""
    try:  # the interactive page of the same run, from its stored outputs (said, never silent, when it fails)
        from catpose.report.html import write_report_html

        html_note = f"  html: {write_report_html(store, summary, data=dataclasses.asdict(data))}"
    except Exception as e:  # noqa: BLE001 - report.md is written; the page's failure is printed, not hidden
        html_note = f"  (report.html not written: {type(e).__name__}: {e})"
    # the console: the stage tables, each with its reading
    for s in graph:
        if s.name in arts and (t := s.table(arts[s.name])):
            print("\n" + "\n".join(t))
    print("\n" + "\n".join(summary[2:]))
    print(f"\nreport: {store.url('report.md')}  plots: {store.url('plots')}{html_note}")
    report: dict = {"stages": times, "skipped": skipped, "summary": summary}
    if val:
        report.update(validate=val.rows, **({"unusable": val.unusable} if val.unusable else {}),
                      **({"skipped_frames": val.skipped_frames} if val.skipped_frames else {}))
    if failed:
        report["failed_categories"] = failed
    if "shard" in arts:
        report["shard"] = {"uri": arts["shard"].uri, "categories": arts["shard"].categories,
                           "skipped": arts["shard"].skipped}
    for k in ("features", "tune", "align", "train", "pose"):
        if k in arts:
            report[k] = arts[k].rows
    return report


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
