"""Ground truth of catpose's synthetic categories (``catpose_gt.json`` at the dataset root), read only to
evaluate: each video's world → canonical similarity. Kept apart from the generator so that reading it
needs neither the renderer nor trimesh."""

from __future__ import annotations

import json
from pathlib import Path

from catpose.errors import DataFormatError
from catpose.geometry import Similarity
from catpose.storage import key as store_key

GT_FILE = "catpose_gt.json"


def has_ground_truth(root, endpoint_url: str | None = None) -> bool:
    """Whether a dataset root (local, ``s3://`` or a :class:`~catpose.storage.Store`) has ``catpose_gt.json``."""
    from catpose.storage import Store

    return Store(root, endpoint_url).exists(GT_FILE)


def load_ground_truth(root, category: str, endpoint_url: str | None = None) -> dict[str, Similarity]:
    """Ground-truth world→canonical similarities of a synthetic category (for evaluation only); ``root``
    a local folder, an ``s3://`` URI or a :class:`~catpose.storage.Store`."""
    from catpose.storage import Store, is_s3

    if is_s3(str(root)) or isinstance(root, Store):
        st = Store(root, endpoint_url)
        path, data = st.url(GT_FILE), json.loads(st.read_bytes(GT_FILE))
    else:
        path = Path(root) / GT_FILE
        data = json.loads(path.read_text())
    try:
        seqs = data["categories"][category]["sequences"]
    except KeyError as e:
        raise DataFormatError(str(path), f"no ground truth for category '{category}'",
                              field=f"categories.{category}.sequences") from e
    return {k: Similarity.from_json(v) for k, v in seqs.items()}


GT_POINTS_DIR = "catpose_gt_points"


def load_point_labels(root, category: str, sequence: str, endpoint_url: str | None = None):
    """Which points of a synthetic sequence's pointcloud.ply lie on the object ([P] bool), or None for
    data without that ground truth (evaluation only); ``root`` as for :func:`load_ground_truth`. numpy is
    imported here, as the module stays light for the ground truth's readers."""
    import io

    import numpy as np

    from catpose.storage import Store

    st = Store(root, endpoint_url)
    key = f"{GT_POINTS_DIR}/{store_key(category, sequence + '.npy')}"
    return np.load(io.BytesIO(st.read_bytes(key))) if st.exists(key) else None
