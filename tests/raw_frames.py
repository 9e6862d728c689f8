"""Raw-frame inputs of the ingest tests: a synthetic car orbit copied out as a folder of frames with their
masks (what a user hands ``catpose ingest``), a blank sequence SfM cannot register, and the relative-rotation
errors SfM's cameras are scored with (SfM's frame is arbitrary)."""

import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from catpose.config import SynthConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.synth.generate import generate


def raw_sequences(tmp: Path, frames: int, size: int, blank_frames: int):
    """``tmp/raw/good`` (frames + ``masks/``) and ``tmp/raw/blank``; returns (raw folder, the car's
    sequence)."""
    generate(SynthConfig(workers=0, out=tmp / "synth", category=("car",), videos=1, frames=frames, size=size,
                         depth=False))
    seq = next(iter(Co3dCategory(tmp / "synth", "car")))
    raw = tmp / "raw"
    (raw / "good" / "masks").mkdir(parents=True)
    for fr in seq.frames:
        shutil.copy(fr.image_path, raw / "good" / fr.image_path.name)
        shutil.copy(fr.mask_path, raw / "good" / "masks" / fr.mask_path.name)
    (raw / "blank").mkdir()
    for k in range(blank_frames):
        Image.new("RGB", (size, size), (120, 120, 120)).save(raw / "blank" / f"f{k:03d}.jpg")
    return raw, seq


def relative_rotation_errors(gt_cams, est_cams) -> np.ndarray:
    """Degrees between the true and the estimated relative rotation of every pair of frames."""
    errs = []
    for i in range(len(gt_cams)):
        for j in range(i + 1, len(gt_cams)):
            d = (gt_cams[j].R.T @ gt_cams[i].R).T @ (est_cams[j].R.T @ est_cams[i].R)
            errs.append(np.degrees(np.arccos(np.clip((np.trace(d) - 1) / 2, -1, 1))))
    return np.array(errs)
