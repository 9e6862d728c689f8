"""Frames to Parquet shards (local or ``s3://``), for Ray Data and Ray Train.

One row per frame: the encoded image and mask bytes exactly as they are on disk (no re-encoding),
the camera in CO3D's convention, and the sequence, category and frame index. Shards are written per
category under ``<out>/category=<name>/part-<k>.parquet`` (Hive partitioning, so
``ray.data.read_parquet(out)`` yields a ``category`` column too). A frame that cannot be read is
skipped and recorded, with its error, in ``<out>/_catpose_shards.json``; reruns skip finished shards.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm.auto import tqdm

from catpose.config import ShardConfig
from catpose.data.co3d import Co3dCategory, Co3dFrame, decode_image, list_categories
from catpose.errors import DataFormatError
from catpose.storage import Store

MANIFEST = "_catpose_shards.json"

SCHEMA = pa.schema([
    ("sequence_name", pa.string()),
    ("frame_number", pa.int32()),
    ("frame_timestamp", pa.float64()),
    ("image_path", pa.string()),
    ("image", pa.binary()),
    ("mask", pa.binary()),  # null where the frame has no mask
    ("height", pa.int32()),
    ("width", pa.int32()),
    ("R", pa.list_(pa.float64(), 9)),  # row-major, CO3D/PyTorch3D row-vector convention
    ("T", pa.list_(pa.float64(), 3)),
    ("focal_length", pa.list_(pa.float64(), 2)),  # NDC
    ("principal_point", pa.list_(pa.float64(), 2)),  # NDC
    ("intrinsics_format", pa.string()),
])


# JPEG/PNG bytes are compressed already: zstd there costs time and saves nothing
COMPRESSION = {name: ("none" if name in ("image", "mask") else "zstd") for name in SCHEMA.names}


def frame_row(frame: Co3dFrame, verify: bool = True) -> dict:
    """A frame as one shard row; raises a named error when the frame is unusable."""
    cam = frame.camera  # raises when the viewpoint is missing
    img = frame.image_bytes()
    mask = frame.mask_bytes()
    if verify:
        arr = decode_image(img, str(frame.image_path))
        if arr.shape[:2] != tuple(frame.image_size):
            raise DataFormatError(str(frame.image_path), f"image is {arr.shape[:2]}, annotation says {frame.image_size}")
        if mask is not None:
            decode_image(mask, str(frame.mask_path), mode="L")
    return {
        "sequence_name": frame.sequence_name,
        "frame_number": frame.frame_number,
        "frame_timestamp": frame.annotation.frame_timestamp,
        "image_path": frame.annotation.image.path,
        "image": img,
        "mask": mask,
        "height": frame.image_size[0],
        "width": frame.image_size[1],
        "R": cam.R.ravel().tolist(),
        "T": cam.T.tolist(),
        "focal_length": cam.focal_length.tolist(),
        "principal_point": cam.principal_point.tolist(),
        "intrinsics_format": cam.intrinsics_format,
    }


def write_shards(cfg: ShardConfig, progress: bool = True) -> dict:
    """Writes the shards of ``cfg``; returns the manifest (also stored at ``<out>/_catpose_shards.json``)."""
    store = Store(cfg.out, cfg.endpoint_url)
    store.check()
    manifest = store.read_json(MANIFEST, default=None) or {"shards": {}, "skipped": {}, "categories": {}}
    categories = list(cfg.category) or list_categories(cfg.data)
    fs = store.arrow_fs
    for category in categories:
        cat = Co3dCategory(cfg.data, category)
        rows: list[dict] = []
        skipped = {}
        shard_idx = 0
        t0 = time.perf_counter()
        n_frames = sum(len(v) for v in cat.frame_annotations.values())
        bar = tqdm(total=n_frames, desc=f"shard {category}", disable=not progress, dynamic_ncols=True)

        def flush() -> None:
            nonlocal shard_idx, rows
            rel = f"category={category}/part-{shard_idx:05d}.parquet"
            keys = [f"{r['sequence_name']}/{r['frame_number']}" for r in rows]
            done = manifest["shards"].get(rel)
            if not (done and done.get("first") == keys[0] and done.get("rows") == len(rows) and store.exists(rel)):
                table = pa.Table.from_pylist(rows, schema=SCHEMA)
                store.makedirs(f"category={category}")
                pq.write_table(table, store.path(rel), filesystem=fs, compression=COMPRESSION, row_group_size=64)
                manifest["shards"][rel] = {"rows": len(rows), "first": keys[0], "last": keys[-1]}
            shard_idx += 1
            rows = []

        for seq in cat:
            for frame in seq.frames:
                try:
                    rows.append(frame_row(frame))
                except (DataFormatError, FileNotFoundError, OSError) as e:
                    skipped[f"{category}/{frame.sequence_name}/{frame.frame_number}"] = f"{type(e).__name__}: {e}"
                bar.update(1)
                if len(rows) >= cfg.rows_per_shard:
                    flush()
        if rows:
            flush()
        bar.close()
        # forget shards of an earlier, larger run of this category
        for rel in [r for r in manifest["shards"] if r.startswith(f"category={category}/")]:
            if int(rel.rsplit("-", 1)[1].split(".")[0]) >= shard_idx:
                del manifest["shards"][rel]
        manifest["skipped"] = {k: v for k, v in manifest["skipped"].items() if not k.startswith(category + "/")}
        manifest["skipped"].update(skipped)
        manifest["categories"][category] = {
            "frames": n_frames - len(skipped), "skipped": len(skipped), "shards": shard_idx,
            "seconds": round(time.perf_counter() - t0, 2),
        }
        store.write_json(MANIFEST, manifest)
    return manifest


def shard_files(uri: str, endpoint_url: str | None = None) -> list[str]:
    store = Store(uri, endpoint_url)
    return store.glob("category=*/part-*.parquet")


def _category_files(store: Store, categories: list[str] | None) -> list[str]:
    files = [rel for rel in store.glob("category=*/part-*.parquet")
             if categories is None or rel.split("/", 1)[0].split("=", 1)[1] in categories]
    if not files:
        raise FileNotFoundError(f"no Parquet shards{' of ' + ', '.join(categories) if categories else ''} "
                                f"under {store.url()} (run `catpose shard` first)")
    return files


def read_shards_ray(uri: str, endpoint_url: str | None = None, columns: list[str] | None = None,
                    categories: list[str] | None = None):
    """The shards as a ``ray.data.Dataset`` (the ``category`` column comes from the partition path);
    ``categories`` limits it to those categories' shards."""
    import ray.data

    store = Store(uri, endpoint_url)
    return ray.data.read_parquet(
        [store.path(rel) for rel in _category_files(store, categories)], filesystem=store.arrow_fs, columns=columns,
        partitioning=ray.data.datasource.Partitioning("hive", base_dir=store.root),
    )


def iter_shard_rows(uri: str, endpoint_url: str | None = None, columns: list[str] | None = None,
                    categories: list[str] | None = None) -> Iterator[dict]:
    """Rows of every shard (of ``categories`` only, when given), without Ray (pyarrow only)."""
    store = Store(uri, endpoint_url)
    for rel in shard_files(uri, endpoint_url) if categories is None else _category_files(store, categories):
        table = pq.read_table(store.path(rel), filesystem=store.arrow_fs, columns=columns)
        category = rel.split("/", 1)[0].split("=", 1)[1]
        for row in table.to_pylist():
            row["category"] = category
            yield row


def row_camera(row: dict):
    """The :class:`~catpose.data.camera.Camera` of a shard row."""
    from catpose.data.camera import Camera

    return Camera(np.asarray(row["R"]).reshape(3, 3), row["T"], row["focal_length"], row["principal_point"],
                  (row["height"], row["width"]), row["intrinsics_format"])
