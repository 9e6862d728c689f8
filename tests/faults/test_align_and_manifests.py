"""Case 3 of issue 19: an unreadable feature file fails the pairs of its video only and leaves the
video out of the alignment; an interrupted chunk write is recomputed (and said so), never a bare
JSONDecodeError; a truncated ``_manifest.json`` or ``_catpose_shards.json`` is named and recovered."""

from __future__ import annotations

from catpose.align.run import _chunk_task, run_align, video_summaries
from catpose.align.search import SearchConfig
from catpose.config import AlignConfig, ShardConfig
from catpose.data.shards import MANIFEST, write_shards
from catpose.features.runner import run_features

from .conftest import fast_features

CARS = ["car_0000", "car_0001", "car_0002"]


def test_an_unreadable_feature_file_fails_its_own_pairs_and_video_only(data, tmp_path):
    feats = tmp_path / "f"
    run_features(fast_features(data, feats), progress=False)
    victim = feats / "car" / "car_0001.npz"
    victim.write_bytes(victim.read_bytes()[:500])
    pairs = [("car_0000", "car_0001"), ("car_0000", "car_0002"), ("car_0001", "car_0002")]
    res = _chunk_task((0, str(feats), "car", pairs, SearchConfig(rotations=256, vertices=100), "cpu", None))
    assert [(r["seq_i"], r["seq_j"]) for r in res["results"]] == [("car_0000", "car_0002")]
    assert [(f["seq_i"], f["seq_j"]) for f in res["failed"]] == [pairs[0], pairs[2]]
    assert all("video 'car_0001'" in f["error"] and str(victim) in f["error"] for f in res["failed"])
    summ = video_summaries(CARS, str(feats), "car", None, workers=0, progress=False)  # the centroid pass
    assert [n for n in CARS if summ[n]["error"]] == ["car_0001"] and str(victim) in summ["car_0001"]["error"]
    assert summ["car_0000"]["centroid"] is not None and summ["car_0002"]["centroid"] is not None


def test_an_interrupted_chunk_write_is_recomputed(data, tmp_path, capsys):
    cfg = AlignConfig(data=data, category="car", out=tmp_path / "a", features=str(tmp_path / "f"),
                      search=SearchConfig(rotations=256, vertices=100), workers=0)
    run_features(fast_features(data, tmp_path / "f"), progress=False)
    first = run_align(cfg, progress=False)
    (chunk,) = (tmp_path / "a" / "pairs").glob("*/chunk-00000.json")
    chunk.write_text(chunk.read_text()[:40])  # a write cut short (old runs wrote in place)
    capsys.readouterr()
    again = run_align(cfg, progress=False)
    printed = capsys.readouterr().out
    assert f"{chunk}: not valid JSON" in printed and "recomputing chunk 0" in printed
    assert again["pairs"] == first["pairs"] == 3 and again["videos"] == 3
    chunk.write_text('{"pairs": [["car_0000", "car_0001"]], "results": []}')  # valid JSON, other pairs
    run_align(cfg, progress=False)
    assert "field 'pairs': other pairs than this run's chunk; recomputing chunk 0" in capsys.readouterr().out


def test_a_truncated_features_manifest_is_named_and_its_records_still_count(data, tmp_path, capsys):
    fcfg = fast_features(data, tmp_path / "f")
    run_features(fcfg, progress=False)
    man_file = tmp_path / "f" / "car" / "_manifest.json"
    man_file.write_text(man_file.read_text()[:100])
    record = tmp_path / "f" / "car" / "_manifest.items" / "car_0002.json"
    record.write_text(record.read_text()[:10])
    capsys.readouterr()
    man = run_features(fcfg, progress=False)["car"]
    printed = capsys.readouterr().out
    assert f"manifest: {man_file}: not valid JSON" in printed
    assert f"{record}: unreadable record" in printed and "the item counts as not done" in printed
    # the truncated record's video is recomputed
    assert "features car: 2 of 3 videos kept (inputs and settings unchanged), 1 new" in printed
    assert man.summary() == {"ok": 3}


def test_a_truncated_shard_manifest_is_named_and_the_run_goes_on(data, tmp_path, capsys):
    out = tmp_path / "s"
    write_shards(ShardConfig(data=data, out=str(out)), progress=False)
    (out / MANIFEST).write_text((out / MANIFEST).read_text()[:50])
    capsys.readouterr()
    man = write_shards(ShardConfig(data=data, out=str(out)), progress=False)
    printed = capsys.readouterr().out
    assert f"{out / MANIFEST}: not valid JSON" in printed and "ignored" in printed
    assert {c: v["frames"] for c, v in man["categories"].items()} == {"car": 24, "mug": 24}
