"""PASCAL3D+ by the paper's protocol (catpose.pose.protocol): the ImageNet val split, one object per image,
OccludedPASCAL3D+'s levels L1-L3, and the multi-category table next to the paper's numbers — on tiny
stand-ins written in the datasets' own formats (PASCAL3D+ ``record`` .mat files, OccludedPASCAL3D+
lists and per-image .npz files as its Process_anno step saves them)."""

import json
import shutil

import numpy as np
import pytest
import scipy.io
from PIL import Image

from catpose.cli import main
from catpose.config import WildConfig
from catpose.pose.protocol import (
    PAPER_CATEGORIES,
    categories,
    load_pascal3d_paper,
    occluded_share,
    paper_split,
    same_category,
    summary_table,
)
from catpose.pose.viewpoint import viewpoint_to_rotation
from catpose.pose.wild import generate_wild

from .test_datasets import _objects, _vp


def _occluded(root, cat, level, name, image, share):
    """One OccludedPASCAL3D+ image at ``level`` (k = 1..3): the image with a grey occluder over ``share``
    of the object's box, its list line and its .npz (the fields Process_anno.py saves)."""
    folder = f"{cat}FGL{level}_BGL{level}"
    occ = root.parent / "OccludedPASCAL3D"
    for d in ("images", "annotations"):
        (occ / d / folder).mkdir(parents=True, exist_ok=True)
    (occ / "lists").mkdir(exist_ok=True)
    img = np.array(Image.open(image).convert("RGB"))
    H, W = img.shape[:2]
    mask = np.zeros((H, W), bool)
    mask[H // 4:3 * H // 4, W // 4:3 * W // 4] = True
    occluder = np.zeros((H, W), bool)
    rows = round(share * (H // 2))
    occluder[H // 4:H // 4 + rows, :] = True
    img[occluder] = 128
    Image.fromarray(img).save(occ / "images" / folder / f"{name}.JPEG")
    with open(occ / "lists" / f"{folder}.txt", "a") as fh:
        fh.write(f"{name}.JPEG\n")
    np.savez(
        occ / "annotations" / folder / f"{name}.npz",
        source=f"../PASCAL3D+/Images/{cat}_imagenet/{name}.JPEG",
        mask=mask,
        box=np.array([H // 4, 3 * H // 4, W // 4, 3 * W // 4, H, W]),
        occluder_mask=occluder,
        occluder_box=np.array([[H // 4, H // 4 + rows, 0, W, H, W]]),
        category=cat,
        occluder_level=str(level),
    )
    return occ


def test_the_paper_split_one_object_images_and_occlusion_levels(tmp_path):
    root = tmp_path / "PASCAL3D+"
    ann, img = root / "Annotations" / "car_imagenet", root / "Images" / "car_imagenet"
    ann.mkdir(parents=True)
    img.mkdir(parents=True)
    (root / "Image_sets").mkdir()
    for n, (a, e, t) in {"n0001": (30.0, 10.0, 2.0), "n0002": (200.0, 20.0, -3.0)}.items():
        Image.new("RGB", (80, 60), (90, 60, 30)).save(img / f"{n}.JPEG")
        scipy.io.savemat(ann / f"{n}.mat", {"record": {"filename": f"{n}.JPEG", "objects": _objects(
            ("car", np.array([21.0, 16.0, 60.0, 45.0]), _vp(a, e, t), 0, 0, 0))}})
    Image.new("RGB", (80, 60)).save(img / "n0003.JPEG")  # two cars: not in the protocol
    scipy.io.savemat(ann / "n0003.mat", {"record": {"filename": "n0003.JPEG", "objects": _objects(
        ("car", np.array([1.0, 1.0, 30.0, 30.0]), _vp(10.0, 5.0, 0.0), 0, 0, 0),
        ("car", np.array([40.0, 20.0, 70.0, 50.0]), _vp(90.0, 5.0, 0.0), 0, 0, 0))}})
    scipy.io.savemat(
        ann / "n0004.mat",
        {
            "record": {
                "filename": "n0004.JPEG",
                "objects": _objects(  # train split
                    ("car", np.array([1.0, 1.0, 30.0, 30.0]), _vp(10.0, 5.0, 0.0), 0, 0, 0)
                ),
            }
        },
    )
    (root / "Image_sets" / "car_imagenet_val.txt").write_text("n0001\nn0002\nn0003\n")

    samples, problems = load_pascal3d_paper(root, "car", "L0")
    assert [s.name for s in samples] == ["n0001#0", "n0002#0"]
    np.testing.assert_allclose(samples[1].R, viewpoint_to_rotation(200.0, 20.0, -3.0), atol=1e-12)
    assert problems == [
        {
            "item": "n0003",
            "error": f"{ann / 'n0003.mat'}: 2 objects; the protocol keeps images of one object",
            "field": "record.objects",
        }
    ]
    occ = _occluded(root, "car", 2, "n0001", img / "n0001.JPEG", 0.5)
    _occluded(root, "car", 2, "n0002", img / "n0002.JPEG", 0.4)
    samples, problems = load_pascal3d_paper(root, "car", "L2")
    assert [s.name for s in samples] == ["n0001#0", "n0002#0"] and problems == []
    assert samples[0].image == str(occ / "images" / "carFGL2_BGL2" / "n0001.JPEG")
    assert [s.meta["occluded_share"] for s in samples] == [0.5, 0.4] and samples[0].meta["level"] == "L2"
    # PASCAL3D+'s pose
    np.testing.assert_allclose(samples[0].R, viewpoint_to_rotation(30.0, 10.0, 2.0), atol=1e-12)
    # an .npz holding a pickled object array is refused, naming the file; a missing level is named
    bad = occ / "annotations" / "carFGL2_BGL2" / "n0002.npz"
    np.savez(bad, mask=np.array([[1]], dtype=object), occluder_mask=np.zeros((1, 1), bool))
    _, problems = load_pascal3d_paper(root, "car", "L2")
    assert len(problems) == 1 and str(bad) in problems[0]["error"] and "plain-array" in problems[0]["error"]
    with pytest.raises(FileNotFoundError, match="carFGL3_BGL3.txt"):
        load_pascal3d_paper(root, "car", "L3")
    with pytest.raises(ValueError):
        occluded_share(tmp_path / "missing.npz")


def test_split_and_category_specs():
    assert paper_split("paper") == ["L0"] and paper_split("paper-occ") == ["L0", "L1", "L2", "L3"]
    assert paper_split("paper-L3") == ["L3"] and paper_split("car_imagenet_val.txt") is None
    with pytest.raises(ValueError, match="paper-occ"):
        paper_split("paper-L4")
    assert categories("paper", "pascal3d") == list(PAPER_CATEGORIES) and len(PAPER_CATEGORIES) == 7
    assert categories("car, bus", "objectnet3d") == ["car", "bus"]
    with pytest.raises(ValueError, match="comma list"):
        categories("paper", "objectnet3d")
    assert (
        same_category("motorcycle", "motorbike")
        and same_category("couch", "sofa")
        and not same_category("car", "bus")
    )


def _res(acc, n=10):
    return {"methods": {"catpose (features + render-and-compare)": {"acc_pi_6": acc}}, "scored": n}


def test_summary_table_next_to_the_papers_numbers():
    rows = {c: {"L0": _res(0.5 + 0.05 * i), "L1": _res(0.4)} for i, c in enumerate(PAPER_CATEGORIES)}
    rows["sofa"]["L1"] = {"error": "FileNotFoundError: no sofa L1 list"}
    t = summary_table(rows)
    assert "| category | L0 | L1 |" in t and "| car | 60.0% (10) | 40.0% (10) |" in t
    assert "| sofa | 75.0% (10) | failed: FileNotFoundError: no sofa L1 list |" in t
    assert "| **mean of 7** | **65.0%** | **40.0%** (6 of 7) |" in t
    assert (
        "| ours (paper) | 69.2 % |" in t and "| ZSP | 46.0 % |" in t and "| VoGE (supervised) | 90.9 % |" in t
    )
    assert "(not the categories above)" not in t
    assert "(not the categories above)" in summary_table({"car": {"L0": _res(1.0)}})


def test_evaluate_by_the_protocol_from_the_cli(run_dir, tmp_path, capsys):
    """`catpose evaluate --dataset pascal3d --split paper-occ`: every level scored, the table printed and
    written; a category without a trained run is named in its cells and the others go on."""
    wild = tmp_path / "wild"
    generate_wild(WildConfig(out=wild, images=3, width=96, height=80), progress=False)
    root = tmp_path / "PASCAL3D+"
    shutil.copytree(wild / "Annotations" / "car_synth", root / "Annotations" / "car_imagenet")
    shutil.copytree(wild / "Images" / "car_synth", root / "Images" / "car_imagenet")
    names = sorted(p.stem for p in (root / "Annotations" / "car_imagenet").glob("*.mat"))
    (root / "Image_sets").mkdir()
    (root / "Image_sets" / "car_imagenet_val.txt").write_text("".join(f"{n}\n" for n in names))
    for k, share in ((1, 0.3), (2, 0.5), (3, 0.7)):
        for n in names:
            _occluded(root, "car", k, n, root / "Images" / "car_imagenet" / f"{n}.jpg", share)
    out = tmp_path / "eval"
    args = ["evaluate", "--dataset", "pascal3d", "--root", str(root), "--out", str(out), "--pose.grid", "256",
            "--pose.refine-steps", "2", "--overlays", "0", "--no-baseline"]
    assert main([*args, "--checkpoint", str(run_dir), "--category", "car", "--split", "paper-occ"]) == 0
    printed = capsys.readouterr().out
    assert "| category | L0 | L1 | L2 | L3 |" in printed and "| ours (paper) | 69.2 % |" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["car"]) == {"L0", "L1", "L2", "L3"} and all(
        v["scored"] == 3 for v in summary["car"].values()
    )
    res = json.loads((out / "car" / "L3" / "evaluation.json").read_text())
    assert res["dataset"] == "pascal3d" and res["objects"] == 3
    assert (out / "summary.md").read_text() in printed

    template = str(run_dir.parent / "train-{co3d}")  # one run per category: bicycle has none
    assert main([*args, "--checkpoint", template, "--category", "bicycle,car", "--split", "paper"]) == 0
    t = capsys.readouterr().out
    assert "| bicycle | failed: " in t and "| car | " in t and "(1 of 2)" in t
    # several categories and one run: an error naming the flag, before any work
    assert main([*args, "--checkpoint", str(run_dir), "--category", "bicycle,car", "--split", "paper"]) == 2
    assert "{category}" in capsys.readouterr().err
