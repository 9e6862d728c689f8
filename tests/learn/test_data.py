"""Training data (catpose.learn.data): the CPU reference transform of shard rows into crops and targets,
and the Ray Data pipeline over a category's shards."""

import numpy as np
import pytest


@pytest.fixture(scope="module")
def shards_and_targets(car_rows):
    return car_rows["shards"], car_rows["columns"], car_rows["targets"]


def test_rows_of_other_videos_and_undecodable_frames_are_dropped(shards_and_targets):
    from catpose.learn.data import prepare_batch

    _, cols, targets = shards_and_targets
    keep = dict(sorted(targets.items())[:2])  # two of the three cars
    batch = {c: list(v) for c, v in cols.items()}
    bad = next(i for i, n in enumerate(batch["sequence_name"]) if n in keep)
    batch["image"][bad] = batch["image"][bad][:100]  # a truncated frame
    out = prepare_batch(batch, keep, 64)
    expected = sum(n in keep for n in batch["sequence_name"]) - 1
    assert len(out["sequence_name"]) == expected and set(out["sequence_name"]) <= set(keep)
    dropped = (batch["sequence_name"][bad], int(batch["frame_number"][bad]))
    assert dropped not in set(zip(out["sequence_name"], out["frame_number"].tolist()))
    assert out["image"].shape == (expected, 3, 64, 64) and out["image"].dtype == np.uint8
    n = next(iter(keep.values())).points.shape[0]  # the template's vertices
    assert out["uv"].shape == (expected, n, 2) and out["vis"].shape == (expected, n)


def test_visible_template_points_land_on_the_object_in_the_crop(shards_and_targets):
    """Without augmentation, every visible correspondent projects inside its crop, nearly all onto the
    object's mask there (the targets are where the object is, not just in range)."""
    from catpose.learn.data import prepare_batch

    _, cols, targets = shards_and_targets
    out = prepare_batch({c: v[:16] for c, v in cols.items()}, targets, 64)
    uv, vis, fg = out["uv"], out["vis"], out["fg"]
    assert vis.sum() > 0.2 * vis.size  # the cars are seen: not an empty check
    pts = uv[vis]
    assert (pts >= 0).all() and (pts < 64).all()
    b = np.nonzero(vis)[0]
    px = np.clip(pts.astype(int), 0, 63)
    on_object = fg[b, px[:, 1], px[:, 0]] > 127
    assert on_object.mean() > 0.9, on_object.mean()


def test_the_ray_data_pipeline_reads_the_listed_videos_frames(shards_and_targets, ray_local):
    from catpose.learn.data import COLUMNS, training_dataset

    shards, cols, targets = shards_and_targets
    keep = dict(sorted(targets.items())[:2])
    rows = training_dataset(shards, "car", keep, batch_rows=8).take_all()
    assert len(rows) == sum(n in keep for n in cols["sequence_name"])
    assert {r["sequence_name"] for r in rows} == set(keep) and set(rows[0]) == set(COLUMNS)
    got = sorted((r["sequence_name"], r["frame_number"]) for r in rows)
    want = sorted((n, f) for n, f in zip(cols["sequence_name"], cols["frame_number"]) if n in keep)
    assert got == want
