"""report.html in a real browser: a small real run of the main job writes it, headless Chromium (Debian's
``chromium`` + ``chromium-driver``, driven by Selenium) opens it offline, the 3-D view of the aligned
clouds draws non-blank pixels, hiding a video through the legend changes the view, the browser logs no
error, and a screenshot is saved (its path is printed)."""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

CHROMIUM, DRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT_COPY = Path("/tmp/report-screenshot.png")


def _need_chromium() -> None:
    if Path(CHROMIUM).exists() and Path(DRIVER).exists():
        return
    msg = (
        f"headless Chromium not installed ({CHROMIUM}, {DRIVER}): apt-get install -y chromium chromium-driver"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(msg + " (.ci/run installs them; under CI=true this is a failure)")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def small_run(synth_root, tmp_path_factory):
    """The main job on the small synthetic car videos (validate, shard, features, align), in this process."""
    from catpose.config import AlignConfig, FeaturesConfig, SearchConfig
    from catpose.run.config import PipelineConfig
    from catpose.run.runner import run

    base = tmp_path_factory.mktemp("htmlrun")
    shutil.copytree(synth_root, base / "data")
    cfg = PipelineConfig(
        out=str(base / "run"),
        data=str(base / "data"),
        workers=0,
        train_categories=(),
        eval_pairs=2,
        features=FeaturesConfig(out="", category=("car",), vertices=200, frames=3),
        align=AlignConfig(search=SearchConfig(rotations=256, vertices=150), partners=0),
    )
    run(cfg)
    return base / "run"


def _browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--enable-unsafe-swiftshader", "--use-angle=swiftshader", "--window-size=1300,1000",
                 f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-profile-')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(DRIVER), options=opts)


def _pixels(png: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.int16)


def test_report_html_is_offline_and_complete(small_run):
    from html.parser import HTMLParser

    page = (small_run / "report.html").read_text()
    outside: list = []

    class Refs(HTMLParser):  # script contents are CDATA to the parser: only the page's own tags count
        def handle_starttag(self, tag, attrs):
            a = dict(attrs)
            if a.get("src", "").startswith(("http", "//")) or (tag == "link" and a.get("href")):
                outside.append((tag, a))

    Refs().feed(page)
    assert outside == []  # the bundle and the pictures are inside the file: it opens offline
    assert "Plotly.newPlot" in page and "car_0000" in page
    assert "The training stage did not run" in page and "The pose stage did not run" in page
    assert "colour by alignment error" in page  # synthetic data: its ground truth colours the clouds too


def test_report_html_renders_in_headless_chromium(small_run, tmp_path):
    _need_chromium()
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    drv = _browser()
    try:
        drv.get((small_run / "report.html").as_uri())
        WebDriverWait(drv, 60).until(lambda d: d.execute_script(
            "const g = document.getElementById('fig0'); return g && g._fullLayout && "
            "g.querySelectorAll('canvas').length > 0"))
        graph = drv.find_element(By.ID, "fig0")
        assert (
            drv.execute_script("return document.getElementById('fig0').data.length") == 3
        )  # one trace a video
        drv.execute_script("arguments[0].scrollIntoView()", graph)
        before = _pixels(graph.screenshot_as_png)
        scene = before[80:, : int(before.shape[1] * 0.8)]  # the 3-D scene, without the title and legend
        non_white = (np.abs(scene - 255).sum(-1) > 60).mean()
        assert non_white > 0.002, f"the 3-D view is blank ({non_white:.4%} non-white pixels)"
        # hide the first video through its legend entry: the trace goes and the view changes
        drv.find_elements(By.CSS_SELECTOR, "#fig0 .legend .traces")[0].click()
        WebDriverWait(drv, 20).until(lambda d: d.execute_script(
            "return document.getElementById('fig0').data[0].visible === 'legendonly'"))
        drv.execute_script("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
        after = _pixels(graph.screenshot_as_png)
        changed = (np.abs(after - before).sum(-1) > 30).mean()
        assert changed > 0.001, f"hiding a video did not change the view ({changed:.4%} of the pixels)"
        shot = tmp_path / "report-screenshot.png"
        drv.execute_script("return Plotly.restyle('fig0', {visible: true}, [0])")  # back, for the screenshot
        drv.save_screenshot(str(shot))
        shutil.copy(shot, SCREENSHOT_COPY)
        print(f"report.html screenshot: {shot} (copy: {SCREENSHOT_COPY})")
        errors = [e for e in drv.get_log("browser") if e.get("level") == "SEVERE"]
        assert errors == [], errors
    finally:
        drv.quit()


def test_template_panel_colours_vertices_by_a_pca_of_their_features(tmp_path):
    """A stored training run's template: its vertices coloured by the first three principal components
    of their learned features (two feature clusters give two clearly different colours)."""
    from catpose.learn.template import Template
    from catpose.report.html import _pca_rgb, render_report_html
    from catpose.storage import Store

    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal([1, 0, 0, 0], 0.05, (50, 4)), rng.normal([0, 1, 0, 0], 0.05, (50, 4))])
    rgb = _pca_rgb(feats)
    assert rgb.shape == (100, 3) and np.abs(rgb[:50].mean(0) - rgb[50:].mean(0)).max() > 150
    store = Store(tmp_path / "run")
    tpl = Template(
        rng.normal(size=(100, 3)).astype(np.float32), np.ones(100, np.float32), feats.astype(np.float32)
    )
    store.write_bytes("train/train-car/template.npz", tpl.to_bytes())
    store.write_json("train/train-car/history.json", [{"epoch": 0, "loss": 3.0, "train_vertex_acc": 0.1},
                                                      {"epoch": 1, "loss": 2.5, "train_vertex_acc": 0.2}])
    store.write_json("stages/train.json", {"hash": "x", "artifact": {
        "runs": {"car": store.url("train", "train-car")}, "rows": [{"category": "car", "evaluation": None}]}})
    page = render_report_html(store, summary=["- **Ran**: train"])
    assert "car: template, 100 vertices coloured by a PCA of their learned features" in page
    assert "car: training" in page and "The alignment stage did not run" in page
