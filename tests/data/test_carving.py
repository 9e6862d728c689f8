"""Space carving: the visual hull of a box from exact and from imperfect masks, cut at the ground."""

import numpy as np

from catpose.data.camera import Camera, look_at_rotation
from catpose.data.carving import HullSettings, carve, point_colors, visual_hull

DIMS = np.array([2.0, 1.0, 0.6])  # a box standing on z = 0


def _orbit(n=24, size=96):
    cams = []
    for k in range(n):
        az, el = 2 * np.pi * k / n, np.deg2rad(25 + 8 * np.sin(3 * np.pi * k / n))
        eye = 4.5 * np.array([np.cos(el) * np.cos(az), np.cos(el) * np.sin(az), np.sin(el)])
        Rc = look_at_rotation(eye, np.array([0.0, 0.0, 0.3]))
        cams.append(Camera(Rc, -eye @ Rc, (2.5, 2.5), (0.0, 0.0), (size, size), "ndc_isotropic"))
    return cams


def _box_masks(cams):
    import cv2

    corners = np.array(np.meshgrid(*[[-d / 2, d / 2] for d in DIMS], indexing="ij")).reshape(3, -1).T + [
        0,
        0,
        0.3,
    ]
    masks = []
    for c in cams:
        uv, _ = c.project(corners)
        m = np.zeros(c.image_size, np.uint8)
        # a convex box: its silhouette
        cv2.fillConvexPoly(m, cv2.convexHull(np.round(uv).astype(np.int32)), 1)
        masks.append(m.astype(np.float32))
    return masks


def _box_distance(p):
    """Distance of points to the box's surface (outside and inside)."""
    q = np.abs(p - [0, 0, 0.3]) - DIMS / 2
    outside = np.linalg.norm(np.maximum(q, 0), axis=1)
    return outside + np.abs(np.minimum(q.max(1), 0))


def test_visual_hull_of_a_box_from_its_silhouettes():
    cams = _orbit()
    masks = _box_masks(cams)
    pts = visual_hull(
        cams, masks, np.array([0.0, 0.0, 0.3]), 1.5, plane=[0, 0, 1, 0.0], settings=HullSettings(64)
    )
    assert len(pts) > 2000
    # on the box's surface, up to what 24 perspective views leave of a visual hull (it bulges a little
    # where no view grazes the surface): 90 % within 4 % of the box's diagonal
    diag = np.linalg.norm(DIMS)
    assert np.percentile(_box_distance(pts), 90) < 0.04 * diag
    ext = np.percentile(pts, 99, 0) - np.percentile(pts, 1, 0)
    assert np.all(np.abs(ext - DIMS) < 0.2 * DIMS + 0.05), ext
    assert pts[:, 2].min() > 0  # nothing below the supporting plane


def test_carving_votes_over_imperfect_masks():
    cams = _orbit()
    masks = _box_masks(cams)
    masks[5][:] = 0  # one frame's segmentation lost the object entirely
    centre = np.array([[0.0, 0.0, 0.3]])
    assert carve(centre, cams, masks, vote=0.95, view_share=0.5)[0]  # outvoted
    assert not carve(centre, cams, masks, vote=1.0, view_share=0.5)[0]  # the strict intersection cuts it
    far = np.array([[0.0, 3.0, 0.3]])  # inside the masks of no frame
    assert not carve(far, cams, masks, vote=0.95, view_share=0.5)[0]


def test_point_colors_come_from_the_frames_that_see_the_point():
    cams = _orbit(8)
    # uniform frames: a point in view gets their colour, a point behind every camera the grey of none
    images = [np.full((96, 96, 3), 40, np.uint8) for _ in cams]
    col = point_colors(np.array([[0.0, 0.0, 0.6], [0.0, 0.0, 50.0]]), cams, images)
    assert col[0].tolist() == [40, 40, 40]
    assert col[1].tolist() == [128, 128, 128]  # behind every camera's image: unseen, grey
