"""Finding 1 of issue 34: nothing catpose reads from a store runs code. A pickle payload (an object
whose ``__reduce__`` creates a marker file) is planted in each file type that catpose loads —
``model.pt``, ``retrieval_views.pt``, a checkpoint's ``state.pt``, ``template.npz``, a video's surface
features — and the real reading path (``load_trained``, ``catpose estimate``, a training resume) must
refuse it with an error naming the file, and the marker must not exist."""

from __future__ import annotations

import dataclasses
import io
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from catpose.errors import DataFormatError
from catpose.learn.train import load_trained, read_state, run_train
from tests.training_inputs import training_config, training_inputs

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CATPOSE = [sys.executable, "-m", "catpose.cli"]


class Payload:
    """Unpickling this creates ``marker``: what a hostile file in a shared bucket would do."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def torch_payload(marker: Path, **extra) -> bytes:
    """A real ``torch.save`` file whose pickle holds the payload (next to plausible content)."""
    buf = io.BytesIO()
    torch.save({"config": Payload(marker), **extra}, buf)
    return buf.getvalue()


@pytest.fixture(scope="module")
def trained(synth_root, tmp_path_factory, ray_local):
    """One real training run of one epoch (one worker, no evaluation): its folder and config."""
    base = tmp_path_factory.mktemp("pickle-run")
    shards = str(base / "shards")
    feats = training_inputs(synth_root, base, shards)
    cfg = training_config(synth_root, base, shards, feats, out=str(base / "runs"), epochs=1, num_workers=1,
                          evaluate=False, max_failures=0)
    run_train(cfg)
    return base / "runs" / "train-car", cfg, feats


def copy_run(trained, tmp_path) -> Path:
    run = tmp_path / "train-car"
    shutil.copytree(trained[0], run)
    return run


def run_cli(args):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        CATPOSE + args, capture_output=True, text=True, timeout=300, env=env, cwd=REPO, check=False
    )


def test_a_real_run_loads_and_its_files_are_no_pickles(trained):
    run = trained[0]
    model, tpl = load_trained(str(run))
    assert tpl.features.shape == (len(tpl.vertices), model.config.dim)
    for f in [run / "model.pt", *run.glob("checkpoint_*/state.pt")]:
        head = f.read_bytes()[:2]
        assert head not in (b"PK", b"\x80\x04"), f  # neither torch.save's zip nor a bare pickle
    state = read_state(max(run.glob("checkpoint_*/state.pt")))
    assert state["epoch"] == 0 and len(state["history"]) == 1


@pytest.mark.parametrize("kind", ["torch.save", "bare pickle"])
def test_a_payload_in_model_pt_does_not_run(trained, tmp_path, kind):
    run = copy_run(trained, tmp_path)
    marker = tmp_path / "ran"
    (run / "model.pt").write_bytes(
        torch_payload(marker) if kind == "torch.save" else pickle.dumps(Payload(marker))
    )
    with pytest.raises(DataFormatError) as e:
        load_trained(str(run))
    assert not marker.exists()
    assert str(run / "model.pt") in str(e.value) and "pickle" in str(e.value)
    # the estimate command as a user runs it: exit 2, one line naming the file, nothing ran
    image = next((trained[1].ground_truth / "car").glob("*/images/*.jpg"))
    r = run_cli(["estimate", "--checkpoint", str(run), "--image", str(image), "--out", str(tmp_path / "est")])
    assert r.returncode == 2, r.stderr
    assert f"{run / 'model.pt'}: " in r.stderr and "Traceback" not in r.stderr
    assert not marker.exists()


def test_a_legacy_pickle_model_is_refused_with_what_to_do(trained, tmp_path):
    """An older catpose's model.pt (torch.save of real tensors, no payload) is not unpickled either."""
    run = copy_run(trained, tmp_path)
    buf = io.BytesIO()
    torch.save(
        {"encoder": {}, "template": {}, "vertices": np.zeros((3, 3), np.float32), "config": {}, "epochs": 1},
        buf,
    )
    (run / "model.pt").write_bytes(buf.getvalue())
    with pytest.raises(DataFormatError, match="Retrain the run with this catpose, or convert") as e:
        load_trained(str(run))
    assert str(run / "model.pt") in str(e.value)


