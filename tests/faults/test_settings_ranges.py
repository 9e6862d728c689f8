"""Finding 5 of issue 34: settings out of their range, or a device this machine lacks, stop a command at
once (exit 2, one line naming the field and the allowed range, nothing written); a run of one category
is not scored on another category's images unless asked to."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
CATPOSE = [sys.executable, "-m", "catpose.cli"]


def run(args):
    return subprocess.run(
        CATPOSE + args, capture_output=True, text=True, timeout=120, env=ENV, cwd=REPO, check=False
    )


def one_clear_line(r) -> str:
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("catpose: error:")]
    assert len(lines) == 1, r.stderr
    return lines[0]


CASES = [
    (["align", "--alpha", "1.5"], "field 'search.alpha': 1.5 is out of range; allowed: [0, 1]"),
    (["align", "--search.tau", "0"], "field 'search.tau': 0.0 is out of range; allowed: > 0"),
    (["align", "--vertices", "0"], "field 'search.vertices': 0 is out of range; allowed: >= 1"),
    (["features", "--cleaning.vote", "1.5"], "field 'cleaning.vote': 1.5 is out of range; allowed: [0, 1]"),
    (["align", "--workers", "-1"], "field 'workers': -1 is out of range; allowed: >= 0"),
    (["features", "--vertices", "0"], "field 'vertices': 0 is out of range; allowed: >= 1"),
    (
        ["tune", "--alphas", "0.2", "1.5"],
        "field 'alphas': (0.2, 1.5) is out of range; allowed: values in [0, 1]",
    ),
    (["train", "--epochs", "-1"], "field 'epochs': -1 is out of range; allowed: >= 1"),
    (["train", "--num-workers", "-1"], "field 'num_workers': -1 is out of range; allowed: >= 0"),
    (["features", "--device", "gpu"], "field 'device': unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    (["estimate", "--pose.device", "cuda:x"], "field 'pose.device': unknown device 'cuda:x'"),
]


@pytest.mark.parametrize("args, expected", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_a_setting_out_of_range_stops_before_any_work(tmp_path, args, expected):
    out = tmp_path / "out"
    t0 = time.perf_counter()
    r = run(
        [*args, "--out", str(out)]
        if args[0] != "train"
        else [*args, "--out", str(out), "--data", str(tmp_path)]
    )
    line = one_clear_line(r)
    assert line.startswith("catpose: error: flags: ") and expected in line, line
    assert not out.exists()  # nothing was started
    assert time.perf_counter() - t0 < 60


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
@pytest.mark.parametrize("command", ["train", "align", "features"])
def test_cuda_without_a_gpu_stops_before_any_work(tmp_path, command):
    r = run([command, "--device", "cuda", "--out", str(tmp_path / "out")])
    line = one_clear_line(r)
    assert "field 'device': device 'cuda' asked for, but this machine has no usable CUDA GPU" in line, line
    assert not (tmp_path / "out").exists()


def test_the_main_job_checks_the_ranges_of_a_yaml_file(tmp_path):
    cfg = tmp_path / "exp.yaml"
    cfg.write_text("align: {search: {alpha: 1.5}}\n")
    r = subprocess.run(
        CATPOSE + ["run", "--config", str(cfg), "--out", str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=120,
        env=ENV,
        cwd=REPO,
        check=False,
    )
    assert r.returncode == 2, r.stderr[-2000:]
    assert (
        f"{cfg} (or its flags): field 'align.search.alpha': 1.5 is out of range; allowed: [0, 1]" in r.stderr
    ), r.stderr
    assert not (tmp_path / "run").exists()


def test_check_device_vocabulary():
    from catpose.config import check_device
    from catpose.errors import ConfigError

    check_device("auto")
    check_device("cpu")
    for bad in ("gpu", "cuda:", "cuda:-1", "CUDA", "cuda:0:1"):
        with pytest.raises(ConfigError, match="unknown device"):
            check_device(bad)
    n = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=f"cuda:{n}"):
        check_device(f"cuda:{n}")


def test_a_run_of_one_category_is_not_scored_on_another(tmp_path):
    """A car run (its model.pt records the category) evaluated on mug images: an error naming model.pt,
    before any image is read."""
    import numpy as np

    from catpose.config import TrainConfig
    from catpose.learn.model import build_model
    from catpose.learn.template import build_template
    from catpose.learn.train import save_trained
    from catpose.storage import Store

    cfg = TrainConfig(category="car", vertices=40, size=64)
    cloud = np.random.default_rng(0).normal(size=(4000, 3))
    cloud = (0.2 * cloud / np.linalg.norm(cloud, axis=1, keepdims=True)).astype(np.float32)  # a sphere
    tpl = build_template([cloud, cloud], cfg.vertices)  # two "videos": a template cell needs two
    model = build_model(cfg, torch.as_tensor(tpl.vertices), backbone_weights=False)
    save_trained(Store(str(tmp_path / "runs")), "train-car", cfg, model, tpl, 1)
    run_dir = tmp_path / "runs" / "train-car"
    args = ["evaluate", "--checkpoint", str(run_dir), "--dataset", "synth-wild",
            "--root", str(tmp_path / "none"), "--category", "mug", "--out", str(tmp_path / "eval")]
    r = run(args)
    line = one_clear_line(r)
    assert (
        f"{run_dir / 'model.pt'}: field 'config.category': the run was trained on category 'car', not 'mug'"
        in line
    )
    assert "--allow-other-category" in line and not (tmp_path / "eval").exists()
    # asked for: the category check lets it through (it then stops at the missing image set, named)
    r = run([*args, "--allow-other-category"])
    line = one_clear_line(r)
    assert "trained on category" not in line and str(tmp_path / "none") in line, line
    # estimate takes the images' category when it is known (--category): the same rule
    img = tmp_path / "missing.png"
    r = run(["estimate", "--checkpoint", str(run_dir), "--image", str(img), "--category", "mug",
             "--out", str(tmp_path / "est")])
    line = one_clear_line(r)
    assert (
        f"{run_dir / 'model.pt'}: field 'config.category': the run was trained on category 'car', not 'mug'"
        in line
    )
    assert "give --allow-other-category to estimate on another category's images" in line
    assert not (tmp_path / "est").exists()
    for extra in (["--category", "mug", "--allow-other-category"], ["--category", "car"], []):
        r = run(
            [
                "estimate",
                "--checkpoint",
                str(run_dir),
                "--image",
                str(img),
                "--out",
                str(tmp_path / "est"),
                "--pose.prior-weight",
                "0",
                *extra,
            ]
        )
        assert "trained on category" not in r.stdout + r.stderr and str(img) in r.stdout, (
            extra,
            r.stdout,
            r.stderr,
        )
