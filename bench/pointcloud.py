"""Reading a 10 M-point binary PLY under the point cap: seconds and peak RSS of the reading process.

Writes the cloud into a temporary folder, then reads it with :func:`catpose.data.pointcloud.read_ply` in a
fresh subprocess pinned to one core (``resource.getrusage`` there gives its peak RSS). Results go to
``bench/results/pointcloud-cap.json`` (keys: points, cap, seconds, peak_rss_mb, kept).

    .venv/bin/python bench/pointcloud.py [--points 10000000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CHILD = """
import json, os, resource, sys, time
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
from catpose.data.pointcloud import MAX_POINTS, read_ply
t0 = time.perf_counter()
cloud = read_ply(sys.argv[1])
sec = time.perf_counter() - t0
print(json.dumps({"cap": MAX_POINTS, "seconds": round(sec, 2), "kept": len(cloud),
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}))
"""


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--points", type=int, default=10_000_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "pointcloud-cap.json"))
    args = ap.parse_args()
    from catpose.data.pointcloud import PointCloud, write_ply

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pointcloud.ply"
        rng = np.random.default_rng(0)
        write_ply(path, PointCloud(rng.standard_normal((args.points, 3), dtype=np.float32),
                                   rng.integers(0, 256, (args.points, 3), dtype=np.uint8)))
        res = subprocess.run(
            [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, check=True
        )
        out = {"points": args.points, **json.loads(res.stdout.strip().splitlines()[-1]),
               "file_mb": round(path.stat().st_size / 2**20, 1)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
