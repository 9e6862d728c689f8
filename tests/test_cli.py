"""The ``catpose`` console script and the main job, run as users run them."""

import json
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CATPOSE = [sys.executable, "-m", "catpose.cli"]


def run(args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


def test_synth_info_shard_commands(tmp_path):
    data = tmp_path / "data"
    r = run(CATPOSE + ["synth", "--category", "mug", "--videos", "2", "--frames", "3", "--size", "48",
                       "--out", str(data)])
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
                                                           "size": 64}}))
    out = tmp_path / "run"
    args = [sys.executable, str(REPO / "jobs" / "full_pipeline.py"), "--config", str(cfg), "--out", str(out)]
    r = run(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| car | 2 | 8 |" in r.stdout
    man = json.loads((out / "pipeline_manifest.json").read_text())
    assert {k: v["status"] for k, v in man["items"].items()} == {"synth": "ok", "validate": "ok", "shard": "ok"}
    assert (out / "report.md").is_file() and (out / "plots" / "frames_car.png").is_file()
    assert len(list((out / "shards" / "category=car").glob("*.parquet"))) == 1
    img = out / "data" / "car" / "car_0000" / "images" / "frame000001.jpg"
    mtime = img.stat().st_mtime_ns
    r = run(args + ["--synth.videos", "3"])  # flags override the YAML; finished videos are kept
    assert r.returncode == 0, r.stderr[-3000:]
    assert "| car | 3 | 12 |" in r.stdout and img.stat().st_mtime_ns == mtime
