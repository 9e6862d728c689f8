"""The category template: mean shape of aligned clouds, instance correspondents, file round trip."""

import dataclasses

import numpy as np
import pytest
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from catpose.errors import DataFormatError
from catpose.geometry import Similarity
from catpose.learn.template import Template, build_template, instance_correspondents


def _box_surface(rng, n, dims):
    """Points on the surface of an axis-aligned box with the given side lengths."""
    p = rng.uniform(-0.5, 0.5, (n, 3))
    axis = rng.integers(0, 3, n)
    p[np.arange(n), axis] = rng.choice([-0.5, 0.5], n)
    return p * dims


def test_template_is_the_shared_shape_of_aligned_clouds():
    rng = np.random.default_rng(0)
    dims = np.array([2.0, 1.0, 0.6])
    clouds, transforms = [], []
    for i in range(6):
        X = _box_surface(rng, 3000, dims * rng.uniform(0.95, 1.05, 3))
        # the video's own frame: a random similarity away from the reference
        T_ref = Similarity(
            Rotation.random(random_state=i).as_matrix(), rng.normal(size=3), float(rng.uniform(0.5, 2))
        )
        V = ((X - T_ref.t) @ T_ref.R) / T_ref.scale  # inverse map: x_ref = s R x + t
        clouds.append(V.astype(np.float32))
        transforms.append(T_ref)
    # one video carries an extra part the others lack: it must not enter the template
    stray = np.array([[0, 0, 3.0]]) + rng.normal(0, 0.05, (300, 3))
    clouds[0] = np.concatenate(
        [clouds[0], ((stray - transforms[0].t) @ transforms[0].R / transforms[0].scale)]
    ).astype(np.float32)
    aligned = [T.apply(V).astype(np.float32) for T, V in zip(transforms, clouds)]
    tpl = build_template(aligned, n_vertices=500)
    assert tpl.vertices.shape == (500, 3)
    # every template vertex lies near the mean box surface, none on the stray part
    ref = _box_surface(rng, 20000, dims)
    d, _ = cKDTree(ref).query(tpl.vertices)
    assert d.max() < 0.1 * np.linalg.norm(dims)
    assert tpl.vertices[:, 2].max() < 0.5
    assert tpl.support.min() >= 0.3
    # correspondents: in the video's own frame, on that video's surface, near the template vertex once aligned
    pts, valid = instance_correspondents(tpl, clouds[3], transforms[3])
    assert valid.mean() > 0.95
    back = transforms[3].apply(pts).astype(np.float32)
    assert np.linalg.norm(back - tpl.vertices, axis=1)[valid].max() <= 0.1 * tpl.diameter


def test_template_file_round_trip_and_bad_file():
    tpl = Template(np.random.rand(10, 3).astype(np.float32), np.ones(10, np.float32),
                   np.random.rand(10, 4).astype(np.float32), {"videos": 3})
    back = Template.from_bytes(tpl.to_bytes())
    assert np.array_equal(back.vertices, tpl.vertices) and np.array_equal(back.features, tpl.features)
    assert back.meta == {"videos": 3}
    with pytest.raises(DataFormatError, match="broken.npz"):
        Template.from_bytes(b"not a zip", "broken.npz")


def test_template_needs_shared_cells():
    rng = np.random.default_rng(1)
    far_apart = [rng.normal(size=(50, 3)) + 100 * i for i in range(4)]
    with pytest.raises(ValueError, match="alignment broken"):
        build_template(far_apart, support=0.5)


def test_training_without_an_alignment_says_which_file_is_missing(tmp_path):
    from catpose.config import TrainConfig
    from catpose.learn.train import prepare

    with pytest.raises(FileNotFoundError, match=r"align-car/alignment.parquet.*catpose align"):
        prepare(TrainConfig(alignment=tmp_path / "align-car", category="car"))


def test_template_from_partial_videos_keeps_the_parts_few_videos_see():
    # 8 videos of one box: 4 saw only its front half (x > 0), 4 all of it. A share of all videos would
    # drop the back at support 0.6; the share of the videos that cover it keeps it.
    rng = np.random.default_rng(2)
    dims = np.array([2.0, 1.0, 0.6])
    clouds = []
    for i in range(8):
        X = _box_surface(rng, 4000, dims * rng.uniform(0.97, 1.03, 3))
        clouds.append(X[X[:, 0] > 0.05] if i < 4 else X)
    tpl = build_template(clouds, n_vertices=400, support=0.6)
    back = tpl.vertices[:, 0] < -0.2
    assert back.mean() > 0.25  # about 40 % of the box's surface lies there
    assert np.ptp(tpl.vertices, 0)[0] > 0.9 * dims[0]
    assert tpl.support[back].min() >= 0.6 and "size_warning" not in tpl.meta


