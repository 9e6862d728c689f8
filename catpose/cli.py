"""``catpose`` command line: one subcommand per stage, generated from the dataclass configs.

    catpose synth   --category car mug --videos 40 --frames 24 --size 128 --out DIR
    catpose ingest  --frames RAW --category cup --out DIR|s3://bucket/prefix
    catpose shard   --data DIR --out s3://bucket/shards
    catpose features --data DIR --category car --out STORE [--backbone dinov2_vits14 --weights PATH]
    catpose align   --data DIR --category car --out OUT [--alpha 0.2 --tau 1 --rotations 4096]
    catpose eval-align --data DIR --category car --alignment OUT/alignment.parquet
    catpose tune    --data DIR --category car --out runs/tune-car
    catpose train   --data STORE --alignment OUT --out RUNS
    catpose synth-wild --category car --images 200 --out data/wild
    catpose estimate --checkpoint RUNS/train-car --image IMG [--bbox X0 Y0 X1 Y1 | --mask PNG]
    catpose evaluate --checkpoint RUNS/train-car --dataset pascal3d --root PATH --category car
    catpose info    --data DIR
    catpose run     [--config FILE.yaml] [--out DIR|s3://bucket/prefix] [flags]   (the main job, catpose.run)

The run context is declared once (``catpose.config.StoreContext`` / ``TaskContext`` / ``RunContext``) and
every stage inherits the part it uses: ``--endpoint-url`` (every stage with a store), ``--workers`` (Ray
tasks of the per-item stages synth, ingest, features, align, tune; default 2, 0: in this process) and
``--device`` (features, align, tune). ``catpose train --num-workers`` is another thing: Ray Train's
training processes.

Each subcommand imports its stage inside its own function, on purpose: the stages pull in torch, Ray,
pycolmap and trimesh, and ``catpose --help`` or ``catpose info`` should not wait for all of them
(importing this module takes about 0.2 s; importing every stage, as the main job (``catpose.run``) does, 5-10
s).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from catpose.config import (
    AlignConfig,
    EstimateConfig,
    FeaturesConfig,
    IngestConfig,
    PoseEvalConfig,
    ShardConfig,
    SweepConfig,
    SynthConfig,
    TrainConfig,
    WildConfig,
    check_settings,
)
from catpose.errors import CatposeError, ConfigError, report_error  # noqa: F401 (report_error: part of this module's API)


@dataclass
class InfoConfig:
    """Summarise and validate a CO3D-layout dataset."""

    data: Path = Path("data/synth")
    """Dataset root."""
    category: tuple[str, ...] = ()
    """Categories (default: all)."""
    check_files: bool = False
    """Also decode every image and mask and read every point cloud (slow on large data): blank frames are
    counted and named, and masks that disagree with the cloud's projection named."""


def run_synth(cfg: SynthConfig) -> int:
    from catpose.data.synth.generate import generate

    manifests = generate(cfg)
    failed = 0
    for cat, man in manifests.items():
        s = man.summary()
        failed += s.get("failed", 0)
        print(f"{cat}: {s} -> {str(cfg.out).rstrip('/')}/{cat}")
        for k, err in man.failed.items():
            print(f"  FAILED {k}: {err}")
    print(f"ground truth (evaluation only): {str(cfg.out).rstrip('/')}/catpose_gt.json")
    return 1 if failed else 0


def run_ingest(cfg: IngestConfig) -> int:
    from catpose.data.ingest import ingest

    man = ingest(cfg)
    print(f"{cfg.category}: {man.summary()} -> {str(cfg.out).rstrip('/')}/{cfg.category}")
    for k, err in man.failed.items():
        print(f"  FAILED {k}: {err}")
    return 0 if man.keys_with("ok") else 1


def run_shard(cfg: ShardConfig) -> int:
    from catpose.data.shards import MANIFEST, write_shards

    man = write_shards(cfg)
    for cat, info in man["categories"].items():
        print(f"{cat}: {info['frames']} frames in {info['shards']} shards, {info['skipped']} skipped")
    for k, err in man["skipped"].items():
        print(f"  SKIPPED {k}: {err}")
    for cat, err in man.get("failed", {}).items():
        print(f"  FAILED {cat}: {err}")
    print(f"manifest: {cfg.out.rstrip('/')}/{MANIFEST}")
    return 1 if man.get("failed") else 0


