"""``catpose ingest`` on raw frames as real captures come: the object on a textured ground among
background clutter, no masks. The SfM cloud is cleaned to the object (supporting plane, common view)
and every frame gets a GrabCut mask seeded by it, in the CO3D layout."""

import shutil

import numpy as np
import pytest

from catpose.config import IngestConfig, SynthConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.ingest import grabcut_mask, ingest
from catpose.data.synth.generate import generate


@pytest.fixture(scope="module")
def ingested_raw(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ingest_realistic")
    generate(SynthConfig(out=tmp / "synth", category=("car",), videos=1, frames=20, size=160, depth=False,
                         realistic=True, partial_share=0.0))
    truth = next(iter(Co3dCategory(tmp / "synth", "car")))
    raw = tmp / "raw" / truth.name
    raw.mkdir(parents=True)
    for fr in truth.frames:  # images only: no masks
        shutil.copy(fr.image_path, raw / fr.image_path.name)
    man = ingest(
        IngestConfig(frames=str(tmp / "raw"), out=str(tmp / "out"), category="car", max_frames=20, workers=0)
    )
    return tmp / "out", man, truth


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


def test_raw_frames_get_masks_and_an_object_cloud(ingested_raw):
    out, man, truth = ingested_raw
    item = man.items[truth.name]
    assert item["status"] == "ok" and item["registered"] >= 16
    assert item["masks_made"] == item["registered"]
    clean = item["cleaning"]
    assert clean["mode"] == "geometry" and "plane" in clean and clean["removed_share"] > 0.2
    # the cloud written is the visual hull carved from the masks: dense where SfM left a few dozen points
    assert (
        item["dense"]["cloud"] == "visual hull"
        and item["dense"]["points"] > 10 * item["dense"]["sfm_object_points"]
    )
    seq = Co3dCategory(out, "car")[truth.name]
    by_name = {f.image_path.name: f for f in truth.frames}
    cloud = seq.load_point_cloud().points
    ious, inside = [], []
    for fr in seq.frames:
        assert fr.mask_path is not None and fr.mask_path.parent.name == "masks"
        m = fr.load_mask() > 0.5
        ref = by_name[fr.image_path.name].load_mask() > 0.5  # the generator's masks (imperfect themselves)
        ious.append(_iou(m, ref))
        uv, z = fr.camera.project(cloud)
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (z > 0) & (u >= 0) & (u < 160) & (v >= 0) & (v < 160)
        inside.append((ref[v[ok], u[ok]]).mean())
    assert np.mean(ious) > 0.65, ious
    assert np.mean(inside) > 0.85, inside  # ground and background are gone from the cloud


def test_grabcut_without_points_in_view_is_empty():
    from catpose.data.camera import Camera

    cam = Camera(np.eye(3), np.array([0.0, 0.0, 5.0]), (2.0, 2.0), (0.0, 0.0), (32, 32), "ndc_isotropic")
    img = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    assert not grabcut_mask(img, cam, np.array([[0.0, 0.0, -10.0]] * 5)).any()  # behind the camera


def test_sparse_orbits_register_with_the_robust_retry(tmp_path):
    """About 20 frames over 360° (18° apart), small frames: COLMAP's defaults register part of them;
    the retry with more features, guided matching and a relaxed mapper registers ≥ 80 %."""
    from catpose.data.ingest import run_sfm

    generate(
        SynthConfig(
            out=tmp_path / "synth",
            category=("car",),
            videos=1,
            frames=20,
            size=160,
            depth=False,
            realistic=True,
            partial_share=0.0,
            seed=5,
        )
    )
    seq = next(iter(Co3dCategory(tmp_path / "synth", "car")))
    images = tmp_path / "images"
    images.mkdir()
    for fr in seq.frames:
        shutil.copy(fr.image_path, images / fr.image_path.name)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    default = run_sfm("sparse", images, tmp_path / "a").num_reg_images()
    robust = run_sfm("sparse", images, tmp_path / "b", robust=True).num_reg_images()
    assert robust >= 16 and robust > default, (default, robust)
