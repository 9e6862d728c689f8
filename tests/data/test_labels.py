"""The pickle-free od3d tensor reader and the shipped paper labels."""

import io
import json
import os
import pickle
import zipfile

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from catpose.data.labels import paper_labels, paper_results
from catpose.data.labels.od3d import read_tensor_file, read_transform, scan_od3d_folder
from catpose.errors import DataFormatError


def test_reads_torch_save_exactly(tmp_path):
    """torch.save of float32 tensors (od3d's format: a 4x4 and a 3x2x3, also a non-contiguous view)."""
    rng = np.random.default_rng(0)
    for i, t in enumerate([torch.from_numpy(rng.normal(size=(4, 4)).astype(np.float32)),
                           torch.from_numpy(rng.normal(size=(3, 2, 3)).astype(np.float32)),
                           torch.arange(32, dtype=torch.float32).reshape(4, 8)[:, ::2].t(),
                           torch.arange(6, dtype=torch.float64)]):
        f = tmp_path / f"t{i}.pt"
        torch.save(t, f)
        a = read_tensor_file(f)
        assert a.shape == tuple(t.shape) and a.dtype == t.numpy().dtype
        np.testing.assert_array_equal(a, t.numpy())


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _planted(tmp_path, obj) -> bytes:
    """A torch-zip-shaped file whose data.pkl is ``obj`` pickled (a payload where a tensor should be)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("tform_obj/data.pkl", pickle.dumps(obj, protocol=2))
        z.writestr("tform_obj/data/0", np.eye(4, dtype=np.float32).tobytes())
        z.writestr("tform_obj/version", "3\n")
    return buf.getvalue()


def test_planted_pickle_payload_does_not_run(tmp_path):
    marker = tmp_path / "PWNED"
    seq = tmp_path / "meta_mask" / "meta" / "car" / "1_2_3"
    seq.mkdir(parents=True)
    f = seq / "tform_obj.pt"
    f.write_bytes(_planted(tmp_path, _Payload(marker)))
    with pytest.raises(DataFormatError, match=r"tform_obj\.pt.*refused global 'posix\.system'|refused "
                                              r"global"):
        read_transform(f)
    assert not marker.exists()
    # a payload nested inside an otherwise plausible tensor record is refused as well
    f.write_bytes(_planted(tmp_path, {"x": _Payload(marker)}))
    with pytest.raises(DataFormatError, match=str(f)):
        read_transform(f)
    assert not marker.exists()


@pytest.mark.parametrize("data,msg", [(b"not a zip", "not a torch zip"),
                                      (None, "expected a finite 4x4")])
def test_bad_files_name_the_file(tmp_path, data, msg):
    f = tmp_path / "tform_obj.pt"
    if data is None:
        torch.save(torch.zeros(3, 3), f)
    else:
        f.write_bytes(data)
    with pytest.raises(DataFormatError, match=msg) as e:
        read_transform(f)
    assert str(f) in str(e.value)


def test_truncated_storage_is_an_error(tmp_path):
    f = tmp_path / "t.pt"
    torch.save(torch.eye(4), f)
    buf = io.BytesIO()
    with zipfile.ZipFile(f) as zin, zipfile.ZipFile(buf, "w") as zout:
        for n in zin.namelist():
            zout.writestr(n, zin.read(n)[:20] if n.endswith("data/0") else zin.read(n))
    f.write_bytes(buf.getvalue())
    with pytest.raises(DataFormatError, match="storage has 20 bytes"):
        read_transform(f)


def test_shipped_labels_are_rotations():
    """All 162 CO3D v2 labels (28 categories) and 21 CO3D v1 labels are shipped, each a rotation."""
    for which, n_seq, n_cat in (("co3d-paper", 162, 28), ("co3dv1-paper", 21, None)):
        labels = paper_labels(which)
        R = np.stack([r for seqs in labels.values() for r in seqs.values()])
        assert len(R) == n_seq
        if n_cat:
            assert len(labels) == n_cat
        np.testing.assert_allclose(np.linalg.det(R), 1, atol=1e-5)
        np.testing.assert_allclose(
            R @ np.transpose(R, (0, 2, 1)), np.broadcast_to(np.eye(3), R.shape), atol=1e-5
        )
    assert paper_results()["co3d_alignment"]["methods"]["ours (paper)"] == {"acc30": 77.0, "acc15": 61.6}


def test_label_folder_round_trip(tmp_path):
    """An od3d-layout label folder written with torch.save reads back as the rotations written."""
    R = Rotation.random(3, random_state=1).as_matrix()
    for i, r in enumerate(R):
        d = tmp_path / "label3d" / "meta_mask" / "meta" / "mug" / f"{i}_0_0"
        d.mkdir(parents=True)
        T = np.eye(4, dtype=np.float32)
        T[:3, :3] = r
        torch.save(torch.from_numpy(T), d / "tform_obj.pt")
    assert sorted(scan_od3d_folder(tmp_path / "label3d")["mug"]) == ["0_0_0", "1_0_0", "2_0_0"]
    got = paper_labels(str(tmp_path / "label3d"))["mug"]
    for i, r in enumerate(R):
        np.testing.assert_allclose(got[f"{i}_0_0"], r, atol=1e-6)
    json.dumps({k: v.tolist() for k, v in got.items()})
