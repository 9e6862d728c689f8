"""The main job's pose stage (:mod:`catpose.run.graph`): each trained synthetic category's pose
estimation scored on synthetic in-the-wild images (unseen instances, clutter, occlusion)."""

from __future__ import annotations

from dataclasses import dataclass

from catpose.errors import CatposeError
from catpose.run.graph import Artifact, Ctx, Stage, what


@dataclass
class PoseArtifact(Artifact):
    results: dict[str, str]
    rows: list[dict]


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
    runs = ctx.arts["train"].runs
    for (c, _), res, err, _sec in map_items(fn, list(runs.items()), workers=cfg.workers if gpu else 0,
                                            desc="pose", num_gpus=1 if gpu else 0, progress=gpu):
        if err is not None:
            raise CatposeError(f"pose stage of category '{c}' failed: {err}")
        done[c] = res
    for c in runs:  # in the order of the training runs, whatever order the tasks ended in
        art.results[c] = ctx.store.url("pose", c)
        art.rows.append(done[c])
    return art


def _pose_section(a: PoseArtifact) -> list[str]:
    from catpose.pose.evaluate import format_table

    lines = ["## Pose estimation on synthetic in-the-wild images (unseen instances, clutter, occlusion)", ""]
    for r in a.rows:
        lines += format_table(r).splitlines() + [
            "",
            f"![pose errors {r['category']}](plots/pose_errors_{r['category']}.png)",
            "",
        ]
    return lines


def _pose_table(a: PoseArtifact) -> list[str]:
    from catpose.pose.evaluate import format_table

    lines = [ln for r in a.rows for ln in format_table(r).splitlines() if ln]
    return lines + ["Reading: Acc@π/6 is the share of images whose estimated rotation is within 30° of the "
                    "truth "
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


def _applies(ctx: Ctx) -> bool:
    """Only trained runs, and only on synthetic data (the wild images are rendered from its generator)."""
    return "train" in ctx.arts and bool(ctx.arts["train"].runs) and ctx.arts["data"].ground_truth


STAGES = [
    Stage("pose", ("train",), PoseArtifact, lambda c: {**what(c.pose), "images": c.pose_images}, _pose_run,
          _pose_section, _pose_table, _pose_headline, results=lambda a: {"pose": a.rows},
          included=lambda c: bool(c.train_categories) and c.pose_images > 0, applies=_applies),
]
