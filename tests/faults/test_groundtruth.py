"""Issue 34 (errors name the file): a ground-truth file that cannot be read, or whose records are not
what they claim, is an error naming the file and the record's field, never a KeyError or a reshape
failure from deep inside, and a point-label file is never unpickled."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from catpose.data.groundtruth import GT_FILE, GT_POINTS_DIR, load_ground_truth, load_point_labels
from catpose.errors import DataFormatError, MissingFileError


def _gt(data):
    return json.loads((data / GT_FILE).read_text())


def test_a_ground_truth_file_that_is_no_json_is_named(data):
    (data / GT_FILE).write_text('{"categories": {"car": ')
    with pytest.raises(DataFormatError, match=f"{data / GT_FILE}: not a readable JSON file"):
        load_ground_truth(data, "car")
    (data / GT_FILE).unlink()
    with pytest.raises(MissingFileError, match=f"ground truth not found: {data / GT_FILE}"):
        load_ground_truth(data, "car")


@pytest.mark.parametrize(
    "edit, field, why",
    [
        (lambda r: r.pop("rotation"), "rotation", "missing"),
        (
            lambda r: r.__setitem__("rotation", [[1, 0, 0], [0, 1, 0]]),
            "rotation",
            r"shape \[2, 3\], expected \[3, 3\]",
        ),
        (lambda r: r.__setitem__("translation", [0, "a", 0]), "translation", "not numbers"),
        (lambda r: r.__setitem__("translation", [0, float("nan"), 0]), "translation", "not finite"),
        (lambda r: r.__setitem__("scale", -1), "scale", "scale -1 is not positive"),
    ],
)
def test_a_malformed_similarity_record_names_the_file_and_field(data, edit, field, why):
    gt = _gt(data)
    name = sorted(gt["categories"]["car"]["sequences"])[1]
    edit(gt["categories"]["car"]["sequences"][name])
    (data / GT_FILE).write_text(json.dumps(gt))
    with pytest.raises(DataFormatError, match=f"{data / GT_FILE}: field "
                                              f"'categories.car.sequences.{name}.{field}': "
                                              f"{why}"):
        load_ground_truth(data, "car")
    assert len(load_ground_truth(data, "mug")) == 3  # the other category's records still read


def test_sequences_that_are_no_mapping_and_a_missing_category(data):
    gt = _gt(data)
    gt["categories"]["car"]["sequences"] = ["car_0000"]
    (data / GT_FILE).write_text(json.dumps(gt))
    with pytest.raises(DataFormatError, match="field 'categories.car.sequences': not a mapping"):
        load_ground_truth(data, "car")
    with pytest.raises(DataFormatError, match="field 'categories.bike.sequences': no ground truth for "
                                              "category 'bike'"):
        load_ground_truth(data, "bike")


def test_an_unreadable_or_pickled_point_label_file_is_named_and_never_run(data, tmp_path):
    folder = data / GT_POINTS_DIR / "car"
    folder.mkdir(parents=True, exist_ok=True)
    f = folder / "car_0001.npy"
    marker = tmp_path / "ran"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    np.save(f, np.array([Payload()], dtype=object), allow_pickle=True)  # an object array: a pickle inside
    with pytest.raises(DataFormatError, match=f"{f}: not a readable .npy file of point labels"):
        load_point_labels(data, "car", "car_0001")
    assert not marker.exists()
    f.write_bytes(pickle.dumps([True, False]))  # not even .npy
    with pytest.raises(DataFormatError, match=f"{f}: not a readable .npy file"):
        load_point_labels(data, "car", "car_0001")
    np.save(f, np.ones((4, 2), bool))  # wrong shape
    with pytest.raises(DataFormatError, match=r"one flag per point, got bool of shape \[4, 2\]"):
        load_point_labels(data, "car", "car_0001")
    np.save(f, np.array([1, 0, 1], np.uint8))
    assert load_point_labels(data, "car", "car_0001").tolist() == [True, False, True]
    assert load_point_labels(data, "car", "car_0002_none") is None
