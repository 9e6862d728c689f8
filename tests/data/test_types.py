"""Annotation parsing: valid CO3D records load; broken ones fail naming file and field."""

import copy
import gzip
import json

import pytest

from catpose.data.types import dump_jgz, load_frame_annotations, load_sequence_annotations
from catpose.errors import DataFormatError, MissingFileError

FRAME = {
    "sequence_name": "110_13051_23361", "frame_number": 3, "frame_timestamp": 0.1,
    "image": {"path": "car/110_13051_23361/images/frame000007.jpg", "size": [900, 1600]},
    "depth": {"path": "car/110_13051_23361/depths/frame000007.jpg.geometric.png", "scale_adjustment": 0.92,
              "mask_path": "car/110_13051_23361/depth_masks/frame000007.png"},
    "mask": {"path": "car/110_13051_23361/masks/frame000007.png", "mass": 1234.5},
    "viewpoint": {"R": [[1, 0, 0], [0, 1, 0], [0, 0, 1]], "T": [0.1, 0.2, 5.0], "focal_length": [3.1, 3.1],
                  "principal_point": [0.0, -0.01], "intrinsics_format": "ndc_isotropic"},
    "meta": {"frame_type": "test_known", "frame_splits": ["a"]},
}
SEQ = {"sequence_name": "110_13051_23361", "category": "car",
       "point_cloud": {"path": "car/110_13051_23361/pointcloud.ply", "quality_score": 0.8, "n_points": 1000},
       "viewpoint_quality_score": 1.2, "video": {"path": "car/110_13051_23361/video.mp4", "length": 10.0}}


def write(tmp_path, records, name="frame_annotations.jgz"):
    p = tmp_path / name
    dump_jgz(p, records)
    return p


def test_loads_a_co3d_frame_record(tmp_path):
    (fa,) = load_frame_annotations(write(tmp_path, [FRAME]))
    assert fa.sequence_name == "110_13051_23361" and fa.frame_number == 3
    assert fa.image.size == (900, 1600)
    assert fa.depth.scale_adjustment == pytest.approx(0.92)
    assert fa.viewpoint.intrinsics_format == "ndc_isotropic"
    assert fa.viewpoint.R[2] == (0.0, 0.0, 1.0)
    assert fa.meta["frame_type"] == "test_known"


def test_default_intrinsics_format_is_co3d_legacy(tmp_path):
    rec = copy.deepcopy(FRAME)
    del rec["viewpoint"]["intrinsics_format"]
    (fa,) = load_frame_annotations(write(tmp_path, [rec]))
    assert fa.viewpoint.intrinsics_format == "ndc_norm_image_bounds"


def test_loads_sequence_records(tmp_path):
    (sa,) = load_sequence_annotations(write(tmp_path, [SEQ], "sequence_annotations.jgz"))
    assert sa.category == "car" and sa.point_cloud.n_points == 1000 and sa.video.length == 10.0


@pytest.mark.parametrize("mutate, field", [
    (lambda r: r["viewpoint"].pop("T"), "viewpoint.T"),
    (lambda r: r["viewpoint"].__setitem__("R", [[1, 0], [0, 1]]), "viewpoint.R"),
    (lambda r: r["viewpoint"].__setitem__("focal_length", [-1, 2]), "viewpoint.focal_length"),
    (lambda r: r["viewpoint"].__setitem__("intrinsics_format", "pixels"), "viewpoint.intrinsics_format"),
    (lambda r: r["image"].pop("path"), "image.path"),
    (lambda r: r["image"].__setitem__("size", [900]), "image.size"),
    (lambda r: r.pop("frame_number"), "frame_number"),
    (lambda r: r["viewpoint"]["T"].__setitem__(0, float("nan")), "viewpoint.T"),
])
def test_broken_field_names_file_record_and_field(tmp_path, mutate, field):
    good = copy.deepcopy(FRAME)
    bad = copy.deepcopy(FRAME)
    mutate(bad)
    p = write(tmp_path, [good, bad])
    with pytest.raises(DataFormatError) as e:
        load_frame_annotations(p)
    msg = str(e.value)
    assert str(p) in msg and "frame_annotations[1]" in msg and field in msg
    assert e.value.field.endswith(field)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(MissingFileError, match="nope.jgz"):
        load_frame_annotations(tmp_path / "nope.jgz")
    p = tmp_path / "frame_annotations.jgz"
    p.write_bytes(gzip.compress(json.dumps([FRAME]).encode())[:-20])  # truncated gzip
    with pytest.raises(DataFormatError, match="frame_annotations.jgz"):
        load_frame_annotations(p)
    p.write_bytes(gzip.compress(b'{"not": "a list"}'))
    with pytest.raises(DataFormatError, match="expected a list"):
        load_frame_annotations(p)


def test_dump_is_reproducible(tmp_path):
    a, b = write(tmp_path, [FRAME], "a.jgz"), write(tmp_path, [FRAME], "b.jgz")
    assert a.read_bytes() == b.read_bytes()
