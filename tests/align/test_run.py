"""``catpose align`` end to end on synthetic cars: Ray chunks, outputs, resume, accuracy; the engine
aligns the features it is given, and ``catpose align`` fills in the missing ones first."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from catpose.align.evaluate import evaluate_alignment
from catpose.align.run import run_align
from catpose.cli import fill_in_features
from catpose.config import AlignConfig, SearchConfig, SynthConfig
from catpose.data.synth.generate import generate


def align(cfg: AlignConfig) -> dict:
    """As ``catpose align`` does: the missing features first, then the alignment of them all."""
    fill_in_features(cfg, progress=False)
    return run_align(cfg, progress=False)


@pytest.fixture(scope="module")
def cars(tmp_path_factory):
    root = tmp_path_factory.mktemp("align_cars")
    generate(SynthConfig(workers=0, out=root, category=("car",), videos=6, frames=8, size=128, seed=11))
    return root


def test_align_outputs_accuracy_and_resume(cars, tmp_path, ray_local):
    out = tmp_path / "align"
    cfg = AlignConfig(
        data=cars, category="car", out=out, search=SearchConfig(rotations=1024), chunk=4, workers=2
    )
    res = align(cfg)
    assert res["videos"] == 6 and res["pairs"] == 15 and not res["failed_chunks"]
    t = pq.read_table(out / "alignment.parquet")
    assert t.column_names == [
        "sequence_name",
        "rotation",
        "translation",
        "scale",
        "cost",
        "is_reference",
        "edges",
        "edges_agreeing",
    ]
    assert t.column("edges").to_pylist() == [5] * 6  # all pairs of 6 videos
    assert all(0 <= g <= 5 for g in t.column("edges_agreeing").to_pylist())
    rows = t.to_pylist()
    assert sum(r["is_reference"] for r in rows) == 1 and all(len(r["rotation"]) == 9 for r in rows)
    p = pq.read_table(out / "pairs.parquet")
    assert p.num_rows == 15 and {"seq_i", "seq_j", "rotation", "translation", "scale", "cost"} <= set(
        p.column_names
    )
    assert (out / "aligned_clouds.png").is_file()
    r = evaluate_alignment(out / "alignment.parquet", cars, "car", plot=out / "errors.png")
    print(f"\nalign 6 cars: Acc@pi/6 {r['acc_pi_6']:.2f}, Acc@pi/18 {r['acc_pi_18']:.2f}, median "
          f"{r['median_deg']:.1f}")
    assert r["acc_pi_6"] >= 5 / 6 and r["median_deg"] < 10
    # an interrupted run: one chunk's result is lost; the rerun redoes only that chunk
    chunks = sorted((out / "pairs").glob("*/chunk-*.json"))
    assert len(chunks) == 4
    mtimes = {c: c.stat().st_mtime_ns for c in chunks}
    chunks[2].unlink()
    res2 = align(cfg)
    assert res2["pairs"] == 15
    for c in chunks:
        if c != chunks[2]:
            assert c.stat().st_mtime_ns == mtimes[c]
    assert chunks[2].is_file()
    again = {r["sequence_name"]: r["rotation"] for r in pq.read_table(out / "alignment.parquet").to_pylist()}
    np.testing.assert_allclose(
        [again[r["sequence_name"]] for r in rows], [r["rotation"] for r in rows], atol=1e-6
    )
    assert json.loads(chunks[0].read_text())["pairs"][0][0].startswith("car_")


def test_too_few_usable_videos_is_a_clear_error(synth_root, tmp_path):
    import shutil

    from catpose.data.co3d import Co3dCategory
    from catpose.data.pointcloud import PointCloud, write_ply

    data = tmp_path / "d"
    shutil.copytree(synth_root, data)
    for name in Co3dCategory(data, "car").sequence_names[1:]:
        write_ply(data / "car" / name / "pointcloud.ply", PointCloud(np.zeros((0, 3), np.float32)))
    with pytest.raises(ValueError, match="'car' has 1 usable videos; alignment needs 2"):
        align(AlignConfig(data=data, category="car", out=tmp_path / "a", workers=0))


def test_align_cli_with_one_usable_video_exits_2_with_one_line(synth_root, tmp_path, capsys):
    """``catpose align`` on a category with one usable video: one clear line and exit code 2."""
    import shutil

    from catpose import cli
    from catpose.data.co3d import Co3dCategory
    from catpose.data.pointcloud import PointCloud, write_ply

    data = tmp_path / "d"
    shutil.copytree(synth_root, data)
    for name in Co3dCategory(data, "mug").sequence_names[1:]:
        write_ply(data / "mug" / name / "pointcloud.ply", PointCloud(np.zeros((0, 3), np.float32)))
    rc = cli.main(
        ["align", "--data", str(data), "--category", "mug", "--out", str(tmp_path / "a"), "--workers", "0"]
    )
    err = capsys.readouterr().err
    assert rc == 2
    assert "catpose: error: category 'mug' has 1 usable videos; alignment needs 2 or more" in err
    assert "Traceback" not in err


def test_a_truncated_feature_file_is_recomputed_and_an_unreadable_one_costs_its_video_only(
    cars, tmp_path, ray_local, capsys
):
    """A feature file truncated after the features stage is not trusted on resume: it is recomputed
    (and the run says so), all six videos are aligned. A file that cannot be read when the alignment
    reads it (the summaries pass) costs that video only, with the file named."""
    import shutil

    from catpose.align.run import video_summaries

    first = tmp_path / "first"
    cfg = AlignConfig(data=cars, category="car", out=first, search=SearchConfig(rotations=1024), workers=2)
    align(cfg)
    feats = tmp_path / "features"
    shutil.copytree(first / "features", feats)
    victim = sorted((feats / "car").glob("*.npz"))[2]
    victim.write_bytes(victim.read_bytes()[:1000])
    capsys.readouterr()
    out = tmp_path / "again"
    res = align(
        AlignConfig(
            data=cars,
            category="car",
            out=out,
            features=str(feats),
            search=SearchConfig(rotations=1024),
            workers=2,
        )
    )
    printed = capsys.readouterr().out
    assert (
        f"'{victim.stem}' was done but its output is invalid ({victim}" in printed
        and "recomputing" in printed
    )
    assert res["unreadable"] == {} and res["videos"] == 6 and res["pairs"] == 15 and not res["failed_pairs"]
    r = evaluate_alignment(out / "alignment.parquet", cars, "car")
    assert r["videos"] == 6 and r["acc_pi_6"] >= 0.8
    victim.write_bytes(victim.read_bytes()[:1000])  # unreadable when the alignment itself reads it
    names = sorted(p.stem for p in (feats / "car").glob("*.npz"))
    summ = video_summaries(names, str(feats), "car", None, workers=2, progress=False, batch=2)
    assert [n for n, s in summ.items() if s["error"]] == [victim.stem] and str(victim) in summ[victim.stem][
        "error"
    ]
    assert all(len(s["centroid"]) == 3 for n, s in summ.items() if n != victim.stem)


def test_the_engine_aligns_the_features_given_and_catpose_align_fills_in_the_missing(cars, tmp_path):
    """A store made with other settings than the defaults, one video missing: the alignment engine aligns
    the five it is given and computes nothing; ``catpose align`` computes the missing one first, with the
    store's settings (not the defaults); a store mixing settings is a clear error."""
    import json

    from catpose.config import FeaturesConfig
    from catpose.errors import DataFormatError
    from catpose.features.runner import load_surface_features, run_features

    feats = tmp_path / "features"
    run_features(
        FeaturesConfig(data=cars, category=("car",), out=str(feats), vertices=300, frames=5, workers=0),
        progress=False,
    )
    man_path = feats / "car" / "_manifest.json"
    man = json.loads(man_path.read_text())
    gone = sorted(man["items"])[1]
    del man["items"][gone]
    (feats / "car" / f"{gone}.npz").unlink()
    (feats / "car" / "_manifest.items" / f"{gone}.json").unlink()
    man_path.write_text(json.dumps(man))
    cfg = AlignConfig(data=cars, category="car", out=tmp_path / "a", features=str(feats),
                      search=SearchConfig(rotations=512), workers=0)
    given = run_align(cfg, progress=False)
    assert (
        given["videos"] == 5 and not (feats / "car" / f"{gone}.npz").exists()
    )  # nothing computed on the way
    res = align(cfg)
    assert res["videos"] == 6
    redone = load_surface_features(str(feats), "car", gone)
    assert redone.vertices.shape == (300, 3) and redone.features.shape[0] == 5

    man = json.loads(man_path.read_text())
    other = sorted(man["items"])[3]
    record = feats / "car" / "_manifest.items" / f"{other}.json"  # each item's record file is its truth
    item = json.loads(record.read_text())
    item["signature"] = {**item["signature"], "backbone": "random_cnn"}
    record.write_text(json.dumps(item))
    with pytest.raises(DataFormatError, match="_manifest.json: field 'signature'.*random_cnn"):
        align(AlignConfig(data=cars, category="car", out=tmp_path / "b", features=str(feats),
                          search=SearchConfig(rotations=512), workers=0))


