"""Case 4 of issue 19: no silent wrong result with exit code 0. A duplicated sequence_name, a camera
that is not a rotation, a string where the config wants a list or a number, and a frame with
``mask: null`` in a masked video are each named, and cost only their own item."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from catpose.data.co3d import Co3dCategory
from catpose.errors import ConfigError
from catpose.features.runner import load_surface_features, run_features
from catpose.run.config import load_config

from .conftest import edit_records, fast_features, frame_index


def test_a_duplicated_sequence_name_is_an_error_naming_both_records(data, tmp_path):
    spath = data / "car" / "sequence_annotations.jgz"

    def fn(recs):  # car_0002's record now claims to be car_0001 (with car_0002's point cloud)
        recs[2]["sequence_name"] = "car_0001"

    edit_records(spath, fn)
    cat = Co3dCategory(data, "car")
    msg = cat.excluded["car_0001"]
    assert msg.startswith(str(spath)) and "field 'sequence_name'" in msg and "records [1] and [2]" in msg
    assert "car_0001" not in cat.sequence_names  # never paired with another video's cloud
    # car_0002 lost its own record: its frames are still there, with the layout's point cloud path
    assert cat["car_0002"].point_cloud_path == data / "car" / "car_0002" / "pointcloud.ply"
    man = run_features(fast_features(data, tmp_path / "f"), progress=False)["car"]
    assert man.keys_with("ok") == ["car_0000", "car_0002"] and man.skipped == {"car_0001": msg}


def test_duplicated_frame_numbers_exclude_their_video_naming_both_records(data):
    fpath = data / "car" / "frame_annotations.jgz"
    idx = {}

    def fn(recs):
        idx["a"], idx["b"] = frame_index(recs, "car_0000", 2), frame_index(recs, "car_0000", 3)
        recs[idx["b"]]["frame_number"] = 2

    edit_records(fpath, fn)
    cat = Co3dCategory(data, "car")
    msg = cat.excluded["car_0000"]
    assert (
        msg.startswith(str(fpath))
        and f"records [{idx['a']}] and [{idx['b']}]" in msg
        and "'frame_number'" in msg
    )
    assert cat.sequence_names == ["car_0001", "car_0002"]


def test_an_all_zero_rotation_fails_its_frames_and_a_video_without_cameras(data, tmp_path):
    """Used to give all-zero features marked "ok"."""
    fpath = data / "car" / "frame_annotations.jgz"

    def fn(recs):
        for r in recs:
            if r["sequence_name"] == "car_0002" or (
                r["sequence_name"] == "car_0000" and r["frame_number"] == 4
            ):
                r["viewpoint"]["R"] = [[0, 0, 0], [0, 0, 0], [0, 0, 0]]

    edit_records(fpath, fn)
    cat = Co3dCategory(data, "car")
    assert (
        "viewpoint.R" in cat.skipped_frames["car_0000/4"]
        and "not a rotation matrix" in cat.skipped_frames["car_0000/4"]
    )
    assert cat.excluded["car_0002"].startswith("no usable frame record (8 bad; first: " + str(fpath))
    assert "viewpoint.R" in cat.excluded["car_0002"]
    man = run_features(fast_features(data, tmp_path / "f"), progress=False)["car"]
    assert man.keys_with("ok") == ["car_0000", "car_0001"] and list(man.skipped) == ["car_0002"]
    for n in ("car_0000", "car_0001"):
        sf = load_surface_features(str(tmp_path / "f"), "car", n)
        assert sf.visible.any(1).all() and np.abs(sf.features).sum() > 0  # real features in every frame


def test_a_mask_null_frame_is_skipped_and_named_not_masks_off(data, tmp_path):
    """Decision: in a video whose other frames have masks, a frame with ``mask: null`` is skipped (a
    mask-less frame would let the background into the video's features) and named in the manifest."""
    fpath = data / "car" / "frame_annotations.jgz"
    idx = {}

    def fn(recs):
        idx["i"] = frame_index(recs, "car_0001", 7)
        recs[idx["i"]]["mask"] = None

    edit_records(fpath, fn)
    cat = Co3dCategory(data, "car")
    msg = cat.skipped_frames["car_0001/7"]
    assert (
        msg.startswith(str(fpath))
        and f"field 'frame_annotations[{idx['i']}].mask'" in msg
        and "skipped" in msg
    )
    assert all(f.mask_path is not None for f in cat["car_0001"].frames) and len(cat["car_0001"]) == 7
    man = run_features(fast_features(data, tmp_path / "f", frames=8), progress=False)["car"]
    assert man.summary() == {"ok": 3} and man.items["car_0001"]["skipped_frames"] == {"car_0001/7": msg}
    sf = load_surface_features(str(tmp_path / "f"), "car", "car_0001")
    assert 7 not in sf.frame_numbers.tolist() and len(sf.frame_numbers) == 7
    full = load_surface_features(str(tmp_path / "f"), "car", "car_0000")
    # masks still on: the share of visible vertices is that of a masked video, not more
    assert abs(sf.visible.mean() - full.visible.mean()) < 0.15


@pytest.mark.parametrize("values, field, expected", [
    ({"train_categories": "car"}, "train_categories", "expected a list (write [car] for one item)"),
    ({"features": {"vertices": "200"}}, "features.vertices", "expected an integer, got '200'"),
    ({"align": {"sync": "yes"}}, "align.sync", "expected true or false"),
    ({"shard": {"category": ["car", 3]}}, "shard.category[1]", "expected a string, got 3"),
    ({"synth": {"category": ["car"]}, "train_categories": ["plane"]}, "train_categories",
     "['plane'] are not among the run's categories ['car']"),
])
def test_a_config_with_the_wrong_type_fails_before_any_work(tmp_path, values, field, expected):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump(values))
    with pytest.raises(ConfigError) as e:
        load_config(["--config", str(cfg), "--out", str(tmp_path / "run")])
    assert (
        str(e.value).startswith(str(cfg)) and f"field '{field}'" in str(e.value) and expected in str(e.value)
    )
    assert not (tmp_path / "run").exists()  # nothing ran


def test_a_category_whose_every_video_fails_is_not_an_ok_run(data, tmp_path):
    """Every mug's features fail (empty point clouds): the cars are still aligned and reported, and the
    run ends with an error naming the category, never as a success."""
    from catpose.config import AlignConfig, SearchConfig
    from catpose.data.pointcloud import PointCloud, write_ply
    from catpose.errors import CatposeError
    from catpose.run.config import PipelineConfig
    from catpose.run.runner import run

    for n in ("mug_0000", "mug_0001", "mug_0002"):
        write_ply(data / "mug" / n / "pointcloud.ply", PointCloud(np.zeros((0, 3), np.float32)))
    out = tmp_path / "run"
    with pytest.raises(CatposeError, match=r"the run finished without \['mug'\]: features: no video of "
                                           r"category "
                                           r"'mug' could be computed \(first, 'mug_0000': .*pointcloud.ply"):
        run(PipelineConfig(out=out, data=data, workers=0, train_categories=(), eval_pairs=0,
                           align=AlignConfig(search=SearchConfig(rotations=256, vertices=200))))
    report = (out / "report.md").read_text()
    assert "**Failed categories**" in report and "- `mug`: features: no video" in report
    assert "| car | 3 | 3 |" in report  # the cars: 3 videos aligned from 3 pairs
    assert (out / "align" / "car" / "alignment.parquet").is_file() and not (out / "align" / "mug").exists()
