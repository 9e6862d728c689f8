"""Parquet frame shards on a local folder and on S3 (a real moto server on 127.0.0.1)."""

import shutil
import socket
import time

import numpy as np
import pyarrow.parquet as pq
import pytest

from catpose.config import ShardConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.shards import iter_shard_rows, read_shards_ray, row_camera, shard_files, write_shards
from catpose.errors import StorageError
from catpose.storage import Store


def source_bytes(root):
    out = {}
    for c in ("car", "mug"):
        for seq in Co3dCategory(root, c):
            for fr in seq.frames:
                out[(seq.name, fr.frame_number)] = (
                    fr.image_path.read_bytes(),
                    fr.mask_path.read_bytes(),
                    fr.camera,
                )
    return out


def check_rows(rows, src):
    assert len(rows) == len(src)
    for r in rows:
        img, mask, cam = src[(r["sequence_name"], r["frame_number"])]
        assert r["image"] == img and r["mask"] == mask  # byte-identical to the files on disk
        assert r["category"] == r["sequence_name"].split("_")[0]
        np.testing.assert_array_equal(row_camera(r).R, cam.R)
        np.testing.assert_array_equal(row_camera(r).focal_length, cam.focal_length)


def test_local_shards_round_trip(synth_root, tmp_path):
    out = str(tmp_path / "shards")
    man = write_shards(ShardConfig(data=synth_root, out=out, rows_per_shard=10), progress=False)
    assert man["categories"]["car"] == {**man["categories"]["car"], "frames": 24, "skipped": 0, "shards": 3}
    assert len(shard_files(out)) == 6
    check_rows(list(iter_shard_rows(out)), source_bytes(synth_root))


def test_s3_shards_equal_local_shards(synth_root, tmp_path, s3_bucket, ray_local):
    endpoint, bucket = s3_bucket
    local = str(tmp_path / "shards")
    uri = f"s3://{bucket}/catpose/shards"
    write_shards(ShardConfig(data=synth_root, out=local, rows_per_shard=10), progress=False)
    write_shards(
        ShardConfig(data=synth_root, out=uri, rows_per_shard=10, endpoint_url=endpoint), progress=False
    )
    store = Store(uri, endpoint)
    files = shard_files(uri, endpoint)
    assert files == shard_files(local)
    for rel in files:  # the same Parquet files, byte for byte, in both stores
        assert store.read_bytes(rel) == (tmp_path / "shards" / rel).read_bytes()
    src = source_bytes(synth_root)
    check_rows(list(iter_shard_rows(uri, endpoint)), src)
    # Ray Data reads the S3 shards through s3fs
    ds = read_shards_ray(uri, endpoint, columns=["sequence_name", "frame_number", "image", "mask", "category",
                                                  "R", "T", "focal_length", "principal_point", "height",
                                                  "width", "intrinsics_format"])
    rows = ds.take_all()
    check_rows([{**r, "image": bytes(r["image"]), "mask": bytes(r["mask"])} for r in rows], src)


def test_bad_frames_are_skipped_and_recorded(synth_root, tmp_path):
    root = tmp_path / "d"
    shutil.copytree(synth_root, root)
    seq = Co3dCategory(root, "car")[Co3dCategory(root, "car").sequence_names[1]]
    bad_img = seq.frames[3].image_path
    bad_img.write_bytes(bad_img.read_bytes()[:200])  # truncated JPEG
    seq.frames[4].mask_path.unlink()  # missing mask
    from catpose.data.types import dump_annotations, load_frame_annotations

    fa_path = root / "car" / "frame_annotations.jgz"
    anns = load_frame_annotations(fa_path)
    victim = next(a for a in anns if a.sequence_name == seq.name and a.frame_number == 6)
    victim.viewpoint = None  # missing annotation field
    dump_annotations(fa_path, anns)
    out = str(tmp_path / "shards")
    man = write_shards(ShardConfig(data=root, out=out, category=("car",)), progress=False)
    assert man["categories"]["car"]["frames"] == 21
    skipped = man["skipped"]
    assert set(skipped) == {f"car/{seq.name}/3", f"car/{seq.name}/4", f"car/{seq.name}/6"}
    assert (
        "viewpoint" in skipped[f"car/{seq.name}/6"]
        and "frame_annotations.jgz" in skipped[f"car/{seq.name}/6"]
    )
    assert str(bad_img) in skipped[f"car/{seq.name}/3"]
    assert "mask not found" in skipped[f"car/{seq.name}/4"]
    assert len(list(iter_shard_rows(out))) == 21


def test_rerun_skips_written_shards(synth_root, tmp_path):
    out = tmp_path / "shards"
    write_shards(ShardConfig(data=synth_root, out=str(out), rows_per_shard=10), progress=False)
    first = out / "category=car" / "part-00000.parquet"
    mtime = first.stat().st_mtime_ns
    time.sleep(0.01)
    write_shards(ShardConfig(data=synth_root, out=str(out), rows_per_shard=10), progress=False)
    assert first.stat().st_mtime_ns == mtime
    assert pq.read_metadata(first).num_rows == 10


def test_unreachable_s3_is_a_clear_error(synth_root):
    with socket.socket() as s:  # a port where nothing listens
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.time()
    with pytest.raises(StorageError, match=r"s3://nobucket/x: cannot reach S3 at http://127.0.0.1"):
        write_shards(ShardConfig(data=synth_root, out="s3://nobucket/x", endpoint_url=f"http://127.0.0.1:{port}"),
                     progress=False)
    assert time.time() - t0 < 60


def test_missing_bucket_is_a_clear_error(synth_root, s3_server):
    with pytest.raises(StorageError, match="bucket 'no-such-bucket' does not exist"):
        write_shards(ShardConfig(data=synth_root, out="s3://no-such-bucket/x", endpoint_url=s3_server),
                     progress=False)
