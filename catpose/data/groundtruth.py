"""Ground truth of catpose's synthetic categories (``catpose_gt.json`` at the dataset root), read only to
evaluate: each video's world → canonical similarity. Kept apart from the generator so that reading it
needs neither the renderer nor trimesh."""

from __future__ import annotations

import json
from pathlib import Path

from catpose.errors import DataFormatError
from catpose.geometry import Similarity

GT_FILE = "catpose_gt.json"


def load_ground_truth(root: str | Path, category: str) -> dict[str, Similarity]:
    """Ground-truth world→canonical similarities of a synthetic category (for evaluation only)."""
    path = Path(root) / GT_FILE
    data = json.loads(path.read_text())
    try:
        seqs = data["categories"][category]["sequences"]
    except KeyError as e:
        raise DataFormatError(str(path), f"no ground truth for category '{category}'",
                              field=f"categories.{category}.sequences") from e
    return {k: Similarity.from_json(v) for k, v in seqs.items()}


GT_POINTS_DIR = "catpose_gt_points"


def load_point_labels(root: str | Path, category: str, sequence: str) -> "np.ndarray | None":
    """Which points of a synthetic sequence's pointcloud.ply lie on the object ([P] bool), or None for
    data without that ground truth (evaluation only)."""
    import numpy as np

    path = Path(root) / GT_POINTS_DIR / category / f"{sequence}.npy"
    return np.load(path) if path.is_file() else None
