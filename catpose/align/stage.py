"""The main job's alignment stages (:mod:`catpose.run.graph`): with ``--tune`` the label-free α/τ sweep
per category (``tune``), then the alignment of every video into one reference frame per category
(``align``), from the features stage's feature store as it is (nothing is recomputed here)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from catpose.run.graph import Artifact, Ctx, Stage, what


@dataclass
class TuneArtifact(Artifact):
    best: dict[str, dict]
    rows: list[dict]


@dataclass
class AlignArtifact(Artifact):
    """Per category, the URI of its alignment output (alignment.parquet, pairs, plots)."""

    tables: dict[str, str]
    rows: list[dict]


# ------------------------------------------------------------------------------------------ the sweep
def _tune_run(ctx: Ctx) -> TuneArtifact:
    from catpose.align.tune import run_sweep
    from catpose.features.stage import features_cfg

    cfg, feats = ctx.cfg, ctx.arts["features"]
    art = TuneArtifact({}, [])
    for c in ctx.categories:
        # trials align exactly as the alignment stage will (only alpha and tau vary)
        out = ctx.store.sub("tune", c)
        res = run_sweep(
            ctx.section(
                cfg.sweep,
                data=ctx.arts["data"].uri,
                category=c,
                out=out.uri,
                features=feats.uri,
                trial=cfg.align.search,
                device=ctx.section(cfg.align).device,
            ),
            features=features_cfg(ctx),
        )
        art.best[c] = res["best"]
        top = res["rows"][0]
        art.rows.append(
            {
                "category": c,
                **res["best"],
                "cycle_deg": top["cycle_deg"],
                "trials": len(res["rows"]),
                **({"acc_pi_6": top["acc_pi_6"]} if "acc_pi_6" in top else {}),
            }
        )
        ctx.plot(f"sweep_{c}.png", out.read_bytes("sweep_heatmaps.png"))
    return art


def _tune_section(a: TuneArtifact) -> list[str]:
    lines = ["## α/τ sweep (chosen without labels)", "", "| category | α | τ | cycle error | trials |",
             "|---|---|---|---|---|"]
    lines += [f"| {r['category']} | {r['alpha']:.2f} | {r['tau']:.3g} | {r['cycle_deg']:.2f}° | "
              f"{r['trials']} |"
              for r in a.rows]
    return lines + [""] + [f"![sweep {r['category']}](plots/sweep_{r['category']}.png)" for r in a.rows]


# ------------------------------------------------------------------------------------------ the alignment
def _align_run(ctx: Ctx) -> AlignArtifact:
    from catpose.align.evaluate import evaluate_alignment
    from catpose.align.run import run_align

    cfg, feats, data = ctx.cfg, ctx.arts["features"], ctx.arts["data"]
    best = ctx.arts["tune"].best if "tune" in ctx.arts else {}
    art = AlignArtifact({}, [])
    for c in ctx.categories:
        out = ctx.store.sub("align", c)
        acfg = ctx.section(cfg.align, data=data.uri, category=c, out=out.uri, features=feats.uri,
                           search=dataclasses.replace(cfg.align.search, **best.get(c, {})))
        # the features stage's store as it is, refused if made with other settings than the run's
        res = run_align(acfg, made_with=feats.signature)
        art.tables[c] = out.uri
        row = {"category": c, "videos": res["videos"], "pairs": res["pairs"], "reference": res["reference"],
               "failed_chunks": len(res["failed_chunks"]), "failed_pairs": len(res["failed_pairs"]),
               "ambiguous": res.get("ambiguous", [])}
        if data.ground_truth:
            for key, fname in (("sync", "alignment.parquet"), ("paths", "alignment_paths.parquet")):
                r = evaluate_alignment(out.url(fname), data.uri, c, endpoint_url=cfg.endpoint_url,
                                       plot=ctx.store.url("plots", f"alignment_errors_{c}_{key}.png"))
                row[key] = {k: r[k] for k in ("acc_pi_6", "acc_pi_18", "median_deg")}
        art.rows.append(row)
        ctx.plot(f"aligned_clouds_{c}.png", out.read_bytes("aligned_clouds.png"))
    return art


ALIGN_HEADER = ["| category | videos | pairs | Acc@π/6 | Acc@π/18 | median error | without sync: Acc@π/6 | "
                "median |",
                "|---|---|---|---|---|---|---|---|"]


def _align_rows(a: AlignArtifact) -> list[str]:
    out = []
    for r in a.rows:
        if "sync" in r:
            s, p = r["sync"], r["paths"]
            out.append(f"| {r['category']} | {r['videos']} | {r['pairs']} | {s['acc_pi_6']:.1%} | "
                       f"{s['acc_pi_18']:.1%} | {s['median_deg']:.1f}° | {p['acc_pi_6']:.1%} | "
                       f"{p['median_deg']:.1f}° |")
        else:
            out.append(f"| {r['category']} | {r['videos']} | {r['pairs']} | n/a | n/a | n/a | | |")
    return out


def _align_section(a: AlignArtifact) -> list[str]:
    return ["## Alignment into one reference frame per category", "", *ALIGN_HEADER, *_align_rows(a),
            *_align_ambiguous(a), ""] + [
        f"![aligned {r['category']}](plots/aligned_clouds_{r['category']}.png)" for r in a.rows]


def _align_ambiguous(a: AlignArtifact) -> list[str]:
    parts = [f"{r['category']}: {', '.join(r['ambiguous'])}" for r in a.rows if r.get("ambiguous")]
    return (
        [
            "",
            f"No majority of pairs agrees with the rotation of {'; '.join(parts)} "
            "(training leaves them out).",
        ]
        if parts
        else []
    )


def _align_table(a: AlignArtifact) -> list[str]:
    return [*ALIGN_HEADER, *_align_rows(a), *_align_ambiguous(a),
            "Reading: Acc@π/6 is the share of videos whose rotation into the common frame is within 30° of "
            "the "
            "truth (ground truth: the generator's or the fitted cameras' frames, up to one global rotation; "
            "n/a "
            "without it); good: close to 100 %, with synchronisation at least as good as without it."]


def _align_headline(a: AlignArtifact) -> str | None:
    parts = [f"{r['category']} {r['sync']['acc_pi_6']:.0%} (without sync {r['paths']['acc_pi_6']:.0%})"
             for r in a.rows if "sync" in r]
    return ("alignment Acc@π/6: " + ", ".join(parts)) if parts else None


STAGES = [
    Stage(
        "tune",
        ("features",),
        TuneArtifact,
        lambda c: {**what(c.sweep), **what(c.align)},
        _tune_run,
        _tune_section,
        results=lambda a: {"tune": a.rows},
        included=lambda c: c.tune,
    ),
    # the sweep's choice is an input when the run sweeps (an input no stage of the run provides is left out)
    Stage(
        "align",
        ("features", "tune"),
        AlignArtifact,
        lambda c: what(c.align),
        _align_run,
        _align_section,
        _align_table,
        _align_headline,
        results=lambda a: {"align": a.rows},
    ),
]