def run_features(cfg: FeaturesConfig) -> int:
    from catpose.features.runner import run_features as run

    failed = 0
    for cat, man in run(cfg).items():
        s = man.summary()
        failed += s.get("failed", 0)
        print(f"{cat}: {s}, backbone: {man.info.get('backbone')}, mean visible fraction "
              f"{man.info.get('mean_visible')} -> {cfg.out.rstrip('/')}/{cat}/")
        for k, err in man.failed.items():
            print(f"  FAILED {k}: {err}")
        for k, err in man.skipped.items():
            print(f"  SKIPPED {k}: {err}")
    return 1 if failed else 0


@dataclass
class EvalAlignConfig:
    """Score an alignment against ground truth (synthetic data): Acc@π/6 and Acc@π/18 (the share of videos
    whose rotation into the common frame is within 30° and 10° of the truth, up to one global rotation) and
    the median error; with --labels co3d-paper, real CO3D videos against the paper's labels by the paper's
    protocol."""

    data: Path = Path("data/synth")
    """Dataset root with catpose_gt.json."""
    category: str = "car"
    """Category."""
    alignment: Path = Path("runs/align/alignment.parquet")
    """alignment.parquet written by catpose align (with --labels also a folder of
    <category>/alignment.parquet)."""
    labels: str = ""
    """Score real CO3D videos against labels instead of synthetic ground truth: co3d-paper (the paper's 162
    labelled CO3D v2 sequences), co3dv1-paper, or a folder of label files in od3d's label3d layout; prints
    the paper's published numbers alongside."""
    od3d_aligned: Path | None = None
    """With --labels: score an od3d alignment folder (e.g. data/co3d/aligned_N_alpha500_dinov2s/r0) instead of
    --alignment."""
    json_out: Path | None = None
    """With --labels: also write the scores (per category, per pair) to this JSON file."""


def fill_in_features(cfg: AlignConfig, progress: bool = True) -> None:
    """``catpose align``'s convenience: the videos of ``cfg.category`` missing from its feature store
    (``--features``, default ``OUT/features``) are computed first, with the settings the store's videos
    were made with (the defaults for an empty store), so that the alignment engine, which takes the
    features it is given, finds them all. A store mixing settings is an error naming its manifest."""
    from catpose.align.run import feature_store, features_for_align
    from catpose.features.runner import run_features as compute
    from catpose.storage import Store

    Store(str(cfg.out), cfg.endpoint_url).check()  # a file in the way: one clear error before any work
    fcfg, _ = features_for_align(cfg, None, feature_store(cfg))
    compute(fcfg, progress=progress, keep_existing=True)


def run_align(cfg: AlignConfig) -> int:
    from catpose.align.evaluate import evaluate_alignment
    from catpose.align.run import run_align as run
    from catpose.data.groundtruth import GT_FILE

    fill_in_features(cfg)
    res = run(cfg)
    print(f"{cfg.category}: {res['videos']} videos aligned from {res['pairs']} pairs, reference "
          f"{res['reference']} -> {Path(cfg.out) / 'alignment.parquet'}")
    for k, err in res["failed_chunks"].items():
        print(f"  FAILED {k}: {err}")
    if res["failed_pairs"]:
        print(f"  {len(res['failed_pairs'])} pairs failed (listed in the chunk files under "
              f"{Path(cfg.out) / 'pairs'})")
    for n, err in res["unreadable"].items():
        print(f"  left out {n}: {err}")
    if (Path(cfg.data) / GT_FILE).is_file():
        r = evaluate_alignment(Path(cfg.out) / "alignment.parquet", cfg.data, cfg.category)
        print(f"  vs ground truth: Acc@pi/6 {r['acc_pi_6']:.1%}, Acc@pi/18 {r['acc_pi_18']:.1%}, "
              f"median {r['median_deg']:.1f} deg")
    return 1 if res["failed_chunks"] else 0


