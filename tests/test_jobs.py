"""The main job as users run it: ``ray job submit`` to a ``ray start --head`` cluster, and a run killed
during alignment that is started again and finishes without redoing finished work."""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tiny_config(path: Path, train: bool, rotations: int = 512, chunk: int = 4) -> Path:
    cfg = {
        "synth": {"category": ["car"], "videos": 4, "frames": 8, "size": 96},
        "features": {"frames": 4, "vertices": 400},
        "align": {"search": {"rotations": rotations}, "partners": 0, "chunk": chunk},
        "eval_pairs": 4,
        "train_categories": ["car"] if train else [],
        "train": {
            "epochs": 1,
            "size": 64,
            "vertices": 200,
            "batch_size": 4,
            "holdout": 0.25,
            "eval_frames": 8,
        },
        "pose_images": 3,
        "pose": {"grid": 512, "refine_steps": 5},
    }
    path.write_text(yaml.safe_dump(cfg))
    return path


def _env() -> dict:
    env = dict(os.environ)
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"  # the job's `python` is this environment's
    env.pop("RAY_ADDRESS", None)
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env["RAY_AUTH_MODE"] = "token"  # Ray's token authentication, as `ray start` enables it by default
    return env


def test_ray_job_submit_runs_the_pipeline(tmp_path):
    port, dash, agent, metrics = _free_port(), _free_port(), _free_port(), _free_port()
    ray_tmp = tempfile.mkdtemp(prefix="rayjob", dir="/tmp")  # Ray's socket paths must stay short
    head = subprocess.Popen(
        [str(BIN / "ray"), "start", "--head", "--block", f"--port={port}", f"--dashboard-port={dash}",
         "--dashboard-host=127.0.0.1", "--include-dashboard=true", "--num-cpus=2", "--disable-usage-stats",
         # ports of their own: another Ray on this machine (the tests' local one) holds the defaults
         f"--dashboard-agent-listen-port={agent}", f"--metrics-export-port={metrics}",
         f"--temp-dir={ray_tmp}"],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    address = f"http://127.0.0.1:{dash}"
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{address}/api/version", timeout=2).read()
                break
            except urllib.error.HTTPError:  # up, and asking for the cluster's token (Ray's token auth)
                break
            except OSError:
                if head.poll() is not None:
                    pytest.fail(f"ray start --head exited: {head.stdout.read()}")
                time.sleep(1)
        else:
            pytest.fail("the Ray dashboard (job server) did not come up in 120 s")
        out = tmp_path / "run"
        cfg = _tiny_config(tmp_path / "tiny.yaml", train=True)
        submit = [str(BIN / "ray"), "job", "submit", f"--address={address}", "--working-dir", str(ROOT), "--",
                  "python", "jobs/full_pipeline.py", "--config", str(cfg), "--out", str(out)]
        for _ in range(60):  # the node's job agent comes up a little after the dashboard
            sub = subprocess.run(submit, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=900)
            if "No available agent" not in sub.stdout + sub.stderr:
                break
            time.sleep(2)
        log = sub.stdout + sub.stderr
        assert sub.returncode == 0, log[-4000:]
        assert "succeeded" in log, log[-4000:]
        man = json.loads((out / "pipeline_manifest.json").read_text())
        stages = {k: v["status"] for k, v in man["items"].items()}
        assert stages == {
            s: "ok" for s in ("synth", "validate", "shard", "features", "align", "train", "pose")
        }, stages
        assert pq.read_table(out / "align" / "car" / "alignment.parquet").num_rows == 4
        assert (out / "train" / "train-car" / "model.pt").is_file()
        report = (out / "report.md").read_text()
        assert "Acc@π/6" in report and "vertex-to-pixel matching" in report
        assert (
            "Pose estimation on synthetic in-the-wild images" in report
            and (out / "plots" / "pose_errors_car.png").is_file()
        )
        assert json.loads((out / "pose" / "car" / "evaluation.json").read_text())["scored"] == 3
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)  # --block: ending it stops the processes it started
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_pipeline_killed_during_alignment_resumes_without_redoing_work(tmp_path):
    out = tmp_path / "run"
    cfg = _tiny_config(tmp_path / "tiny.yaml", train=False, rotations=4096, chunk=1)
    cmd = [sys.executable, str(ROOT / "jobs" / "full_pipeline.py"), "--config", str(cfg), "--out", str(out),
           "--workers", "0"]
    first = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
    chunks: list[Path] = []
    t0 = time.time()
    while time.time() - t0 < 600 and first.poll() is None:
        chunks = sorted((out / "align" / "car" / "pairs").glob("*/chunk-*.json"))
        if chunks:
            break
        time.sleep(0.05)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    assert chunks, "the pipeline never reached the alignment"
    assert not (out / "align" / "car" / "alignment.parquet").exists(), "alignment finished before the kill"
    before = {p: p.stat().st_mtime_ns for p in chunks}
    feats = {p: p.stat().st_mtime_ns for p in (out / "features").rglob("*.npz")}
    frames = {p: p.stat().st_mtime_ns for p in (out / "data" / "car").rglob("*.jpg")}
    man = json.loads((out / "pipeline_manifest.json").read_text())
    assert "align" not in man["items"] or man["items"]["align"]["status"] != "ok"

    second = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert f"({len(chunks)} done before)" in second.stdout
    # nothing that was finished is computed again: chunks, features and frames keep their files
    assert all(p.stat().st_mtime_ns == t for p, t in before.items())
    assert feats and all(p.stat().st_mtime_ns == t for p, t in feats.items())
    assert frames and all(p.stat().st_mtime_ns == t for p, t in frames.items())
    assert len(list((out / "align" / "car" / "pairs").glob("*/chunk-*.json"))) == 6
    man = json.loads((out / "pipeline_manifest.json").read_text())
    assert man["items"]["align"]["status"] == "ok"
    assert pq.read_table(out / "align" / "car" / "alignment.parquet").num_rows == 4
