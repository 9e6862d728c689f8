"""The run lease (catpose.lease): one writer per store, on a folder (exclusive create) and on S3 (moto's
server, conditional puts); real processes contend for it; a stale lease is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from catpose.lease import LEASE, Lease, LeaseError
from catpose.storage import Store

HOLD = """
import sys, time
from catpose.lease import Lease
from catpose.storage import Store
lease = Lease(Store(sys.argv[1], sys.argv[2] or None), "holder " + sys.argv[3], ttl_s=float(sys.argv[4]))
try:
    lease.acquire()
except Exception as e:
    print("REFUSED", e, flush=True)
    sys.exit(3)
print("HELD", flush=True)
time.sleep(float(sys.argv[5]))
lease.release()
print("RELEASED", flush=True)
"""


def _stores(tmp_path, s3_bucket=None):
    if s3_bucket is None:
        return str(tmp_path / "store"), ""
    endpoint, bucket = s3_bucket
    return f"s3://{bucket}/run", endpoint


def _contend(uri: str, endpoint: str, n: int = 4) -> list[tuple[int, str]]:
    """``n`` processes started together, each trying to take the lease and hold it 3 s."""
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", HOLD, uri, endpoint, str(i), "30", "3"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(n)
    ]
    return [(p.wait(timeout=120), p.stdout.read()) for p in procs]


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_one_of_several_processes_gets_the_lease_the_others_are_told_who(tmp_path, where, request):
    uri, endpoint = _stores(tmp_path, request.getfixturevalue("s3_bucket") if where == "s3" else None)
    results = _contend(uri, endpoint)
    winners = [out for rc, out in results if rc == 0]
    losers = [out for rc, out in results if rc == 3]
    assert len(winners) == 1 and len(losers) == 3, results
    assert "HELD" in winners[0] and "RELEASED" in winners[0]
    for out in losers:
        assert "the store is in use by holder " in out and "_catpose_lease.json" in out and "pid " in out
    assert not Store(uri, endpoint or None).exists(LEASE)  # released
    Lease(Store(uri, endpoint or None), "after").acquire().release()  # free again


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_a_stale_lease_is_taken_over_and_its_holder_is_told(tmp_path, where, request, capsys):
    uri, endpoint = _stores(tmp_path, request.getfixturevalue("s3_bucket") if where == "s3" else None)
    store = Store(uri, endpoint or None)
    first = Lease(store, "first run", ttl_s=2.0).acquire()
    with pytest.raises(LeaseError, match="in use by first run"):
        Lease(store, "second run").acquire()
    first._stop.set()  # the first run hangs (stops renewing)
    first._thread.join()
    time.sleep(2.2)
    second = Lease(store, "second run", ttl_s=30).acquire()
    assert "took over the stale lease of first run" in capsys.readouterr().out
    assert json.loads(store.read_bytes(LEASE))["command"] == "second run"
    with pytest.raises(LeaseError, match="taken over by second run"):
        first.release()  # the first run learns that its outputs may be mixed
    assert store.exists(LEASE)  # and leaves the second run's lease alone
    second.release()
    assert not store.exists(LEASE)


def test_a_held_lease_is_renewed_and_a_waiting_run_gets_it_after_release(tmp_path):
    store = Store(str(tmp_path / "store"))
    lease = Lease(store, "renewing", ttl_s=1.5).acquire()
    t0 = json.loads(store.read_bytes(LEASE))["expires"]
    time.sleep(2.0)  # past the first expiry: renewed meanwhile, so still held
    assert json.loads(store.read_bytes(LEASE))["expires"] > t0
    with pytest.raises(LeaseError):
        Lease(store, "other").acquire()
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    waiter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HOLD.replace(
                '"holder " + sys.argv[3], ttl_s=float(sys.argv[4]))', '"waiter", ttl_s=30, wait_s=30)'
            ),
            store.uri,
            "",
            "w",
            "30",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    time.sleep(2)
    assert waiter.poll() is None  # still waiting
    lease.release()
    assert waiter.wait(timeout=60) == 0 and "HELD" in waiter.stdout.read()


@pytest.mark.parametrize("where", ["folder", "s3"])
def test_the_lease_of_a_killed_run_on_this_host_is_taken_over_before_its_expiry(tmp_path, where, request):
    """A run killed with SIGKILL cannot release its lease: the next run on the same host sees that the
    holder's process is gone and takes the lease at once, long before its 10-minute expiry."""
    uri, endpoint = _stores(tmp_path, request.getfixturevalue("s3_bucket") if where == "s3" else None)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, uri, endpoint, "killed", "600", "600"],
                            stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout.readline().strip() == "HELD"
    store = Store(uri, endpoint or None)
    with pytest.raises(LeaseError, match="in use by holder killed"):  # alive: refused
        Lease(store, "next run").acquire()
    proc.kill()
    proc.wait(timeout=30)
    assert store.exists(LEASE) and json.loads(store.read_bytes(LEASE))["pid"] == proc.pid  # left behind
    t0 = time.time()
    Lease(store, "next run").acquire().release()
    assert time.time() - t0 < 30 and not store.exists(LEASE)


def test_a_lease_this_process_could_not_release_is_taken_over_by_its_next_run(tmp_path):
    """A run whose release failed (its store was unreachable at the end) leaves its record behind; the
    same process's next run is not refused by its own dead lease, while a lease it still holds refuses."""
    store = Store(str(tmp_path / "store"))
    held = Lease(store, "running").acquire()
    with pytest.raises(LeaseError, match="in use by running"):
        Lease(store, "second").acquire()
    held._stop.set()  # as after a release that could not reach the store: no longer held, record left
    from catpose import lease as lease_module

    lease_module._HELD.discard(held.owner)
    assert store.exists(LEASE)
    Lease(store, "next run").acquire().release()
    assert not store.exists(LEASE)
