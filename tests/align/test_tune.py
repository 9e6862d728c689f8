"""A tiny α/τ sweep with Ray Tune on the 2-core machine: trials, label-free objective, outputs, resume."""

import dataclasses

import pytest
import yaml

from catpose.align.tune import run_sweep, trial_metrics, triangle_cycle_error
from catpose.config import SearchConfig, SweepConfig, SynthConfig
from catpose.data.synth.generate import generate


def test_triangle_cycle_error():
    import numpy as np
    from scipy.spatial.transform import Rotation

    R = {n: Rotation.random(random_state=i).as_matrix() for i, n in enumerate("abc")}
    rel = {(a, b): R[b].T @ R[a] for a, b in [("a", "b"), ("a", "c"), ("b", "c")]}
    assert triangle_cycle_error(rel, ["a", "b", "c"]) < 1e-5
    rel[("a", "c")] = Rotation.from_rotvec([0, 0, np.deg2rad(40)]).as_matrix() @ rel[("a", "c")]
    assert abs(triangle_cycle_error(rel, ["a", "b", "c"]) - 40) < 1e-4


@pytest.mark.slow  # Ray Tune: a sweep, a restore and recomputed trials (out of make test-fast)
def test_tiny_sweep(tmp_path, ray_local):
    data = tmp_path / "data"
    generate(SynthConfig(workers=0, out=data, category=("car",), videos=4, frames=6, size=96, seed=5))
    cfg = SweepConfig(
        data=data,
        category="car",
        out=str(tmp_path / "tune"),
        alphas=(0.2, 1.0),
        taus=(0.1, 10.0),
        videos=4,
        trial=SearchConfig(rotations=256),
    )
    res = run_sweep(cfg)
    assert len(res["rows"]) == 4 and res["videos"] == sorted(res["videos"])
    # each row is what its trial's (alpha, tau) gives: the same metrics computed here, out of Tune
    search = dataclasses.asdict(SearchConfig(rotations=256, vertices=cfg.trial.vertices))
    for r in (res["rows"][0], res["rows"][-1]):
        m = trial_metrics({"alpha": r["alpha"], "tau": r["tau"]}, str(data), "car",
                          str(tmp_path / "tune" / "features"), res["videos"], search, "cpu")
        assert {k: r[k] for k in m} == pytest.approx(m, abs=1e-6), (r, m)
    # the label-free choice is a right one against ground truth (measured: alpha 0.2 rows cycle 3.5-3.7°,
    # median 0.8-1.0°; appearance alone, alpha 1, cycle 7-8°): geometry helps on these cars
    chosen = res["rows"][0]
    assert res["best"]["alpha"] == 0.2 and chosen["acc_pi_6"] == 1.0 and chosen["median_deg"] < 3.0
    best = yaml.safe_load((tmp_path / "tune" / "best_config.yaml").read_text())["align"]["search"]
    assert best == res["best"] and res["rows"][0]["cycle_deg"] == min(r["cycle_deg"] for r in res["rows"])
    table = (tmp_path / "tune" / "sweep_results.md").read_text()
    assert "← chosen" in table and (tmp_path / "tune" / "sweep_heatmaps.png").is_file()
    assert list((tmp_path / "tune" / "sweep-car").glob("*/progress.csv"))  # Tune's per-trial logs
    # a second run restores the finished sweep instead of running it again: no new trial directory, and
    # every trial's results as they were (Tune rewrites the files on restoring; a trial that ran again would
    # have reported new times and timestamps)
    def trials():
        return {
            p.parent.name: p.read_bytes() for p in (tmp_path / "tune" / "sweep-car").glob("*/result.json")
        }

    before = trials()
    assert len(before) == 4
    again = run_sweep(cfg)
    assert again["best"] == res["best"] and trials() == before


@pytest.mark.slow  # Ray Tune on S3 (out of make test-fast)
def test_sweep_storage_on_s3(tmp_path, ray_local, s3_bucket):
    from catpose.storage import Store

    endpoint, bucket = s3_bucket
    data = tmp_path / "data"
    generate(SynthConfig(workers=0, out=data, category=("mug",), videos=3, frames=4, size=64, seed=2))
    uri = f"s3://{bucket}/tune"
    cfg = SweepConfig(data=data, category="mug", out=uri, features=str(tmp_path / "features"), alphas=(0.2,),
                      taus=(1.0,), videos=3, trial=SearchConfig(rotations=64), endpoint_url=endpoint)
    res = run_sweep(cfg)
    store = Store(uri, endpoint)
    assert yaml.safe_load(store.read_bytes("best_config.yaml"))["align"]["search"] == res["best"]
    assert store.glob("sweep-mug/*/result.json")  # Tune's trial results live in the bucket
