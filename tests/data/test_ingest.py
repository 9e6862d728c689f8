"""Raw frames and videos through real pycolmap SfM into the CO3D layout."""

import numpy as np
import pytest

from catpose.config import IngestConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.ingest import ingest
from tests.raw_frames import raw_sequences, relative_rotation_errors


@pytest.fixture(scope="module")
def raw_videos(tmp_path_factory):
    """A textured synthetic car video (frames + masks), the same as an mp4, and a blank one."""
    import av

    raw, seq = raw_sequences(tmp_path_factory.mktemp("ingest"), frames=24, size=256, blank_frames=6)
    with av.open(str(raw / "clip.mp4"), "w") as out:
        stream = out.add_stream("mpeg4", rate=5)
        stream.width = stream.height = 256
        stream.pix_fmt = "yuv420p"
        stream.options = {"qscale": "2"}
        stream.bit_rate = 8_000_000
        for fr in seq.frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(fr.load_image(), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return raw, seq


@pytest.fixture(scope="module")
def ingested(raw_videos, tmp_path_factory):
    raw, _ = raw_videos
    out = tmp_path_factory.mktemp("ingested")
    man = ingest(IngestConfig(frames=str(raw), out=str(out), category="car", max_frames=24, workers=0))
    return out, man


def test_failed_sfm_is_named_and_others_go_on(ingested):
    out, man = ingested
    assert man.status("blank") == "failed"
    assert "blank" in man.failed["blank"]
    assert man.status("good") == "ok" and man.status("clip") == "ok"
    assert Co3dCategory(out, "car").sequence_names == ["clip", "good"]
    assert not (out / "car" / "blank").exists()


@pytest.mark.parametrize("name", ["good", "clip"])
def test_sfm_registers_frames_and_recovers_relative_rotations(ingested, raw_videos, name):
    out, man = ingested
    _, truth = raw_videos
    assert man.items[name]["registered"] >= 0.8 * 24
    seq = Co3dCategory(out, "car")[name]
    if name == "good":  # frame files keep their names
        by_name = {f.image_path.name: f.camera for f in truth.frames}
        gt = [by_name[f.image_path.name] for f in seq.frames]
    else:  # video frames are numbered in order
        gt = [truth.frames[int(f.image_path.stem[5:]) - 1].camera for f in seq.frames]
    errs = relative_rotation_errors(gt, [f.camera for f in seq.frames])
    assert errs.max() < 2.0, errs.max()


def test_ingested_cloud_is_cropped_to_the_object(ingested):
    out, _ = ingested
    seq = Co3dCategory(out, "car")["good"]
    cloud = seq.load_point_cloud()
    assert len(cloud) > 50
    inside = []
    for fr in seq.frames:
        uv, z = fr.camera.project(cloud.points)
        m = fr.load_mask()
        u, v = np.floor(uv[:, 0]).astype(int), np.floor(uv[:, 1]).astype(int)
        ok = (u >= 0) & (u < 256) & (v >= 0) & (v < 256) & (z > 0)
        ok[ok] = m[v[ok], u[ok]] > 0.5
        inside.append(ok.mean())
    assert np.mean(inside) > 0.9
