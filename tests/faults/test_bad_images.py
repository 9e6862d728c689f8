"""Issue 34, finding 6: a frame that decodes wrongly or not at all costs that frame, named, in
``catpose info`` and ``catpose shard``; the run goes on. Before: a 16-bit frame became all white with
0 problems, a 40000 x 40000 header aborted both commands unnamed, a wrong-size mask passed ``shard``."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image

from catpose.data.co3d import Co3dCategory
from catpose.data.shards import iter_shard_rows

CATPOSE = [sys.executable, "-m", "catpose.cli"]


def _cli(*args):
    return subprocess.run(
        [*CATPOSE, *map(str, args)], capture_output=True, text=True, timeout=600, check=False
    )


def _bomb(path):
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (
            struct.pack(">I", len(body))
            + kind
            + body
            + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                     + chunk(b"IEND", b""))


def test_bad_frames_cost_themselves_only_and_are_named(data, tmp_path):
    cat = Co3dCategory(data, "car")
    seq = cat["car_0001"]
    bomb, small_mask, deep = seq.frames[1], seq.frames[2], cat["car_0002"].frames[0]
    _bomb(bomb.image_path)
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(small_mask.mask_path)
    rgb = deep.load_image()
    grey16 = (rgb.mean(axis=2).astype(np.uint16) * 256 + 128).astype(np.uint16)
    deep_png = data / "car" / "car_0002" / "images" / "deep.png"  # the frame as a 16-bit grey PNG
    Image.fromarray(grey16).save(deep_png)
    recs_path = data / "car" / "frame_annotations.jgz"
    from .conftest import edit_records

    def repoint(recs):
        r = next(
            r for r in recs if r["sequence_name"] == "car_0002" and r["frame_number"] == deep.frame_number
        )
        r["image"]["path"] = "car/car_0002/images/deep.png"

    edit_records(recs_path, repoint)

    info = _cli("info", "--data", data, "--category", "car", "--check-files")
    assert info.returncode == 1, info.stderr
    assert json.loads(info.stdout.strip().splitlines()[-1]) == {"problems": 2}
    assert f"{bomb.image_path}: image declares" in info.stdout and "decompression bomb" in info.stdout
    assert str(small_mask.mask_path) in info.stdout
    # the 16-bit frame decodes to its grey values, not to white
    got = Co3dCategory(data, "car")["car_0002"].frames[0].load_image()
    assert np.array_equal(got[..., 0], (grey16 >> 8).astype(np.uint8)) and got.mean() < 250

    out = tmp_path / "shards"
    shard = _cli("shard", "--data", data, "--category", "car", "--out", out)
    assert shard.returncode == 0, shard.stderr
    man = json.loads((out / "_catpose_shards.json").read_text())
    skipped = {k: v for k, v in man["skipped"].items()}
    assert set(skipped) == {f"car/car_0001/{bomb.frame_number}", f"car/car_0001/{small_mask.frame_number}"}
    assert str(bomb.image_path) in skipped[f"car/car_0001/{bomb.frame_number}"]
    assert str(small_mask.mask_path) in skipped[f"car/car_0001/{small_mask.frame_number}"]
    n = sum(len(s) for s in cat.frame_annotations.values())
    assert sum(1 for _ in iter_shard_rows(str(out), columns=["frame_number"])) == n - 2
