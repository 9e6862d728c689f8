"""The alignment stage's table: every video's similarity into the category reference frame.

``alignment.parquet``: ``sequence_name``, ``rotation`` (9 values, row-major), ``translation``, ``scale``,
``cost``, ``is_reference``, ``edges`` and ``edges_agreeing`` (how many of the video's pairwise
alignments agree with its rotation; tables from before hold no such columns);
``x_ref = scale · R · x + translation`` maps the sequence's CO3D world frame into the reference frame.
Written by ``catpose align``, read by evaluation, training and pose.
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
    ``compose`` and ``inverse`` keep this transform's own cost;
    :func:`catpose.align.reference.path_transforms`
    sums the costs along a path."""

    cost: float = 0.0

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "cost", float(self.cost))
SCHEMA = pa.schema([("sequence_name", pa.string()), ("rotation", pa.list_(pa.float64())),
                    ("translation", pa.list_(pa.float64())), ("scale", pa.float64()), ("cost", pa.float64()),
                    ("is_reference", pa.bool_()), ("edges", pa.int32()), ("edges_agreeing", pa.int32())])


def alignment_rows(transforms: dict[str, Similarity], ref: str,
                   support: dict[str, tuple[int, int]] | None = None) -> list[dict]:
    """The table's rows. ``transforms``: each video's :class:`Alignment` (or a plain
    :class:`~catpose.geometry.Similarity`, written with cost 0) into the frame of ``ref``; ``support``:
    (agreeing, all) pairwise alignments per video (:func:`catpose.align.reference.edge_support`)."""
    support = support or {}
    return [{"sequence_name": k, "rotation": T.R.ravel().tolist(), "translation": np.asarray(T.t).tolist(),
             "scale": float(T.scale), "cost": float(getattr(T, "cost", 0.0)), "is_reference": k == ref,
             "edges": support.get(k, (None, None))[1], "edges_agreeing": support.get(k, (None, None))[0]}
            for k, T in sorted(transforms.items())]


def write_alignment(path: str | Path, transforms: dict[str, Similarity], ref: str,
                    support: dict[str, tuple[int, int]] | None = None) -> None:
    """Writes :func:`alignment_rows` to ``path``."""
    pq.write_table(pa.Table.from_pylist(alignment_rows(transforms, ref, support), schema=SCHEMA), path)


def read_alignment(path: str | Path, endpoint_url: str | None = None) -> tuple[dict[str, Alignment], str]:
    """(transforms by sequence, the reference sequence) from an alignment table, or from the folder
    holding ``alignment.parquet`` (the ``--out`` of ``catpose align``)."""
    rows = _read_rows(path, endpoint_url)
    tf = {r["sequence_name"]: Alignment(np.reshape(r["rotation"], (3, 3)), np.asarray(r["translation"]),
                                        r["scale"], r["cost"]) for r in rows}
    ref = next(
        (r["sequence_name"] for r in rows if r["is_reference"]), rows[0]["sequence_name"] if rows else ""
    )
    return tf, ref


def ambiguous_videos(path: str | Path, endpoint_url: str | None = None) -> dict[str, tuple[int, int]]:
    """Videos of an alignment table whose rotation no majority of their pairwise alignments agrees with
    ((agreeing, all) pairs; at least two pairs, the reference never): typically a near-symmetric object
    seen from one side, half of whose pairs found it turned by 180°. Empty for tables from before the
    ``edges`` columns."""
    rows = _read_rows(path, endpoint_url)
    support = {
        r["sequence_name"]: (r["edges_agreeing"], r["edges"]) for r in rows if r.get("edges") is not None
    }
    return ambiguous(support, next((r["sequence_name"] for r in rows if r["is_reference"]), None))


def ambiguous(support: dict[str, tuple[int, int]], ref: str | None) -> dict[str, tuple[int, int]]:
    """The videos of ``support`` ((agreeing, all) pairs, :func:`catpose.align.reference.edge_support`)
    with at least two pairwise alignments, no more than half of which agree; the reference never."""
    return {k: (g, n) for k, (g, n) in support.items() if k != ref and n >= 2 and 2 * g <= n}


def _read_rows(path: str | Path, endpoint_url: str | None = None) -> list[dict]:
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
        if path.is_dir() or (
            not path.exists() and path.suffix != ".parquet"
        ):  # the --out folder of catpose align
            path = path / ALIGNMENT_FILE
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no alignment (run `catpose align` for this category first)")
        rows = pq.read_table(path).to_pylist()
    return rows
