"""``catpose features`` on realistic clouds (ground, background, outliers, partial orbits, imperfect
masks): vertices on the object, the share removed per video in the manifest, and a video whose
cleaning leaves too little skipped with its reason while the others go on."""

import shutil

import numpy as np
from PIL import Image

from catpose.config import CleaningConfig, FeaturesConfig
from catpose.data.co3d import Co3dCategory
from catpose.data.groundtruth import load_point_labels
from catpose.features.evaluate import off_object_share
from catpose.features.runner import load_surface_features, run_features, store_settings


def test_features_on_realistic_clouds_stay_on_the_object(realistic_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(realistic_root, data)
    cat = Co3dCategory(data, "car")
    bad = cat.sequence_names[1]
    for f in cat[bad].frames:  # segmentation found nothing in this video
        Image.fromarray(np.zeros(f.image_size, np.uint8)).save(f.mask_path)
    out = tmp_path / "features"
    cfg = FeaturesConfig(data=data, category=("car", "mug"), out=str(out), vertices=300, frames=4, workers=0)
    mans = run_features(cfg, progress=False)
    assert mans["car"].summary() == {"ok": 2, "skipped": 1} and mans["mug"].summary() == {"ok": 3}
    assert "cleaning (masks) left 0 of" in mans["car"].skipped[bad] and bad in mans["car"].skipped[bad]
    for c in ("car", "mug"):
        for name in mans[c].keys_with("ok"):
            item = mans[c].items[name]
            assert item["cleaning"]["mode"] == "masks" and 0.3 < item["cleaning"]["removed_share"] < 0.95
            sf = load_surface_features(str(out), c, name)
            pts = Co3dCategory(data, c)[name].load_point_cloud().points
            assert off_object_share(sf.vertices, pts, load_point_labels(data, c, name)) < 0.05
        assert 0.3 < mans[c].info["cleaning_removed_share"]["mean"] < 0.95
    # the cleaning settings belong to the features' signature: a later stage fills in with them
    again, sig = store_settings(
        FeaturesConfig(data=data, out=str(out), cleaning=CleaningConfig(vote=0.9)), "mug"
    )
    assert sig["clean_mode"] == "auto" and again.cleaning.vote == 0.5
    # without masks: geometry (supporting plane, common view) keeps the vertices on the object too
    geo = FeaturesConfig(data=data, category=("mug",), out=str(tmp_path / "geo"), vertices=300, frames=4,
                         workers=0, cleaning=CleaningConfig(mode="geometry"))
    man = run_features(geo, progress=False)["mug"]
    for name in man.keys_with("ok"):
        assert man.items[name]["cleaning"]["mode"] == "geometry" and "plane" in man.items[name]["cleaning"]
        sf = load_surface_features(str(tmp_path / "geo"), "mug", name)
        pts = Co3dCategory(data, "mug")[name].load_point_cloud().points
        assert off_object_share(sf.vertices, pts, load_point_labels(data, "mug", name)) < 0.05
