"""Loaders of PASCAL3D+ / ObjectNet3D annotation files (fixtures written here with scipy), CO3D
held-out frames, and the synthetic in-the-wild set."""

import numpy as np
import pytest
import scipy.io
from PIL import Image

from catpose.config import WildConfig
from catpose.pose.datasets import load_co3d, load_objectnet3d, load_pascal3d
from catpose.pose.viewpoint import viewpoint_to_rotation
from catpose.pose.wild import generate_wild


def _objects(*objs):
    arr = np.zeros((len(objs),), dtype=[("class", "O"), ("bbox", "O"), ("viewpoint", "O"), ("truncated", "O"),
                                        ("occluded", "O"), ("difficult", "O")])
    for i, o in enumerate(objs):
        arr[i] = o
    return arr


def _vp(a, e, t, d=5.0):
    return {
        "azimuth_coarse": a,
        "elevation_coarse": e,
        "azimuth": a,
        "elevation": e,
        "theta": t,
        "distance": d,
        "focal": 1.0,
        "viewport": 3000.0,
        "px": 250.0,
        "py": 180.0,
        "error": 0.0,
    }


def test_pascal3d_fixture(tmp_path):
    ann, img = tmp_path / "Annotations" / "car_imagenet", tmp_path / "Images" / "car_imagenet"
    ann.mkdir(parents=True)
    img.mkdir(parents=True)
    Image.new("RGB", (500, 375)).save(img / "n0001.JPEG")
    scipy.io.savemat(ann / "n0001.mat", {"record": {
        "filename": "n0001.JPEG", "imgsize": np.array([500.0, 375.0, 3.0]),
        "objects": _objects(("car", np.array([11.0, 21.0, 300.0, 200.0]), _vp(120.0, 15.0, -4.0), 0, 1, 0),
                            ("car", np.array([1.0, 1.0, 50.0, 50.0]), _vp(30.0, 10.0, 0.0, d=0.0), 0, 0, 0),
                            ("bus", np.array([5.0, 5.0, 90.0, 90.0]), _vp(10.0, 5.0, 0.0), 0, 0, 0))}})
    Image.new("RGB", (64, 48)).save(img / "n0002.JPEG")
    scipy.io.savemat(ann / "n0002.mat", {"record": {"filename": "n0002.JPEG", "objects": _objects(
        ("car", np.array([2.0, 3.0, 40.0, 30.0]), _vp(300.0, 40.0, 10.0), 0, 0, 0))}})
    (ann / "n0003.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    (tmp_path / "Image_sets").mkdir()
    (tmp_path / "Image_sets" / "car_imagenet_val.txt").write_text("n0001\nn0003\n")

    samples, problems = load_pascal3d(tmp_path, "car")
    assert [s.name for s in samples] == ["n0001#0", "n0002#0"]
    s = samples[0]
    assert s.image == str(img / "n0001.JPEG")
    np.testing.assert_allclose(s.bbox, [10.0, 20.0, 300.0, 200.0])  # 1-based inclusive → continuous
    np.testing.assert_allclose(s.R, viewpoint_to_rotation(120.0, 15.0, -4.0), atol=1e-12)
    assert s.meta["occluded"] == 1 and s.focal_px is None
    assert {p["item"] for p in problems} == {"n0001#1", "n0003"}
    assert any("coarse viewpoint" in p["error"] for p in problems)
    assert any("n0003.mat" in p["error"] for p in problems)
    # a split list, and leaving out occluded objects
    assert [s.name for s in load_pascal3d(tmp_path, "car", split="car_imagenet_val.txt")[0]] == ["n0001#0"]
    assert load_pascal3d(tmp_path, "car", include_occluded=False)[0][0].name == "n0002#0"
    with pytest.raises(FileNotFoundError, match="no bicycle_"):
        load_pascal3d(tmp_path, "bicycle")


def test_objectnet3d_fixture(tmp_path):
    (tmp_path / "Annotations").mkdir()
    (tmp_path / "Images").mkdir()
    (tmp_path / "Image_sets").mkdir()
    for n, cls in (("a1", "car"), ("a2", "chair")):
        Image.new("RGB", (80, 60)).save(tmp_path / "Images" / f"{n}.JPEG")
        scipy.io.savemat(
            tmp_path / "Annotations" / f"{n}.mat",
            {
                "record": {
                    "filename": f"{n}.JPEG",
                    "objects": _objects(
                        (cls, np.array([5.0, 6.0, 70.0, 50.0]), _vp(200.0, 25.0, 3.0), 0, 0, 0)
                    ),
                }
            },
        )
    (tmp_path / "Image_sets" / "val.txt").write_text("a1\na2\nmissing\n")
    samples, problems = load_objectnet3d(tmp_path, "car")
    assert [s.name for s in samples] == ["a1#0"]
    np.testing.assert_allclose(samples[0].R, viewpoint_to_rotation(200.0, 25.0, 3.0), atol=1e-12)
    assert problems == [
        {"item": "missing", "error": f"annotation not found: {tmp_path / 'Annotations' / 'missing.mat'}"}
    ]


def test_co3d_frames_have_canonical_rotations(synth_root):
    from catpose.data.groundtruth import load_ground_truth

    names = sorted(load_ground_truth(synth_root, "car"))
    samples, problems, frame = load_co3d(synth_root, "car", names[:2] + ["car_9999"])
    assert frame == "canonical" and len(samples) == 16
    assert problems[0]["item"] == "car_9999"
    for s in samples:
        # the synthetic cameras film the object from above, upright: looking down, image up ≈ +z
        assert s.R[2, 2] < 0 and s.R[2, 1] > 0.5
        assert s.focal_px > 0 and s.mask is not None


def test_synthetic_wild_set(tmp_path):
    info = generate_wild(WildConfig(out=tmp_path, images=5, width=96, height=80), progress=False)
    assert info["images"] + len(info["skipped"]) == 5
    samples, problems = load_pascal3d(tmp_path, "car", ("synth",), real_camera=True)
    assert len(samples) == info["images"] and not problems
    for s in samples:
        mask = np.asarray(Image.open(s.mask)) > 127
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = s.bbox
        assert xs.min() == x0 and ys.min() == y0 and xs.max() + 1 == x1 and ys.max() + 1 == y1
        assert 0 <= s.meta["elevation"] <= 45 and abs(s.meta["theta"]) <= 20
        assert np.asarray(Image.open(s.image)).shape == (80, 96, 3)
        assert s.focal_px > 0 and 0 <= s.principal_px[0] <= 96
    # written again: nothing is rendered twice, the same annotations come back
    again = generate_wild(WildConfig(out=tmp_path, images=5, width=96, height=80), progress=False)
    assert again["images"] == info["images"]
