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

from catpose import fingerprint as fp
from catpose.config import ShardConfig
from catpose.data.camera import Camera
from catpose.data.co3d import Co3dCategory, Co3dFrame, decode_image, list_categories
from catpose.data.quality import BlankFrameError, check_blank
from catpose.errors import CatposeError, DataFormatError, StorageError
from catpose.parallel import progress_bar
from catpose.storage import Store, is_s3, key, temp_name

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
            raise DataFormatError(str(frame.image_path), f"image is {arr.shape[:2]}, annotation says "
                                                         f"{frame.image_size}")
        check_blank(arr, str(frame.image_path))  # an all-black or near-constant frame is skipped, counted
        if mask is not None:  # checked against its frame as `catpose info` does: training needs both to agree
            m = decode_image(mask, str(frame.mask_path), mode="L")
            if m.shape != arr.shape[:2]:
                raise DataFormatError(str(frame.mask_path), f"mask is {m.shape}, its frame "
                                                            f"{frame.image_path} is "
                                      f"{arr.shape[:2]}")
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


def verify_shard(store: Store, rel: str, rows: int | None = None) -> str | None:
    """None when the shard at ``rel`` is a readable Parquet file with catpose's schema (and ``rows``
    rows when given), else why not (naming the file)."""
    url = store.url(rel)
    try:
        md = pq.read_metadata(store.path(rel), filesystem=store.arrow_fs)
        schema = md.schema.to_arrow_schema()
    except FileNotFoundError:
        return f"{url}: missing"
    except (OSError, pa.ArrowException, ValueError) as e:
        return f"{url}: not a readable Parquet file ({type(e).__name__}: {e})"
    missing = [n for n in SCHEMA.names if n not in schema.names]
    if missing:
        return f"{url}: field {missing[0]!r}: missing column (columns: {schema.names})"
    wrong = [n for n in SCHEMA.names if not schema.field(n).type.equals(SCHEMA.field(n).type)]
    if wrong:
        n = wrong[0]
        return f"{url}: field {n!r}: type {schema.field(n).type}, expected {SCHEMA.field(n).type}"
    if rows is not None and md.num_rows != rows:
        return f"{url}: {md.num_rows} rows, expected {rows}"
    return None


def _write_table(store: Store, rel: str, table: pa.Table) -> None:
    """Writes one shard atomically: locally a unique temporary name in the same folder, then a rename
    (an S3 upload appears only when complete). Errors name the file."""
    import os


    path = store.path(rel)
    if is_s3(store.uri):
        try:
            pq.write_table(table, path, filesystem=store.arrow_fs, compression=COMPRESSION, row_group_size=64)
        except Exception as e:
            raise StorageError(store.url(rel), f"cannot write: {type(e).__name__}: {e}") from e
        return
    tmp = temp_name(path)
    try:
        pq.write_table(table, str(tmp), compression=COMPRESSION, row_group_size=64)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise StorageError(store.url(rel), f"cannot write: {e.strerror or e}") from e


def _category_record(category: str) -> str:
    return key("_catpose_shards.items", f"{category}.json")


def load_manifest(store: Store) -> dict:
    """The shard manifest: the merged ``_catpose_shards.json`` overlaid by the per-category records
    (each category's run writes its own record, so runs of different categories never lose each
    other's entries). A truncated file is named in a warning and ignored (its shards are verified)."""

    manifest = {"shards": {}, "skipped": {}, "categories": {}}
    for rel in [MANIFEST] + store.glob("_catpose_shards.items/*.json"):
        try:
            data = store.read_json(rel, default=None)
        except DataFormatError as e:
            print(f"shard: {e}; ignored (its shards are verified and rewritten where needed)", flush=True)
            continue
        if not isinstance(data, dict):
            continue
        if rel == MANIFEST:
            for k in manifest:
                manifest[k].update(data.get(k) or {})
            continue
        cat = data.get("category")
        if not isinstance(cat, str):
            continue
        for k in ("shards", "skipped"):
            manifest[k] = {r: v for r, v in manifest[k].items()
                           if not r.startswith(f"category={cat}/" if k == "shards" else cat + "/")}
            manifest[k].update(data.get(k) or {})
        manifest["categories"][cat] = data.get("info", {})
    return manifest


