"""The geometry every stage shares, as pure functions, batched where the stages batch (numpy for small
per-video transforms,
torch for the batched work), in the manner of ``pytorch3d.ops`` and ``kornia.geometry``:

* :mod:`~catpose.geometry.similarity` — :class:`Similarity` ``x' = s·R·x + t`` (pairwise and absolute
  transforms alike; compose, inverse, apply, matrix) and its batched torch form;
* :mod:`~catpose.geometry.so3` — the even SO(3) grid, geodesic distances, projection onto SO(3), the
  robust fit of one frame rotation;
* :mod:`~catpose.geometry.metrics` — Acc@π/6, Acc@π/18 and the median error;
* :mod:`~catpose.geometry.projection` — CO3D-convention projection, point z-buffer, visibility;
* :mod:`~catpose.geometry.boxes` — object boxes and square crops;
* :mod:`~catpose.geometry.sampling` — farthest point sampling and statistical outlier removal.

Stages import from here, never the shared math from each other.
"""

from catpose.geometry.boxes import BOX_MARGIN, crop_image, mask_boxes, object_box, object_crops
from catpose.geometry.metrics import pose_metrics
from catpose.geometry.projection import project, visibility, zbuffer
from catpose.geometry.sampling import farthest_point_sample, remove_outliers
from catpose.geometry.similarity import Similarity, apply_similarity
from catpose.geometry.so3 import fit_frame, geodesic_deg, project_so3, so3_grid

__all__ = [
    "BOX_MARGIN",
    "Similarity",
    "apply_similarity",
    "crop_image",
    "farthest_point_sample",
    "fit_frame",
    "geodesic_deg",
    "mask_boxes",
    "object_box",
    "object_crops",
    "pose_metrics",
    "project",
    "project_so3",
    "remove_outliers",
    "so3_grid",
    "visibility",
    "zbuffer",
]
