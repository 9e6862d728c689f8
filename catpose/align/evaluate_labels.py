"""``catpose eval-align --labels co3d-paper``: an alignment of real CO3D videos scored against the paper's
hand-labelled canonical frames (:mod:`catpose.data.labels`), by the paper's protocol.

Conventions: an alignment gives each video i a rotation ``A_i`` (its world frame -> the alignment's
reference frame; catpose's ``alignment.parquet`` or od3d's ``aligned_*/r<k>/.../tform_obj.pt``, whose
scale is divided out); a label gives ``L_i`` (world -> canonical).

The paper's protocol (as od3d's ``NeMo_Align3D`` evaluates it): for every ordered pair (r, s), r != s,
of labelled videos of a category, the predicted relative rotation ``A_rᵀ A_s`` (s's world -> r's world)
against the labelled one ``L_rᵀ L_s``; Acc@30°, Acc@15° (od3d's pi/12) and Acc@10° over the pairs.
This score needs no fitted frame: any one global rotation G applied to every ``A_i`` cancels in
``A_rᵀ A_s``, which is how a label-free reference frame is compared with the labelled canonical frame.
Also reported (``frame_*``): per-video errors after fitting that one global rotation explicitly
(:func:`catpose.geometry.fit_frame`, the rotation most videos agree with), the protocol of
``catpose eval-align`` on synthetic data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from catpose.geometry import fit_frame, geodesic_deg


def pairwise_errors(
    est: dict[str, np.ndarray], labels: dict[str, np.ndarray]
) -> dict[tuple[str, str], float]:
    """Geodesic errors (degrees) of every ordered pair (r, s), r != s, of the videos in both dicts
    between ``A_rᵀ A_s`` and ``L_rᵀ L_s`` (rotations [3, 3]; see the module docstring)."""
    names = sorted(set(est) & set(labels))
    if len(names) < 2:
        return {}
    A = np.stack([est[n] for n in names])
    L = np.stack([labels[n] for n in names])
    P = np.einsum("rji,sjk->rsik", A, A)  # A_rᵀ A_s [n, n, 3, 3]
    G = np.einsum("rji,sjk->rsik", L, L)
    E = geodesic_deg(P, G)
    return {
        (names[r], names[s]): float(E[r, s]) for r in range(len(names)) for s in range(len(names)) if r != s
    }


def frame_errors(est: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict[str, float]:
    """Per-video errors (degrees) after one robustly fitted global rotation Q with ``L_i ≈ Q A_i``."""
    names = sorted(set(est) & set(labels))
    if not names:
        return {}
    A = np.stack([est[n] for n in names])
    L = np.stack([labels[n] for n in names])
    return dict(zip(names, geodesic_deg(fit_frame(A, L) @ A, L).tolist()))


def _acc(e: np.ndarray, deg: float) -> float:
    return float((e < deg).mean()) if len(e) else float("nan")


def score_category(est: dict[str, np.ndarray], labels: dict[str, np.ndarray]) -> dict:
    """One category's row: labelled videos present, pairs, Acc@30/15/10 and median over pairs (the
    paper's protocol) and over videos after one fitted rotation (``frame_*``), the per-pair errors."""
    pe = pairwise_errors(est, labels)
    fe = frame_errors(est, labels)
    p = np.asarray(list(pe.values()), np.float64)
    f = np.asarray(list(fe.values()), np.float64)
    return {"videos": len(fe), "pairs": len(pe),
            "acc30": _acc(p, 30), "acc15": _acc(p, 15), "acc10": _acc(p, 10),
            "median_deg": float(np.median(p)) if len(p) else float("nan"),
            "frame_acc30": _acc(f, 30), "frame_acc15": _acc(f, 15),
            "frame_median_deg": float(np.median(f)) if len(f) else float("nan"),
            "missing": sorted(set(labels) - set(est)),
            "pair_errors": {f"{r}->{s}": v for (r, s), v in pe.items()}, "video_errors": fe}


