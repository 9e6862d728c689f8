"""Case 6 of issue 19: errors a user makes end with exit code 2 and one line on stderr that names
the file and the field; a traceback only with --debug. Run as users run them (subprocesses)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's catpose, also for jobs/full_pipeline.py
CATPOSE = [sys.executable, "-m", "catpose.cli"]
JOB = [sys.executable, str(REPO / "jobs" / "full_pipeline.py")]


def run(args):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, env=ENV, cwd=REPO)


def one_clear_line(r, prog="catpose") -> str:
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith(f"{prog}: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


def test_align_with_one_usable_video(data, tmp_path):
    import numpy as np

    from catpose.data.pointcloud import PointCloud, write_ply

    for name in ("mug_0001", "mug_0002"):
        write_ply(data / "mug" / name / "pointcloud.ply", PointCloud(np.zeros((0, 3), np.float32)))
    r = run(CATPOSE + ["align", "--data", str(data), "--category", "mug", "--out", str(tmp_path / "a"),
                       "--workers", "0", "--rotations", "256"])
    line = one_clear_line(r)
    assert "category 'mug' has 1 usable videos; alignment needs 2 or more" in line
    # each named
    assert "left out: {'mug_0001': " in line and "mug_0002/pointcloud.ply: field 'vertex'" in line


@pytest.mark.parametrize("text, expected", [
    ("workers: 0\nbogus: 1\n", "field 'bogus': unknown field; known fields: align,"),
    ("synth: {videos: many}\n", "field 'synth.videos': expected an integer, got 'many'"),
    ("train_categories: car\n", "field 'train_categories': expected a list (write [car] for one item)"),
    ("synth: {category: [car\n", "not valid YAML: while parsing a flow sequence in line 1"),
])
def test_a_bad_yaml_config_names_the_file_and_the_field(tmp_path, text, expected):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(text)
    r = run(JOB + ["--config", str(cfg), "--out", str(tmp_path / "run")])
    line = one_clear_line(r, "full_pipeline")
    assert line.startswith(f"full_pipeline: error: {cfg}: ") and expected in line, line
    assert "<unicode string>" not in line and not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump({"bogus": 1}))
    r = run(JOB + ["--config", str(cfg), "--debug"])
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr


def test_out_that_is_a_file(data, tmp_path):
    f = tmp_path / "taken"
    f.write_text("not a folder")
    for args in (["align", "--data", str(data), "--category", "car"], ["shard", "--data", str(data)],
                 ["features", "--data", str(data)]):
        line = one_clear_line(run(CATPOSE + args + ["--out", str(f)]))
        assert line == f"catpose: error: {f}: is a file, not a folder"
    assert f.read_text() == "not a folder"


def test_estimate_with_a_three_number_bbox(tmp_path):
    line = one_clear_line(run(CATPOSE + ["estimate", "--checkpoint", str(tmp_path / "run"), "--image",
                                         str(tmp_path / "x.png"), "--bbox", "1", "2", "3"]))
    assert "field 'bbox'" in line and "--bbox takes 4 numbers x0 y0 x1 y1, got 3: 1 2 3" in line
