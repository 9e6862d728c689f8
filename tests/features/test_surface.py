"""Surface features of synthetic videos: visibility against the rendered depth, the store round trip."""

import numpy as np
import pytest

from catpose.data.co3d import Co3dCategory
from catpose.features.backbones import ColorSift
from catpose.features.surface import SurfaceFeatures, compute_surface_features
from catpose.storage import Store


def rendered_visibility(sf, seq):
    """Per frame of ``sf``: (pixel rows, columns, mask, ground-truth visibility from the rendered depth)."""
    frames = {f.frame_number: f for f in seq.frames}
    for fn in sf.frame_numbers:
        fr = frames[fn]
        uv, z = fr.camera.project(sf.vertices)
        mask, depth = fr.load_mask(), fr.load_depth()
        u, v = np.floor(uv[:, 0]).astype(int).clip(0, 95), np.floor(uv[:, 1]).astype(int).clip(0, 95)
        yield (
            v,
            u,
            mask,
            (mask[v, u] > 0.5) & (np.abs(depth[v, u] - z) < 0.05 * sf.meta["diameter"]) & (z > 0),
        )


def test_visible_vertices_land_in_masks_and_agree_with_depth(synth_root):
    seq = next(iter(Co3dCategory(synth_root, "car")))
    sf = compute_surface_features(seq, ColorSift(), n_vertices=400, n_frames=6)
    assert sf.features.shape == (6, 400, ColorSift().dim) and sf.features.dtype == np.float16
    assert 0.1 < sf.visible.mean() < 0.7
    agree = []
    for k, (v, u, mask, gt) in enumerate(rendered_visibility(sf, seq)):
        vis = sf.visible[k]
        assert (mask[v[vis], u[vis]] > 0.5).all()  # visible vertices land in the mask
        assert not sf.features[k][~vis].any()  # and only they carry features
        agree.append((gt == vis).mean())
    assert np.mean(agree) > 0.95


def test_visibility_without_depth_maps_still_matches_rendered_depth(synth_root, tmp_path):
    """Raw-frame (SfM) data has no depth maps: the z-buffer alone must do."""
    import shutil

    from catpose.data.types import dump_annotations, load_frame_annotations

    root = tmp_path / "d"
    shutil.copytree(synth_root, root)
    fa = load_frame_annotations(root / "car" / "frame_annotations.jgz")
    for a in fa:
        a.depth = None
    dump_annotations(root / "car" / "frame_annotations.jgz", fa)
    sf = compute_surface_features(
        next(iter(Co3dCategory(root, "car"))), ColorSift(), n_vertices=400, n_frames=6
    )
    truth = rendered_visibility(sf, next(iter(Co3dCategory(synth_root, "car"))))
    assert np.mean([(gt == sf.visible[k]).mean() for k, (_, _, _, gt) in enumerate(truth)]) > 0.9


@pytest.mark.parametrize("where", ["local", "s3"])
def test_surface_features_round_trip_through_the_store(where, tmp_path, request):
    rng = np.random.default_rng(0)
    sf = SurfaceFeatures("seq_1", rng.normal(size=(50, 3)).astype(np.float32),
                         rng.normal(size=(4, 50, 16)).astype(np.float16), rng.random((4, 50)) > 0.5,
                         np.arange(4), rng.normal(size=(50, 3)).astype(np.float32), {"backbone": "x"})
    if where == "local":
        store = Store(str(tmp_path / "store"))
    else:
        endpoint, bucket = request.getfixturevalue("s3_bucket")
        store = Store(f"s3://{bucket}/feat", endpoint)
    store.write_bytes("car/seq_1.npz", sf.to_bytes())
    back = SurfaceFeatures.from_bytes(store.read_bytes("car/seq_1.npz"))
    assert back.sequence == "seq_1" and back.meta == {"backbone": "x"}
    for a in ("vertices", "features", "visible", "frame_numbers", "normals"):
        np.testing.assert_array_equal(getattr(back, a), getattr(sf, a))
