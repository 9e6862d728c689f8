"""The main job's features stage (:mod:`catpose.run.graph`): surface features of every usable video
into the run's feature store, with the settings (backbone signature) they were made with; on
synthetic data also how well appearance alone matches points across videos."""

from __future__ import annotations

from dataclasses import dataclass, field

from catpose.config import FeaturesConfig
from catpose.run.graph import Artifact, Ctx, Stage, what


@dataclass
class FeaturesArtifact(Artifact):
    """A feature store with the settings (backbone signature) every one of its videos was made with."""

    uri: str
    signature: dict
    rows: list[dict]
    categories: list[str]
    failed_categories: dict[str, str] = field(default_factory=dict)

    def run_categories(self) -> list[str]:
        return self.categories

    def lost_categories(self) -> dict[str, str]:
        return self.failed_categories


def features_cfg(ctx: Ctx) -> FeaturesConfig:
    """The run's features settings, with its data, store and categories."""
    cfg = ctx.cfg
    return ctx.section(
        cfg.features,
        data=ctx.arts["data"].uri,
        out=cfg.features.out or ctx.store.url("features"),
        category=tuple(cfg.features.category) or tuple(ctx.categories),
    )


def _features_run(ctx: Ctx) -> FeaturesArtifact:
    from catpose.data.cleaning import plot_cleaning, settings_from
    from catpose.data.groundtruth import load_ground_truth
    from catpose.features.evaluate import cleaning_summary, correspondence_accuracy
    from catpose.features.runner import load_surface_features, run_features, signature

    data = ctx.arts["data"]
    fcfg = features_cfg(ctx)
    mans = run_features(fcfg)
    cats = [c for c in ctx.categories if c in fcfg.category]  # the later stages have features of these only
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
        if data.ground_truth and ctx.cfg.eval_pairs > 0:  # synthetic: measure against truth
            gts = load_ground_truth(data.uri, c, ctx.cfg.endpoint_url)
            feats = {n: load_surface_features(fcfg.out, c, n, fcfg.endpoint_url) for n in m.keys_with("ok")}
            if len(feats) >= 2:
                acc = correspondence_accuracy(feats, gts, max_pairs=ctx.cfg.eval_pairs)
                row.update({"acc@10%": acc["accuracy"], "chance": acc["chance"], "pairs": acc["pairs"]})
        # what the object cleaning removed (and, with point labels, the vertices left off the object)
        row.update(cleaning_summary(data.uri, c, m, fcfg.out, fcfg.endpoint_url))
        ctx.plot(f"cleaning_{c}.png", plot_cleaning(data.uri, c, settings_from(fcfg)))
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


FEATURES_HEADER = ["| category | backbone | videos ok | failed | visible / frame | appearance match acc@10% "
                   "| chance "
                   "| cloud cleaned away | vertices off object |", "|---|---|---|---|---|---|---|---|---|"]


def _features_section(a: FeaturesArtifact) -> list[str]:
    return ["## Surface features", "", *FEATURES_HEADER, *_features_rows(a), "",
            "Backbones: " + "; ".join(sorted({r["backbone"] for r in a.rows})),
            ("acc@10%: share of vertices whose nearest feature in another video (min over frame pairs) "
             "lies within 10 % of the object size of the same point on that instance. Cloud cleaned away: "
             "mean "
             "share of each video's point cloud removed as ground, background or outliers; vertices off "
             "object: "
             "share of the surface-feature vertices not on the object (synthetic ground truth)."),
            "", *[f"![cleaning {r['category']}](plots/cleaning_{r['category']}.png)" for r in a.rows]]


def _features_table(a: FeaturesArtifact) -> list[str]:
    return [
        *FEATURES_HEADER,
        *_features_rows(a),
        "Backbones: " + "; ".join(sorted({r["backbone"] for r in a.rows})),
        "Reading: acc@10% is how often a vertex's nearest feature in another video lands on the same "
        "part "
        "of that object (within 10 % of its size); good: far above chance, colorsift reaches about 50 % "
        "on the car.",
    ]


def _features_headline(a: FeaturesArtifact) -> str | None:
    parts = [f"{r['category']} {r['acc@10%']:.0%} (chance "
             f"{r['chance']:.0%})" for r in a.rows if "acc@10%" in r]
    return ("appearance matching acc@10%: " + ", ".join(parts)) if parts else None


STAGES = [
    Stage(
        "features",
        ("data", "validate"),
        FeaturesArtifact,
        lambda c: {**what(c.features), "eval": c.eval_pairs},
        _features_run,
        _features_section,
        _features_table,
        _features_headline,
        results=lambda a: {"features": a.rows},
    ),
]
