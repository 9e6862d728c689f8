"""Shared fixtures: a small synthetic dataset, a local Ray, a local moto S3 server.

``--device cuda`` runs the torch tests of later stages on a GPU (default: cpu), as in kornia.
"""

from __future__ import annotations

import os
import socket
import time

import pytest

# Fake credentials for the local S3 server, set before anything starts Ray so that Ray's worker
# processes (which read S3 through s3fs in Ray Data tasks) inherit them too.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")


def pytest_addoption(parser):
    parser.addoption("--device", default=os.environ.get("CATPOSE_TEST_DEVICE", "cpu"),
                     help="torch device for the tests (cpu, cuda)")


@pytest.fixture(scope="session")
def device(request):
    return request.config.getoption("--device")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory):
    """A small synthetic dataset: 3 cars and 3 mugs, 8 frames each, 96 px."""
    from catpose.config import SynthConfig
    from catpose.data.synth.generate import generate

    root = tmp_path_factory.mktemp("synth")
    manifests = generate(
        SynthConfig(workers=0, out=root, category=("car", "mug"), videos=3, frames=8, size=96)
    )
    assert all(m.summary() == {"ok": 3} for m in manifests.values())
    return root


@pytest.fixture(scope="session")
def ray_local():
    """Real Ray, local, capped for the 2-core CI machine."""
    import ray

    ray.init(address="local", num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False,
             ignore_reinit_error=True, log_to_driver=False)
    yield ray
    ray.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3_server():
    """A real S3 API (moto's server) on 127.0.0.1; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for _ in range(50):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    yield endpoint
    server.stop()


@pytest.fixture
def s3_bucket(s3_server):
    """A fresh bucket on the local S3 server; yields (endpoint, bucket name)."""
    import uuid

    import boto3

    name = f"catpose-test-{uuid.uuid4().hex[:8]}"
    boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1").create_bucket(Bucket=name)
    return s3_server, name


@pytest.fixture(scope="session")
def realistic_root(tmp_path_factory):
    """Small synthetic data made the way real captures come out (``--realistic``): 3 cars and 3 mugs,
    12 frames each, 96 px; partial orbits, ground and background in the clouds, outliers, imperfect
    masks, camera noise."""
    from catpose.config import SynthConfig
    from catpose.data.synth.generate import generate

    root = tmp_path_factory.mktemp("realistic")
    manifests = generate(
        SynthConfig(
            workers=0,
            out=root,
            category=("car", "mug"),
            videos=3,
            frames=12,
            size=96,
            realistic=True,
            partial_share=0.5,
        )
    )
    assert all(m.summary() == {"ok": 3} for m in manifests.values())
    return root


@pytest.fixture(scope="session")
def trained_car(tmp_path_factory, ray_local):
    """A car trained at the demo's settings on 12 videos for 40 epochs and scored on 60 synthetic in-the-wild
    images (:func:`tests.trained_run.trained_car`; about 2.5 minutes on 2 cores), once per session."""
    from tests.trained_run import trained_car

    return trained_car(tmp_path_factory.mktemp("trained_car"), seed=0)
