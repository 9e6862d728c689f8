"""Finding 7 of issue 34: catpose's errors reach the driver as themselves across Ray (they pickle), and
a failed checkpoint write (a full disk) leaves the last good checkpoint loadable."""

from __future__ import annotations

import inspect
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

import catpose.errors as errors_module
from catpose.errors import CatposeError

REPO = Path(__file__).resolve().parents[2]

# one instance of every catpose error class, made as catpose makes them
SAMPLES = {
    "CatposeError": lambda c: c("train car: no checkpoint"),
    "DataFormatError": lambda c: c(
        "/data/car/frame_annotations.jgz", "not a number", field="frames[3].focal"
    ),
    "MissingFileError": lambda c: c("/data/car/mug_1/pointcloud.ply", "point cloud"),
    "SfMError": lambda c: c("car_0001", "no image pairs"),
    "StorageError": lambda c: c("s3://bucket/runs", "disk full"),
    "AlignmentError": lambda c: c("mug", "has 1 usable videos"),
    "ConfigError": lambda c: c("flags", "must lie in [0, 1], got 1.5", field="alpha"),
    "NoObjectError": lambda c: c("img.jpg", "no object"),
    "CleaningError": lambda c: c("/f/car_0001.npz", "1 point left", field="vertices"),
}


def error_classes() -> list[type]:
    return [c for _, c in inspect.getmembers(errors_module, inspect.isclass)
            if issubclass(c, CatposeError) and c.__module__ == errors_module.__name__]


def test_every_error_class_has_a_sample():
    assert {c.__name__ for c in error_classes()} == set(SAMPLES)


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_an_error_pickles_back_to_itself(name):
    cls = getattr(errors_module, name)
    e = SAMPLES[name](cls)
    back = pickle.loads(pickle.dumps(e))
    assert type(back) is cls and str(back) == str(e) and vars(back) == vars(e)
    assert isinstance(back, CatposeError) and set(type(e).__mro__) == set(type(back).__mro__)


def test_each_error_crosses_a_ray_task(ray_local):
    ray = ray_local

    def raise_it(error):  # defined here: Ray ships it by value (this test module is not importable there)
        raise error

    task = ray.remote(num_cpus=0.1, max_retries=0)(raise_it)
    for name in sorted(SAMPLES):
        expected = SAMPLES[name](getattr(errors_module, name))
        with pytest.raises(ray.exceptions.RayTaskError) as info:
            ray.get(task.remote(expected))  # the error goes to the worker pickled, and comes back raised
        cause = info.value.cause
        assert type(cause) is type(expected), (name, repr(cause))
        assert str(cause) == str(expected) and vars(cause) == vars(expected)
        # Ray also makes the task error an instance of the original class: `except DataFormatError` works
        assert isinstance(info.value, type(expected))


def test_a_full_disk_keeps_the_last_good_checkpoint(tmp_path):
    """``state.pt`` written under a file-size limit smaller than it (RLIMIT_FSIZE: the kernel refuses
    the write, EFBIG, as a full disk would with ENOSPC) fails the write and leaves the previous
    checkpoint whole."""
    import torch

    from catpose.learn.train import read_state, write_state

    path = tmp_path / "state.pt"
    good = {"model": {"w": torch.arange(10.0)}, "optimizer": {"state": {}, "param_groups": []}, "epoch": 3,
            "history": [{"loss": 1.0}]}
    write_state(path, good)
    script = f"""
import resource, signal, sys, torch
from catpose.learn.train import write_state
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # an error (EFBIG), not a killed process
resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))
try:
    write_state({str(path)!r}, {{"model": {{"w": torch.zeros(1_000_000)}}, "optimizer": {{}}, "epoch": 4,
                                  "history": []}})
except OSError as e:
    print("write failed:", e.errno, e)
    sys.exit(3)
"""
    r = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120, check=False
    )
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "File too large" in r.stdout
    state = read_state(path)
    assert state["epoch"] == 3 and torch.equal(state["model"]["w"], good["model"]["w"])
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left behind


DRIVER = """
import os, sys, time
from catpose.parallel import init_ray
init_ray(num_cpus=1)
import ray
print(ray.get(ray.remote(lambda: os.getpid()).remote()), flush=True)
print("READY", flush=True)
time.sleep(600)
"""


def test_a_killed_driver_leaves_no_ray_process_behind(tmp_path):
    """SIGKILL of a driver that started its local Ray (catpose.parallel.init_ray): within 20 s none of
    its Ray processes runs (before: Ray's DashboardAgent and RuntimeEnvAgent stayed, orphaned)."""
    import os
    import signal
    import time

    import psutil

    p = subprocess.Popen([sys.executable, "-c", DRIVER], cwd=REPO, stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)})
    ray_procs: list = []
    try:
        for line in p.stdout:
            if "READY" in line:
                break
        ray_procs = [c for c in psutil.Process(p.pid).children(recursive=True)
                     if "raywatch" not in " ".join(c.cmdline())]
        names = {" ".join(c.cmdline()).split()[0].rsplit("/", 1)[-1] for c in ray_procs}
        assert "raylet" in names and "ray::DashboardAgent" in names, names
        p.send_signal(signal.SIGKILL)
        p.wait()
        t0 = time.time()
        while time.time() - t0 < 20:
            alive = [c for c in ray_procs if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
            if not alive:
                break
            time.sleep(0.5)
        assert not alive, [" ".join(c.cmdline())[:80] for c in alive]
        print(f"\n{len(ray_procs)} Ray processes gone {time.time() - t0:.1f} s after the driver's SIGKILL")
    finally:  # only this test's own leftovers, by pid
        if p.poll() is None:
            p.kill()
        for c in ray_procs:
            try:
                c.kill()
            except psutil.Error:
                pass
