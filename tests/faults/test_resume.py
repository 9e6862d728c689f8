"""Case 2 of issue 19: a resume verifies what it trusts. A 0-byte, truncated or column-less shard is
rewritten by the next `catpose shard` (and never read silently short); a truncated feature file is
recomputed by the next `catpose features`. Each time the run says which file and why."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from catpose.config import ShardConfig
from catpose.data.shards import SCHEMA, iter_shard_rows, read_shards_ray, verify_shard, write_shards
from catpose.errors import DataFormatError
from catpose.features.runner import load_surface_features, run_features
from catpose.storage import Store

from .conftest import fast_features

SHARD = "category=car/part-00000.parquet"


def _break_empty(p):
    p.write_bytes(b"")


def _break_truncated(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _break_column(p):
    pq.write_table(pq.read_table(p).drop(["R"]), p)


@pytest.mark.parametrize("breaks, why", [(_break_empty, "not a readable Parquet file"),
                                         (_break_truncated, "not a readable Parquet file"),
                                         (_break_column, "field 'R': missing column")])
def test_a_broken_shard_is_an_error_when_read_and_rewritten_on_resume(data, tmp_path, capsys, breaks, why):
    out = tmp_path / "shards"
    cfg = ShardConfig(data=data, out=str(out), rows_per_shard=16)
    write_shards(cfg, progress=False)
    victim = out / SHARD
    breaks(victim)
    # reading never silently sees fewer rows or dies later on a missing column
    with pytest.raises(DataFormatError, match=f"{victim}: .*{why}"):
        list(iter_shard_rows(str(out)))
    capsys.readouterr()
    man = write_shards(cfg, progress=False)
    printed = capsys.readouterr().out
    assert f"{victim}: " in printed and why in printed and "rewriting it" in printed
    assert verify_shard(Store(str(out)), SHARD, 16) is None
    assert pq.read_schema(victim).remove_metadata().equals(SCHEMA)
    assert man["categories"]["car"] == {**man["categories"]["car"], "frames": 24, "skipped": 0, "shards": 2}
    rows = list(iter_shard_rows(str(out), columns=["sequence_name", "frame_number"]))
    assert len(rows) == 48 and len({(r["sequence_name"], r["frame_number"]) for r in rows}) == 48


def test_ray_data_reads_every_row_after_the_repair(data, tmp_path, ray_local):
    out = tmp_path / "shards"
    cfg = ShardConfig(data=data, out=str(out), category=("car",), rows_per_shard=16)
    write_shards(cfg, progress=False)
    (out / SHARD).write_bytes(b"")
    with pytest.raises(DataFormatError, match="part-00000.parquet"):
        read_shards_ray(str(out), columns=["sequence_name"])
    write_shards(cfg, progress=False)
    assert read_shards_ray(str(out), columns=["sequence_name"]).count() == 24


def test_a_truncated_feature_file_is_recomputed_not_trusted(data, tmp_path, capsys):
    fcfg = fast_features(data, tmp_path / "f")
    run_features(fcfg, progress=False)
    victim = tmp_path / "f" / "car" / "car_0002.npz"
    good = load_surface_features(str(tmp_path / "f"), "car", "car_0002")
    victim.write_bytes(victim.read_bytes()[:2000])
    capsys.readouterr()
    man = run_features(fcfg, progress=False)["car"]
    printed = capsys.readouterr().out
    assert (
        f"'car_0002' was done but its output is invalid ({victim}: not a catpose surface-feature file"
        in printed
    )
    assert "recomputing" in printed
    assert (
        "features car: 2 of 3 videos kept (inputs and settings unchanged), 1 recomputed (output invalid)"
        in printed
    )
    assert man.summary() == {"ok": 3}
    again = load_surface_features(str(tmp_path / "f"), "car", "car_0002")
    assert again.features.shape == good.features.shape and (again.vertices == good.vertices).all()


def test_a_feature_file_with_wrong_shapes_is_recomputed(data, tmp_path, capsys):
    """Readable, but not what the manifest says (fewer vertices): recomputed as well."""
    import dataclasses

    fcfg = fast_features(data, tmp_path / "f")
    run_features(fcfg, progress=False)
    store = Store(str(tmp_path / "f"))
    sf = load_surface_features(str(tmp_path / "f"), "car", "car_0000")
    cut = dataclasses.replace(
        sf, vertices=sf.vertices[:50], features=sf.features[:, :50], visible=sf.visible[:, :50]
    )
    store.write_bytes("car/car_0000.npz", cut.to_bytes())
    capsys.readouterr()
    run_features(fcfg, progress=False)
    printed = capsys.readouterr().out
    assert (
        "'car_0000' was done but its output is invalid" in printed
        and "field 'features': 50 vertices, the manifest says 200" in printed
    )
    assert load_surface_features(str(tmp_path / "f"), "car", "car_0000").vertices.shape == (200, 3)


def test_a_broken_shard_on_s3_is_named_and_rewritten(data, tmp_path, s3_bucket, capsys):
    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/shards"
    cfg = ShardConfig(data=data, out=uri, category=("car",), rows_per_shard=16, endpoint_url=endpoint)
    write_shards(cfg, progress=False)
    store = Store(uri, endpoint)
    store.fs.pipe_file(store.path(SHARD), b"PAR1")  # an object cut short
    with pytest.raises(DataFormatError, match=f"{uri}/{SHARD}: not a readable Parquet file"):
        list(iter_shard_rows(uri, endpoint))
    capsys.readouterr()
    write_shards(cfg, progress=False)
    assert f"{uri}/{SHARD}: not a readable Parquet file" in capsys.readouterr().out
    assert verify_shard(store, SHARD, 16) is None and len(list(iter_shard_rows(uri, endpoint))) == 24