def write_shards(cfg: ShardConfig, progress: bool = True) -> dict:
    """Writes the shards of ``cfg``; returns the manifest (also stored at ``<out>/_catpose_shards.json``).

    A bad annotation record costs its frame (or its video), a category whose annotation files cannot
    be read costs that category (``manifest["failed"]``); each is named. A shard is rewritten unless
    the manifest lists it for exactly these frames and it reads back with that row count and schema."""

    store = Store(cfg.out, cfg.endpoint_url)
    store.check()
    manifest = load_manifest(store)
    manifest["failed"] = {}
    categories = list(cfg.category) or list_categories(cfg.data, cfg.endpoint_url)
    for category in categories:
        try:
            cat = Co3dCategory(cfg.data, category, cfg.endpoint_url)
            cat.frame_annotations  # parse now: an unreadable annotation file costs this category only
        except (CatposeError, OSError) as e:
            if cfg.category and len(categories) == 1:
                raise
            print(f"shard {category}: FAILED: {e}", flush=True)
            manifest["failed"][category] = f"{type(e).__name__}: {e}"
            continue
        rows: list[dict] = []
        blank = 0
        skipped = {f"{category}/{k}": v for k, v in cat.skipped_frames.items()}
        skipped.update({f"{category}/{k}": v for k, v in cat.excluded.items()})
        shards: dict[str, dict] = {}
        shard_idx = 0
        t0 = time.perf_counter()
        n_frames = sum(len(v) for v in cat.frame_annotations.values())
        bar = progress_bar(n_frames, f"shard {category}", disable=not progress)
        log = fp.ResumeLog(f"shard {category}", "shards")

        def flush() -> None:
            nonlocal shard_idx, rows
            rel = key(f"category={category}", f"part-{shard_idx:05d}.parquet")
            keys = [f"{r['sequence_name']}/{r['frame_number']}" for r in rows]
            done = manifest["shards"].get(rel)
            # kept only when it holds exactly these rows (every field, image and mask bytes included)
            new_fp = fp.make(
                {"schema": SCHEMA.names}, {f"frames {keys[0]}..{keys[-1]}": fp.digest_rows(rows)}
            )
            change = fp.change(done.get("fingerprint"), new_fp) if done else "missing"
            why = verify_shard(store, rel, len(rows)) if change is None else None
            if why:
                print(f"shard {category}: {why}; rewriting it", flush=True)
                change = "output invalid"
            log.keep() if change is None else log.redo(change)
            if change is not None:
                table = pa.Table.from_pylist(rows, schema=SCHEMA)
                store.makedirs(f"category={category}")
                _write_table(store, rel, table)
            shards[rel] = {"rows": len(rows), "first": keys[0], "last": keys[-1], "fingerprint": new_fp}
            shard_idx += 1
            rows = []

        for seq in cat:
            for frame in seq.frames:
                try:
                    rows.append(frame_row(frame))
                except (DataFormatError, FileNotFoundError, OSError) as e:
                    blank += isinstance(e, BlankFrameError)
                    skipped[f"{category}/{frame.sequence_name}/{frame.frame_number}"] = (
                        f"{type(e).__name__}: {e}"
                    )
                bar.update(1)
                if len(rows) >= cfg.rows_per_shard:
                    flush()
        if rows:
            flush()
        bar.close()
        log.say()
        # shards of an earlier, larger run of this category are no longer listed (nor read: they are removed)
        for rel in store.glob(f"category={category}/part-*.parquet"):
            if rel not in shards:
                store.remove(rel)
        info = {
            "frames": sum(v["rows"] for v in shards.values()),
            "skipped": len(skipped),
            "shards": shard_idx,
            "seconds": round(time.perf_counter() - t0, 2),
            "blank_frames": blank,
            "clouds_from_depth": cat.clouds_from_depth,
            "no_cloud": sorted(cat.no_cloud),
        }
        store.write_json(
            _category_record(category),
            {"category": category, "shards": shards, "skipped": skipped, "info": info},
        )
        merged = load_manifest(store)  # with the entries other runs wrote meanwhile
        merged["failed"] = manifest["failed"]
        manifest = merged
        store.write_json(MANIFEST, manifest)
        for line in (cat.annotation_summary(), cat.cloud_summary(),
                     f"{category}: {blank} blank frames skipped" if blank else ""):
            if line:
                print(f"shard {line} (named in {store.url(MANIFEST)})", flush=True)
    if manifest["failed"]:
        store.write_json(MANIFEST, manifest)
    return manifest


def shard_files(uri: str, endpoint_url: str | None = None) -> list[str]:
    store = Store(uri, endpoint_url)
    return store.glob("category=*/part-*.parquet")


def _category_files(store: Store, categories: list[str] | None) -> list[str]:
    from concurrent.futures import ThreadPoolExecutor

    files = [rel for rel in store.glob("category=*/part-*.parquet")
             if categories is None or rel.split("/", 1)[0].split("=", 1)[1] in categories]
    if not files:
        raise FileNotFoundError(f"no Parquet shards{' of ' + ', '.join(categories) if categories else ''} "
                                f"under {store.url()} (run `catpose shard` first)")
    # a 0-byte, truncated or wrong shard would be skipped or fail late in Ray Data: it is an error here
    with ThreadPoolExecutor(16) as pool:
        bad = [why for why in pool.map(lambda rel: verify_shard(store, rel), files) if why]
    if bad:
        raise DataFormatError(bad[0].split(": ", 1)[0], bad[0].split(": ", 1)[1]
                              + (f" (and {len(bad) - 1} more bad shards)" if len(bad) > 1 else "")
                              + "; rerun `catpose shard` to rewrite it")
    return files


def read_shards_ray(uri: str, endpoint_url: str | None = None, columns: list[str] | None = None,
                    categories: list[str] | None = None):
    """The shards as a ``ray.data.Dataset`` (the ``category`` column comes from the partition path);
    ``categories`` limits it to those categories' shards."""
    import ray.data

    store = Store(uri, endpoint_url)
    return ray.data.read_parquet(
        [store.path(rel) for rel in _category_files(store, categories)],
        filesystem=store.arrow_fs,
        columns=columns,
        partitioning=ray.data.datasource.Partitioning("hive", base_dir=store.root),
    )


def iter_shard_rows(uri: str, endpoint_url: str | None = None, columns: list[str] | None = None,
                    categories: list[str] | None = None) -> Iterator[dict]:
    """Rows of every shard (of ``categories`` only, when given), without Ray (pyarrow only)."""
    store = Store(uri, endpoint_url)
    for rel in _category_files(store, categories):
        table = pq.read_table(store.path(rel), filesystem=store.arrow_fs, columns=columns)
        category = rel.split("/", 1)[0].split("=", 1)[1]
        for row in table.to_pylist():
            row["category"] = category
            yield row


def row_camera(row: dict):
    """The :class:`~catpose.data.camera.Camera` of a shard row."""

    return Camera(np.asarray(row["R"]).reshape(3, 3), row["T"], row["focal_length"], row["principal_point"],
                  (row["height"], row["width"]), row["intrinsics_format"])