def score_alignments(est_by_cat: dict[str, dict[str, np.ndarray]], which: str = "co3d-paper") -> dict:
    """Rows per category (the categories of the alignment that have labels) and their mean (``mean``:
    the paper's averaging, per category then over categories)."""
    from catpose.data.labels import paper_labels

    labels = paper_labels(which)
    rows = {c: score_category(est, labels[c]) for c, est in sorted(est_by_cat.items()) if c in labels}
    scored = [r for r in rows.values() if r["pairs"]]
    mean = {k: float(np.mean([r[k] for r in scored])) if scored else float("nan")
            for k in ("acc30", "acc15", "acc10", "median_deg", "frame_acc30", "frame_acc15")}
    return {"labels": which, "categories": rows, "mean": mean,
            "unlabelled_categories": sorted(set(est_by_cat) - set(labels))}


def read_od3d_alignment(folder: str | Path) -> dict[str, dict[str, np.ndarray]]:
    """``{category: {sequence: rotation}}`` of an od3d alignment folder (``.../aligned_<name>/r<k>``, or
    any folder with ``<category>/<sequence>/tform_obj.pt`` under one ``meta_mask/meta``), read without
    pickle (:mod:`catpose.data.labels.od3d`); each similarity's scale is divided out."""
    from catpose.data.labels.od3d import read_transform, scan_od3d_folder, transform_rotation

    return {c: {s: transform_rotation(read_transform(p)) for s, p in seqs.items()}
            for c, seqs in scan_od3d_folder(folder).items()}


def read_catpose_alignments(path: str | Path, category: str | None = None,
                            endpoint_url: str | None = None) -> dict[str, dict[str, np.ndarray]]:
    """``{category: {sequence: rotation}}`` from an ``alignment.parquet`` / the ``--out`` of ``catpose
    align`` (its category: ``category``), or a folder of ``<category>/alignment.parquet``."""
    from catpose.align.table import read_alignment

    p = Path(path)
    if p.is_dir() and not (p / "alignment.parquet").exists():
        subs = sorted(q.parent for q in p.glob("*/alignment.parquet"))
        if not subs:
            from catpose.errors import MissingFileError

            raise MissingFileError(str(p), "alignment.parquet (or <category>/alignment.parquet)")
        return {q.name: {k: T.R for k, T in read_alignment(q, endpoint_url)[0].items()} for q in subs}
    if not category:
        raise ValueError(f"{path}: one alignment table; name its category with --category")
    return {category: {k: T.R for k, T in read_alignment(path, endpoint_url)[0].items()}}


def format_table(res: dict, name: str = "this alignment") -> str:
    """Markdown: one row per category, the mean, then the paper's published numbers for comparison."""
    from catpose.data.labels import paper_results

    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}"

    lines = [(f"Scored against the paper's labels ({res['labels']}): pairs of labelled videos, "
              "relative rotation (the paper's protocol)"), "",
             "| category | videos | pairs | Acc@30 | Acc@15 | Acc@10 | median (deg) | per-video Acc@30 (1 "
             "fitted rotation) |",
             "|---|---|---|---|---|---|---|---|"]
    for c, r in res["categories"].items():
        lines.append(f"| {c} | {r['videos']} | {r['pairs']} | {pct(r['acc30'])} | {pct(r['acc15'])} | "
                     f"{pct(r['acc10'])} | {r['median_deg']:.1f} | {pct(r['frame_acc30'])} |")
    m = res["mean"]
    lines.append(f"| **mean** | | | {pct(m['acc30'])} | {pct(m['acc15'])} | {pct(m['acc10'])} | "
                 f"{m['median_deg']:.1f} | {pct(m['frame_acc30'])} |")
    pr = paper_results()["co3d_alignment"]
    cats20 = [c for c in pr["categories"] if c in res["categories"] and res["categories"][c]["pairs"]]
    if cats20:
        a30 = np.mean([res["categories"][c]["acc30"] for c in cats20])
        a15 = np.mean([res["categories"][c]["acc15"] for c in cats20])
        lines += [
            "",
            f"Side by side with the paper (CO3D video alignment, Acc@30 / Acc@15 in %; {pr['what']}):",
            "",
            "| method | categories | Acc@30 | Acc@15 |",
            "|---|---|---|---|",
            f"| {name} | {len(cats20)} of the paper's 20 | {100 * a30:.1f} | {100 * a15:.1f} |",
        ]
        for meth, v in pr["methods"].items():
            lines.append(f"| {meth} (published) | 20 | {v['acc30']:.1f} | {v['acc15']:.1f} |")
    return "\n".join(lines)
