"""Issue 34, finding 3: a resume keeps an output only when its inputs and settings are those it was made
from. Each stage command rerun into an existing output with other inputs or settings recomputes what
changed (and only that), says so in one line, and a rerun with nothing changed keeps everything."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
from PIL import Image

from catpose import cli
from catpose.storage import Store

from .conftest import edit_records, frame_index


@pytest.fixture(scope="module")
def other_data(tmp_path_factory):
    """Another dataset with the same category, sequence names and frame numbers as ``synth_root`` (3 cars,
    8 frames of 96 px), made with another seed: other instances, other images."""
    from catpose.config import SynthConfig
    from catpose.data.synth.generate import generate

    root = tmp_path_factory.mktemp("other")
    generate(SynthConfig(workers=0, out=root, category=("car",), videos=3, frames=8, size=96, seed=1))
    return root


def _line(printed: str, start: str) -> str:
    found = [ln for ln in printed.splitlines() if ln.startswith(start)]
    assert found, f"no line starting with {start!r} in:\n{printed}"
    return found[-1]


def test_synth_rerun_with_other_settings_regenerates_the_videos(tmp_path, capsys):
    out = tmp_path / "synth"
    base = ["synth", "--out", str(out), "--category", "car", "--videos", "2", "--workers", "0", "--supersample", "1"]
    assert cli.main(base + ["--frames", "4", "--size", "48"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["--frames", "6", "--size", "64"]) == 0
    line = _line(capsys.readouterr().out, "synth car:")
    assert line == "synth car: 0 of 2 videos kept (inputs and settings unchanged), 2 recomputed (settings changed)"
    frames = json.loads(Store(str(out)).read_bytes("car/.synth/car_0000.json"))["frames"]
    assert len(frames) == 6 and frames[0]["image"]["size"] == [64, 64]
    img = Image.open(out / frames[-1]["image"]["path"])
    assert img.size == (64, 64)
    man = json.loads((out / "car" / "catpose_manifest_synth.json").read_text())
    assert man["info"]["frames"] == 6 and man["info"]["size"] == 64
    # nothing changed: every video kept, not one file rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "car").rglob("*.jpg")}
    assert cli.main(base + ["--frames", "6", "--size", "64"]) == 0
    assert _line(capsys.readouterr().out, "synth car:") == \
        "synth car: 2 of 2 videos kept (inputs and settings unchanged)"
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items())


def _shard_images(out) -> dict:
    from catpose.data.shards import iter_shard_rows

    return {(r["sequence_name"], r["frame_number"]): r["image"]
            for r in iter_shard_rows(str(out), columns=["sequence_name", "frame_number", "image"])}


def test_shard_of_another_dataset_with_the_same_names_rewrites_the_shards(data, other_data, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["shard", "--out", str(out), "--category", "car", "--rows-per-shard", "16"]
    assert cli.main(args + ["--data", str(data)]) == 0
    capsys.readouterr()
    assert cli.main(args + ["--data", str(other_data)]) == 0
    line = _line(capsys.readouterr().out, "shard car:")
    assert line.startswith("shard car: 0 of 2 shards kept") and "2 recomputed (source changed: frames" in line
    rows = _shard_images(out)
    want = {(f"car_{i:04d}", k): (other_data / "car" / f"car_{i:04d}" / "images" / f"frame{1 + 3 * k:06d}.jpg")
            .read_bytes() for i in range(3) for k in range(8)}
    assert rows == want  # every row is the other dataset's
    # one changed image costs its shard only; nothing changed keeps everything
    img = other_data / "car" / "car_0002" / "images" / "frame000001.jpg"
    saved = img.read_bytes()
    try:
        buf = io.BytesIO()
        Image.fromarray(255 - np.asarray(Image.open(io.BytesIO(saved)))).save(buf, format="JPEG")
        img.write_bytes(buf.getvalue())
        assert cli.main(args + ["--data", str(other_data)]) == 0
        line = _line(capsys.readouterr().out, "shard car:")
        assert line.startswith("shard car: 1 of 2 shards kept") and "1 recomputed (source changed" in line
        assert _shard_images(out)[("car_0002", 0)] == buf.getvalue()
    finally:
        img.write_bytes(saved)
    assert cli.main(args + ["--data", str(other_data)]) == 0
    assert cli.main(args + ["--data", str(other_data)]) == 0
    assert _line(capsys.readouterr().out, "shard car:") == "shard car: 2 of 2 shards kept (inputs and settings unchanged)"


def _features(data, out, *extra):
    return ["features", "--data", str(data), "--out", str(out), "--category", "car", "--vertices", "200",
            "--frames", "4", "--workers", "0", *extra]


def test_features_of_another_dataset_into_the_same_store_are_recomputed(data, other_data, tmp_path, capsys):
    from catpose.features.runner import load_surface_features

    out = tmp_path / "f"
    assert cli.main(_features(data, out)) == 0
    first = load_surface_features(str(out), "car", "car_0001")
    capsys.readouterr()
    assert cli.main(_features(other_data, out)) == 0
    line = _line(capsys.readouterr().out, "features car:")
    assert line.startswith("features car: 0 of 3 videos kept") and "3 recomputed (source changed:" in line
    again = load_surface_features(str(out), "car", "car_0001")
    assert not np.allclose(first.vertices, again.vertices)  # the other dataset's instance
    assert cli.main(_features(other_data, out, "--vertices", "150")) == 0  # a setting: all of them
    assert _line(capsys.readouterr().out, "features car:") == (
        "features car: 0 of 3 videos kept (inputs and settings unchanged), 3 recomputed (settings changed)")
    assert cli.main(_features(other_data, out, "--vertices", "150")) == 0
    assert _line(capsys.readouterr().out, "features car:") == \
        "features car: 3 of 3 videos kept (inputs and settings unchanged)"
    # one video's annotation record changed: that video only
    def nudge(recs):
        recs[frame_index(recs, "car_0002", 0)]["viewpoint"]["T"][0] += 0.01
    edit_records(other_data / "car" / "frame_annotations.jgz", nudge)
    try:
        assert cli.main(_features(other_data, out, "--vertices", "150")) == 0
        assert _line(capsys.readouterr().out, "features car:") == (
            "features car: 2 of 3 videos kept (inputs and settings unchanged), 1 recomputed "
            "(source changed: frame_annotations.jgz)")
    finally:
        edit_records(other_data / "car" / "frame_annotations.jgz",
                     lambda recs: recs[frame_index(recs, "car_0002", 0)]["viewpoint"]["T"].__setitem__(
                         0, recs[frame_index(recs, "car_0002", 0)]["viewpoint"]["T"][0] - 0.01))


def test_align_rerun_with_other_settings_or_features_reuses_no_stale_chunk(data, other_data, tmp_path, capsys):
    feats, out = tmp_path / "f", tmp_path / "align"
    assert cli.main(_features(data, feats)) == 0
    args = ["align", "--data", str(data), "--category", "car", "--out", str(out), "--features", str(feats),
            "--workers", "0", "--rotations", "128", "--vertices", "150", "--chunk", "1"]
    assert cli.main(args) == 0
    capsys.readouterr()
    assert cli.main(args + ["--alpha", "0.5"]) == 0
    assert _line(capsys.readouterr().out, "align car: 0 of 3") == (
        "align car: 0 of 3 chunks kept (inputs and settings unchanged), 3 new")
    assert cli.main(args + ["--rotations", "256"]) == 0
    assert "align car: 0 of 3 chunks kept" in capsys.readouterr().out
    # the features recomputed from other data (same names): no chunk made from the old ones is kept
    assert cli.main(_features(other_data, feats)) == 0
    args[2] = str(other_data)
    capsys.readouterr()
    assert cli.main(args) == 0
    line = _line(capsys.readouterr().out, "align car: 0 of 3")
    assert re.match(r"align car: 0 of 3 chunks kept \(inputs and settings unchanged\), 3 recomputed "
                    r"\(source changed: car/car_000", line), line
    assert cli.main(args) == 0
    assert _line(capsys.readouterr().out, "align car: 3 of 3") == \
        "align car: 3 of 3 chunks kept (inputs and settings unchanged)"


def test_run_with_another_synth_seed_remakes_the_data_and_every_later_stage(tmp_path, capsys):
    import time

    import yaml

    out = tmp_path / "run"
    conf = tmp_path / "small.yaml"
    conf.write_text(yaml.safe_dump({
        "out": str(out), "workers": 0, "train_categories": [], "pose_images": 0, "eval_pairs": 0,
        "synth": {"category": ["car"], "videos": 3, "frames": 6, "size": 48, "supersample": 1},
        "features": {"vertices": 150, "frames": 3}, "align": {"search": {"rotations": 128, "vertices": 100}, "partners": 0}}))
    assert cli.main(["run", "--config", str(conf)]) == 0
    gt0 = (out / "data" / "catpose_gt.json").read_text()
    capsys.readouterr()
    t0 = time.perf_counter()
    assert cli.main(["run", "--config", str(conf)]) == 0  # nothing changed: all skipped
    t_same = time.perf_counter() - t0
    printed = capsys.readouterr().out
    assert printed.count("done before with the same settings and inputs (skipped)") == 5, printed
    t0 = time.perf_counter()
    assert cli.main(["run", "--config", str(conf), "--synth.seed", "1"]) == 0
    t_seed = time.perf_counter() - t0
    printed = capsys.readouterr().out
    assert "(skipped)" not in printed
    assert "== synth (settings changed)" in printed
    assert "synth car: 0 of 3 videos kept (inputs and settings unchanged), 3 recomputed (settings changed)" in printed
    assert "== validate (inputs changed: data)" in printed and "== align (inputs changed: features)" in printed
    assert (out / "data" / "catpose_gt.json").read_text() != gt0  # other instances, other world frames
    assert yaml.safe_load((out / "config.yaml").read_text())["synth"]["seed"] == 1
    print(f"\nrerun timings: nothing changed {t_same:.1f} s, synth seed changed {t_seed:.1f} s")
