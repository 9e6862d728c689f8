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


def _write_video(path, n: int, size: int = 32) -> None:
    """A real video of ``n`` frames (lossless FFV1): frame k has red k % 256 and green 100 (k // 256)."""
    import av

    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=30)
        stream.width = stream.height = size
        stream.pix_fmt = "bgr0"
        for k in range(n):
            img = np.zeros((size, size, 3), np.uint8)
            img[..., 0], img[..., 1] = k % 256, 100 * (k // 256)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def _peak_bytes(fn) -> int:
    import tracemalloc

    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_videos_are_decoded_streaming_keeping_only_the_sampled_frames(tmp_path):
    from catpose.data.ingest import read_video_frames

    short, long = tmp_path / "short.mkv", tmp_path / "long.mkv"
    _write_video(short, 60)
    _write_video(long, 480)
    frames = read_video_frames(long, 12)
    got = [int(f[0, 0, 0]) + 256 * round(f[0, 0, 1] / 100) for f in frames]
    assert got == [int(i) for i in np.linspace(0, 479, 12).round()]  # the evenly spread frames, in order
    assert all(f.shape == (32, 32, 3) for f in frames)
    # memory does not grow with the video's length: 8 × the frames, about the same peak
    p_short, p_long = (
        _peak_bytes(lambda: read_video_frames(short, 12)),
        _peak_bytes(lambda: read_video_frames(long, 12)),
    )
    frame_bytes = 32 * 32 * 3
    assert p_long < p_short + 20 * frame_bytes, (p_short, p_long)
    assert p_long < 100 * frame_bytes  # holding all 480 frames would be 480 × frame_bytes
