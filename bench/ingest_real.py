"""``catpose ingest`` on a real capture that comes with reference camera poses in the NeRF
``transforms.json`` format (instant-ngp, nerfstudio): frames registered and the relative-rotation error of
every pair of registered frames against the reference, for all frames and for an evenly drawn sparse
subset (issue 18: ≥ 80 % of about 20 frames registered).

The capture stays outside the repository (its license need not allow redistribution); the JSON names
its source. The fox of NVlabs/instant-ngp (``data/nerf/fox``: 50 phone photos around a figurine, poses
from COLMAP) was measured with

    git -C INSTANT_NGP archive HEAD data/nerf/fox | tar -x -C /tmp/fox
    python bench/ingest_real.py --images /tmp/fox/data/nerf/fox/images \\
        --transforms /tmp/fox/data/nerf/fox/transforms.json --work /tmp/fox-work \\
        --source "NVlabs/instant-ngp@abe236e data/nerf/fox" [--sizes 50,20] [--out
        bench/results/ingest-real.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import numpy as np

from catpose.config import IngestConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.ingest import ingest
from catpose.geometry import geodesic_deg


def reference_rotations(transforms: Path) -> dict[str, np.ndarray]:
    """File name → world-to-camera rotation in catpose's (CO3D/PyTorch3D, row-vector) convention, from
    NeRF camera-to-world matrices (OpenGL axes: x right, y up, z backwards)."""
    d = json.loads(transforms.read_text())
    out = {}
    for f in d["frames"]:
        c2w = np.asarray(f["transform_matrix"], np.float64)[:3, :3]
        out[Path(f["file_path"]).name] = (np.diag([-1.0, 1.0, -1.0]) @ c2w.T).T
    return out


def relative_errors(ref: list[np.ndarray], est: list[np.ndarray]) -> np.ndarray:
    """Degrees between the reference and the estimated relative rotation of every pair of frames."""
    pairs = [(i, j) for i in range(len(ref)) for j in range(i + 1, len(ref))]
    return geodesic_deg(np.stack([ref[j].T @ ref[i] for i, j in pairs]),
                        np.stack([est[j].T @ est[i] for i, j in pairs]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--transforms", type=Path, required=True)
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--source", required=True, help="where the capture comes from (written to the JSON)")
    ap.add_argument("--sizes", default="0,20", help="frames per run, evenly drawn (0: all)")
    ap.add_argument("--out", default="bench/results/ingest-real.json")
    a = ap.parse_args()
    ref = reference_rotations(a.transforms)
    names = sorted(p.name for p in a.images.iterdir() if p.name in ref)
    res = {
        "source": a.source,
        "device": f"{platform.machine()} CPU",
        "frames_available": len(names),
        "runs": {},
    }
    for n in (int(x) for x in a.sizes.split(",")):
        pick = (
            names
            if n <= 0 or n >= len(names)
            else [names[int(round(i))] for i in np.linspace(0, len(names) - 1, n)]
        )
        frames = a.work / f"frames{len(pick)}" / "capture"
        if frames.exists():
            shutil.rmtree(frames)
        frames.mkdir(parents=True)
        for p in pick:
            shutil.copy(a.images / p, frames / p)
        out = a.work / f"ingested{len(pick)}"
        t0 = time.perf_counter()
        man = ingest(IngestConfig(frames=str(frames.parent), out=str(out), category="capture", workers=0,
                                  max_frames=len(pick)))
        seconds = time.perf_counter() - t0
        item = man.items.get("capture", {})
        row = {"frames": len(pick), "status": item.get("status"), "registered": item.get("registered"),
               "sfm": item.get("sfm"), "seconds": round(seconds, 1), "cleaning": item.get("cleaning")}
        if item.get("status") == "ok":
            seq = next(iter(Co3dCategory(str(out), "capture")))
            est = [(ref[Path(str(f.image_path)).name], f.camera.R) for f in seq.frames]
            e = relative_errors([r for r, _ in est], [q for _, q in est])
            row.update(
                registered_share=len(est) / len(pick),
                pairs=len(e),
                rel_rot_err_median_deg=float(np.median(e)),
                rel_rot_err_p90_deg=float(np.quantile(e, 0.9)),
                rel_rot_err_max_deg=float(e.max()),
            )
        res["runs"][str(len(pick))] = row
        print(json.dumps(row), flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(f"-> {a.out}")


if __name__ == "__main__":
    main()
