"""``catpose train`` through real Ray Train on CPU: loss, a killed worker, resume, S3 storage."""

import dataclasses
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from catpose.errors import ConfigError
from catpose.learn.train import load_trained, run_train
from tests.training_inputs import training_config, training_inputs

pytestmark = pytest.mark.slow


def _kill_a_worker_after_a_checkpoint(run_dir: Path, done: dict, timeout: float = 300):
    """SIGKILLs one Ray Train worker process once a checkpoint is surely registered (a second one is
    being written and the run's checkpoint snapshot exists)."""
    import psutil

    t0 = time.time()
    while time.time() - t0 < timeout and not done.get("stop"):
        if (
            len(list(run_dir.glob("checkpoint_*"))) >= 2
            and (run_dir / "checkpoint_manager_snapshot.json").is_file()
        ):
            # only this test's Ray (started by this process): another Ray's training on the machine is not
            # ours
            for p in psutil.Process().children(recursive=True):
                try:
                    cmd = " ".join(p.cmdline())
                except psutil.Error:
                    continue
                if "RayTrainWorker" in cmd:
                    p.kill()
                    done["killed"] = p.pid
                    return
        time.sleep(0.1)


def test_train_two_workers_survives_a_killed_worker(synth_root, tmp_path, ray_local):
    shards = str(tmp_path / "shards")
    feats = training_inputs(synth_root, tmp_path, shards)
    # every epoch streams Ray Data (no frame cache): cached epochs of this tiny set take milliseconds and
    # would end the run before the kill lands, leaving nothing to restart
    cfg = training_config(
        synth_root,
        tmp_path,
        shards,
        feats,
        out=str(tmp_path / "runs"),
        epochs=8,
        max_failures=2,
        frame_cache_mb=0,
        checkpoint_every_s=0,
    )
    state: dict = {}
    killer = threading.Thread(
        target=_kill_a_worker_after_a_checkpoint, args=(tmp_path / "runs" / "train-car", state)
    )
    killer.start()
    try:
        res = run_train(cfg)
    finally:
        state["stop"] = True
        killer.join()
    assert state.get("killed"), "no Ray Train worker was found to kill"
    h = res["history"]
    assert [e["epoch"] for e in h] == list(range(8))  # every epoch once, none lost or repeated
    assert max(e["started_at_epoch"] for e in h) >= 1  # the restarted workers resumed from a checkpoint
    losses = [e["loss"] for e in h]
    print(f"\nkilled pid {state['killed']}; losses {np.round(losses, 3).tolist()}; "
          f"resumed at epoch {max(e['started_at_epoch'] for e in h)}")
    assert np.mean(losses[-2:]) < losses[0]
    run = tmp_path / "runs" / "train-car"
    for f in ("model.pt", "template.npz", "history.json", "training_curves.png", "evaluation.json",
              "evaluation.md", "viewpoint_accuracy.png", "split.json"):
        assert (run / f).is_file(), f
    assert list((run / "tensorboard").glob("events.out.tfevents.*"))
    ev = json.loads((run / "evaluation.json").read_text())
    assert set(ev["methods"]) == {"trained", "untrained network", "colorsift (alignment features)"}
    assert ev["frames"] == 8
    acc = {k: m["accuracy"] for k, m in ev["methods"].items()}
    # the held-out matching score tells features apart: colorsift's descriptors match several times more
    # vertices than an untrained network's (measured 9.6-15 % against 2-3.5 %; 8 tiny epochs are too few
    # for the trained features to lead, which the demo and the GPU runs show)
    assert acc["colorsift (alignment features)"] > 2 * acc["untrained network"]
    model, tpl = load_trained(str(run))
    assert tpl.features.shape == (len(tpl.vertices), cfg.dim)


def test_train_on_s3_storage_and_resume(synth_root, tmp_path, ray_local, s3_bucket):
    import s3fs

    endpoint, bucket = s3_bucket
    shards = f"s3://{bucket}/shards"
    feats = training_inputs(synth_root, tmp_path, shards, endpoint)
    cfg = training_config(
        synth_root,
        tmp_path,
        shards,
        feats,
        out=f"s3://{bucket}/runs",
        epochs=1,
        num_workers=1,
        endpoint_url=endpoint,
        evaluate=False,
    )
    res = run_train(cfg)
    assert res["run"] == f"s3://{bucket}/runs/train-car" and len(res["history"]) == 1
    fs = s3fs.S3FileSystem(endpoint_url=endpoint)
    keys = fs.find(f"{bucket}/runs/train-car")
    names = {k.split("/train-car/", 1)[1] for k in keys}
    assert any(n.startswith("checkpoint_") and n.endswith("/state.pt") for n in names), names
    assert any(n.startswith("tensorboard/events.out.tfevents") for n in names), names
    assert {"model.pt", "template.npz", "history.json", "training_curves.png", "split.json"} <= names
    # the same run with more epochs continues from the checkpoint in the bucket
    res2 = run_train(dataclasses.replace(cfg, epochs=2))
    assert [e["epoch"] for e in res2["history"]] == [0, 1] and res2["history"][1]["started_at_epoch"] == 1
    # a setting that changes what the run learns: not resumed and not kept, but named (or, for the main
    # job, which reruns the stage because something changed, started anew)
    changed = dataclasses.replace(cfg, epochs=2, mask_fill=False)
    with pytest.raises(ConfigError, match=r"mask_fill: True -> False") as e:
        run_train(changed)
    assert f"s3://{bucket}/runs/train-car" in str(e.value)
    res3 = run_train(changed, replace_changed=True)
    assert [h["started_at_epoch"] for h in res3["history"]] == [0, 0]
    split = json.loads(fs.cat(f"{bucket}/runs/train-car/split.json"))
    assert split["fingerprint"]["settings"]["mask_fill"] is False and split["config"]["mask_fill"] is False


def test_training_at_the_demo_settings_learns_features_that_match_held_out_videos(trained_car):
    """The session's trained car (tests/trained_run.py, 12 videos, 40 epochs at the demo's settings): its
    held-out matching, against the same network untrained and the alignment's colorsift features."""
    ev = trained_car["train"]["evaluation"]
    acc = {k: v["accuracy"] for k, v in ev["methods"].items()}
    # measured (seeds 0, 1; tests/pose/test_trained_accuracy.py) 49.3 % / 47.1 % against 5.1 % / 5.7 %
    # (untrained) and 15.3 % / 9.9 % (colorsift), i.e. 8.3x and 3.2x at the least: thresholds 4x and 2x
    assert acc["trained"] > 4 * acc["untrained network"]
    assert acc["trained"] > 2 * acc["colorsift (alignment features)"]
    assert acc["trained"] >= 0.30  # measured 47.1 % at the least: 17 points of margin
    loss = [h["loss"] for h in trained_car["train"]["history"]]
    assert np.mean(loss[-5:]) < 0.7 * loss[0]  # measured 6.87 -> 3.78 and 6.83 -> 3.40 (ratio 0.55 at most)
