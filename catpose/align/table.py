"""The alignment stage's table: every video's similarity into the category reference frame.

``alignment.parquet``: ``sequence_name``, ``rotation`` (9 values, row-major), ``translation``, ``scale``,
``cost``, ``is_reference``; ``x_ref = scale · R · x + translation`` maps the sequence's CO3D world frame
into the reference frame. Written by ``catpose align``, read by evaluation, training and pose.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from catpose.geometry import Similarity

ALIGNMENT_FILE = "alignment.parquet"


@dataclass(frozen=True)
class Alignment(Similarity):
    """A similarity found by the alignment, with its cost D: a pair's (source video's frame into the
    reference video's), or a video's into the category reference (the cost summed along its path).
    ``compose`` and ``inverse`` keep this transform's own cost; :func:`catpose.align.reference.path_transforms`
    sums the costs along a path."""

    cost: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "cost", float(self.cost))
SCHEMA = pa.schema([("sequence_name", pa.string()), ("rotation", pa.list_(pa.float64())),
                    ("translation", pa.list_(pa.float64())), ("scale", pa.float64()), ("cost", pa.float64()),
                    ("is_reference", pa.bool_())])


def write_alignment(path: str | Path, transforms: dict[str, Similarity], ref: str) -> None:
    """``transforms``: each video's :class:`Alignment` (or a plain
    :class:`~catpose.geometry.Similarity`, written with cost 0) into the frame of ``ref``."""
    rows = [{"sequence_name": k, "rotation": T.R.ravel().tolist(), "translation": np.asarray(T.t).tolist(),
             "scale": float(T.scale), "cost": float(getattr(T, "cost", 0.0)), "is_reference": k == ref}
            for k, T in sorted(transforms.items())]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)


def read_alignment(path: str | Path, endpoint_url: str | None = None) -> tuple[dict[str, Alignment], str]:
    """(transforms by sequence, the reference sequence) from an alignment table, or from the folder
    holding ``alignment.parquet`` (the ``--out`` of ``catpose align``)."""
    from catpose.storage import Store, is_s3

    if is_s3(str(path)):  # an s3:// table or the s3:// --out of catpose align
        uri = str(path).rstrip("/")
        if not uri.endswith(".parquet"):
            uri = f"{uri}/{ALIGNMENT_FILE}"
        parent, name = uri.rsplit("/", 1)
        store = Store(parent, endpoint_url)
        if not store.exists(name):
            raise FileNotFoundError(f"{uri}: no alignment (run `catpose align` for this category first)")
        rows = pq.read_table(io.BytesIO(store.read_bytes(name))).to_pylist()
    else:
        path = Path(path)
        if path.is_dir() or (not path.exists() and path.suffix != ".parquet"):  # the --out folder of catpose align
            path = path / ALIGNMENT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no alignment (run `catpose align` for this category first)")
        rows = pq.read_table(path).to_pylist()
    tf = {r["sequence_name"]: Alignment(np.reshape(r["rotation"], (3, 3)), np.asarray(r["translation"]),
                                        r["scale"], r["cost"]) for r in rows}
    ref = next((r["sequence_name"] for r in rows if r["is_reference"]), rows[0]["sequence_name"] if rows else "")
    return tf, ref
