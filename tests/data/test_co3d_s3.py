"""A CO3D-layout root on S3 (a local moto server): read lazily, object by object, exactly as from disk;
and the synthetic generator writing straight into a bucket."""

from __future__ import annotations

import numpy as np
import pytest

from catpose.data.co3d import Co3dCategory, list_categories
from catpose.errors import MissingFileError
from catpose.storage import Store


def test_s3_root_reads_like_the_local_one(synth_root, s3_bucket):
    endpoint, bucket = s3_bucket
    store = Store(f"s3://{bucket}/co3d", endpoint)
    store.upload_dir(synth_root, "")
    assert list_categories(store.uri, endpoint) == list_categories(synth_root) == ["car", "mug"]
    local, remote = Co3dCategory(synth_root, "car"), Co3dCategory(store.uri, "car", endpoint)
    assert remote.sequence_names == local.sequence_names and remote.set_list_names == local.set_list_names
    a, b = local["car_0001"], remote["car_0001"]
    assert str(b.frames[2].image_path) == f"s3://{bucket}/co3d/{a.frames[2].annotation.image.path}"
    np.testing.assert_array_equal(a.frames[2].load_image(), b.frames[2].load_image())
    np.testing.assert_array_equal(a.frames[2].load_mask(), b.frames[2].load_mask())
    np.testing.assert_array_equal(a.frames[2].load_depth(), b.frames[2].load_depth())
    np.testing.assert_array_equal(a.load_point_cloud().points, b.load_point_cloud().points)
    store.remove(a.frames[3].annotation.image.path)
    with pytest.raises(MissingFileError, match=f"s3://{bucket}/co3d/car/car_0001/images/"):
        b.frames[3].load_image()


def test_synth_writes_into_a_bucket(s3_bucket):
    from catpose.config import SynthConfig
    from catpose.data.groundtruth import load_ground_truth
    from catpose.data.synth.generate import generate

    endpoint, bucket = s3_bucket
    uri = f"s3://{bucket}/synth"
    man = generate(
        SynthConfig(workers=0, out=uri, endpoint_url=endpoint, category=("car",), videos=2, frames=2, size=32)
    )["car"]
    assert man.summary() == {"ok": 2}
    cat = Co3dCategory(uri, "car", endpoint)
    assert len(cat) == 2 and cat["car_0001"].frames[1].load_image().shape == (32, 32, 3)
    assert set(load_ground_truth(uri, "car", endpoint)) == {"car_0000", "car_0001"}
