"""Similarity transforms (catpose.geometry.similarity): one and batched, numpy and torch."""

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from catpose.geometry import Similarity, apply_similarity

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


def random_similarity(seed: int, batch: tuple = ()) -> Similarity:
    rng = np.random.default_rng(seed)
    n = int(np.prod(batch)) if batch else 1
    R = Rotation.random(n, random_state=seed).as_matrix().reshape(batch + (3, 3))
    s = np.exp(rng.uniform(-1, 1, batch)) if batch else float(np.exp(rng.uniform(-1, 1)))
    return Similarity(R, rng.normal(0, 2, batch + (3,)), s)


def test_apply_is_the_homogeneous_matrix():
    T = random_similarity(0)
    x = np.random.default_rng(1).normal(size=(20, 3))
    M = T.matrix()
    np.testing.assert_allclose(T.apply(x), (np.c_[x, np.ones(20)] @ M.T)[:, :3], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(T.apply(x), T.scale * x @ T.R.T + T.t, rtol=1e-12, atol=1e-12)


def test_compose_and_inverse():
    A, B = random_similarity(2), random_similarity(3)
    x = np.random.default_rng(4).normal(size=(10, 3))
    np.testing.assert_allclose(A.compose(B).apply(x), A.apply(B.apply(x)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A.compose(B).matrix(), A.matrix() @ B.matrix(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(A.inverse().apply(A.apply(x)), x, rtol=1e-12, atol=1e-12)
    I = A.compose(A.inverse())  # noqa: E741
    np.testing.assert_allclose(I.matrix(), np.eye(4), atol=1e-12)
    assert isinstance(I.scale, float) and I.scale == pytest.approx(1.0)


def test_batched_equals_one_at_a_time():
    A, B = random_similarity(5, (4, 2)), random_similarity(6, (4, 2))
    x = np.random.default_rng(7).normal(size=(4, 2, 9, 3))
    C, inv, y = A.compose(B), A.inverse(), A.apply(x)
    assert C.R.shape == (4, 2, 3, 3) and C.t.shape == (4, 2, 3) and C.scale.shape == (4, 2)
    for i in range(4):
        for j in range(2):
            a = Similarity(A.R[i, j], A.t[i, j], A.scale[i, j])
            b = Similarity(B.R[i, j], B.t[i, j], B.scale[i, j])
            np.testing.assert_allclose(C.matrix()[i, j], a.compose(b).matrix(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(inv.matrix()[i, j], a.inverse().matrix(), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(y[i, j], a.apply(x[i, j]), rtol=1e-12, atol=1e-12)


def test_json_round_trip_and_shape_errors():
    T = random_similarity(8)
    back = Similarity.from_json(T.to_json())
    np.testing.assert_array_equal(back.matrix(), T.matrix())
    with pytest.raises(ValueError, match=r"R \[\.\.\., 3, 3\].*got R \(3, 4\)"):
        Similarity(np.zeros((3, 4)), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match=r"t \(2, 3\)"):
        Similarity(np.eye(3), np.zeros((2, 3)), 1.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_batched_form_agrees_with_numpy(dtype, device):
    T = random_similarity(9, (5,))
    V = np.random.default_rng(10).normal(size=(30, 3))
    t = lambda a: torch.as_tensor(a, dtype=dtype, device=device)  # noqa: E731
    out = apply_similarity(t(V), t(T.scale), t(T.R), t(T.t))
    assert out.shape == (5, 30, 3) and out.dtype == dtype
    torch.testing.assert_close(out.cpu(), torch.as_tensor(T.apply(V[None]), dtype=dtype), **TOL[dtype])


def test_one_point_and_the_old_formulas_bit_for_bit():
    """A single point [3] keeps its shape; apply and compose group the products as catpose always did
    ((s·x)·Rᵀ and (s·R)·t), so stored alignments and ground truth come out bit-identical."""
    A, B = random_similarity(11), random_similarity(12)
    x = np.random.default_rng(13).normal(size=(6, 3))
    assert A.apply(x[0]).shape == (3,)
    # BLAS may round [1, 3] differently
    np.testing.assert_allclose(A.apply(x[0]), A.apply(x)[0], rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(A.apply(x), (A.scale * x) @ A.R.T + A.t)
    C = A.compose(B)
    np.testing.assert_array_equal(C.t, A.scale * A.R @ B.t + A.t)
    np.testing.assert_array_equal(C.R, A.R @ B.R)
