"""Helpers of the fault tests: a private copy of the small synthetic dataset and record editing."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import pytest


def read_records(path: Path) -> list:
    with gzip.open(path, "rt") as fh:
        return json.load(fh)


def write_records(path: Path, records: list) -> None:
    with gzip.open(path, "wt") as fh:
        json.dump(records, fh)


def edit_records(path: Path, fn) -> list:
    """Applies ``fn(records)`` (in place) to an annotation file; returns the records."""
    recs = read_records(path)
    fn(recs)
    write_records(path, recs)
    return recs


def small_run_yaml(tmp_path: Path, out: Path) -> Path:
    """A main-job YAML for a few seconds' run into ``out``: 3 small synthetic cars, no training or pose."""
    import yaml

    conf = tmp_path / "small.yaml"
    conf.write_text(yaml.safe_dump({
        "out": str(out), "workers": 0, "train_categories": [], "pose_images": 0, "eval_pairs": 0,
        "synth": {"category": ["car"], "videos": 3, "frames": 6, "size": 48, "supersample": 1},
        "features": {"vertices": 150, "frames": 3},
        "align": {"search": {"rotations": 128, "vertices": 100}, "partners": 0},
    }))
    return conf


def frame_index(records: list, sequence: str, frame_number: int) -> int:
    return next(
        i
        for i, r in enumerate(records)
        if r["sequence_name"] == sequence and r["frame_number"] == frame_number
    )


@pytest.fixture
def data(tmp_path, synth_root) -> Path:
    """A private copy of the synthetic dataset (3 cars, 3 mugs, 8 frames of 96 px): free to break."""
    root = tmp_path / "data"
    shutil.copytree(synth_root, root)
    return root


def fast_features(data: Path, out: Path, category: str = "car", **kw):
    """Features settings small enough for the fault tests (colorsift, 200 vertices, 4 frames)."""
    from catpose.config import FeaturesConfig

    kw = {"vertices": 200, "frames": 4, "workers": 0, **kw}
    return FeaturesConfig(data=data, category=(category,), out=str(out), **kw)
