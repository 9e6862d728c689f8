"""The main job's stage graph: the report's summary, the resolved config.yaml that repeats the run,
skipping what is unchanged, and downstream stages that refuse upstream work made with other settings."""

from __future__ import annotations

import shutil

import pytest
import yaml

from catpose.config import AlignConfig, FeaturesConfig, SearchConfig


def test_align_refuses_a_feature_store_made_with_other_settings(tmp_path, synth_root):
    from catpose.align.run import run_align
    from catpose.errors import ConfigError
    from catpose.features.runner import signature
    from catpose.manifest import Manifest
    from catpose.storage import Store

    made = FeaturesConfig(backbone="colorsift", vertices=300, frames=4)
    man = Manifest.load_or_new("car/_manifest.json", "features", store=Store(tmp_path / "features"))
    man.record("car_0000", "ok", signature=signature(made))
    run_cfg = FeaturesConfig(backbone="random_cnn", vertices=300, frames=4)
    with pytest.raises(ConfigError) as e:
        run_align(AlignConfig(data=synth_root, category="car", out=str(tmp_path / "align"),
                              features=str(tmp_path / "features"), workers=0), made_with=signature(run_cfg))
    msg = str(e.value)
    assert (
        "car/_manifest.json" in msg and "'backbone': 'colorsift'" in msg and "'backbone': 'random_cnn'" in msg
    )
    assert not (tmp_path / "align" / "pairs").exists()  # nothing was computed


def test_stage_graph_summary_config_and_skips(tmp_path, synth_root, capsys):
    from catpose.run.config import PipelineConfig, load_config
    from catpose.run.runner import run

    data = tmp_path / "data"
    shutil.copytree(synth_root, data)
    out = tmp_path / "run"
    cfg = PipelineConfig(out=str(out), data=str(data), workers=0, train_categories=(), eval_pairs=2,
                         features=FeaturesConfig(out="", category=("car",), vertices=200, frames=3),
                         align=AlignConfig(search=SearchConfig(rotations=256, vertices=150), partners=0))
    first = run(cfg)
    assert first["skipped"] == [] and list(first["stages"]) == ["validate", "shard", "features", "align"]
    report = (out / "report.md").read_text()
    head = report.split("\n## Data")[0]  # the one-screen summary comes first
    assert head.startswith("# catpose pipeline report\n\n## Summary") and len(head.splitlines()) < 25
    assert f"`{data}`" in head and "car" in head and "alignment Acc@π/6: car" in head and "plots" in head
    printed = capsys.readouterr().out
    assert printed.count("Reading: ") >= 3  # every stage table is followed by its reading
    # the resolved config repeats the run; only what changed (and what depends on it) runs again
    saved = yaml.safe_load((out / "config.yaml").read_text())
    assert saved["align"]["search"]["rotations"] == 256 and saved["out"] == str(out)
    again = run(load_config(["--config", str(out / "config.yaml"), "--align.search.rotations", "128"]))
    assert again["skipped"] == ["validate", "shard", "features"] and "align" in again["stages"]
    assert "align car: 3 videos, 3 pairs in" in capsys.readouterr().out
    from catpose import cli

    assert (
        cli.main(["run", "--config", str(out / "config.yaml")]) == 0
    )  # `catpose run` repeats it: all skipped
    assert capsys.readouterr().out.count("done before with the same settings and inputs (skipped)") == 4


@pytest.mark.slow  # Ray Tune on S3 (out of make test-fast)
def test_tune_stage_with_the_store_on_s3(tmp_path, synth_root, s3_bucket, ray_local, monkeypatch, capsys):
    """The α/τ sweep of the main job with the run's store on a (moto) S3 bucket: Tune's trials, the
    chosen values, the plot and the report land in the bucket; a rerun skips the sweep."""
    from catpose.config import ShardConfig, SweepConfig
    from catpose.run.config import PipelineConfig
    from catpose.run.runner import run
    from catpose.storage import Store

    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/run"
    monkeypatch.chdir(tmp_path)  # the driver's working directory: nothing may land here
    cfg = PipelineConfig(out=uri, endpoint_url=endpoint, data=str(synth_root), workers=0, tune=True,
                         train_categories=(), eval_pairs=0, shard=ShardConfig(out="", category=("car",)),
                         features=FeaturesConfig(out="", category=("car",), vertices=200, frames=3),
                         align=AlignConfig(search=SearchConfig(rotations=128, vertices=150), partners=0),
                         sweep=SweepConfig(alphas=(0.7,), taus=(0.1, 10.0), videos=3))  # not the default 0.2
    report = run(cfg)
    (row,) = report["tune"]
    assert row["category"] == "car" and row["trials"] == 2 and row["tau"] in (0.1, 10.0)
    store = Store(uri, endpoint)
    assert yaml.safe_load(store.read_bytes("tune/car/best_config.yaml"))["align"] == {
        "search": {"alpha": 0.7, "tau": row["tau"]}
    }
    assert len(store.glob("tune/car/sweep-car/*/result.json")) == 2  # Tune's trials live in the bucket
    assert store.exists("plots/sweep_car.png")
    assert "## α/τ sweep (chosen without labels)" in store.read_text("report.md")
    assert report["align"][0]["videos"] == 3 and store.exists("align/car/alignment.parquet")
    # the alignment aligned with the chosen values
    assert f"alpha 0.7, tau {row['tau']}" in capsys.readouterr().out
    assert sorted(p.name for p in tmp_path.iterdir()) == []
    again = run(cfg)
    assert {"features", "tune", "align"} <= set(again["skipped"])


def test_train_section_names_only_the_plots_the_run_made():
    """A run without evaluation makes no viewpoint plot: the report must not name one (every picture the
    report names is in the store)."""
    from catpose.learn.stage import TrainArtifact, _train_section

    row = {"category": "car", "run": "s3://b/run/train/train-car", "epochs": 1, "loss": [2.0, 1.5],
           "evaluation": None, "plots": ["plots/training_curves_car.png"]}
    text = "\n".join(_train_section(TrainArtifact({"car": row["run"]}, [row])))
    assert "](plots/training_curves_car.png)" in text and "viewpoint" not in text
    del row["plots"]  # an artifact recorded before the plots were: both, as then
    text = "\n".join(_train_section(TrainArtifact({"car": row["run"]}, [row])))
    assert "](plots/training_curves_car.png)" in text and "](plots/viewpoint_accuracy_car.png)" in text
