"""The alignment table (``alignment.parquet``): what is written is what is read, on a folder and on S3;
the reference is the flagged row; the "no majority of pairs" rule."""

from __future__ import annotations

import numpy as np
import pytest

from catpose.align.table import Alignment, ambiguous, ambiguous_videos, read_alignment, write_alignment
from catpose.geometry import Similarity
from catpose.storage import Store


def _random_rotation(rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def _transforms(n: int = 4, seed: int = 0) -> dict[str, Alignment]:
    rng = np.random.default_rng(seed)
    return {f"seq_{i}": Alignment(_random_rotation(rng), rng.normal(size=3), float(rng.uniform(0.5, 2)),
                                  float(rng.uniform(0, 1))) for i in range(n)}


def _same(a: dict, b: dict) -> None:
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_allclose(a[k].R, b[k].R, atol=1e-12)
        np.testing.assert_allclose(a[k].t, b[k].t, atol=1e-12)
        assert a[k].scale == pytest.approx(b[k].scale) and a[k].cost == pytest.approx(b[k].cost)


def test_round_trip_through_a_folder_and_its_file(tmp_path):
    tf = _transforms()
    write_alignment(tmp_path / "alignment.parquet", tf, "seq_2", {"seq_0": (3, 4), "seq_1": (1, 4)})
    for where in (tmp_path, tmp_path / "alignment.parquet"):  # the --out folder or the file itself
        got, ref = read_alignment(where)
        assert ref == "seq_2"
        _same(tf, got)


def test_a_plain_similarity_is_written_with_cost_zero(tmp_path):
    write_alignment(tmp_path / "alignment.parquet", {"a": Similarity(np.eye(3), np.zeros(3), 1.0)}, "a")
    got, _ = read_alignment(tmp_path)
    assert got["a"].cost == 0.0


def test_round_trip_through_s3(s3_bucket, tmp_path):
    endpoint, bucket = s3_bucket
    tf = _transforms(seed=1)
    write_alignment(tmp_path / "alignment.parquet", tf, "seq_0")
    Store(f"s3://{bucket}/align/car", endpoint).write_bytes("alignment.parquet",
                                                            (tmp_path / "alignment.parquet").read_bytes())
    got, ref = read_alignment(f"s3://{bucket}/align/car", endpoint)
    assert ref == "seq_0"
    _same(tf, got)


def test_a_missing_table_names_where_it_was_looked_for(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"alignment\.parquet: no alignment"):
        read_alignment(tmp_path / "nothing-here")


def test_ambiguous_is_at_most_half_agreeing_of_at_least_two_pairs_never_the_reference():
    support = {"ref": (0, 4), "half": (2, 4), "most": (3, 4), "one_pair": (0, 1), "none": (0, 2)}
    assert ambiguous(support, "ref") == {"half": (2, 4), "none": (0, 2)}


def test_ambiguous_videos_reads_the_counts_from_the_table(tmp_path):
    tf = _transforms(3)
    write_alignment(tmp_path / "alignment.parquet", tf, "seq_0", {"seq_1": (1, 4), "seq_2": (4, 4)})
    assert ambiguous_videos(tmp_path) == {"seq_1": (1, 4)}
    write_alignment(tmp_path / "alignment.parquet", tf, "seq_0")  # no counts recorded: nothing to judge
    assert ambiguous_videos(tmp_path) == {}
