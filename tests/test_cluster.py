"""The main job as a cluster runs it: the store (a local moto S3 server) is the only shared state.

* Three Ray nodes on this machine (``ray.cluster_utils.Cluster``): a head that gives no CPUs to tasks and
  two workers, each with its own scratch folder; a worker node is removed while the features are being
  computed and another while the pairs are being aligned. The job finishes, every output the report
  names is in the bucket, nothing but logs is under the driver's working directory, and no item that
  was finished when a node went away is computed again.
* Resume on a fresh machine: the local scratch is deleted and the job rerun against the same bucket
  from another working directory: every finished stage is skipped, in seconds.
* The store becoming unreachable mid-run: a StorageError naming the key; a rerun once it is back
  finishes without losing what was done.
"""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time

import pytest

from catpose.config import AlignConfig, FeaturesConfig, SearchConfig, SynthConfig

pytestmark = pytest.mark.slow


def _tiny(out: str, endpoint: str, workers: int, videos: int = 4, chunk: int = 1, train: bool = False):
    """The tiny pipeline; with ``train`` also a tiny Ray Train run (one worker, one epoch of 32 px crops on
    a template of at most 100 vertices) and the pose stage on 4 in-the-wild images, only to show that they
    run on the cluster with its store on S3 (their accuracy: tests/pose/test_trained_accuracy.py and
    tests/learn/test_train.py, on the session's trained car)."""
    from catpose.config import PoseConfig, TrainConfig
    from catpose.run.config import PipelineConfig

    extra = {}
    if train:
        extra = dict(
            train_categories=("car",),
            pose_images=4,
            train=TrainConfig(
                data="",
                out="",
                epochs=1,
                size=32,
                vertices=100,
                batch_size=4,
                width=8,
                num_workers=1,
                cpus_per_worker=0.5,
                evaluate=False,
                augment=False,
            ),
            pose=PoseConfig(grid=256, top_k=1, refine_steps=3, sim_size=32, prior_weight=0.0),
        )
    return PipelineConfig(
        out=out,
        endpoint_url=endpoint,
        workers=workers,
        **({"train_categories": ()} | extra),
        eval_pairs=2,
        synth=SynthConfig(category=("car",), videos=videos, frames=6, size=64),
        features=FeaturesConfig(out="", category=(), frames=3, vertices=200),
        align=AlignConfig(
            search=SearchConfig(rotations=256, vertices=150, coarse_vertices=64, prefilter_vertices=32),
            partners=0,
            chunk=chunk,
        ),
    )


def _objects(endpoint: str, bucket: str, prefix: str = "") -> dict[str, tuple]:
    """Every key under ``prefix`` with (ETag, LastModified)."""
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for o in page.get("Contents", []):
            out[o["Key"]] = (o["ETag"], o["LastModified"])
    return out


def _wait_for(pred, timeout: float, what: str, job: threading.Thread):
    t0 = time.time()
    while time.time() - t0 < timeout:
        got = pred()
        if got:
            return got
        if not job.is_alive():
            pytest.fail(f"the job ended before {what}")
        time.sleep(0.2)
    pytest.fail(f"no {what} within {timeout} s")


