"""Issue 34, finding 2: a category or sequence name read from annotations, raw-frame folders or the
config never becomes a path outside the store. A bad name costs its video (named with the file, the
record and the field in the manifest); the other videos go on, and ``catpose info`` reports it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from PIL import Image

from catpose.config import IngestConfig
from catpose.data.ingest import ingest
from catpose.features.runner import run_features
from catpose.manifest import Manifest

from .conftest import edit_records, fast_features

CATPOSE = [sys.executable, "-m", "catpose.cli"]


def _cli(*args):
    return subprocess.run([*CATPOSE, *map(str, args)], capture_output=True, text=True, timeout=600)


def test_a_climbing_sequence_name_costs_its_video_only(data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    evil = f"../../../../../../../../{elsewhere}/evil"

    def rename(recs):
        for r in recs:
            if r["sequence_name"] == "car_0001":
                r["sequence_name"] = evil

    recs = edit_records(data / "car" / "frame_annotations.jgz", rename)
    first = next(i for i, r in enumerate(recs) if r["sequence_name"] == evil)
    out = tmp_path / "features"
    mans = run_features(fast_features(data, out), progress=False)
    assert not elsewhere.exists() and not list(tmp_path.rglob("evil*"))
    man = mans["car"]
    assert man.keys_with("ok") == ["car_0000", "car_0002"]
    (bad,) = man.skipped.values()
    assert "frame_annotations.jgz" in bad and f"frame_annotations[{first}].sequence_name" in bad
    assert "not a plain name" in bad
    # the manifest on disk says so too (a reader of the store sees it)
    stored = Manifest.load_or_new(out / "car" / "_manifest.json", "features")
    assert list(stored.skipped.values()) == [bad]
    info = _cli("info", "--data", data, "--category", "car")
    assert info.returncode == 1, info.stdout + info.stderr
    assert "not a plain name" in info.stdout and "frame_annotations.jgz" in info.stdout


def test_a_path_in_a_record_never_points_outside_the_dataset(data, tmp_path):
    secret = tmp_path / "secret.png"
    Image.fromarray(np.zeros((96, 96), np.uint8)).save(secret)

    def repoint(recs):
        recs[0]["mask"]["path"] = "../" * 12 + str(secret).lstrip("/")

    recs = edit_records(data / "car" / "frame_annotations.jgz", repoint)
    info = _cli("info", "--data", data, "--category", "car")
    assert info.returncode == 1
    assert "frame_annotations[0] (sequence" in info.stdout and ".mask.path'" in info.stdout
    assert "not a plain relative path" in info.stdout
    assert f"{recs[0]['sequence_name']}/{recs[0]['frame_number']}" in info.stdout


def test_config_category_names_are_checked(data, tmp_path):
    for bad in ("../car", ".car", "*", "ca\x01r"):
        res = _cli("features", "--data", data, "--category", bad, "--out", tmp_path / "f", "--workers", 0)
        assert res.returncode == 2, (bad, res.stderr)
        assert "category" in res.stderr and "not a plain name" in res.stderr, res.stderr
    shard = _cli("shard", "--data", data, "--category", "*", "--out", tmp_path / "s")
    assert shard.returncode == 2 and "not a plain name" in shard.stderr
    assert not list((tmp_path / "s").glob("category=*"))


def test_raw_frame_folders_with_bad_names_fail_by_name(tmp_path):
    frames = tmp_path / "raw"
    for name in (".hidden", "new\nline", "x" * 230):
        (frames / name).mkdir(parents=True)
        for k in range(3):
            Image.fromarray(np.full((32, 32, 3), 40 * k, np.uint8)).save(frames / name / f"f{k}.png")
    out = tmp_path / "out"
    man = ingest(IngestConfig(frames=str(frames), out=str(out), category="car", workers=0))
    assert len(man.failed) == 3 and not man.keys_with("ok")
    for err in man.failed.values():
        assert "not a plain name" in err and str(frames) in err
    assert not (out / "car").exists() or not [p for p in (out / "car").iterdir() if p.is_dir()
                                             and not p.name.endswith(".items")]
    bad_cat = _cli("ingest", "--frames", frames, "--out", out, "--category", "../up")
    assert bad_cat.returncode == 2 and "not a plain name" in bad_cat.stderr


def test_a_training_run_name_from_the_config_stays_inside_the_store(tmp_path):
    """``catpose train --name`` and ``--category`` become the run's folder: a name that climbs, hides or
    globs is an error naming the field before any work, and nothing is written outside --out."""
    from catpose.config import TrainConfig
    from catpose.learn.train import run_name

    assert run_name(TrainConfig(category="car")) == "train-car"
    assert run_name(TrainConfig(category="car", name="car-2")) == "car-2"
    outside = tmp_path / "outside"
    for flag, bad in (("--name", f"../../{outside.name}"), ("--name", ".hidden"), ("--name", "a/b"),
                      ("--category", "../car"), ("--category", "*")):
        res = _cli("train", "--data", tmp_path / "shards", "--alignment", tmp_path / "align",
                   "--out", tmp_path / "runs" / "x", flag, bad)
        assert res.returncode == 2, (bad, res.stderr)
        field = flag.removeprefix("--")
        assert f"flags: field '{field}'" in res.stderr and "is not a plain name" in res.stderr, res.stderr
    assert not outside.exists() and not list((tmp_path / "runs").rglob("split.json"))


def test_names_read_from_pose_datasets_stay_inside_them(tmp_path):
    """A PASCAL3D+ record whose ``filename`` climbs out of Images/, an ObjectNet3D image set naming
    ``../x``, and a category or split from the flags that is no plain name: the record is a problem
    naming the file and field, the flags an error; nothing outside the dataset is read."""
    import pytest
    import scipy.io

    from catpose.errors import DataFormatError
    from catpose.pose.datasets import load_objectnet3d, load_pascal3d
    from tests.pose.test_datasets import _objects, _vp

    secret = tmp_path / "secret.JPEG"
    Image.new("RGB", (40, 30)).save(secret)
    root = tmp_path / "p3d"
    ann, img = root / "Annotations" / "car_imagenet", root / "Images" / "car_imagenet"
    ann.mkdir(parents=True)
    img.mkdir(parents=True)
    obj = _objects(("car", np.array([2.0, 3.0, 20.0, 20.0]), _vp(30.0, 10.0, 0.0), 0, 0, 0))
    scipy.io.savemat(ann / "n1.mat", {"record": {"filename": "../../../secret.JPEG", "objects": obj}})
    Image.new("RGB", (40, 30)).save(img / "n2.JPEG")
    scipy.io.savemat(ann / "n2.mat", {"record": {"filename": "n2.JPEG", "objects": obj}})
    samples, problems = load_pascal3d(root, "car")
    assert [s.name for s in samples] == ["n2#0"] and all("secret" not in s.image for s in samples)
    assert (
        problems[0]["item"] == "n1" and f"{ann / 'n1.mat'}: field 'record.filename'" in problems[0]["error"]
    )
    assert "'../../../secret.JPEG' is not a plain name" in problems[0]["error"]
    for kw in ({"category": "../car"}, {"category": "*"}, {"category": "car", "split": "../list.txt"},
               {"category": "car", "sources": ("../x",)}):
        with pytest.raises(DataFormatError, match="flags: field .* is not a plain name"):
            load_pascal3d(root, **kw)
    on3d = tmp_path / "on3d"
    for d in ("Annotations", "Images", "Image_sets"):
        (on3d / d).mkdir(parents=True)
    scipy.io.savemat(tmp_path / "up.mat", {"record": {"filename": "n2.JPEG", "objects": obj}})
    (on3d / "Image_sets" / "val.txt").write_text("../../up\n")
    samples, problems = load_objectnet3d(on3d, "car")
    assert samples == [] and problems[0]["item"] == "'../../up'"
    assert (
        f"{on3d / 'Image_sets' / 'val.txt'}: annotation name '../../up' is not a plain name"
        in problems[0]["error"]
    )
