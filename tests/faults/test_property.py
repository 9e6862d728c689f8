"""Property test of issue 19: annotation records mutated at random (deleted fields, nulls, wrong
types, NaN/Inf) cost only the items of the touched records. Seeded ``random`` loops (no hypothesis):
each round breaks 1-4 records of the cars, parses the category and writes its shards, and checks that

* every frame of a video without a touched record is kept, exactly as it was;
* a frame of a touched video is lost only when its own record was touched, or when its whole video
  is excluded — and only videos with a touched record are excluded;
* every loss is named with the annotation file and a field;
* the shards hold exactly the kept frames.
"""

from __future__ import annotations

import copy
import math
import random

from catpose.config import ShardConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.shards import iter_shard_rows, write_shards
from catpose.data.types import parse_frame_annotation, parse_sequence_annotation

from .conftest import read_records, write_records

ROUNDS = 24


def _paths(obj, prefix=()):
    """Every path into a JSON record (dict keys and list positions), leaves and inner nodes."""
    out = []
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else []
    for k, v in items:
        out.append(prefix + (k,))
        out += _paths(v, prefix + (k,))
    return out


def _mutate(rec: dict, rng: random.Random) -> str:
    path = rng.choice(_paths(rec))
    parent = rec
    for k in path[:-1]:
        parent = parent[k]
    key = path[-1]
    kind = rng.choice(["delete", "null", "wrong type", "nan/inf"])
    if kind == "delete":
        del parent[key]
    elif kind == "null":
        parent[key] = None
    elif kind == "wrong type":
        parent[key] = rng.choice(["x", "", [], {}, True, [1, "a"], {"a": 1}])
    else:
        parent[key] = rng.choice([math.nan, math.inf, -math.inf])
    return f"{kind} at {'.'.join(map(str, path))}"


def _named(msg: str, *files) -> bool:
    return any(str(f) in msg for f in files) and "field '" in msg


def test_random_record_mutations_cost_only_the_touched_records_items(synth_root, tmp_path):
    fpath0, spath0 = (
        synth_root / "car" / "frame_annotations.jgz",
        synth_root / "car" / "sequence_annotations.jgz",
    )
    frames0, seqs0 = read_records(fpath0), read_records(spath0)
    total = len(frames0)
    lost_total = 0
    for seed in range(ROUNDS):
        rng = random.Random(seed)
        root = tmp_path / f"r{seed}"
        (root / "car").mkdir(parents=True)
        for s in seqs0:  # media shared with the session dataset (read only)
            (root / "car" / s["sequence_name"]).symlink_to(synth_root / "car" / s["sequence_name"])
        frames, seqs = copy.deepcopy(frames0), copy.deepcopy(seqs0)
        touched_f, touched_s, what = set(), set(), []
        for _ in range(rng.randint(1, 4)):
            if rng.random() < 0.75:
                i = rng.randrange(len(frames))
                touched_f.add(i)
                what.append(f"frame record {i}: {_mutate(frames[i], rng)}")
            else:
                i = rng.randrange(len(seqs))
                touched_s.add(i)
                what.append(f"sequence record {i}: {_mutate(seqs[i], rng)}")
        fpath, spath = root / "car" / "frame_annotations.jgz", root / "car" / "sequence_annotations.jgz"
        write_records(fpath, frames)
        write_records(spath, seqs)
        ctx = f"round {seed}: {what}"

        cat = Co3dCategory(root, "car")
        touched_videos = {frames0[i]["sequence_name"] for i in touched_f} | {
            seqs0[i]["sequence_name"] for i in touched_s
        }
        assert set(cat.excluded) <= touched_videos, ctx
        kept = {(n, f.frame_number): f for n, fs in cat.frame_annotations.items() for f in fs}
        for i, rec in enumerate(frames0):
            name, key = rec["sequence_name"], (rec["sequence_name"], rec["frame_number"])
            if name not in touched_videos:
                assert kept.get(key) == parse_frame_annotation(rec, str(fpath), i), ctx  # kept, unchanged
            elif key not in kept:
                assert i in touched_f or name in cat.excluded, ctx  # lost only through its own record
        for i, rec in enumerate(seqs0):
            if rec["sequence_name"] not in touched_videos:
                assert cat.sequence_annotations[rec["sequence_name"]] == parse_sequence_annotation(
                    rec, str(spath), i
                )
        for msg in list(cat.excluded.values()) + list(cat.skipped_frames.values()):
            assert _named(msg, fpath, spath), (ctx, msg)
        for w in cat.annotation_warnings:
            assert _named(w, fpath, spath) and "ignored" in w, (ctx, w)
        excluded_frames = sum(1 for r in frames0 if r["sequence_name"] in cat.excluded)
        assert total - len(kept) <= len(touched_f) + excluded_frames, ctx
        lost_total += total - len(kept)

        out = tmp_path / f"s{seed}"
        man = write_shards(ShardConfig(data=root, out=str(out)), progress=False)
        rows = {(r["sequence_name"], r["frame_number"]) for r in iter_shard_rows(str(out), columns=[
            "sequence_name", "frame_number"])} if kept else set()
        assert rows == set(kept), ctx
        assert man["categories"]["car"]["frames"] == len(kept) and not man["failed"], ctx
        assert set(man["skipped"]) == {f"car/{k}" for k in list(cat.skipped_frames) + list(cat.excluded)}, ctx
    assert lost_total > 0  # the mutations did break records (the property was not tested vacuously)