def run_eval_align(cfg: EvalAlignConfig) -> int:
    if cfg.labels:
        return _eval_align_labels(cfg)
    from catpose.align.evaluate import evaluate_alignment

    plot = Path(cfg.alignment).with_name("alignment_errors.png")
    r = evaluate_alignment(cfg.alignment, cfg.data, cfg.category, plot=plot)
    print("| category | videos | Acc@pi/6 | Acc@pi/18 | median error (deg) |\n|---|---|---|---|---|")
    print(f"| {cfg.category} | {r['videos']} | {r['acc_pi_6']:.1%} | {r['acc_pi_18']:.1%} | "
          f"{r['median_deg']:.1f} |")
    print(f"histogram: {plot}")
    return 0


def _eval_align_labels(cfg: EvalAlignConfig) -> int:
    from catpose.align import evaluate_labels as ev
    from catpose.storage import write_uri

    if cfg.od3d_aligned is not None:
        est, name = ev.read_od3d_alignment(cfg.od3d_aligned), f"od3d {Path(cfg.od3d_aligned).name}"
    else:
        a = Path(cfg.alignment)
        by_category = (
            a.is_dir() and not (a / "alignment.parquet").exists()
        )  # a folder of <category>/alignment.parquet
        est, name = ev.read_catpose_alignments(a, None if by_category else cfg.category), "catpose"
    res = ev.score_alignments(est, cfg.labels)
    if not any(r["pairs"] for r in res["categories"].values()):
        raise ConfigError(str(cfg.od3d_aligned or cfg.alignment), f"no category has two videos labelled in "
                          f"'{cfg.labels}' (categories: "
                          f"{', '.join(sorted(est)) or 'none'})", field="--labels")
    print(ev.format_table(res, name))
    for c, r in res["categories"].items():
        if r["missing"]:
            print(f"  {c}: {len(r['missing'])} labelled videos not in the alignment "
                  f"({', '.join(r['missing'])})")
    if res["unlabelled_categories"]:
        print(f"  no labels for: {', '.join(res['unlabelled_categories'])}")
    if cfg.json_out is not None:
        write_uri(str(cfg.json_out), json.dumps(res, indent=1).encode())
        print(f"scores: {cfg.json_out}")
    return 0


def run_tune(cfg: SweepConfig) -> int:
    from catpose.align.tune import run_sweep

    res = run_sweep(cfg)
    print((Path(res["results"]) / "sweep_results.md").read_text())
    print(f"best: {res['best']} -> {Path(res['results']) / 'best_config.yaml'} "
          f"(use it: python jobs/full_pipeline.py --config that file)")
    return 0


def run_train(cfg: TrainConfig) -> int:
    from catpose.learn.train import run_train as run

    res = run(cfg)
    last = res["history"][-1] if res["history"] else {}
    print(f"{cfg.category}: {res['epochs']} epochs, final loss {last.get('loss', float('nan')):.3f}, "
          f"run {res['run']}")
    if "evaluation" in res:
        from catpose.learn.evaluate import format_table

        print(format_table(res["evaluation"], cfg.category))
        print("ground truth: " + (f"the synthetic truth of {cfg.ground_truth}" if cfg.ground_truth else
                                  "none given (--ground-truth): held-out matching is scored against the "
                                  "alignment "
                                  "(the held-out videos' cameras through their aligned frames), not true "
                                  "poses"))
    print(f"TensorBoard: tensorboard --logdir {res['run']}/tensorboard")
    return 0


def run_synth_wild(cfg: WildConfig) -> int:
    from catpose.pose.wild import generate_wild

    info = generate_wild(cfg)
    print(f"{cfg.category}: {info['images']} in-the-wild images in {cfg.out} (PASCAL3D+ layout); score a run "
          "with "
          f"`catpose evaluate --checkpoint RUN --dataset synth-wild --root {cfg.out} --category "
          f"{cfg.category}`")
    return 0