def test_a_payload_in_the_retrieval_views_cache_does_not_run(trained, tmp_path):
    """The cache is keyed by what it was made from (retrieval_views.key.json): a planted file without the
    run's key is recomputed, never read; one planted next to the run's own key is read as a tensorfile and
    refused as a pickle. The payload runs in neither case."""
    run = copy_run(trained, tmp_path)
    marker = tmp_path / "ran"
    image = next((trained[1].ground_truth / "car").glob("*/images/*.jpg"))
    args = ["estimate", "--checkpoint", str(run), "--image", str(image), "--out", str(tmp_path / "est"),
            "--pose.prior-weight", "3", "--pose.grid", "256", "--pose.refine-steps", "0"]
    (run / "retrieval_views.key.json").unlink(missing_ok=True)
    (run / "retrieval_views.pt").write_bytes(torch_payload(marker, descriptors=torch.zeros(2, 4)))
    r = run_cli(args)
    # exit 1 is the one-epoch model finding no object in the image: the cache, not the pose, is tested here
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, (r.stdout[-2000:], r.stderr[-2000:])
    assert f"retrieval views: {run / 'retrieval_views.pt'} was made from another" in r.stdout
    assert (run / "retrieval_views.key.json").is_file() and not marker.exists()
    # the run's own key now stands next to it: a payload put there is read, as a tensorfile, and refused
    (run / "retrieval_views.pt").write_bytes(torch_payload(marker, descriptors=torch.zeros(2, 4)))
    r = run_cli(args)
    assert r.returncode == 2, (r.stdout[-2000:], r.stderr[-2000:])
    assert f"{run / 'retrieval_views.pt'}: " in r.stderr and "pickle" in r.stderr
    assert not marker.exists()


def test_a_payload_in_a_checkpoint_does_not_run_on_resume(trained, tmp_path):
    """Resume (Ray Train hands the latest checkpoint to the restarted workers) reads state.pt: a
    planted payload there fails the run with the file named, in the worker as on the driver."""
    run_root = tmp_path / "runs"
    shutil.copytree(trained[0].parent, run_root)
    marker = tmp_path / "ran"
    for f in run_root.glob("train-car/checkpoint_*/state.pt"):
        f.write_bytes(torch_payload(marker, model={}, optimizer={}))
    # model.pt gone: the run is not finished, so it resumes from its checkpoint for one more epoch
    (run_root / "train-car" / "model.pt").unlink()
    cfg = dataclasses.replace(trained[1], out=str(run_root), epochs=2)
    with pytest.raises(Exception) as e:
        run_train(cfg)
    assert not marker.exists()
    assert "state.pt" in str(e.value) and "pickle" in str(e.value), str(e.value)[-3000:]


def test_a_pickled_object_array_in_the_template_or_features_does_not_run(trained, tmp_path):
    """The .npz files (template, surface features) are read by numpy without pickle: an object array
    is refused, naming the file."""
    from catpose.features.runner import load_surface_features

    run = copy_run(trained, tmp_path)
    marker = tmp_path / "ran"
    buf = io.BytesIO()
    np.savez(
        buf,
        vertices=np.array([Payload(marker)], dtype=object),
        support=np.zeros(1),
        meta=np.zeros(1, np.uint8),
    )
    (run / "template.npz").write_bytes(buf.getvalue())
    with pytest.raises(DataFormatError, match="not a catpose template file") as e:
        load_trained(str(run))
    assert str(run / "template.npz") in str(e.value) and not marker.exists()

    feats = tmp_path / "features"
    shutil.copytree(trained[2], feats)
    victim = min((feats / "car").glob("*.npz"))
    victim.write_bytes(buf.getvalue())
    with pytest.raises(DataFormatError, match="not a catpose surface-feature file") as e:
        load_surface_features(str(feats), "car", victim.stem)
    assert victim.name in str(e.value) and not marker.exists()