def test_template_far_larger_than_an_instance_warns():
    # 3 of 8 videos still hold the ground they stood on (their cleaning failed): a wide disc
    rng = np.random.default_rng(3)
    dims = np.array([2.0, 1.0, 0.6])
    clouds = []
    for i in range(8):
        obj = _box_surface(rng, 2000, dims) + [0, 0, 0.3]
        disc = np.c_[rng.uniform(-1, 1, (6000, 2)) * 3.0, np.zeros(6000)]
        disc = disc[np.linalg.norm(disc[:, :2], axis=1) < 3.0]
        clouds.append(np.concatenate([obj, disc[:2000]]) if i < 3 else obj)
    with pytest.warns(UserWarning, match="typical instance"):
        tpl = build_template(clouds, n_vertices=300)
    assert tpl.meta["size_warning"] and tpl.diameter > 1.5 * tpl.meta["instance_diameter"]


def test_template_of_clouds_that_all_hold_the_ground_warns_given_the_framed_size():
    # every cloud holds the ground (no cleaning): the clouds agree on a slab; the size the cameras
    # frame (about the object's) tells the template is far larger than an instance
    rng = np.random.default_rng(4)
    dims = np.array([2.0, 1.0, 0.6])
    clouds = []
    for _ in range(5):
        disc = np.c_[rng.uniform(-3, 3, (6000, 2)), np.zeros(6000)]
        clouds.append(np.concatenate([_box_surface(rng, 2000, dims) + [0, 0, 0.3], disc]))
    tpl = build_template(clouds, n_vertices=200)
    assert "size_warning" not in tpl.meta  # the clouds alone cannot tell
    with pytest.warns(UserWarning, match="typical instance"):
        build_template(clouds, n_vertices=200, instance_sizes=[2.4] * 5)


def test_training_checks_the_template_against_the_framed_instance_size(tmp_path):
    # every video's vertices still hold the ground (a wide disc): the clouds alone cannot tell, the
    # size each video's cameras frame (features meta "view_size", in its own units) can, once prepare
    # scales it into the reference frame
    from catpose.align.table import write_alignment
    from catpose.config import TrainConfig
    from catpose.features.runner import feature_key
    from catpose.features.surface import SurfaceFeatures
    from catpose.learn.train import prepare
    from catpose.storage import Store

    rng = np.random.default_rng(5)
    dims = np.array([2.0, 1.0, 0.6])
    store, transforms = Store(str(tmp_path / "features")), {}
    for i in range(5):
        disc = np.c_[rng.uniform(-3, 3, (1500, 2)), np.zeros(1500)]
        X = np.concatenate([_box_surface(rng, 1500, dims) + [0, 0, 0.3], disc])
        T = Similarity(
            Rotation.random(random_state=i).as_matrix(), rng.normal(size=3), float(rng.uniform(0.5, 2))
        )
        V = (((X - T.t) @ T.R) / T.scale).astype(np.float32)  # the video's own frame
        name = f"car_{i:04d}"
        transforms[name] = T
        sf = SurfaceFeatures(name, V, np.zeros((1, len(V), 4), np.float16), np.ones((1, len(V)), bool),
                             np.zeros(1, np.int64), meta={"view_size": 2.4 / T.scale})
        store.write_bytes(feature_key("car", name), sf.to_bytes())
    (tmp_path / "align").mkdir()
    write_alignment(tmp_path / "align" / "alignment.parquet", transforms, "car_0000")
    with pytest.warns(UserWarning, match="typical instance"):
        out = prepare(
            TrainConfig(
                alignment=tmp_path / "align",
                features=str(tmp_path / "features"),
                category="car",
                vertices=200,
                holdout=0.2,
            )
        )
    assert out["template"].meta["instance_diameter"] == pytest.approx(2.4)


def test_training_leaves_out_videos_whose_alignment_no_majority_agrees_with(tmp_path, capsys):
    from catpose.align.table import write_alignment
    from catpose.config import TrainConfig
    from catpose.features.runner import feature_key
    from catpose.features.surface import SurfaceFeatures
    from catpose.learn.train import prepare
    from catpose.storage import Store

    rng = np.random.default_rng(6)
    store, transforms = Store(str(tmp_path / "features")), {}
    for i in range(6):
        name = f"car_{i:04d}"
        V = _box_surface(rng, 800, np.array([2.0, 1.0, 0.6])).astype(np.float32)
        transforms[name] = Similarity(np.eye(3), np.zeros(3), 1.0)
        sf = SurfaceFeatures(name, V, np.zeros((1, len(V), 4), np.float16), np.ones((1, len(V)), bool),
                             np.zeros(1, np.int64))
        store.write_bytes(feature_key("car", name), sf.to_bytes())
    (tmp_path / "align").mkdir()
    support = {n: (5, 5) for n in transforms} | {"car_0003": (2, 5)}
    write_alignment(tmp_path / "align" / "alignment.parquet", transforms, "car_0000", support)
    cfg = TrainConfig(alignment=tmp_path / "align", features=str(tmp_path / "features"), category="car",
                      vertices=100, holdout=0.0)
    out = prepare(cfg)
    assert "car_0003" not in out["train"] and len(out["train"]) == 5
    assert out["left_out"] == {"car_0003": "ambiguous alignment: 2 of 5 pairs agree"}
    assert (
        "car_0003 left out of training: only 2 of its 5 pairwise alignments agree" in capsys.readouterr().out
    )
    assert "car_0003" in prepare(dataclasses.replace(cfg, skip_ambiguous=False))["train"]