def run_estimate(cfg: EstimateConfig) -> int:
    from catpose.pose.estimate import PoseEstimator, load_image, overlay
    from catpose.pose.evaluate import attach_views

    if not cfg.image:
        raise ConfigError("flags", "name at least one --image", field="image")
    if cfg.mask and len(cfg.mask) != len(cfg.image):
        raise ConfigError(
            "flags",
            f"{len(cfg.mask)} masks for {len(cfg.image)} images: give one --mask per image",
            field="mask",
        )
    if cfg.bbox is not None and len(cfg.bbox) != 4:
        raise ConfigError("flags", f"--bbox takes 4 numbers x0 y0 x1 y1, got {len(cfg.bbox)}: "
                          f"{' '.join(f'{b:g}' for b in cfg.bbox)}", field="bbox")
    if cfg.bbox is not None and len(cfg.image) != 1:
        raise ConfigError("flags", f"--bbox is for one image, got {len(cfg.image)} images", field="bbox")
    if cfg.bbox is not None and not (cfg.bbox[2] > cfg.bbox[0] and cfg.bbox[3] > cfg.bbox[1]):
        raise ConfigError(
            "flags",
            f"--bbox needs x1 > x0 and y1 > y0, got {' '.join(f'{b:g}' for b in cfg.bbox)}",
            field="bbox",
        )
    frame = None
    if cfg.frame is not None:
        frame = np.asarray(json.loads(Path(cfg.frame).read_text())["rotation"], float)
    est = PoseEstimator.from_run(cfg.checkpoint, cfg.endpoint_url, cfg.pose, frame)
    if cfg.category:  # the images' category, when given: the run's must match (before any image is read)
        from catpose.pose.evaluate import check_category

        check_category(est.run_config.category, cfg.category, cfg.allow_other_category, cfg.checkpoint,
                       cfg.endpoint_url, "estimate on")
    if cfg.pose.prior_weight > 0:
        attach_views(est, cfg.checkpoint, cfg.endpoint_url)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    results, failed = {}, 0
    print("| image | confidence | azimuth | elevation | in-plane | distance |\n|---|---|---|---|---|---|")
    masks = [str(m) for m in cfg.mask] if cfg.mask else None
    bboxes = [cfg.bbox] if cfg.bbox is not None else None
    for path, pose, err in est.estimate_files([str(p) for p in cfg.image], bboxes, masks):
        if pose is None:
            failed += 1
            results[path] = {"error": err}
            print(f"| {path} | FAILED: {err} | | | | |")
            continue
        results[path] = pose.to_json()
        ang = [f"{x:.0f}°" if x is not None else "–" for x in (pose.azimuth, pose.elevation, pose.theta)]
        print(f"| {path} | {pose.confidence:.2f} | {' | '.join(ang)} | {pose.distance:.2f} |")
        overlay(load_image(path), pose, est.vertices.cpu().numpy()).save(out / f"{Path(path).stem}_pose.png")
    (out / "poses.json").write_text(json.dumps(results, indent=1))
    print(f"poses: {out / 'poses.json'}; pictures: {out}/*_pose.png"
          + ("" if frame is not None else " (angles need --frame: the template's axes have no names)"))
    return 1 if failed == len(cfg.image) else 0


def run_evaluate(cfg: PoseEvalConfig) -> int:
    from catpose.pose.evaluate import evaluate_pose, format_table
    from catpose.pose.protocol import categories, paper_split

    levels = (
        paper_split(cfg.split) if cfg.dataset == "pascal3d" else (["L0"] if cfg.split == "paper" else None)
    )
    cats = categories(cfg.category, cfg.dataset)
    if levels is not None and (len(cats) > 1 or len(levels) > 1 or cfg.split == "paper"):
        return run_evaluate_protocol(cfg, cats, levels)
    res = evaluate_pose(cfg)
    print(format_table(res))
    if "pseudo" in str(res.get("frame", "")):  # no ground truth: said next to the numbers
        print("ground truth: none in this dataset: poses are scored against the alignment (pseudo ground "
              "truth), "
              "which measures agreement with the training frames, not true accuracy")
    print(f"histogram: {Path(cfg.out) / 'errors.png'}; per object: {Path(cfg.out) / 'results.jsonl'}; "
          f"overlays: {Path(cfg.out) / 'overlays'}")
    return 0


