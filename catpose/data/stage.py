"""The main job's data stages (:mod:`catpose.run.graph`): the run's dataset — generated into the store
(``synth``), made by SfM from raw frames (``ingest``) or given (``--data``): each provides ``data`` —
then its validation (``validate``: usable categories and videos, frames with their clouds) and its
Parquet shards (``shard``)."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np

from catpose.errors import CatposeError
from catpose.run.graph import Artifact, Ctx, Stage, what
from catpose.storage import Store


@dataclass
class DataArtifact(Artifact):
    """The dataset the run works on (generated into the store, ingested, or given)."""

    uri: str
    categories: list[str]
    ground_truth: bool
    made: dict = field(default_factory=dict)  # per category: the generator's or ingest's item summary
    fingerprint: str = ""  # of the data's files (catpose.fingerprint): a change reruns every later stage

    def run_categories(self) -> list[str]:
        return self.categories


@dataclass
class ValidateArtifact(Artifact):
    rows: list[dict]
    categories: list[str]  # the usable ones
    unusable: dict[str, str] = field(default_factory=dict)
    skipped_frames: dict[str, str] = field(default_factory=dict)
    failed_categories: dict[str, str] = field(default_factory=dict)

    def run_categories(self) -> list[str]:
        return self.categories

    def lost_categories(self) -> dict[str, str]:
        return self.failed_categories

    def manifest_extra(self) -> dict:
        return {"unusable": self.unusable} if self.unusable else {}


@dataclass
class ShardsArtifact(Artifact):
    uri: str
    categories: dict
    skipped: int


def data_fingerprint(uri: str, categories: list[str], endpoint_url: str | None = None) -> str:
    """The digest of every file of the run's categories (and the ground truth), from one listing per
    category: sizes and modification times, or S3 ETags (:func:`catpose.fingerprint.file_tokens`)."""
    from catpose import fingerprint as fp
    from catpose.data.groundtruth import GT_FILE

    st = Store(str(uri), endpoint_url)
    return fp.digest({c: fp.file_tokens(st, c) for c in categories} | {GT_FILE: fp.file_token(st, GT_FILE)})


# ------------------------------------------------------------------------------------ the dataset
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


# ------------------------------------------------------------------------------------ validation
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
    data = ctx.arts["data"]
    art = ValidateArtifact(rows=[], categories=list(data.categories))
    for c in list(art.categories):
        try:
            cat = Co3dCategory(data.uri, c, ep)
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
        ctx.plot(f"frames_{c}.png", _plot_frames(data.uri, ep, c))
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
    return ["| category | sequences | frames | mean points | cloud in masks | unusable "
            "|", "|---|---|---|---|---|---|",
            *_validate_rows(a), "Reading: 'cloud in masks' is the share of each video's point cloud that "
                                "projects "
            "inside its object masks (cameras, clouds and masks agree; ground truth: the data's own masks); "
            "good: above "
            "95 %, and no unusable video."]


def _validate_summary(a: ValidateArtifact, arts: dict) -> list[str]:
    """The summary's line on the data: where, which categories, how many videos and frames."""
    data = arts["data"]
    n_videos = sum(r["sequences"] for r in a.rows)
    n_frames = sum(r["frames"] for r in a.rows)
    return [f"- **Data**: `{data.uri}` — {', '.join(data.categories)}: {n_videos} videos, {n_frames} frames"
            + (" (synthetic, with ground truth)" if data.ground_truth else "")]


def _validate_results(a: ValidateArtifact) -> dict:
    return {"validate": a.rows, **({"unusable": a.unusable} if a.unusable else {}),
            **({"skipped_frames": a.skipped_frames} if a.skipped_frames else {})}


# ------------------------------------------------------------------------------------ shards
def _shard_run(ctx: Ctx) -> ShardsArtifact:
    from catpose.data.shards import write_shards

    uri = ctx.cfg.shard.out or ctx.store.url("shards")
    m = write_shards(ctx.section(ctx.cfg.shard, data=ctx.arts["data"].uri, out=uri,
                                 category=tuple(ctx.cfg.shard.category) or tuple(ctx.categories)))
    return ShardsArtifact(uri, m["categories"], len(m["skipped"]))


def _shard_section(a: ShardsArtifact) -> list[str]:
    return ["## Shards", "", f"`{a.uri}`: " + ", ".join(
        f"{c}: {v['frames']} frames in {v['shards']} files" for c, v in a.categories.items())
        + f"; {a.skipped} frames skipped (see _catpose_shards.json)"]


def _shard_results(a: ShardsArtifact) -> dict:
    return {"shard": {"uri": a.uri, "categories": a.categories, "skipped": a.skipped}}


STAGES = [
    Stage(
        "ingest",
        (),
        DataArtifact,
        lambda c: what(c.ingest),
        _ingest_run,
        provides="data",
        included=lambda c: c.raw_frames is not None,
    ),
    Stage(
        "synth",
        (),
        DataArtifact,
        lambda c: what(c.synth),
        _synth_run,
        provides="data",
        included=lambda c: c.raw_frames is None and c.data is None,
    ),
    # a dataset given by --data: read every run (its files' fingerprint is what later stages hash)
    Stage(
        "given data",
        (),
        DataArtifact,
        lambda c: {},
        _given_data,
        provides="data",
        recorded=False,
        included=lambda c: c.raw_frames is None and c.data is not None,
    ),
    Stage(
        "validate",
        ("data",),
        ValidateArtifact,
        lambda c: {},
        _validate_run,
        _validate_section,
        _validate_table,
        summary=_validate_summary,
        results=_validate_results,
    ),
    Stage(
        "shard",
        ("data", "validate"),
        ShardsArtifact,
        lambda c: what(c.shard),
        _shard_run,
        _shard_section,
        results=_shard_results,
    ),
]
