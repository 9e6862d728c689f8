"""The ambiguous synthetic category: a crate's shape is the same turned by 90° about z, only its quarters'
colours tell the turns apart (what bench/peers.py needs of it)."""

import numpy as np
from scipy.spatial import cKDTree

from catpose.data.synth.shapes import make_instance


def test_crate_shape_is_four_fold_symmetric_and_its_colours_are_not():
    inst = make_instance("crate", np.random.default_rng(3))
    mesh, face_part = inst.merged()
    pts = np.asarray(mesh.vertices)  # the quarters' corners: a 3 x 3 grid on the footprint, bottom and top
    turn = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])  # 90° about z
    d = cKDTree(pts).query(pts @ turn.T)[0]
    assert d.max() < 1e-9 * inst.extent  # the same shape
    lo, hi = mesh.bounds
    assert np.isclose(hi[0] - lo[0], hi[1] - lo[1]) and np.allclose((lo + hi)[:2], 0) and np.isclose(lo[2], 0)
    cols = np.array([p.albedo for p in inst.parts])
    assert (
        len(inst.parts) == 4
        and min(np.linalg.norm(a - b) for i, a in enumerate(cols) for b in cols[i + 1 :]) > 0.2
    )
    # front (+x) quarters are red and yellow: the turn moves them onto other colours
    centres = np.array([p.mesh.bounds.mean(0) for p in inst.parts])
    assert (centres[:2, 0] > 0).all() and (centres[2:, 0] < 0).all()
