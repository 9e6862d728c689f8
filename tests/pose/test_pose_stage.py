"""The main job's pose stage on a tiny configuration: its table has the method's row and the
nearest-view baseline's, and the accuracies in it are what the per-image errors it wrote give."""

import dataclasses
import json
import re

import numpy as np
import pytest

from catpose.config import WildConfig
from catpose.run.config import PipelineConfig
from catpose.pose.evaluate import format_table, pose_stage

pytestmark = pytest.mark.slow

METHOD = "catpose (features + render-and-compare)"
BASELINE = "nearest training view (same features)"


def _acc(errors: list, threshold: float) -> float:
    """Share of images below ``threshold`` degrees; a failed image (no error) counts as wrong."""
    return float(np.mean([e is not None and e < threshold for e in errors]))


def test_pose_stage_table_has_both_rows_computed_from_per_image_errors(run_dir, tmp_path):
    # the demo's estimator settings (retrieval prior included), on a coarse grid with few steps
    pose = dataclasses.replace(PipelineConfig().pose, grid=512, refine_steps=5)
    res = pose_stage(str(run_dir), "car", tmp_path, images=5, pose=pose, wild=WildConfig(width=96, height=80),
                     progress=False)
    assert set(res["methods"]) == {METHOD, BASELINE}
    lines = [json.loads(ln) for ln in (tmp_path / "pose" / "car" / "results.jsonl").read_text().splitlines()]
    assert len(lines) == res["scored"] == 5
    # each error is the geodesic between an estimate (in the truth's frame) and the image's annotation
    from catpose.geometry.so3 import geodesic_deg
    from catpose.pose.datasets import load_pascal3d

    truth = {s.name: s.R for s in load_pascal3d(tmp_path / "wild" / "car", "car", ("synth",), None,
                                                   real_camera=True)[0]}
    G = np.array(res["frame_rotation"])
    for r in lines:
        np.testing.assert_allclose(r["R_gt"], truth[r["name"]], atol=1e-9)
        for est, err in (("R_template", "error_deg"), ("R_baseline_template", "baseline_error_deg")):
            assert r[err] == pytest.approx(
                float(geodesic_deg(G @ np.array(r[est]), np.array(r["R_gt"]))), abs=1e-6
            )
    table = format_table(res)
    for label, key in ((METHOD, "error_deg"), (BASELINE, "baseline_error_deg")):
        errs = [r.get(key) for r in lines]
        m = res["methods"][label]
        assert m["acc_pi_6"] == pytest.approx(_acc(errs, 30.0))
        assert m["acc_pi_18"] == pytest.approx(_acc(errs, 10.0))
        assert m["median_deg"] == pytest.approx(float(np.median(errs)))
        row = re.search(
            r"^\| " + re.escape(label) + r" \| ([\d.]+)% \| ([\d.]+)% \| ([\d.]+) \|$", table, re.MULTILINE
        )
        assert row is not None, table
        assert float(row.group(1)) == pytest.approx(100 * _acc(errs, 30.0), abs=0.05)
        assert float(row.group(3)) == pytest.approx(float(np.median(errs)), abs=0.05)
    assert (tmp_path / "plots" / "pose_errors_car.png").stat().st_size > 1000
    # the stage's evaluation on disk is the one it returned
    assert (
        json.loads((tmp_path / "pose" / "car" / "evaluation.json").read_text())["methods"] == res["methods"]
    )


def test_main_job_pose_stage_is_placed_on_the_gpu_node(run_dir, tmp_path):
    """``configs/cloud.yaml`` on a GPU cluster: the run context's device (auto) reaches the pose stage, which
    then runs as a Ray task holding a GPU, on the node that has one, and writes its outputs to the store.
    The GPU is a Ray resource of a ``Cluster`` node (this machine has no CUDA), so the task's torch device
    is the CPU: ``auto`` means the GPU the task was given, and torch sees none."""
    import ray
    from ray.cluster_utils import Cluster

    from catpose.learn.stage import TrainArtifact
    from catpose.pose.stage import PoseArtifact, _pose_run
    from catpose.run.graph import Ctx
    from catpose.storage import Store

    if ray.is_initialized():  # another test's local Ray
        ray.shutdown()
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0, "include_dashboard": False}
    )
    gpu_node = cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cfg = PipelineConfig(out=str(tmp_path / "store"), workers=1, pose_images=3)
        assert cfg.device == "auto" and cfg.pose.device == "auto"
        cfg.pose = dataclasses.replace(cfg.pose, grid=512, refine_steps=3)
        store = Store(cfg.out)
        ctx = Ctx(cfg, store, tmp_path / "scratch", arts={"train": TrainArtifact({"car": str(run_dir)}, [])})
        art = _pose_run(ctx)
        assert isinstance(art, PoseArtifact)
        where = art.rows[0]["placement"]
        assert where["ray_node"] == gpu_node.node_id  # not the head, which has no GPU
        assert where["device"] == "cpu" == art.rows[0]["device"]
        assert json.loads(store.read_text("pose/car/evaluation.json"))["methods"] == art.rows[0]["methods"]
        assert store.exists("plots/pose_errors_car.png")

        # a CPU-only run context keeps the stage in this process, whatever the cluster has
        cfg.device = "cpu"
        art = _pose_run(Ctx(cfg, store, tmp_path / "scratch", arts=ctx.arts))
        assert art.rows[0]["placement"]["ray_node"] is None
    finally:
        ray.shutdown()
        cluster.shutdown()
