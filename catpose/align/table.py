"""The alignment stage's table: every video's similarity into the category reference frame.

``alignment.parquet``: ``sequence_name``, ``rotation`` (9 values, row-major), ``translation``, ``scale``,
``cost``, ``is_reference``; ``x_ref = scale · R · x + translation`` maps the sequence's CO3D world frame
into the reference frame. Written by ``catpose align``, read by evaluation, training and pose.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from catpose.align.search import Alignment
from catpose.geometry import Similarity

ALIGNMENT_FILE = "alignment.parquet"
SCHEMA = pa.schema([("sequence_name", pa.string()), ("rotation", pa.list_(pa.float64())),
                    ("translation", pa.list_(pa.float64())), ("scale", pa.float64()), ("cost", pa.float64()),
                    ("is_reference", pa.bool_())])


def write_alignment(path: str | Path, transforms: dict[str, Similarity], ref: str) -> None:
    """``transforms``: each video's :class:`~catpose.align.search.Alignment` (or a plain
    :class:`~catpose.geometry.Similarity`, written with cost 0) into the frame of ``ref``."""
    rows = [{"sequence_name": k, "rotation": T.R.ravel().tolist(), "translation": np.asarray(T.t).tolist(),
             "scale": float(T.scale), "cost": float(getattr(T, "cost", 0.0)), "is_reference": k == ref}
            for k, T in sorted(transforms.items())]
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)


def read_alignment(path: str | Path) -> tuple[dict[str, Alignment], str]:
    """(transforms by sequence, the reference sequence) from an alignment table, or from the folder
    holding ``alignment.parquet`` (the ``--out`` of ``catpose align``)."""
    path = Path(path)
    if path.is_dir() or path.suffix != ".parquet":
        path = path / ALIGNMENT_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no alignment (run `catpose align` for this category first)")
    rows = pq.read_table(path).to_pylist()
    tf = {r["sequence_name"]: Alignment(np.reshape(r["rotation"], (3, 3)), np.asarray(r["translation"]),
                                        r["scale"], r["cost"]) for r in rows}
    ref = next((r["sequence_name"] for r in rows if r["is_reference"]), rows[0]["sequence_name"] if rows else "")
    return tf, ref
