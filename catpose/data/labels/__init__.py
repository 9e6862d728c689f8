"""Reference labels shipped with catpose: the paper's hand-labelled canonical frames of CO3D.

``co3d_paper.json`` holds od3d's ``label3d`` files (GenIntel/uns-obj-pose3d, BSD-3-Clause; see
``ATTRIBUTION.md`` here) converted once by :func:`convert_od3d_labels`: for each CO3D v2 sequence the
4x4 ``tform_obj`` (canonical <- sequence world; od3d applies it as ``cam_tform_obj = cam_tform_world @
inv(tform_obj)``) and the three labelled axes (3 x 2 x 3 points); ``co3dv1`` the same for the 21 CO3D v1
sequences. ``paper_results.json`` holds the paper's published numbers for side-by-side tables.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from pathlib import Path

import numpy as np

LABEL_SETS = {"co3d-paper": "co3d", "co3dv1-paper": "co3dv1"}


@cache
def _load(name: str) -> dict:
    return json.loads(resources.files(__name__).joinpath(name).read_text())


def paper_labels(which: str = "co3d-paper") -> dict[str, dict[str, np.ndarray]]:
    """``{category: {sequence: R}}``: label rotations [3, 3] (canonical <- world) of a shipped set, or of
    an od3d ``label3d`` folder (``<category>/<sequence>/tform_obj.pt`` under one ``meta_mask/meta``)
    read with the pickle-free reader."""
    if which not in LABEL_SETS:
        if Path(which).is_dir():
            from catpose.data.labels.od3d import read_transform, scan_od3d_folder, transform_rotation

            return {c: {s: transform_rotation(read_transform(f)) for s, f in seqs.items()}
                    for c, seqs in scan_od3d_folder(which).items()}
        raise ValueError(f"unknown label set '{which}' (known: {', '.join(LABEL_SETS)}, or an od3d label3d "
                         "folder)")
    data = _load("co3d_paper.json")[LABEL_SETS[which]]
    return {c: {s: np.asarray(v["tform_obj"], np.float64)[:3, :3] for s, v in seqs.items()}
            for c, seqs in data.items()}


def paper_results() -> dict:
    """The paper's published numbers (``paper_results.json``)."""
    return _load("paper_results.json")


def convert_od3d_labels(od3d_data: str | Path) -> dict:
    """The JSON content of ``co3d_paper.json`` from od3d's ``data`` folder (read with the pickle-free
    reader); every ``tform_obj.pt`` must have a rotation 3x3 part (det 1, orthonormal to 1e-4)."""
    from catpose.data.labels.od3d import read_tensor_file, read_transform, scan_od3d_folder
    from catpose.errors import DataFormatError

    out: dict = {}
    for key, sub in (("co3d", "co3d/label3d"), ("co3dv1", "co3dv1/label3d")):
        found = scan_od3d_folder(Path(od3d_data) / sub)
        out[key] = {}
        for cat, seqs in found.items():
            for seq, f in seqs.items():
                T = read_transform(f)
                R = T[:3, :3]
                if abs(np.linalg.det(R) - 1) > 1e-4 or np.abs(R @ R.T - np.eye(3)).max() > 1e-4:
                    raise DataFormatError(str(f), "3x3 part is not a rotation")
                axis = read_tensor_file(f.with_name("axis.pt"))
                if axis.shape != (3, 2, 3):
                    raise DataFormatError(
                        str(f.with_name("axis.pt")), f"expected 3x2x3 axes, got {axis.shape}"
                    )
                out[key].setdefault(cat, {})[seq] = {
                    "tform_obj": [[float(x) for x in r] for r in T.astype(np.float32)],
                    "axis": axis.astype(np.float32).tolist()}
    return out
