"""Case 1 of issue 19: one bad annotation record costs its frame (or its video), never the category
nor the run. Each test breaks one record of the cars, then runs the real stages (features on the
category, shards of the whole dataset without --category) and checks that the message names the file
and the field and that every other item completed."""

from __future__ import annotations

import math

import pytest

from catpose.config import ShardConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.shards import iter_shard_rows, write_shards
from catpose.features.runner import run_features

from .conftest import edit_records, fast_features, frame_index

VICTIM = "car_0001"


def _break_frame(data, field_edit):
    """Breaks frame 3 of car_0001; returns that record's index."""
    path = data / "car" / "frame_annotations.jgz"
    idx = {}

    def fn(recs):
        idx["i"] = frame_index(recs, VICTIM, 3)
        field_edit(recs[idx["i"]])

    edit_records(path, fn)
    return idx["i"]


def _shard_rows(out) -> dict[str, int]:
    counts: dict[str, int] = {}
    for r in iter_shard_rows(str(out), columns=["sequence_name"]):
        counts[r["category"]] = counts.get(r["category"], 0) + 1
    return counts


@pytest.mark.parametrize(
    "what, edit, field",
    [
        ("no image", lambda r: r.pop("image"), "image"),
        ("NaN in the camera", lambda r: r["viewpoint"]["T"].__setitem__(1, math.nan), "viewpoint.T"),
        (
            "zero focal length",
            lambda r: r["viewpoint"].__setitem__("focal_length", [0, 0]),
            "viewpoint.focal_length",
        ),
    ],
)
def test_a_bad_frame_record_costs_its_frame_only(data, tmp_path, what, edit, field):
    i = _break_frame(data, edit)
    fpath = str(data / "car" / "frame_annotations.jgz")
    cat = Co3dCategory(data, "car")
    assert list(cat.skipped_frames) == [f"{VICTIM}/3"]
    msg = cat.skipped_frames[f"{VICTIM}/3"]
    assert msg.startswith(fpath) and f"field 'frame_annotations[{i}] (sequence '{VICTIM}').{field}'" in msg, (
        msg
    )
    assert not cat.excluded and [len(cat[n]) for n in cat.sequence_names] == [8, 7, 8]

    man = run_features(fast_features(data, tmp_path / "f"), progress=False)["car"]
    assert man.summary() == {"ok": 3}  # every video, the one with the bad frame too
    assert man.items[VICTIM]["skipped_frames"] == {f"{VICTIM}/3": msg}

    shards = write_shards(ShardConfig(data=data, out=str(tmp_path / "s")), progress=False)  # no --category
    assert shards["skipped"] == {f"car/{VICTIM}/3": msg} and not shards["failed"]
    assert _shard_rows(tmp_path / "s") == {"car": 23, "mug": 24}


def test_null_optional_metadata_never_blocks(data, tmp_path):
    """`video.length: null` (and a wrong type in other optional metadata) costs nothing."""
    spath = data / "car" / "sequence_annotations.jgz"

    def fn(recs):
        recs[0]["video"] = {"path": "car/car_0000/video.mp4", "length": None}
        recs[1]["video"] = {"path": "car/car_0001/video.mp4", "length": "long"}
        recs[2]["viewpoint_quality_score"] = "good"

    edit_records(spath, fn)
    cat = Co3dCategory(data, "car")
    assert (
        cat.sequence_names == ["car_0000", "car_0001", "car_0002"]
        and not cat.excluded
        and not cat.skipped_frames
    )
    assert len(cat.annotation_warnings) == 2
    assert all(w.startswith(str(spath)) and "ignored" in w for w in cat.annotation_warnings)
    assert "field 'sequence_annotations[1] (sequence 'car_0001').video.length'" in cat.annotation_warnings[0]
    man = run_features(fast_features(data, tmp_path / "f"), progress=False)["car"]
    assert man.summary() == {"ok": 3}


def test_a_sequence_record_without_category_costs_its_video_only(data, tmp_path, capsys):
    spath = data / "car" / "sequence_annotations.jgz"
    recs = edit_records(spath, lambda recs: recs[1].pop("category"))
    assert recs[1]["sequence_name"] == VICTIM
    cat = Co3dCategory(data, "car")
    msg = cat.excluded[VICTIM]
    assert (
        msg.startswith(str(spath))
        and f"field 'sequence_annotations[1] (sequence '{VICTIM}').category'" in msg
    )
    assert cat.sequence_names == ["car_0000", "car_0002"]

    man = run_features(fast_features(data, tmp_path / "f"), progress=False)["car"]
    assert man.keys_with("ok") == ["car_0000", "car_0002"]
    assert man.skipped == {VICTIM: msg}  # named in the manifest ...
    # ... and summarised at the end of the stage
    assert "videos excluded (car_0001)" in capsys.readouterr().out

    shards = write_shards(ShardConfig(data=data, out=str(tmp_path / "s")), progress=False)
    assert shards["skipped"] == {f"car/{VICTIM}": msg}
    assert _shard_rows(tmp_path / "s") == {"car": 16, "mug": 24}

    from catpose import cli

    capsys.readouterr()
    assert cli.main(["info", "--data", str(data)]) == 1  # `catpose info` names it too
    printed = capsys.readouterr().out
    assert (
        "car: 2 sequences, 16 frames" in printed
        and f"  {VICTIM}: {msg}" in printed
        and "mug: 3 sequences" in printed
    )


def test_the_main_job_goes_on_past_bad_records(data, tmp_path):
    """The validate stage used to abort the whole run: now the broken video is reported, every stage
    runs, and the other videos of both categories are aligned."""
    from catpose.config import AlignConfig, SearchConfig
    from catpose.run.config import PipelineConfig
    from catpose.run.runner import run

    edit_records(data / "car" / "sequence_annotations.jgz", lambda recs: recs[1].pop("category"))
    edit_records(
        data / "mug" / "frame_annotations.jgz",
        lambda recs: recs[frame_index(recs, "mug_0002", 5)]["viewpoint"]["R"][0].__setitem__(0, math.inf),
    )
    report = run(PipelineConfig(out=tmp_path / "run", data=data, workers=0, train_categories=(), eval_pairs=0,
                                align=AlignConfig(search=SearchConfig(rotations=256, vertices=200))))
    assert list(report["unusable"]) == [f"car/{VICTIM}"] and "category" in report["unusable"][f"car/{VICTIM}"]
    assert (
        "mug/mug_0002/5" in report["skipped_frames"]
        and "viewpoint.R" in report["skipped_frames"]["mug/mug_0002/5"]
    )
    assert {r["category"]: r["videos"] for r in report["align"]} == {"car": 2, "mug": 3}
    assert (
        report["shard"]["categories"]["mug"]["frames"] == 23
        and report["shard"]["categories"]["car"]["frames"] == 16
    )
