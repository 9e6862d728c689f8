"""PASCAL3D+ and ObjectNet3D scored by the paper's protocol, and the multi-category table next to its numbers.

The paper (Sommer et al., CVPR 2024) scores in-the-wild pose on **7 PASCAL3D+ categories** — bicycle,
bus, car, chair, motorbike, sofa, tvmonitor (in CO3D's names: bicycle, bus, car, chair, motorcycle,
couch, tv; the list its code, od3d, evaluates ``pascal3d_test`` on) — on PASCAL3D+'s **val split of the
ImageNet subset** (``Image_sets/<cat>_imagenet_val.txt``), one object per image (an image with several
annotated objects is left out and named, as the OccludedPASCAL3D+ benchmark builds its levels from the
same images), objects with a fine viewpoint only (``distance > 0``), reported as Acc@π/6 averaged over
the categories: ours 69.2, ZSP 46.0, supervised VoGE 90.9 (``catpose/data/labels/paper_results.json``).

Occlusion levels as NeMo and OOD-CV use them: **L0** is the unoccluded val split above; **L1, L2, L3** are
OccludedPASCAL3D+'s foreground levels ``FGL1_BGL1``, ``FGL2_BGL2``, ``FGL3_BGL3`` (20-40 %, 40-60 %,
60-80 % of the object covered by pasted occluders, made from the same val images). Their files, under
``<root>/OccludedPASCAL3D`` or next to ``<root>``::

    lists/<cat>FGL<k>_BGL<k>.txt                  one image file name a line (``<id>.JPEG``)
    images/<cat>FGL<k>_BGL<k>/<id>.JPEG
    annotations/<cat>FGL<k>_BGL<k>/<id>.npz        source, mask, box, occluder_mask, occluder_box, ...

The pose of an occluded image is its PASCAL3D+ annotation's (``Annotations/<cat>_imagenet/<id>.mat``); the
``.npz`` gives the measured occluded share (``occluder_mask`` over ``mask``), read without pickle.

``catpose evaluate --dataset pascal3d --split paper`` (L0), ``--split paper-L2`` (one level) or
``--split paper-occ`` (L0-L3) with ``--category paper`` (the 7) or a comma list, and a ``--checkpoint``
holding ``{category}`` (the dataset's class name) or ``{co3d}`` (CO3D's) for one trained run per category.
ObjectNet3D: ``--split paper`` is its ``test`` list (od3d's ``objectnet3d_test``); categories are named.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from catpose.errors import DataFormatError
from catpose.pose.datasets import PoseSample, _objects, _read_list, read_record

PAPER_CATEGORIES = ("bicycle", "bus", "car", "chair", "motorbike", "sofa", "tvmonitor")
"""The paper's 7 PASCAL3D+ categories (PASCAL3D+ class names)."""
CO3D_NAMES = {
    "bicycle": "bicycle",
    "bus": "bus",
    "car": "car",
    "chair": "chair",
    "motorbike": "motorcycle",
    "sofa": "couch",
    "tvmonitor": "tv",
    "aeroplane": "airplane",
    "bottle": "bottle",
    "train": "train",
    "boat": "boat",
    "diningtable": "dining_table",
}
"""PASCAL3D+ class name → CO3D (and od3d) category name."""
LEVELS = ("L0", "L1", "L2", "L3")
OCCLUDED_DIR = "OccludedPASCAL3D"


def co3d_name(category: str) -> str:
    return CO3D_NAMES.get(category.lower(), category.lower())


def same_category(trained: str, dataset_class: str) -> bool:
    """Whether a run trained on ``trained`` (a CO3D name) is scored on its own class ``dataset_class``."""
    t, d = str(trained).lower(), str(dataset_class).lower()
    return t == d or co3d_name(d) == t


def paper_split(split: str | None) -> list[str] | None:
    """The occlusion levels a ``--split`` asks for (None: not the paper's protocol)."""
    if not split or not split.startswith("paper"):
        return None
    if split == "paper":
        return ["L0"]
    if split == "paper-occ":
        return list(LEVELS)
    lvl = split[len("paper-"):]
    if split.startswith("paper-") and lvl in LEVELS:
        return [lvl]
    raise ValueError(f"--split {split!r}: the paper's protocol is paper (L0), paper-L0..paper-L3 or "
                     "paper-occ "
                     "(every level)")


def categories(spec: str, dataset: str) -> list[str]:
    """``--category``: one class, a comma list, or ``paper`` (PASCAL3D+: the paper's 7)."""
    if spec == "paper":
        if dataset != "pascal3d":
            raise ValueError("--category paper: the paper's category list is PASCAL3D+'s; name the "
                             f"{dataset} "
                             "categories (a comma list)")
        return list(PAPER_CATEGORIES)
    return [c.strip() for c in spec.split(",") if c.strip()]


def occluded_root(root: Path) -> Path:
    for cand in (root / OCCLUDED_DIR, root.parent / OCCLUDED_DIR):
        if (cand / "lists").is_dir():
            return cand
    raise FileNotFoundError("occlusion levels L1-L3 need OccludedPASCAL3D+ (its lists/, images/, "
                            "annotations/) "
                            f"at {root / OCCLUDED_DIR} or {root.parent / OCCLUDED_DIR}")


