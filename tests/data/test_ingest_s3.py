"""``catpose ingest`` into an s3:// store (a local moto server): real pycolmap SfM in real Ray tasks
(num_cpus=2), each working in its own scratch folder and uploading its finished sequence; the annotations
and the manifest live in the bucket, so a rerun resumes from there."""

import pytest

from catpose.data.co3d import Co3dCategory
from tests.raw_frames import raw_sequences, relative_rotation_errors


@pytest.fixture(scope="module")
def raw_frames(tmp_path_factory):
    """One textured synthetic car orbit (frames + masks) and one blank sequence SfM cannot register."""
    raw, truth = raw_sequences(tmp_path_factory.mktemp("ingest_s3"), frames=20, size=160, blank_frames=4)
    return raw, truth


def test_ingest_into_a_bucket_through_ray_tasks_and_resume(
    raw_frames, s3_bucket, ray_local, tmp_path, monkeypatch, capsys
):
    from catpose import cli
    from catpose.manifest import Manifest
    from catpose.storage import Store

    raw, truth = raw_frames
    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/data"
    monkeypatch.chdir(tmp_path)  # the driver's working directory: nothing may land here
    args = ["ingest", "--frames", str(raw), "--out", uri, "--endpoint-url", endpoint, "--category", "car",
            "--max-frames", "20", "--workers", "2"]
    assert cli.main(args) == 0
    assert f"-> {uri}/car" in capsys.readouterr().out
    store = Store(uri, endpoint)
    keys = store.glob("car/**")
    assert not [k for k in keys if k.startswith("car/blank")]  # the failed sequence left nothing behind
    assert {"car/frame_annotations.jgz", "car/sequence_annotations.jgz", "car/good/pointcloud.ply"} <= set(
        keys
    )
    man = Manifest.load_or_new("car/catpose_manifest_ingest.json", "ingest", store=store)
    assert man.status("good") == "ok" and man.status("blank") == "failed" and "blank" in man.failed["blank"]
    # the dataset reads back from the bucket, frame by frame, with SfM's cameras close to the truth
    seq = Co3dCategory(uri, "car", endpoint)["good"]
    assert len(seq.frames) == man.items["good"]["registered"] >= 16
    assert seq.frames[0].load_image().shape == (160, 160, 3) and seq.frames[0].load_mask().shape == (160, 160)
    assert len(seq.load_point_cloud()) > 50
    by_name = {f.image_path.name: f.camera for f in truth.frames}
    errs = relative_rotation_errors([by_name[f.image_path.rsplit("/", 1)[-1] if isinstance(f.image_path, str)
                                         else f.image_path.name] for f in seq.frames],
                                [f.camera for f in seq.frames])
    assert errs.max() < 2.0, errs.max()
    assert not any(tmp_path.iterdir())
    # a rerun (another machine: only the bucket is shared) redoes the failed sequence only
    def files():  # every object of the finished sequence, with its ETag and time of writing
        found = store.fs.find(store.path("car/good"), detail=True, refresh=True)
        return {k: (v["ETag"], v["LastModified"]) for k, v in found.items()}

    before = files()
    assert len(before) > 2 * 16
    assert cli.main(args) == 0
    assert files() == before
    again = Manifest.load_or_new("car/catpose_manifest_ingest.json", "ingest", store=store)
    assert again.items["good"] == man.items["good"] and again.status("blank") == "failed"


def test_main_job_ingest_stage_writes_into_the_run_store(raw_frames, s3_bucket, tmp_path):
    """The main job's ingest stage (``--raw-frames``) hands the run context and the store's URI to ingest:
    the raw frames (and their masks) are read from the bucket by each task, and the sequences go straight
    into ``<out>/data`` in the bucket, with no local copy to upload."""
    from catpose.config import IngestConfig
    from catpose.data.stage import _ingest_run
    from catpose.run.config import PipelineConfig
    from catpose.run.graph import Ctx
    from catpose.storage import Store

    raw, _ = raw_frames
    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/run"
    Store(f"s3://{bucket}/raw", endpoint).upload_dir(raw, "")
    cfg = PipelineConfig(out=uri, endpoint_url=endpoint, workers=0, raw_frames=f"s3://{bucket}/raw",
                         ingest=IngestConfig(category="car", max_frames=20))
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    art = _ingest_run(Ctx(cfg, Store(uri, endpoint), scratch))
    assert (
        art.uri == f"{uri}/data" and art.categories == ["car"] and art.made["car"] == {"ok": 1, "failed": 1}
    )
    assert Store(art.uri, endpoint).exists("car/good/pointcloud.ply") and not any(scratch.iterdir())
    assert len(Co3dCategory(art.uri, "car", endpoint)["good"].frames) >= 16
    from catpose.manifest import Manifest

    man = Manifest.load_or_new("car/catpose_manifest_ingest.json", "ingest", store=Store(art.uri, endpoint))
    assert man.items["good"]["masks_made"] == 0  # the given masks came from the bucket with the frames
