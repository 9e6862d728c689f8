"""Ground truth of catpose's synthetic categories (``catpose_gt.json`` at the dataset root), read only to
evaluate: each video's world → canonical similarity. Kept apart from the generator so that reading it
needs neither the renderer nor trimesh."""

from __future__ import annotations

import json
from pathlib import Path

from catpose.errors import DataFormatError, MissingFileError
from catpose.geometry import Similarity
from catpose.storage import key as store_key

GT_FILE = "catpose_gt.json"


def has_ground_truth(root, endpoint_url: str | None = None) -> bool:
    """Whether a dataset root (local, ``s3://`` or a :class:`~catpose.storage.Store`) has
    ``catpose_gt.json``."""
    from catpose.storage import Store

    return Store(root, endpoint_url).exists(GT_FILE)


def load_ground_truth(root, category: str, endpoint_url: str | None = None) -> dict[str, Similarity]:
    """Ground-truth world→canonical similarities of a synthetic category (for evaluation only); ``root``
    a local folder, an ``s3://`` URI or a :class:`~catpose.storage.Store`. A missing file is a
    :class:`MissingFileError`; a file that is no JSON, or a sequence whose record is no similarity (a 3×3
    rotation, a translation of 3 and a positive scale, all finite), a :class:`DataFormatError` naming the
    file and the record's field."""
    from catpose.storage import Store, is_s3

    if is_s3(str(root)) or isinstance(root, Store):
        st = Store(root, endpoint_url)
        path = st.url(GT_FILE)
        try:
            raw = st.read_bytes(GT_FILE)
        except FileNotFoundError as e:
            raise MissingFileError(path, "ground truth") from e
    else:
        path = Path(root) / GT_FILE
        if not path.is_file():
            raise MissingFileError(str(path), "ground truth")
        raw = path.read_bytes()
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DataFormatError(str(path), f"not a readable JSON file ({type(e).__name__}: {e})") from e
    try:
        seqs = data["categories"][category]["sequences"]
    except (KeyError, TypeError) as e:
        raise DataFormatError(str(path), f"no ground truth for category '{category}'",
                              field=f"categories.{category}.sequences") from e
    if not isinstance(seqs, dict):
        raise DataFormatError(str(path), "not a mapping of sequence names to similarities "
                                         f"({type(seqs).__name__})",
                              field=f"categories.{category}.sequences")
    return {k: _similarity(v, str(path), f"categories.{category}.sequences.{k}") for k, v in seqs.items()}


def _similarity(d, path: str, where: str) -> Similarity:
    """One record's similarity, checked: errors name the file and ``where`` (the record's field)."""
    import numpy as np

    if not isinstance(d, dict):
        raise DataFormatError(path, "a similarity record must be an object, got "
                                    f"{type(d).__name__}", field=where)
    for name, shape in (("rotation", (3, 3)), ("translation", (3,)), ("scale", ())):
        try:
            a = np.asarray(d[name], np.float64)
        except KeyError:
            raise DataFormatError(path, "missing", field=f"{where}.{name}") from None
        except (TypeError, ValueError):
            raise DataFormatError(path, "not numbers", field=f"{where}.{name}") from None
        if a.size != int(np.prod(shape)) or (a.ndim and a.shape not in (shape, (a.size,))):
            raise DataFormatError(path, f"shape {list(a.shape)}, expected {list(shape) or 'a number'}",
                                  field=f"{where}.{name}")
        if not np.isfinite(a).all():
            raise DataFormatError(path, "not finite", field=f"{where}.{name}")
    if not float(d["scale"]) > 0:
        raise DataFormatError(path, f"scale {d['scale']} is not positive", field=f"{where}.scale")
    return Similarity.from_json(d)


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
    if not st.exists(key):
        return None
    try:  # allow_pickle=False: an object array (a pickle) is refused, never loaded
        labels = np.load(io.BytesIO(st.read_bytes(key)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise DataFormatError(st.url(key), f"not a readable .npy file of point labels ({type(e).__name__}: "
                                           f"{e})") from e
    if labels.ndim != 1 or labels.dtype.kind not in "bui":
        raise DataFormatError(st.url(key), f"point labels must be one flag per point, got {labels.dtype} of "
                                           "shape "
                                           f"{list(labels.shape)}")
    return labels.astype(bool)