@pytest.mark.slow  # five alignments (out of make test-fast)
def test_a_rerun_with_another_alpha_or_rotation_count_into_the_same_out_reuses_no_chunk(synth_root, tmp_path,
                                                                                        capsys):
    """Chunks of pairwise results made with other search settings are not results of this run: a rerun into
    the same --out with another α, or another rotation count, recomputes every pair, and its table is the
    one a fresh run with those settings writes."""

    def align_into(out, features="", **search):
        res = align(AlignConfig(data=synth_root, category="car", out=out, workers=0, features=features,
                                search=SearchConfig(**{"rotations": 256, **search})))
        said = capsys.readouterr().out
        costs = {
            (r["seq_i"], r["seq_j"]): r["cost"] for r in pq.read_table(out / "pairs.parquet").to_pylist()
        }
        return res, said, costs

    out = tmp_path / "align"
    _, said, first = align_into(out)
    assert "3 pairs in" in said and "(0 done before), alpha 0.2" in said
    _, said, kept = align_into(out)  # the same settings: every chunk kept
    assert "done before), alpha 0.2" in said and "(0 done before)" not in said and kept == first
    _, said, changed = align_into(out, alpha=0.7)
    assert "(0 done before), alpha 0.7" in said
    _, _, fresh = align_into(tmp_path / "fresh", alpha=0.7, features=str(out / "features"))
    assert changed == pytest.approx(fresh) and changed != pytest.approx(first)  # D = (1 - α) D_geo + α D_app
    _, said, _ = align_into(out, alpha=0.7, rotations=128)
    assert "(0 done before), alpha 0.7" in said


def test_the_engine_on_an_empty_feature_store_says_where_it_looked(synth_root, tmp_path):
    """The engine computes no features: without any it stops before any work, naming the store."""
    with pytest.raises(ValueError, match=r"category 'car' has no features in .*features \(its "
                                         r"car/_manifest.json"):
        run_align(AlignConfig(data=synth_root, category="car", out=tmp_path / "a", workers=0), progress=False)
    assert not (tmp_path / "a" / "features").exists() and not (tmp_path / "a" / "pairs").exists()
