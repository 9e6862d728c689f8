"""Issue 34, finding 4: two `catpose` processes on one store. The second stops before any work with a
clear message naming the holder (its host and pid), and the first finishes untouched."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from catpose.lease import LEASE

from .conftest import small_run_yaml


def test_a_second_catpose_on_the_same_store_stops_naming_the_first(tmp_path):
    out = tmp_path / "synth"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [
        sys.executable,
        "-m",
        "catpose.cli",
        "synth",
        "--out",
        str(out),
        "--category",
        "car",
        "--workers",
        "0",
        "--frames",
        "6",
        "--size",
        "64",
        "--supersample",
        "1",
    ]
    first = subprocess.Popen(
        cmd + ["--videos", "10"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    for _ in range(300):  # until the first holds the lease
        if (out / LEASE).exists() or first.poll() is not None:
            break
        time.sleep(0.1)
    assert (out / LEASE).exists(), first.communicate()
    second = subprocess.run(cmd + ["--videos", "2", "--seed", "1"], capture_output=True, text=True, env=env,
                            timeout=120)
    assert second.returncode == 2
    assert "_catpose_lease.json: the store is in use by catpose synth" in second.stderr
    assert f"pid {first.pid}" in second.stderr
    out1, err1 = first.communicate(timeout=300)
    assert first.returncode == 0, err1
    assert "synth car: 0 of 10 videos kept (inputs and settings unchanged), 10 new" in out1
    assert not (out / LEASE).exists()
    # the second run's settings never reached the store: ten videos of seed 0
    assert len(list((out / "car" / ".synth").glob("*.json"))) == 10


def test_a_second_catpose_run_on_the_same_store_stops_before_any_stage(tmp_path):
    """Issue 34, finding 4 as it was found: two ``catpose run``s on one --out. The second stops at once,
    naming the first, so the two can no longer train into one ``train/train-<category>`` and leave a
    model.pt of one and a retrieval_views.pt of the other; the first run's outputs are its own."""

    out = tmp_path / "run"
    conf = small_run_yaml(tmp_path, out)
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    cmd = [sys.executable, "-m", "catpose", "run", "--config", str(conf)]
    first = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    for _ in range(600):
        if (out / LEASE).exists() or first.poll() is not None:
            break
        time.sleep(0.1)
    assert (out / LEASE).exists(), first.communicate()
    second = subprocess.run(cmd + ["--synth.seed", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert second.returncode == 2, (second.stdout, second.stderr)
    err = second.stderr.strip().splitlines()
    assert len(err) == 1 and f"{out / LEASE}: the store is in use by catpose run on host " in err[0], err
    assert f"(pid {first.pid}," in err[0] and "==" not in second.stdout  # no stage of the second began
    out1, err1 = first.communicate(timeout=900)
    assert first.returncode == 0, err1[-3000:]
    assert not (out / LEASE).exists()
    import yaml as _y

    assert (
        _y.safe_load((out / "config.yaml").read_text())["synth"]["seed"] == 0
    )  # the first run's settings only
    man = json.loads((out / "pipeline_manifest.json").read_text())
    assert all(v.get("status") == "ok" for v in man["items"].values()), man
