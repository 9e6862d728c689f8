"""The documentation site builds with ``mkdocs build --strict`` (a broken link or a missing page fails),
its generated pages hold what their sources hold, and the README stays short."""

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    r = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-4000:]
    for page in ("index.html", "metrics/index.html", "stages/train/index.html", "reference/config/index.html",
                 "benchmarks/index.html", "trust/index.html", "paper/index.html", "reference/api/index.html"):
        assert (site / page).stat().st_size > 2000, page
    # the configuration reference is generated from the dataclasses: a field, its default and docstring
    ref = (site / "reference/config/index.html").read_text()
    assert "TrainConfig" in ref and "sift_peak_threshold" in ref and "0.002" in ref
    assert "contrast threshold" in ref  # IngestConfig.sift_peak_threshold's docstring
    # the benchmark tables are read from bench/results: every engine rate there is on the page
    bench = (site / "benchmarks/index.html").read_text()
    for f in sorted((ROOT / "bench" / "results").glob("align-*.json")):
        d = json.loads(f.read_text())
        if "pairs_per_s_batched" in d:
            assert f"{d['pairs_per_s_batched']:,.4g}" in bench, f.name
    assert "Acc@π/6" in (site / "metrics/index.html").read_text()


def test_readme_is_short_and_states_the_two_commands():
    text = (ROOT / "README.md").read_text()
    assert len(text.encode()) <= 12 * 1024
    assert re.search(r"^make demo ", text, re.M) and re.search(r"^make test ", text, re.M)
    assert (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1] == "make test"
    for link in re.findall(r"\]\((docs/[^)#]+)", text):  # every page the README links exists
        assert (ROOT / link).exists(), link
