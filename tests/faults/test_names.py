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
