"""The ``catpose`` console script and the main job, run as users run them."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from catpose.cli import COMMANDS, main

REPO = Path(__file__).resolve().parents[1]
CATPOSE = [sys.executable, "-m", "catpose.cli"]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


def _cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def markdown_tables(text: str) -> list[dict[str, dict[str, str]]]:
    """Every Markdown table printed in ``text``: {first cell: {header: cell}} per table."""
    lines = text.splitlines()
    is_sep = lambda i: i < len(lines) and lines[i].startswith("|") and set(lines[i]) <= set("|-: ")  # noqa: E731
    tables = []
    for i, line in enumerate(lines):
        if line.startswith("|") and is_sep(i + 1):
            header, rows, j = _cells(line), {}, i + 2
            while j < len(lines) and lines[j].startswith("|") and not is_sep(j + 1):
                vals = _cells(lines[j])
                rows[vals[0]] = dict(zip(header, vals))
                j += 1
            tables.append(rows)
    return tables


def markdown_row(text: str, column: str, key: str) -> dict[str, str]:
    """The row ``key`` of the first printed table that has a column ``column``."""
    for t in markdown_tables(text):
        if key in t and column in t[key]:
            return t[key]
    raise AssertionError(f"no table with column '{column}' and row '{key}' in the output:\n{text[-2000:]}")


def test_synth_info_shard_commands(tmp_path):
    data = tmp_path / "data"
    r = run(CATPOSE + ["synth", "--category", "mug", "--videos", "2", "--frames", "3", "--size", "48",
                       "--workers", "0", "--out", str(data)])  # rendered in this process (Ray: test_synth.py)
    assert r.returncode == 0, r.stderr
    assert "mug: {'ok': 2}" in r.stdout and (data / "catpose_gt.json").is_file()
    r = run(CATPOSE + ["info", "--data", str(data), "--check-files"])
    assert r.returncode == 0 and "mug: 2 sequences, 6 frames" in r.stdout
    img = sorted((data / "mug" / "mug_0001" / "images").glob("*.jpg"))[1]
    img.write_bytes(img.read_bytes()[:100])
    r = run(CATPOSE + ["info", "--data", str(data), "--check-files"])
    assert r.returncode == 1 and str(img) in r.stdout
    r = run(CATPOSE + ["shard", "--data", str(data), "--out", str(tmp_path / "shards")])
    assert r.returncode == 0 and "5 frames in 1 shards, 1 skipped" in r.stdout and str(img) in r.stdout


def test_wrong_path_is_a_clear_error(tmp_path):
    r = run(CATPOSE + ["shard", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "s")])
    assert r.returncode == 2
    assert f"dataset root not found: {tmp_path / 'nowhere'}" in r.stderr
    assert "Traceback" not in r.stderr


def test_main_job_with_yaml_config_resumes(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({"workers": 0, "synth": {"category": ["car"], "videos": 2, "frames": 4,
                                                           "size": 64},
                                   "train_categories": []}))  # training has its own job tests
    out = tmp_path / "run"
    args = [sys.executable, str(REPO / "jobs" / "full_pipeline.py"), "--config", str(cfg), "--out", str(out)]
    r = run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    validate = markdown_row(r.stdout, "sequences", "car")
    assert validate["sequences"] == "2" and validate["frames"] == "8"
    man = json.loads((out / "pipeline_manifest.json").read_text())
    assert {k: v["status"] for k, v in man["items"].items()} == {
        "synth": "ok",
        "validate": "ok",
        "shard": "ok",
        "features": "ok",
        "align": "ok",
    }
    align = markdown_row(r.stdout, "Acc@π/6", "car")
    assert align["videos"] == "2" and align["pairs"] == "1"  # 2 videos aligned from 1 pair
    # with its accuracy against the ground truth: the stored alignment's, and right (the 2 cars' one pair)
    from catpose.align.evaluate import evaluate_alignment

    truth = evaluate_alignment(out / "align" / "car" / "alignment.parquet", out / "data", "car")
    assert align["Acc@π/6"] == f"{truth['acc_pi_6']:.1%}" == "100.0%"
    assert align["median error"] == f"{truth['median_deg']:.1f}°"
    feats = markdown_row(r.stdout, "backbone", "car")
    assert (
        feats["backbone"] == "colorsift" and "Backbones: colorsift (offline" in r.stdout
    )  # which backbone ran
    assert (out / "report.md").is_file() and (out / "plots" / "frames_car.png").is_file()
    assert len(list((out / "shards" / "category=car").glob("*.parquet"))) == 1
    img = out / "data" / "car" / "car_0000" / "images" / "frame000001.jpg"
    mtime = img.stat().st_mtime_ns
    r = run(args + ["--synth.videos", "3"])  # flags override the YAML; finished videos are kept
    assert r.returncode == 0, r.stderr[-3000:]
    assert markdown_row(r.stdout, "sequences", "car")["frames"] == "12" and img.stat().st_mtime_ns == mtime


def test_main_job_reports_a_broken_sequence_and_goes_on(tmp_path, synth_root):
    import shutil

    import numpy as np

    from catpose.data.pointcloud import PointCloud, write_ply
    from catpose.run.config import PipelineConfig
    from catpose.run.runner import run

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    write_ply(data / "mug" / "mug_0001" / "pointcloud.ply", PointCloud(np.zeros((0, 3), np.float32)))
    report = run(PipelineConfig(out=tmp_path / "run", data=data, workers=0, train_categories=()))
    assert list(report["unusable"]) == ["mug/mug_0001"]
    assert (
        "mug_0001/pointcloud.ply" in report["unusable"]["mug/mug_0001"]
        and "empty" in report["unusable"]["mug/mug_0001"]
    )
    rows = {r["category"]: r for r in report["validate"]}
    assert (
        rows["mug"]["unusable"] == 1 and rows["car"]["unusable"] == 0 and rows["car"]["cloud in masks"] > 0.95
    )
    assert report["shard"]["categories"]["mug"]["frames"] == 24  # the frames themselves are still sharded
    man = json.loads((tmp_path / "run" / "pipeline_manifest.json").read_text())
    assert "mug/mug_0001" in man["items"]["validate"]["unusable"]


@pytest.mark.slow  # Ray Tune (out of make test-fast)
def test_main_job_tunes_alpha_tau_and_aligns_with_the_best(tmp_path, synth_root, ray_local, capsys):
    from catpose.config import SearchConfig, ShardConfig, SweepConfig
    from catpose.run.config import PipelineConfig
    from catpose.run.runner import run

    cfg = PipelineConfig(
        out=tmp_path / "run",
        data=synth_root,
        workers=0,
        tune=True,
        train_categories=(),
        shard=ShardConfig(out="", category=("car",)),
        sweep=SweepConfig(alphas=(0.7,), taus=(0.1, 10.0), videos=3, trial=SearchConfig(rotations=128)),
    )
    report = run(cfg)
    (row,) = report["tune"]
    assert row["category"] == "car" and row["trials"] == 2 and row["tau"] in (0.1, 10.0)
    best = yaml.safe_load((tmp_path / "run" / "tune" / "car" / "best_config.yaml").read_text())["align"][
        "search"
    ]
    assert best == {"alpha": 0.7, "tau": row["tau"]}
    assert report["align"][0]["videos"] == 3
    # the alignment used the chosen values, not its defaults (alpha 0.2, tau 1.0)
    assert (cfg.align.search.alpha, cfg.align.search.tau) == (0.2, 1.0) and row["tau"] != 1.0
    assert f"alpha 0.7, tau {row['tau']}" in capsys.readouterr().out
    assert "## α/τ sweep (chosen without labels)" in (tmp_path / "run" / "report.md").read_text()


def test_eval_align_scores_an_alignment_table_against_the_ground_truth(tmp_path, synth_root, capsys):
    """``catpose eval-align`` on the true alignment (every video right, 0° median) and on one with a video
    turned by 90°: the table's numbers are those of the table's rotations against the truth."""
    from scipy.spatial.transform import Rotation

    from catpose.align.table import write_alignment
    from catpose.cli import main
    from catpose.data.groundtruth import load_ground_truth
    from catpose.geometry.similarity import Similarity
    from catpose.learn.train import ground_truth_to_reference

    ref = min(load_ground_truth(synth_root, "car"))
    true = ground_truth_to_reference(synth_root, "car", ref)
    write_alignment(tmp_path / "true.parquet", true, ref)
    assert main(["eval-align", "--data", str(synth_root), "--category", "car",
                 "--alignment", str(tmp_path / "true.parquet")]) == 0
    row = markdown_row(capsys.readouterr().out, "Acc@pi/6", "car")
    assert row["videos"] == "3" and row["Acc@pi/6"] == "100.0%" and float(row["median error (deg)"]) < 0.05
    turned = dict(true)
    other = min(n for n in true if n != ref)
    T = true[other]
    turned[other] = Similarity(Rotation.from_euler("z", 90, degrees=True).as_matrix() @ T.R, T.t, T.scale)
    write_alignment(tmp_path / "turned.parquet", turned, ref)
    assert main(["eval-align", "--data", str(synth_root), "--category", "car",
                 "--alignment", str(tmp_path / "turned.parquet")]) == 0
    row = markdown_row(capsys.readouterr().out, "Acc@pi/6", "car")
    assert (
        row["Acc@pi/6"] != "100.0%"
    )  # one of 3 videos 90° off cannot be within 30° up to one global rotation
    assert (tmp_path / "alignment_errors.png").is_file()


def test_synth_wild_command_writes_the_set_generate_wild_writes(tmp_path):
    """``catpose synth-wild``: the PASCAL3D+-layout set, the same bytes as the library call with the same
    settings, read back by the PASCAL3D+ loader with one annotated object per image."""
    import numpy as np

    from catpose.config import WildConfig
    from catpose.pose.datasets import load_pascal3d
    from catpose.pose.wild import generate_wild

    r = run(CATPOSE + ["synth-wild", "--category", "mug", "--images", "3", "--width", "64", "--height", "48",
                       "--out", str(tmp_path / "cli")])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"mug: 3 in-the-wild images in {tmp_path / 'cli'}" in r.stdout
    generate_wild(
        WildConfig(out=tmp_path / "lib", category="mug", images=3, width=64, height=48), progress=False
    )
    files = sorted(p.relative_to(tmp_path / "lib") for p in (tmp_path / "lib").rglob("*") if p.is_file()
                   and p.suffix in (".jpg", ".png", ".mat", ".txt"))
    assert len(files) == 10  # 3 images, 3 masks, 3 annotations, 1 list
    for f in files:  # the .mat header holds its time of writing: annotations are compared as read below
        if f.suffix != ".mat":
            assert (tmp_path / "cli" / f).read_bytes() == (tmp_path / "lib" / f).read_bytes(), f
    samples, problems = load_pascal3d(tmp_path / "cli", "mug", ("synth",), None, real_camera=True)
    lib, _ = load_pascal3d(tmp_path / "lib", "mug", ("synth",), None, real_camera=True)
    assert len(samples) == 3 and not problems
    for a, b in zip(samples, lib):
        np.testing.assert_allclose(a.R, b.R, atol=1e-12)
        np.testing.assert_allclose(a.bbox, b.bbox)


@pytest.mark.slow  # Ray Tune in its own process
def test_tune_command_sweeps_the_grid_and_writes_the_best_of_its_table(tmp_path, synth_root):
    """``catpose tune`` as users run it: every (α, τ) of the grid becomes one trial row, and the best config
    written is the row with the lowest label-free objective of that table."""
    r = run(
        CATPOSE
        + [
            "tune",
            "--data",
            str(synth_root),
            "--category",
            "car",
            "--out",
            str(tmp_path / "tune"),
            "--alphas",
            "0.0",
            "0.7",
            "--taus",
            "0.3",
            "--videos",
            "3",
            "--rotations",
            "64",
            "--workers",
            "0",
        ]
    )
    assert r.returncode == 0, r.stderr[-3000:]
    best = yaml.safe_load((tmp_path / "tune" / "best_config.yaml").read_text())["align"]["search"]
    rows = [line for line in (tmp_path / "tune" / "sweep_results.md").read_text().splitlines()
            if line.startswith("|") and not set(line) <= set("|-: ")]
    header, body = _cells(rows[0]), [_cells(x) for x in rows[1:]]
    assert header[:3] == ["α", "τ", "cycle error (°)"] and len(body) == 2
    assert {float(b[0]) for b in body} == {0.0, 0.7} and {float(b[1]) for b in body} == {0.3}
    (chosen,) = [b for b in body if b[-1] == "← chosen"]
    assert float(chosen[2]) == min(float(b[2]) for b in body)  # the lowest cycle error of the table
    assert (best["alpha"], best["tau"]) == (float(chosen[0]), float(chosen[1]))
    assert f"-> {tmp_path / 'tune' / 'best_config.yaml'}" in r.stdout


@pytest.mark.slow  # Ray Train in its own process
def test_train_command_trains_resumes_and_keeps_a_finished_run(tmp_path, synth_root):
    """``catpose train`` as users run it on what ``catpose shard`` and the alignment write: the run has its
    model, history and template; the same command again keeps the finished run instead of training."""
    import math

    from catpose.align.table import write_alignment
    from catpose.config import FeaturesConfig, ShardConfig
    from catpose.data.groundtruth import load_ground_truth
    from catpose.data.shards import write_shards
    from catpose.features.runner import run_features
    from catpose.learn.train import ground_truth_to_reference

    write_shards(
        ShardConfig(data=str(synth_root), out=str(tmp_path / "shards"), category=("car",)), progress=False
    )
    align = tmp_path / "align"
    run_features(
        FeaturesConfig(
            data=str(synth_root), out=str(align / "features"), category=("car",), frames=3, workers=0
        ),
        progress=False,
    )
    ref = min(load_ground_truth(synth_root, "car"))
    write_alignment(align / "alignment.parquet", ground_truth_to_reference(synth_root, "car", ref), ref)
    args = CATPOSE + [
        "train",
        "--data",
        str(tmp_path / "shards"),
        "--alignment",
        str(align),
        "--category",
        "car",
        "--out",
        str(tmp_path / "runs"),
        "--epochs",
        "2",
        "--size",
        "48",
        "--vertices",
        "100",
        "--batch-size",
        "4",
        "--num-workers",
        "1",
        "--device",
        "cpu",
    ]
    r = run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("car: 2 epochs, final loss"))
    assert math.isfinite(float(line.split("final loss ")[1].split(",")[0]))
    run_dir = tmp_path / "runs" / "train-car"
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history) == 2 and all(math.isfinite(h["loss"]) for h in history)
    assert (run_dir / "template.npz").is_file() and (run_dir / "model.pt").is_file()
    mtime = (run_dir / "model.pt").stat().st_mtime_ns
    r = run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (
        "finished its 2 epochs before; kept" in r.stdout
        and (run_dir / "model.pt").stat().st_mtime_ns == mtime
    )


@pytest.mark.parametrize(
    "command", [[], ["run"], *[[c] for c in COMMANDS]], ids=lambda c: " ".join(c) or "catpose"
)
def test_help_text_has_no_rest_markup(command, capsys, monkeypatch):
    """What catpose CMD --help prints (command, config and field docstrings) is plain text: no ``code``,
    no :class:/:func:/:mod: roles; the metrics it names are defined where they first appear."""
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as e:
        main([*command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: ")
    for markup in ("``", ":class:", ":func:", ":mod:", ":meth:", ":data:"):
        assert markup not in text, f"{markup} in catpose {' '.join(command)} --help"
    flat = " ".join(text.replace("│", " ").split())
    if "Acc@π/6" in flat or "Acc@pi/6" in flat:
        first = flat.find("Acc@π/6") if "Acc@π/6" in flat else flat.find("Acc@pi/6")
        assert "30°" in flat[first:first + 300], flat[first:first + 300]