def test_three_node_cluster_with_lost_nodes_and_resume(s3_bucket, tmp_path, monkeypatch):
    import ray
    from ray.cluster_utils import Cluster

    from catpose.run.runner import run

    endpoint, bucket = s3_bucket
    scratch = {k: tmp_path / f"scratch-{k}" for k in ("w1", "w2", "w3", "w4")}
    for d in scratch.values():
        d.mkdir()
    cwd = tmp_path / "driver"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    if ray.is_initialized():  # another test's local Ray
        ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    nodes = {k: cluster.add_node(num_cpus=1, env_vars={"TMPDIR": str(scratch[k])}) for k in ("w1", "w2")}
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        cfg = _tiny(f"s3://{bucket}/run", endpoint, workers=2, train=True)
        result: dict = {}

        def job():
            try:
                result["report"] = run(cfg)
            except BaseException as e:  # handed to the test thread
                result["error"] = e

        th = threading.Thread(target=job)
        th.start()
        feat_records = "run/features/car/_manifest.items/"
        # a worker node goes away while features are computed (after the first video finished)
        done_feats = _wait_for(lambda: _objects(endpoint, bucket, feat_records), 600, "finished feature "
                                                                                      "record", th)
        cluster.remove_node(nodes.pop("w2"))
        nodes["w3"] = cluster.add_node(num_cpus=1, env_vars={"TMPDIR": str(scratch["w3"])})
        # and another while the pairs are aligned (after the first chunk finished)
        done_chunks = _wait_for(
            lambda: {
                k: v
                for k, v in _objects(endpoint, bucket, "run/align/car/pairs/").items()
                if k.endswith(".json")
            },
            900,
            "finished alignment chunk",
            th,
        )
        cluster.remove_node(nodes.pop("w1"))
        nodes["w4"] = cluster.add_node(
            num_cpus=1, env_vars={"TMPDIR": str(scratch["w4"])}
        )  # as an autoscaler would
        th.join(900)
        assert not th.is_alive(), "the job did not finish"
        assert "error" not in result, repr(result.get("error"))
        report = result["report"]
        assert report["align"][0]["videos"] == 4 and report["align"][0]["pairs"] == 6
        after = _objects(endpoint, bucket, "run/")
        # nothing finished before a node went away was computed again: same records, same chunk files
        assert all(after[k] == v for k, v in done_feats.items()), "a finished video was computed again"
        assert all(after[k] == v for k, v in done_chunks.items()), "a finished chunk was computed again"
        assert len([k for k in after if k.startswith("run/align/car/pairs/")]) == 6
        assert len([k for k in after if k.startswith(feat_records)]) == 4
        # every output the report names is in the bucket
        text = (after and __import__("boto3").client("s3", endpoint_url=endpoint, region_name="us-east-1")
                .get_object(Bucket=bucket, Key="run/report.md")["Body"].read().decode())
        named = set(re.findall(r"\]\((plots/[^)]+)\)", text))
        assert named and all(f"run/{k}" in after for k in named), named - {k[4:] for k in after}
        for key in (
            "config.yaml",
            "pipeline_manifest.json",
            "data/catpose_gt.json",
            "data/car/frame_annotations.jgz",
            "shards/_catpose_shards.json",
            "features/car/_manifest.json",
            "align/car/alignment.parquet",
            "align/car/pairs.parquet",
            "stages/align.json",
            "train/train-car/model.pt",
            "train/train-car/template.npz",
            "stages/train.json",
            "stages/pose.json",
            "plots/pose_errors_car.png",
        ):
            assert f"run/{key}" in after, key
        # the Ray Train run (its workers on the worker nodes) and the pose stage ran on the store
        (trow,) = report["train"]
        assert trow["run"] == f"s3://{bucket}/run/train/train-car" and trow["epochs"] == 1
        assert [k for k in after if k.startswith("run/pose/car/")] and report["pose"][0]["category"] == "car"
        assert f"s3://{bucket}/run/data" in text
        # nothing but logs under the driver's working directory
        left = [p for p in cwd.rglob("*") if p.is_file() and p.suffix != ".log"]
        assert not left, left

        # resume on a fresh machine: scratch gone, another working directory, the same bucket
        for d in scratch.values():
            shutil.rmtree(d, ignore_errors=True)
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        monkeypatch.chdir(fresh)
        t0 = time.perf_counter()
        again = run(cfg)
        took = time.perf_counter() - t0
        assert again["skipped"] == ["synth", "validate", "shard", "features", "align", "train", "pose"], (
            again["skipped"]
        )
        assert took < 30, f"resume took {took:.0f} s"
        assert _objects(endpoint, bucket, "run/align/") == {
            k: v for k, v in after.items() if k.startswith("run/align/")
        }
        assert not [p for p in fresh.rglob("*") if p.is_file() and p.suffix != ".log"]
    finally:
        ray.shutdown()
        cluster.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_store_unreachable_mid_run_then_rerun(tmp_path, monkeypatch):
    """The S3 server stops while the features are computed: the run ends with a StorageError that names
    the key; with the server back, a rerun finishes and keeps every video finished before."""
    import boto3
    from moto.server import ThreadedMotoServer

    from catpose.errors import StorageError
    from catpose.run.runner import run

    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    monkeypatch.chdir(tmp_path)
    try:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="outage")
        cfg = _tiny("s3://outage/run", endpoint, workers=0, videos=3, chunk=0)
        result: dict = {}

        def job():
            try:
                result["report"] = run(cfg)
            except BaseException as e:
                result["error"] = e

        th = threading.Thread(target=job)
        th.start()
        done = _wait_for(lambda: _objects(endpoint, "outage", "run/features/car/_manifest.items/"), 600,
                         "finished feature record", th)
        server.stop()  # the store goes away (moto keeps its buckets in this process)
        th.join(600)
        err = result.get("error")
        assert isinstance(err, StorageError), repr(err)
        assert re.search(r"s3://outage/run/\S+", str(err)) and "failed" in str(err), str(err)

        server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
        server.start()
        report = run(cfg)
        assert report["align"][0]["videos"] == 3
        after = _objects(endpoint, "outage", "run/")
        assert all(after[k] == v for k, v in done.items()), (
            "a video finished before the outage was computed again"
        )
        assert {"synth", "validate", "shard"} <= set(report["skipped"])
    finally:
        server.stop()
