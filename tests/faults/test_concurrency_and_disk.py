"""Case 5 of issue 19: two runs on one store lose no manifest entries and do not trip over each
other's temporary files (local folder and S3); a read-only output fails before the first item; a full
disk (here: a file size limit) names the file and leaves no temporary file behind."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from catpose.config import ShardConfig
from catpose.data.shards import MANIFEST, write_shards
from catpose.errors import StorageError
from catpose.features.runner import run_features
from catpose.manifest import Manifest
from catpose.storage import Store

from .conftest import fast_features

REPO = Path(__file__).resolve().parents[2]

WRITER = """
import sys
from catpose.manifest import Manifest
path, who, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
man = Manifest.load_or_new(path, "stage")
for i in range(n):
    man.record(f"{who}-{i:03d}", "ok", seconds=0.0, writer=who)
man.save()
"""


def test_two_processes_recording_into_one_manifest_lose_no_entry(tmp_path):
    path = tmp_path / "m" / "_manifest.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path), who, "40"], env=env, stderr=subprocess.PIPE, text=True
        )
        for who in ("a", "b")
    ]
    for p in procs:
        assert p.wait(timeout=120) == 0, p.stderr.read()
    man = Manifest.load_or_new(path, "stage")
    assert sorted(man.items) == sorted(f"{w}-{i:03d}" for w in "ab" for i in range(40))
    assert not list(path.parent.rglob("*.tmp"))


def test_concurrent_writers_on_s3_lose_no_entry(s3_bucket):
    endpoint, bucket = s3_bucket
    store = Store(f"s3://{bucket}/feats", endpoint)

    def writer(who):
        man = Manifest.load_or_new("car/_manifest.json", "features", store=Store(store.uri, endpoint))
        for i in range(10):
            man.record(f"{who}{i}", "ok")
        man.save()

    threads = [threading.Thread(target=writer, args=(w,)) for w in "xyz"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    man = Manifest.load_or_new("car/_manifest.json", "features", store=store)
    assert sorted(man.items) == sorted(f"{w}{i}" for w in "xyz" for i in range(10))


def test_two_shard_runs_on_one_store_keep_both_manifests(data, tmp_path):
    out = str(tmp_path / "s")
    errors = []

    def run(cat):
        try:
            for _ in range(3):  # rerun a few times so that the writes overlap
                write_shards(
                    ShardConfig(data=data, out=out, category=(cat,), rows_per_shard=4), progress=False
                )
        except Exception as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(c,)) for c in ("car", "mug")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    man = Store(out).read_json(MANIFEST)
    assert {c: v["frames"] for c, v in man["categories"].items()} == {"car": 24, "mug": 24}
    assert len(man["shards"]) == 12 and not list(Path(out).rglob("*.tmp"))


def test_concurrent_writes_of_one_file_never_collide(tmp_path):
    store = Store(str(tmp_path))
    errors = []

    def put(k):
        try:
            for _ in range(20):
                store.write_bytes("car/x.npz", bytes([k]) * 10000)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=put, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(store.read_bytes("car/x.npz"))) == 1  # one writer's whole content
    assert not list(tmp_path.rglob("*.tmp"))


def test_a_read_only_output_fails_before_the_first_item(data, tmp_path):
    if os.geteuid() == 0:  # root writes through permission bits: use a folder no one can write
        ro = Path("/sys/kernel")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o500)
    with pytest.raises(StorageError, match=f"{ro}: cannot write here"):
        Store(str(ro)).check()
    with pytest.raises(StorageError, match=f"{ro}: cannot write here"):
        run_features(fast_features(data, ro), progress=False)
    with pytest.raises(StorageError, match=f"{ro}: cannot write here"):
        write_shards(ShardConfig(data=data, out=str(ro)), progress=False)


FULL_DISK = """
import resource, signal, sys
from catpose.errors import StorageError
from catpose.storage import Store
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (50_000, 50_000))
try:
    Store(sys.argv[1]).write_bytes("car/car_0000.npz", b"x" * 200_000)
except StorageError as e:
    print(e)
    sys.exit(3)
"""


def test_a_full_disk_names_the_file_and_leaves_no_temporary_file(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    r = subprocess.run([sys.executable, "-c", FULL_DISK, str(tmp_path / "f")], env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert f"{tmp_path / 'f' / 'car' / 'car_0000.npz'}: cannot write: File too large" in r.stdout
    assert (
        not list((tmp_path / "f").rglob("*.tmp")) and not (tmp_path / "f" / "car" / "car_0000.npz").exists()
    )
