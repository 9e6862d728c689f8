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

from .conftest import edit_records, frame_index, small_run_yaml


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
    base = [
        "synth",
        "--out",
        str(out),
        "--category",
        "car",
        "--videos",
        "2",
        "--workers",
        "0",
        "--supersample",
        "1",
    ]
    assert cli.main(base + ["--frames", "4", "--size", "48"]) == 0
    capsys.readouterr()
    assert cli.main(base + ["--frames", "6", "--size", "64"]) == 0
    line = _line(capsys.readouterr().out, "synth car:")
    assert (
        line
        == "synth car: 0 of 2 videos kept (inputs and settings unchanged), 2 recomputed (settings changed)"
    )
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
    want = {
        (f"car_{i:04d}", k): (
            other_data / "car" / f"car_{i:04d}" / "images" / f"frame{1 + 3 * k:06d}.jpg"
        ).read_bytes()
        for i in range(3)
        for k in range(8)
    }
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
    assert (
        _line(capsys.readouterr().out, "shard car:")
        == "shard car: 2 of 2 shards kept (inputs and settings unchanged)"
    )


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


def test_align_rerun_with_other_settings_or_features_reuses_no_stale_chunk(
    data, other_data, tmp_path, capsys
):
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
    conf = small_run_yaml(tmp_path, out)
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
    assert (
        "synth car: 0 of 3 videos kept (inputs and settings unchanged), 3 recomputed (settings changed)"
        in printed
    )
    assert (
        "== validate (inputs changed: data)" in printed and "== align (inputs changed: features)" in printed
    )
    assert (out / "data" / "catpose_gt.json").read_text() != gt0  # other instances, other world frames
    assert yaml.safe_load((out / "config.yaml").read_text())["synth"]["seed"] == 1
    print(f"\nrerun timings: nothing changed {t_same:.1f} s, synth seed changed {t_seed:.1f} s")


def test_ingest_rerun_with_other_settings_or_frames_redoes_those_sequences(tmp_path, capsys):
    from tests.raw_frames import raw_sequences

    raw, _ = raw_sequences(tmp_path / "raw-src", frames=16, size=256, blank_frames=0)
    out = tmp_path / "ingested"
    args = ["ingest", "--frames", str(raw), "--out", str(out), "--category", "car", "--workers", "0",
            "--hull-voxels", "0"]
    assert cli.main(args + ["--max-frames", "14"]) == 0
    assert _line(capsys.readouterr().out, "ingest car:") == "ingest car: 0 of 1 sequences kept " \
        "(inputs and settings unchanged), 1 new"
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "car").rglob("*") if p.is_file()}
    assert cli.main(args + ["--max-frames", "14"]) == 0  # nothing changed: kept, not one file rewritten
    assert _line(capsys.readouterr().out, "ingest car:") == "ingest car: 1 of 1 sequences kept " \
        "(inputs and settings unchanged)"
    assert all(p.stat().st_mtime_ns == t for p, t in mtimes.items() if "manifest" not in p.name)
    assert cli.main(args + ["--max-frames", "12"]) == 0  # a setting
    assert _line(capsys.readouterr().out, "ingest car:") == "ingest car: 0 of 1 sequences kept " \
        "(inputs and settings unchanged), 1 recomputed (settings changed)"
    man = json.loads((out / "car" / "catpose_manifest_ingest.json").read_text())
    assert man["items"]["good"]["frames"] == 12  # the new setting's frames
    # one source frame changed: its sequence is ingested again
    first = sorted((raw / "good").glob("*.jpg"))[0]
    img = np.asarray(Image.open(first))
    Image.fromarray(255 - img).save(first)
    assert cli.main(args + ["--max-frames", "12"]) == 0
    assert _line(capsys.readouterr().out, "ingest car:") == "ingest car: 0 of 1 sequences kept " \
        "(inputs and settings unchanged), 1 recomputed (source changed: files of good)"