def occluded_share(path: Path) -> float:
    """The share of the object's mask covered by occluders, from an OccludedPASCAL3D+ ``.npz`` (no pickle)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            mask, occ = np.asarray(z["mask"]) > 0, np.asarray(z["occluder_mask"]) > 0
    except KeyError as e:
        raise DataFormatError(str(path), "missing array", field=str(e.args[0])) from e
    except ValueError as e:  # an object array (pickled) is refused
        raise DataFormatError(str(path), f"not a plain-array .npz ({e})") from e
    except Exception as e:  # zipfile/format errors of a truncated file
        raise DataFormatError(str(path), f"not a readable .npz file ({type(e).__name__}: {e})") from e
    if mask.shape != occ.shape:
        raise DataFormatError(str(path), f"mask is {mask.shape}, occluder_mask "
                                         f"{occ.shape}", field="occluder_mask")
    return float((mask & occ).sum() / max(1, mask.sum()))


def load_pascal3d_paper(
    root: str | Path, category: str, level: str = "L0"
) -> tuple[list[PoseSample], list[dict]]:
    """The objects of ``category`` at occlusion ``level`` by the paper's protocol (module docstring)."""
    root = Path(root)
    ann_dir = root / "Annotations" / f"{category}_imagenet"
    lst = root / "Image_sets" / f"{category}_imagenet_val.txt"
    if not ann_dir.is_dir():
        raise FileNotFoundError(f"{ann_dir}: not a PASCAL3D+ folder with the {category} ImageNet subset")
    if not lst.is_file():
        raise FileNotFoundError(f"{lst}: the val split of the paper's protocol is missing")
    if level == "L0":
        names, image_dir, occ_dir = _read_list(lst), root / "Images" / f"{category}_imagenet", None
    else:
        occ = occluded_root(root)
        folder = f"{category}FGL{level[1]}_BGL{level[1]}"
        ol = occ / "lists" / f"{folder}.txt"
        if not ol.is_file():
            raise FileNotFoundError(f"{ol}: no {level} list of {category}")
        names = [Path(n).stem for n in _read_list(ol)]
        image_dir, occ_dir = occ / "images" / folder, occ / "annotations" / folder
    samples: list[PoseSample] = []
    problems: list[dict] = []
    for n in names:
        path = ann_dir / f"{n}.mat"
        if not path.is_file():
            problems.append({"item": n, "error": f"annotation not found: {path}"})
            continue
        try:
            _, objs = read_record(path)
        except DataFormatError as e:
            problems.append({"item": n, "error": str(e)})
            continue
        if len(objs) != 1:
            problems.append(
                {
                    "item": n,
                    "error": f"{path}: {len(objs)} objects; the protocol keeps images of one object",
                    "field": "record.objects",
                }
            )
            continue
        got: list[PoseSample] = []
        _objects(path, image_dir, category, n, False, got, problems, exts=(".JPEG", ".jpg", ".png"))
        share = None
        if occ_dir is not None and got:
            try:
                share = occluded_share(occ_dir / f"{n}.npz")
            except (DataFormatError, FileNotFoundError, OSError) as e:
                problems.append({"item": n, "error": str(e)})
                continue
        for s in got:
            s.meta.update(
                {"level": level, **({"occluded_share": round(share, 4)} if share is not None else {})}
            )
            s.mask = None  # PASCAL3D+'s own masks are not the protocol's input
        samples += got
    return samples, problems


def paper_numbers() -> dict:
    path = Path(__file__).resolve().parents[1] / "data" / "labels" / "paper_results.json"
    return json.loads(path.read_text())["pascal3d"]["methods"]


def summary_table(rows: dict[str, dict[str, dict]], dataset: str = "pascal3d") -> str:
    """The multi-category table: per category and level Acc@π/6 (objects scored), the mean over the
    categories, and (PASCAL3D+) the paper's published means at L0 next to it. ``rows``:
    category → level → an ``evaluation.json`` (or ``{"error": ...}``)."""
    levels = [lv for lv in LEVELS if any(lv in r for r in rows.values())] or ["L0"]
    key = "catpose (features + render-and-compare)"
    lines = [f"### {dataset} by the paper's protocol: Acc@π/6 (objects scored)", "",
             "| category | " + " | ".join(levels) + " |", "|---|" + "---|" * len(levels)]
    means: dict[str, list[float]] = {lv: [] for lv in levels}
    for cat, r in rows.items():
        cells = []
        for lv in levels:
            res = r.get(lv)
            if res is None:
                cells.append("–")
            elif "error" in res:
                cells.append(f"failed: {res['error'][:60]}")
            else:
                acc = res["methods"][key]["acc_pi_6"]
                means[lv].append(acc)
                cells.append(f"{acc:.1%} ({res['scored']})")
        lines.append(f"| {cat} | " + " | ".join(cells) + " |")
    n = len(rows)
    lines.append(f"| **mean of {n}** | " + " | ".join(
        f"**{np.mean(means[lv]):.1%}**" + (f" ({len(means[lv])} of {n})" if len(means[lv]) < n else "")
        if means[lv] else "–" for lv in levels) + " |")
    if dataset == "pascal3d":
        got = sorted(rows) == sorted(PAPER_CATEGORIES)
        lines += [
            "",
            f"The paper's means over its 7 categories at L0{'' if got else ' (not the categories above)'}:",
            "",
            "| method | Acc@π/6 |",
            "|---|---|",
        ]
        lines += [f"| {m} | {v['acc30']:.1f} % |" for m, v in paper_numbers().items()]
    return "\n".join(lines) + "\n"
