"""``catpose evaluate`` and ``catpose estimate`` end to end on a run written to disk (no Ray needed):
shards, surface features and an alignment of the small synthetic dataset, a model saved as training
saves it, a synthetic in-the-wild set with one corrupt image."""

import json

import numpy as np
import pytest

from catpose.cli import main
from catpose.config import WildConfig
from catpose.geometry import pose_metrics
from catpose.pose.wild import generate_wild

pytestmark = pytest.mark.slow


def test_evaluate_scores_the_wild_set_against_ground_truth_and_the_baseline(run_dir, tmp_path):
    wild = tmp_path / "wild"
    info = generate_wild(WildConfig(out=wild, images=6, width=96, height=80), progress=False)
    broken = wild / "Images" / "car_synth" / "00002.jpg"
    broken.write_bytes(broken.read_bytes()[:200])  # truncated JPEG
    out = tmp_path / "eval"
    rc = main(["evaluate", "--checkpoint", str(run_dir), "--dataset", "synth-wild", "--root", str(wild),
               "--category", "car", "--out", str(out), "--pose.grid", "512", "--pose.refine-steps", "5",
               "--overlays", "2"])
    assert rc == 0
    res = json.loads((out / "evaluation.json").read_text())
    assert res["frame"] == "gt" and res["scored"] == info["images"] and res["failed"] == 1
    assert set(res["methods"]) == {
        "catpose (features + render-and-compare)",
        "nearest training view (same features)",
    }
    lines = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    bad = [r for r in lines if "failed" in r]
    assert len(bad) == 1 and str(broken) in bad[0]["failed"]
    # the table is what the per-object errors say (failures count as wrong)
    errs = [np.nan if r.get("error_deg") is None else r["error_deg"] for r in lines]
    # each error is the geodesic between the estimate (in the truth's frame) and the annotation's rotation
    from catpose.geometry.so3 import geodesic_deg
    from catpose.pose.datasets import load_pascal3d

    truth = {s.name: s.R for s in load_pascal3d(wild, "car", ("synth",), None, real_camera=True)[0]}
    G = np.array(res["frame_rotation"])
    for r in lines:
        if "failed" in r:
            continue
        np.testing.assert_allclose(r["R_gt"], truth[r["name"]], atol=1e-9)
        if r.get("error_deg") is not None:
            assert r["error_deg"] == pytest.approx(float(geodesic_deg(G @ np.array(r["R_template"]),
                                                                      np.array(r["R_gt"]))), abs=1e-6)
    assert res["methods"]["catpose (features + render-and-compare)"] == pose_metrics(errs)
    base = [np.nan if r.get("baseline_error_deg") is None else r["baseline_error_deg"] for r in lines]
    assert res["methods"]["nearest training view (same features)"] == pose_metrics(base)
    assert (out / "errors.png").stat().st_size > 1000 and len(list((out / "overlays").glob("*.png"))) == 2
    assert "| catpose (features + render-and-compare) |" in (out / "evaluation.md").read_text()
    assert (run_dir / "retrieval_views.pt").is_file()  # cached for `catpose estimate`

    # one image at a time (--pose.batch 0: batches of one) scores the same objects
    one_out = tmp_path / "eval_one"
    assert main(["evaluate", "--checkpoint", str(run_dir), "--dataset", "synth-wild", "--root", str(wild),
                 "--category", "car", "--out", str(one_out), "--pose.grid", "512", "--pose.refine-steps", "5",
                 "--pose.batch", "0", "--overlays", "0", "--no-baseline"]) == 0
    one = json.loads((one_out / "evaluation.json").read_text())
    one_lines = [json.loads(ln) for ln in (one_out / "results.jsonl").read_text().splitlines()]
    assert one["scored"] == res["scored"] and one["failed"] == 1
    assert [r["name"] for r in one_lines if "failed" in r] == [r["name"] for r in bad]
    assert one["methods"]["catpose (features + render-and-compare)"] == pose_metrics(
        [np.nan if r.get("error_deg") is None else r["error_deg"] for r in one_lines])

    # without ground truth for the template frame (as for PASCAL3D+): fitted on a calibration share
    fit_out = tmp_path / "eval_fit"
    assert main(["evaluate", "--checkpoint", str(run_dir), "--dataset", "synth-wild", "--root", str(wild),
                 "--category", "car", "--out", str(fit_out), "--frame", "fit", "--calibration", "0.4",
                 "--pose.grid", "512", "--pose.refine-steps", "5", "--overlays", "0", "--no-baseline"]) == 0
    fit = json.loads((fit_out / "evaluation.json").read_text())
    assert fit["frame"] == "fit" and fit["calibration"] == int(np.ceil(0.4 * info["images"]))
    assert fit["scored"] == info["images"] - fit["calibration"]
    G = np.array(fit["frame_rotation"])
    np.testing.assert_allclose(G @ G.T, np.eye(3), atol=1e-6)

    # the same run estimates one image from the command line, with the frame the evaluation wrote
    img = wild / "Images" / "car_synth" / "00000.jpg"
    est_out = tmp_path / "poses"
    rc = main(
        [
            "estimate",
            "--checkpoint",
            str(run_dir),
            "--image",
            str(img),
            str(broken),
            "--out",
            str(est_out),
            "--frame",
            str(out / "frame.json"),
            "--pose.grid",
            "512",
            "--pose.refine-steps",
            "5",
        ]
    )
    assert rc == 0
    poses = json.loads((est_out / "poses.json").read_text())
    R = np.array(poses[str(img)]["R"])
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-5)
    assert 0 <= poses[str(img)]["azimuth"] < 360 and "decode" in poses[str(broken)]["error"]
    assert (est_out / "00000_pose.png").is_file()