def run_evaluate_protocol(cfg: PoseEvalConfig, cats: list[str], levels: list[str]) -> int:
    """The paper's protocol over categories and occlusion levels (catpose.pose.protocol): each scored as
    ``catpose evaluate`` scores one, into ``<out>/<category>/<level>/``; then the summary table next to the
    paper's numbers (``<out>/summary.md``, ``summary.json``). A category or level that fails is named in
    its cell; the others go on."""
    import dataclasses

    from catpose.pose.evaluate import evaluate_pose
    from catpose.pose.protocol import co3d_name, summary_table

    if len(cats) > 1 and "{" not in cfg.checkpoint:
        raise ConfigError(
            "--checkpoint",
            f"{len(cats)} categories need one trained run each: give a path with "
            "{category} (the dataset's class name) or {co3d} (CO3D's), e.g. "
            "runs/train/train-{co3d}",
            field="checkpoint",
        )
    rows: dict[str, dict] = {}
    for c in cats:
        rows[c] = {}
        for lv in levels:
            sub = dataclasses.replace(
                cfg, category=c, checkpoint=cfg.checkpoint.format(category=c, co3d=co3d_name(c)),
                split=("paper" if lv == "L0" else f"paper-{lv}") if cfg.dataset == "pascal3d" else cfg.split,
                out=Path(cfg.out) / c / lv)
            try:
                rows[c][lv] = evaluate_pose(sub)
            except (CatposeError, OSError, ValueError) as e:
                rows[c][lv] = {"error": f"{type(e).__name__}: {e}"}
                print(f"evaluate {c} {lv}: FAILED: {e}", flush=True)
    table = summary_table(rows, cfg.dataset)
    print(table)
    Path(cfg.out).mkdir(parents=True, exist_ok=True)
    (Path(cfg.out) / "summary.md").write_text(table)
    (Path(cfg.out) / "summary.json").write_text(json.dumps(
        {c: {lv: ({"error": r["error"]} if "error" in r else {"methods": r["methods"], "scored": r["scored"],
                                                               "failed": r["failed"], "frame": r["frame"]})
                  for lv, r in v.items()} for c, v in rows.items()}, indent=1))
    print(f"summary: {Path(cfg.out) / 'summary.md'}; per category and level: {cfg.out}/<category>/<level>/")
    return 1 if all("error" in r for v in rows.values() for r in v.values()) else 0


def run_info(cfg: InfoConfig) -> int:
    from catpose.data.co3d import Co3dCategory, list_categories

    cats = list(cfg.category) or list_categories(cfg.data)
    problems = 0
    for c in cats:
        cat = Co3dCategory(cfg.data, c)
        n_frames = sum(len(v) for v in cat.frame_annotations.values())
        print(f"{c}: {len(cat)} sequences, {n_frames} frames, set lists: {cat.set_list_names or 'none'}")
        if cat.annotation_summary() or cat.cloud_summary():
            for line in (cat.annotation_summary(), cat.cloud_summary()):
                if line:
                    print(f"  {line}")
            for k, why in {**cat.excluded, **cat.skipped_frames}.items():
                problems += 1
                print(f"  {k}: {why}")
            for w in cat.annotation_warnings:
                print(f"  warning: {w}")
        if cfg.check_files:
            from catpose.data.quality import sequence_quality

            blank, bad = {}, {}
            for seq in cat:
                for fr in seq.frames:
                    try:
                        fr.load_image()
                        if fr.mask_path is not None:
                            fr.load_mask()
                    except (CatposeError, OSError) as e:
                        problems += 1
                        print(f"  {e}")
                try:
                    q = sequence_quality(seq)  # reads (or makes) the cloud; blank images, masks against it
                    blank.update(q.blank_frames)
                    bad.update(q.bad_masks)
                except (CatposeError, OSError) as e:
                    problems += 1
                    print(f"  {e}")
            print(f"  {c}: {len(blank)} blank frames (skipped by shard and features), {len(bad)} masks at "
                  "odds "
                  f"with the cloud's projection")
            for k, why in sorted({**blank, **bad}.items()):
                problems += 1
                print(f"  {k}: {why}")
    if cfg.check_files or problems:
        print(json.dumps({"problems": problems}))
    return 1 if problems else 0


