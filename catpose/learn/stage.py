"""The main job's training stage (:mod:`catpose.run.graph`): template features learned with Ray Train
for each training category still in the run, from the shards, the alignment and the feature store."""

from __future__ import annotations

from dataclasses import dataclass

from catpose.run.graph import Artifact, Ctx, Stage, what
from catpose.storage import Store


@dataclass
class TrainArtifact(Artifact):
    runs: dict[str, str]
    rows: list[dict]


def _train_categories(ctx: Ctx) -> list[str]:
    cats = ctx.categories
    missing = [c for c in ctx.cfg.train_categories if c not in cats]
    if missing:  # the default's "car" on data without cars: said, not silent
        print(f"no training for {missing}: not among this run's usable categories {cats} (train_categories)",
              flush=True)
    return [c for c in ctx.cfg.train_categories if c in cats]


def _train_run(ctx: Ctx) -> TrainArtifact:
    from catpose.learn.train import run_train

    cfg, data = ctx.cfg, ctx.arts["data"]
    art = TrainArtifact({}, [])
    train_out = cfg.train.out or ctx.store.url("train")
    for c in _train_categories(ctx):
        tcfg = ctx.section(cfg.train, data=ctx.arts["shard"].uri, alignment=ctx.arts["align"].tables[c],
                           features=ctx.arts["features"].uri, category=c, out=train_out,
                           ground_truth=data.uri if data.ground_truth else None,
                           # a DINOv2 model trains from the features' weights file unless given its own
                           weights=cfg.train.weights or (cfg.features.weights if cfg.train.model == "base"
                                                         or cfg.train.backbone else None))
        res = run_train(tcfg, replace_changed=True)
        art.runs[c] = res["run"]
        art.rows.append(
            {
                "category": c,
                "run": res["run"],
                "epochs": res["epochs"],
                "loss": [res["history"][0]["loss"], res["history"][-1]["loss"]] if res["history"] else [],
                "evaluation": res.get("evaluation"),
            }
        )
        run_store = Store(res["run"], tcfg.endpoint_url)
        art.rows[-1][
            "plots"
        ] = []  # the report names only the plots the run made (no evaluation: no viewpoints)
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
        lines += [f"![{'training' if 'training_curves' in p else 'viewpoints'} "
                  f"{c}]({p})" for p in plots] + [""]
    return lines


def _train_table(a: TrainArtifact) -> list[str]:
    from catpose.learn.evaluate import format_table

    lines = []
    for r in a.rows:
        if r.get("evaluation"):
            t = format_table(r["evaluation"], r["category"]).splitlines()
            j = next((k for k, ln in enumerate(t) if ln.startswith("By camera azimuth")), len(t))
            lines += [ln for ln in t[:j] if ln]
    return lines + ["Reading: accuracy is the share of template vertices whose best-matching pixel in a "
                    "held-out "
                    "frame lies within the threshold of the truth (ground truth: the held-out videos' "
                    "cameras, aligned "
                    "by the synthetic truth when the data has it, else by the alignment); good: well above "
                    "the "
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


STAGES = [
    Stage(
        "train",
        ("shard", "align"),
        TrainArtifact,
        lambda c: {**what(c.train), "categories": list(c.train_categories)},
        _train_run,
        _train_section,
        _train_table,
        _train_headline,
        results=lambda a: {"train": a.rows},
        included=lambda c: bool(c.train_categories),
        applies=lambda ctx: bool(_train_categories(ctx)),
    ),
]