def test_estimate_reads_an_s3_checkpoint_and_gives_the_local_runs_poses(run_dir, tmp_path, s3_bucket):
    """``catpose estimate --checkpoint s3://...`` (a run in a moto bucket): the same poses as from the same
    run on disk."""
    import s3fs

    endpoint, bucket = s3_bucket
    s3fs.S3FileSystem(endpoint_url=endpoint).put(
        str(run_dir) + "/", f"{bucket}/runs/train-car/", recursive=True
    )
    wild = tmp_path / "wild"
    generate_wild(WildConfig(out=wild, images=2, width=96, height=80), progress=False)
    imgs = [str(p) for p in sorted((wild / "Images" / "car_synth").glob("*.jpg"))]
    poses = {}
    for where, ckpt in (("local", str(run_dir)), ("s3", f"s3://{bucket}/runs/train-car")):
        out = tmp_path / where
        assert (
            main(
                [
                    "estimate",
                    "--checkpoint",
                    ckpt,
                    "--endpoint-url",
                    endpoint,
                    "--image",
                    *imgs,
                    "--out",
                    str(out),
                    "--pose.grid",
                    "512",
                    "--pose.refine-steps",
                    "5",
                ]
            )
            == 0
        )
        poses[where] = json.loads((out / "poses.json").read_text())
    assert sorted(poses["s3"]) == sorted(imgs)
    for img in imgs:
        np.testing.assert_allclose(poses["s3"][img]["R"], poses["local"][img]["R"], atol=1e-5)
        assert "error" not in poses["s3"][img]


def test_evaluate_on_an_objectnet3d_folder_scores_its_annotations(run_dir, tmp_path):
    """``catpose evaluate --dataset objectnet3d`` end to end, on a folder in ObjectNet3D's layout
    (``Annotations/<id>.mat``, ``Images/<id>.JPEG``, ``Image_sets/val.txt``) made from the synthetic
    in-the-wild set: every listed object scored, each error the geodesic to that record's rotation."""
    import shutil

    from catpose.geometry.so3 import geodesic_deg
    from catpose.pose.datasets import load_objectnet3d

    wild = tmp_path / "wild"
    generate_wild(WildConfig(out=wild, images=3, width=96, height=80), progress=False)
    root = tmp_path / "ObjectNet3D"
    shutil.copytree(wild / "Annotations" / "car_synth", root / "Annotations")
    shutil.copytree(wild / "Images" / "car_synth", root / "Images")
    names = sorted(p.stem for p in (root / "Annotations").glob("*.mat"))
    (root / "Image_sets").mkdir()
    (root / "Image_sets" / "val.txt").write_text("".join(f"{n}\n" for n in names))
    truth, problems = load_objectnet3d(root, "car")
    assert len(truth) == 3 and not problems
    out = tmp_path / "eval"
    assert main(["evaluate", "--checkpoint", str(run_dir), "--dataset", "objectnet3d", "--root", str(root),
                 "--category", "car", "--out", str(out), "--frame", "fit", "--calibration", "0.3",
                 "--pose.grid", "256", "--pose.refine-steps", "2", "--overlays", "0", "--no-baseline"]) == 0
    res = json.loads((out / "evaluation.json").read_text())
    assert res["dataset"] == "objectnet3d" and res["objects"] == 3 and res["scored"] == 2
    G = np.array(res["frame_rotation"])
    by_name = {s.name: s.R for s in truth}
    lines = [json.loads(ln) for ln in (out / "results.jsonl").read_text().splitlines()]
    for r in lines:
        np.testing.assert_allclose(r["R_gt"], by_name[r["name"]], atol=1e-9)
        if r.get("error_deg") is not None:
            assert r["error_deg"] == pytest.approx(
                float(geodesic_deg(G @ np.array(r["R_template"]), np.array(r["R_gt"]))), abs=1e-6)
