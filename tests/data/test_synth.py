"""The synthetic category generator: ground truth is right, output is reproducible, runs resume."""

import json

import numpy as np
import pytest

from catpose.config import SynthConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.synth.generate import generate, load_ground_truth
from catpose.data.synth.shapes import make_instance


def canonical_cloud(root, category, seq):
    gt = load_ground_truth(root, category)[seq.name]
    return gt.apply(seq.load_point_cloud().points.astype(np.float64)), gt


def test_ground_truth_maps_every_video_into_one_canonical_frame(synth_root):
    cat = Co3dCategory(synth_root, "car")
    for seq in cat:
        pts, gt = canonical_cloud(synth_root, "car", seq)
        lo, hi = pts.min(0), pts.max(0)
        size = hi - lo
        # a car stands on z = 0, is centred, and is longer (x) than wide (y) than high (z)
        assert abs(lo[2]) < 0.05 * size.max()
        assert np.abs((lo + hi)[:2] / 2).max() < 0.1 * size.max()
        assert size[0] > 1.5 * size[1] and size[0] > size[2]
        # every camera is above the floor in the canonical frame and looks at the object
        for fr in seq.frames:
            c = gt.apply(fr.camera.center[None])[0]
            assert c[2] > 0
            uv, _ = fr.camera.project(seq.load_point_cloud().points.mean(0, keepdims=True))
            assert np.all(np.abs(uv[0] - 48) < 30)
    # the world frames themselves differ (random rotation, translation and scale per video)
    gts = load_ground_truth(synth_root, "car")
    scales = [g.scale for g in gts.values()]
    assert np.ptp(scales) > 0 and len({round(float(g.R[0, 0]), 6) for g in gts.values()}) == len(gts)


def test_mug_handle_is_on_plus_x(synth_root):
    for seq in Co3dCategory(synth_root, "mug"):
        pts, _ = canonical_cloud(synth_root, "mug", seq)
        # the body is round; the handle makes the cloud stick out further along +x than along -x or ±y
        x, y = pts[:, 0], pts[:, 1]
        assert x.max() - np.median(x) > 1.3 * (np.median(x) - x.min())
        assert x.max() - np.median(x) > 1.3 * (y.max() - np.median(y))


def test_instances_differ_but_keep_their_parts():
    a = make_instance("car", np.random.default_rng(1))
    b = make_instance("car", np.random.default_rng(2))
    assert [p.name for p in a.parts] == [p.name for p in b.parts]
    assert a.params != b.params
    albedo = lambda inst, name: [p.albedo for p in inst.parts if p.name == name][0]
    assert not np.allclose(albedo(a, "body"), albedo(b, "body"))  # body colours vary
    np.testing.assert_allclose(albedo(a, "wheel"), albedo(b, "wheel"))  # wheels stay dark
    with pytest.raises(ValueError, match="unknown synthetic category"):
        make_instance("plane", np.random.default_rng(0))


def test_same_seed_same_bytes(tmp_path):
    cfg = dict(category=("mug",), videos=1, frames=3, size=48, workers=0)
    generate(SynthConfig(out=tmp_path / "a", seed=7, **cfg))
    generate(SynthConfig(out=tmp_path / "b", seed=7, **cfg))
    generate(SynthConfig(out=tmp_path / "c", seed=8, **cfg))
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*")
                   if p.is_file() and "manifest" not in str(p))  # manifests (and their records) hold timings
    assert len(files) > 10
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    img = "mug/mug_0000/images/frame000001.jpg"
    assert (tmp_path / "a" / img).read_bytes() != (tmp_path / "c" / img).read_bytes()


def test_resume_renders_only_missing_videos(tmp_path):
    cfg = SynthConfig(out=tmp_path, category=("car",), videos=2, frames=2, size=32, workers=0)
    generate(cfg)
    kept = tmp_path / "car" / "car_0000" / "images" / "frame000001.jpg"
    mtime = kept.stat().st_mtime_ns
    (tmp_path / "car" / ".synth" / "car_0001.json").unlink()
    man = generate(SynthConfig(out=tmp_path, category=("car",), videos=3, frames=2, size=32, workers=0))[
        "car"
    ]
    assert man.summary() == {"ok": 3}
    assert kept.stat().st_mtime_ns == mtime
    assert len(Co3dCategory(tmp_path, "car")) == 3
    gt = json.loads((tmp_path / "catpose_gt.json").read_text())
    assert sorted(gt["categories"]["car"]["sequences"]) == ["car_0000", "car_0001", "car_0002"]


def _ray_tasks(ray) -> dict[str, str]:
    """Task id → the Ray worker that ran it, of every catpose per-item task (``catpose.parallel._call``)
    this Ray has run (its own task events, ``ray.timeline``)."""
    return {e["args"]["task_id"]: e["tid"] for e in ray.timeline()
            if e.get("name") == "catpose.parallel._call" and e.get("ph") == "X"}


def test_generation_through_ray_tasks(tmp_path, ray_local):
    import time

    before = _ray_tasks(ray_local)
    man = generate(SynthConfig(out=tmp_path, category=("car",), videos=2, frames=2, size=32, workers=2))[
        "car"
    ]
    assert man.summary() == {"ok": 2}
    assert len(Co3dCategory(tmp_path, "car")) == 2
    # one Ray task per video ran, in Ray's worker processes (task events reach the GCS within a second)
    for _ in range(50):
        new = {k: w for k, w in _ray_tasks(ray_local).items() if k not in before}
        if len(new) >= 2:
            break
        time.sleep(0.2)
    assert len(new) == 2 and all(w.startswith("worker:") for w in new.values()), new