COMMANDS = {
    "synth": (SynthConfig, run_synth),
    "ingest": (IngestConfig, run_ingest),
    "shard": (ShardConfig, run_shard),
    "features": (FeaturesConfig, run_features),
    "align": (AlignConfig, run_align),
    "eval-align": (EvalAlignConfig, run_eval_align),
    "tune": (SweepConfig, run_tune),
    "train": (TrainConfig, run_train),
    "synth-wild": (WildConfig, run_synth_wild),
    "estimate": (EstimateConfig, run_estimate),
    "evaluate": (PoseEvalConfig, run_evaluate),
    "info": (InfoConfig, run_info),
}


@dataclass
class RunCommand:
    """The main job: every stage in order into one store, resumable (catpose run --help lists its flags;
    --config FILE.yaml, then flags)."""


# flags of settings that now live in a nested section, still accepted as they were typed before:
# ``catpose align --alpha 0.5`` is ``--search.alpha 0.5``, ``catpose features --clean-mode off`` is
# ``--cleaning.mode off``, ``catpose tune --rotations 256`` is ``--trial.rotations 256``
SHORT_FLAGS = {"align": ("search", ""), "tune": ("trial", ""), "ingest": ("cleaning", "clean_"),
               "features": ("cleaning", "clean_")}


def expand_short_flags(argv: list[str]) -> list[str]:
    """``argv`` with the short flags of :data:`SHORT_FLAGS` written as their nested section's flags."""
    import dataclasses

    if not argv or argv[0] not in SHORT_FLAGS:
        return argv
    cls = COMMANDS[argv[0]][0]
    section, prefix = SHORT_FLAGS[argv[0]]
    own = {f.name for f in dataclasses.fields(cls)}
    nested = {f.name for f in dataclasses.fields(getattr(cls(), section))}
    out = [argv[0]]
    for a in argv[1:]:
        flag, eq, value = a.partition("=")
        name = flag[2:].replace("-", "_") if flag.startswith("--") else ""
        if name.startswith(prefix) and name not in own and name[len(prefix):] in nested:
            a = f"--{section}.{name[len(prefix):].replace('_', '-')}" + (eq + value if eq else "")
        out.append(a)
    return out


# the commands that write a store (``--out``): each holds its lease while it runs
WRITERS = (run_synth, run_ingest, run_shard, run_features, run_align, run_tune, run_train)


def main(argv: list[str] | None = None) -> int:
    """Runs one subcommand. Every error ends with exit code 2 and one line on stderr; ``--debug``
    (anywhere on the line) shows the traceback instead; ``--verbose`` Ray's own progress and log lines."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:  # the main job (its own parser: a YAML file, then flags; see catpose.run.config)
        from catpose.run.runner import main as run_job

        return run_job(argv[1:])
    debug = "--debug" in argv
    if "--verbose" in argv:  # Ray's and Ray Data's own progress and log lines (off by default)
        from catpose.parallel import set_verbose

        set_verbose(True)
    argv = expand_short_flags([a for a in argv if a not in ("--debug", "--verbose")])
    cfg = tyro.extras.subcommand_cli_from_dict({"run": RunCommand, **{k: v[0] for k, v in COMMANDS.items()}},
                                               args=argv, prog="catpose")
    runner = next(run for cls, run in COMMANDS.values() if isinstance(cfg, cls))
    try:
        check_settings(cfg)  # ranges and the device, before any work
        out = getattr(cfg, "out", None)
        if runner in WRITERS and out:  # one writer per store: the second stops, naming the first
            from catpose.lease import store_lease

            with store_lease(str(out), getattr(cfg, "endpoint_url", None),
                             "catpose " + next(k for k, (c, _) in COMMANDS.items() if isinstance(cfg, c))):
                return runner(cfg)
        return runner(cfg)
    except Exception as e:
        if debug:
            raise
        return report_error(e)


if __name__ == "__main__":
    sys.exit(main())
