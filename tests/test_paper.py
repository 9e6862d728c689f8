"""configs/paper.yaml: the paper's settings, and `catpose run --config configs/paper.yaml` end to end on a
synthetic stand-in with a random-weight DINOv2 file in the official format."""

from pathlib import Path

import pytest
import torch

from catpose import cli
from catpose.features.backbones import DinoV2, ViTSpec
from catpose.run.config import load_config

PAPER = Path(__file__).resolve().parents[1] / "configs" / "paper.yaml"


def test_paper_config_holds_the_papers_settings(synth_root):
    import yaml

    assert len(yaml.safe_load(PAPER.read_text())["train_categories"]) == 20  # the paper's 20 CO3D categories
    cfg = load_config(["--config", str(PAPER), "--data", str(synth_root), "--features.weights", "w.pth",
                       "--train-categories", "car"])
    assert (cfg.features.backbone, cfg.features.input_size, cfg.features.vertices) == (
        "dinov2_vits14",
        518,
        500,
    )
    assert cfg.features.weights == Path("w.pth") and cfg.data == str(synth_root)
    assert (cfg.align.search.alpha, cfg.align.search.tau, cfg.align.search.vertices) == (0.2, 0.9, 500)
    assert (cfg.train.model, cfg.train.backbone, cfg.train.epochs) == ("base", "dinov2_vits14", 10)
    assert cfg.pose.grid == 144


@pytest.mark.slow
def test_paper_config_runs_end_to_end(tmp_path):
    from catpose.config import SynthConfig
    from catpose.data.synth.generate import generate

    data = tmp_path / "data"  # the stand-in for a CO3D root: 4 cars, 6 frames of 64 px
    generate(SynthConfig(workers=0, out=data, category=("car",), videos=4, frames=6, size=64))
    torch.manual_seed(0)
    vit = DinoV2("dinov2_vits14", input_size=56, spec=ViTSpec(128, 2, 2))  # random weights, official names
    with torch.no_grad():
        for p in vit.parameters():
            p.normal_(0, 0.05)
    weights = tmp_path / "dinov2_vits14_pretrain.pth"
    torch.save(vit.state_dict(), weights)
    out = tmp_path / "run"
    small = [
        "--workers",
        "0",
        "--features.input-size",
        "56",
        "--features.frames",
        "4",
        "--features.vertices",
        "80",
        "--align.search.vertices",
        "80",
        "--align.search.rotations",
        "256",
        "--align.search.alpha",
        "0",
        "--train-categories",
        "car",
        "--train.epochs",
        "1",
        "--train.size",
        "56",
        "--train.vertices",
        "80",
        "--train.batch-size",
        "4",
        "--train.no-skip-ambiguous",
        "--eval-pairs",
        "0",
    ]
    rc = cli.main(["run", "--config", str(PAPER), "--data", str(data), "--features.weights", str(weights),
                   "--out", str(out), *small])
    assert rc == 0
    assert (out / "align" / "car" / "alignment.parquet").is_file() and (out / "report.md").is_file()
    cfg = (out / "config.yaml").read_text()
    assert "dinov2_vits14" in cfg and "alpha: 0.0" in cfg and "tau: 0.9" in cfg
    assert list((out / "train").glob("train-car*")), (
        "the DINOv2 + head model was trained from the features' weights"
    )
