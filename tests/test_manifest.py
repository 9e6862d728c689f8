"""Manifests: one record file per item, so two writers keep each other's entries, a resume sees every
finished item, and a truncated record costs only its own item (named in a warning)."""

from __future__ import annotations

import json

from catpose.manifest import Manifest
from catpose.storage import Store


def test_records_survive_a_reload_with_status_error_and_timing(tmp_path):
    m = Manifest.load_or_new(tmp_path / "_manifest.json", "features")
    m.record("a", "ok", seconds=1.23456)
    m.record("b", "failed", error="DataFormatError: x.png: bad")
    m.record("c", "skipped", error="no frames")
    again = Manifest.load_or_new(tmp_path / "_manifest.json", "features")
    assert again.summary() == {"ok": 1, "failed": 1, "skipped": 1}
    assert again.items["a"]["seconds"] == 1.235
    assert again.failed == {"b": "DataFormatError: x.png: bad"} and again.skipped == {"c": "no frames"}
    assert again.keys_with("ok") == ["a"]


def test_two_writers_keep_each_others_items(tmp_path):
    one = Manifest.load_or_new(tmp_path / "_manifest.json", "align")
    two = Manifest.load_or_new(tmp_path / "_manifest.json", "align")
    one.record("x", "ok")
    two.record("y", "ok")  # two never saw x, and its merged file is written last
    two.save()
    merged = json.loads((tmp_path / "_manifest.json").read_text())
    assert set(merged["items"]) == {"x", "y"}
    assert set(Manifest.load_or_new(tmp_path / "_manifest.json", "align").items) == {"x", "y"}


def test_unsaved_records_are_written_by_save(tmp_path):
    m = Manifest.load_or_new(tmp_path / "_manifest.json", "shard")
    m.record("a", "ok", save=False)
    assert "a" not in Manifest.load_or_new(tmp_path / "_manifest.json", "shard").items
    m.save()
    assert Manifest.load_or_new(tmp_path / "_manifest.json", "shard").status("a") == "ok"


def test_a_truncated_record_costs_its_item_only_and_is_named(tmp_path, capsys):
    m = Manifest.load_or_new(tmp_path / "_manifest.json", "features")
    m.record("good", "ok")
    m.record("bad/name", "ok")  # a key with a separator is quoted into one file name
    rec = next(p for p in (tmp_path / "_manifest.items").iterdir() if "bad" in p.name)
    rec.write_text('{"status": "o')  # a write cut short
    (tmp_path / "_manifest.json").write_text("{")  # and the merged copy too
    again = Manifest.load_or_new(tmp_path / "_manifest.json", "features")
    assert again.status("good") == "ok" and again.status("bad/name") is None
    assert any(rec.name in w for w in again.warnings)
    assert rec.name in capsys.readouterr().out


def test_manifest_in_an_s3_store(s3_bucket):
    endpoint, bucket = s3_bucket
    store = Store(f"s3://{bucket}/run", endpoint)
    m = Manifest.load_or_new("features/car/_manifest.json", "features", store=store)
    m.record("seq_a", "ok")
    m.record("seq_b", "failed", error="boom")
    again = Manifest.load_or_new("features/car/_manifest.json", "features", store=store)
    assert again.summary() == {"ok": 1, "failed": 1}
    assert store.exists("features/car/_manifest.items/seq_a.json")
