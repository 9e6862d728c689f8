"""Pairwise search: a known similarity is recovered; results agree across devices."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from catpose.align.search import SearchConfig, align_pair
from catpose.data.co3d import Co3dCategory
from catpose.features.backbones import ColorSift
from catpose.features.surface import SurfaceFeatures, compute_surface_features


@pytest.fixture(scope="module")
def car_features(synth_root):
    cat = Co3dCategory(synth_root, "car")
    return [
        compute_surface_features(cat[n], ColorSift(), n_vertices=400, n_frames=8) for n in cat.sequence_names
    ]


def transformed_copy(sf, s, R, t):
    return SurfaceFeatures(
        sf.sequence + "_copy",
        (s * sf.vertices.astype(np.float64) @ R.T + t).astype(np.float32),
        sf.features,
        sf.visible,
        sf.frame_numbers,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_known_similarity_is_recovered_on_a_copy(car_features, seed, device):
    rng = np.random.default_rng(seed)
    R = Rotation.random(random_state=seed).as_matrix()
    s, t = float(np.exp(rng.uniform(-1, 1))), rng.normal(0, 3, 3)
    src = car_features[seed]
    ref = transformed_copy(src, s, R, t)
    T = align_pair(src, ref, SearchConfig(rotations=1024), device=device)
    ang = np.degrees(np.arccos(np.clip((np.trace(T.R.T @ R) - 1) / 2, -1, 1)))
    assert ang < 0.5
    assert T.scale == pytest.approx(s, rel=1e-3)
    np.testing.assert_allclose(T.t, t, atol=1e-3 * s * np.ptp(src.vertices, axis=0).max())
    assert T.cost < 1e-3


def test_cpu_and_device_agree(car_features, device):
    if device == "cpu":
        pytest.skip("compares the CPU with another device: run with --device cuda")
    a = align_pair(car_features[0], car_features[1], SearchConfig(rotations=512), device="cpu")
    b = align_pair(car_features[0], car_features[1], SearchConfig(rotations=512), device=device)
    ang = np.degrees(np.arccos(np.clip((np.trace(a.R.T @ b.R) - 1) / 2, -1, 1)))
    assert ang < 0.5 and a.cost == pytest.approx(b.cost, rel=1e-3)