@pytest.mark.slow  # Ray Tune
def test_tune_rerun_with_another_space_runs_a_new_sweep(tmp_path, ray_local, capsys):
    from catpose.config import SynthConfig
    from catpose.data.synth.generate import generate

    data = tmp_path / "data"
    generate(SynthConfig(workers=0, out=data, category=("car",), videos=3, frames=6, size=64, seed=5,
                         supersample=1))
    out = tmp_path / "tune"
    args = ["tune", "--data", str(data), "--category", "car", "--out", str(out), "--videos", "3",
            "--rotations", "128", "--vertices", "150", "--taus", "1.0", "--workers", "0"]
    assert cli.main(args + ["--alphas", "0.2", "1.0"]) == 0
    assert _line(capsys.readouterr().out, "tune car:") == "tune car: 0 of 1 sweeps kept " \
        "(inputs and settings unchanged), 1 new"
    trials = lambda: {p.parent.name: p.read_bytes() for p in (out / "sweep-car").glob("*/result.json")}
    before = trials()
    assert len(before) == 2
    assert cli.main(args + ["--alphas", "0.2", "1.0"]) == 0  # nothing changed: Tune restores, no trial reruns
    assert (
        _line(capsys.readouterr().out, "tune car:")
        == "tune car: 1 of 1 sweeps kept (inputs and settings unchanged)"
    )
    assert trials() == before
    assert cli.main(args + ["--alphas", "0.0", "0.5", "1.0"]) == 0  # another space: a new sweep, no old trial
    printed = capsys.readouterr().out
    assert _line(printed, "tune car:") == "tune car: 0 of 1 sweeps kept (inputs and settings unchanged), " \
        "1 recomputed (settings changed)"
    after = trials()
    assert len(after) == 3 and not set(after) & set(before)
    assert "| 0.50 |" in (out / "sweep_results.md").read_text()


@pytest.mark.slow  # Ray Train
def test_train_rerun_keeps_resumes_or_refuses_by_the_runs_fingerprint(
    synth_root, tmp_path, ray_local, capsys
):
    from catpose.errors import ConfigError
    from catpose.learn.train import run_train
    from tests.training_inputs import training_config, training_inputs

    shards = str(tmp_path / "shards")
    feats = training_inputs(synth_root, tmp_path, shards)
    cfg = training_config(synth_root, tmp_path, shards, feats, out=str(tmp_path / "runs"), epochs=1,
                          num_workers=1, evaluate=False, max_failures=0)
    import dataclasses

    run_train(cfg)
    model = tmp_path / "runs" / "train-car" / "model.pt"
    t_model = model.stat().st_mtime_ns
    capsys.readouterr()
    assert run_train(cfg)["epochs"] == 1  # nothing changed: kept, not trained again
    assert (
        "finished its 1 epochs before; kept" in capsys.readouterr().out
        and model.stat().st_mtime_ns == t_model
    )
    # more epochs (a setting of how long, not of what): resumed from its checkpoint, one more epoch
    res = run_train(dataclasses.replace(cfg, epochs=2))
    assert res["epochs"] == 2 and len(res["history"]) == 2
    # a setting that changes what is learned: the stored run is not resumed into, the error says why
    changed = dataclasses.replace(cfg, epochs=2, lr=cfg.lr * 2)
    with pytest.raises(ConfigError, match=r"learned from other settings or inputs \(lr: "):
        run_train(changed)
    # other inputs (the alignment table): the same
    table = tmp_path / "align" / "alignment.parquet"
    saved = table.read_bytes()
    from catpose.align.table import write_alignment
    from catpose.data.groundtruth import load_ground_truth
    from catpose.learn.train import ground_truth_to_reference

    ref = sorted(load_ground_truth(synth_root, "car"))[1]  # another reference video: another table
    write_alignment(table, ground_truth_to_reference(synth_root, "car", ref), ref)
    with pytest.raises(ConfigError, match="its inputs \\(alignment, shards or features\\) changed"):
        run_train(dataclasses.replace(cfg, epochs=2))
    # the main job's train stage (replace_changed): started anew on the new inputs
    capsys.readouterr()
    res = run_train(dataclasses.replace(cfg, epochs=1), replace_changed=True)
    assert "learned from other settings or inputs (its inputs" in capsys.readouterr().out
    assert res["epochs"] == 1 and len(res["history"]) == 1
    table.write_bytes(saved)
