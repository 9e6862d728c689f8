"""``report.html``: one self-contained, offline page per run, next to ``report.md`` in the run's store.

It reads only the run's stored outputs — the stage artifacts ``stages/<name>.json``, each category's
``alignment.parquet`` with the surface features' vertices, the trained run's ``template.npz``,
``history.json`` and evaluation, the pose stage's ``results.jsonl`` and ``overlays/`` — so it can be
written again from any stored run (local or ``s3://``) with :func:`write_report_html`. Plotly's offline
bundle is inlined (no CDN: the file opens without a network) and pictures are inlined as data URIs.
A stage that did not run leaves its panel out, with a line saying so.
"""

from __future__ import annotations

import base64
import html
import json

import numpy as np

from catpose.storage import Store

MAX_POINTS_PER_VIDEO = 1500  # the 3-D view stays light: vertices of a video, subsampled evenly
MAX_OVERLAYS = 24


def _stage(store: Store, name: str) -> dict | None:
    d = store.read_json(f"stages/{name}.json", default=None)
    return d.get("artifact") if isinstance(d, dict) and isinstance(d.get("artifact"), dict) else None


def _pca_rgb(features: np.ndarray) -> np.ndarray:
    """Colours [N, 3] in 0..255 of features [N, D]: their first three principal components, each scaled
    to its 2nd-98th percentile (similar features, similar colours)."""
    X = np.asarray(features, np.float64)
    X = X - X.mean(0)
    _, _, vt = np.linalg.svd(X, full_matrices=False)
    P = X @ vt[:3].T
    if P.shape[1] < 3:
        P = np.pad(P, ((0, 0), (0, 3 - P.shape[1])))
    lo, hi = np.percentile(P, 2, axis=0), np.percentile(P, 98, axis=0)
    return (255 * np.clip((P - lo) / np.maximum(hi - lo, 1e-9), 0, 1)).astype(int)


def _rgb(c) -> str:
    return f"rgb({int(c[0])},{int(c[1])},{int(c[2])})"


def _error_rgb(err: float | None) -> str:
    """Green (0°) to red (≥ 30°, wrong at Acc@π/6); grey without ground truth."""
    if err is None or not np.isfinite(err):
        return "rgb(150,150,150)"
    t = float(np.clip(err / 30.0, 0, 1))
    return _rgb((255 * t, 180 * (1 - t) + 40, 60))


PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"]


def _aligned_clouds(store: Store, endpoint: str | None, data: dict | None = None) -> list[dict]:
    """Per category: a Plotly figure (dict) with one 3-D scatter trace per video in the reference frame,
    and buttons to colour by video or by the video's alignment error (where ground truth exists)."""
    from catpose.align.table import read_alignment
    from catpose.features.runner import load_surface_features

    align, feats = _stage(store, "align"), _stage(store, "features")
    data = data or _stage(store, "synth") or _stage(store, "ingest")
    if not align or not feats:
        return []
    rows = {r.get("category"): r for r in align.get("rows", [])}
    out = []
    for cat, uri in align.get("tables", {}).items():
        a_store = Store(uri, endpoint)
        try:
            transforms, ref = read_alignment(a_store.url("alignment.parquet"), endpoint)
        except Exception as e:  # noqa: BLE001 - a panel that cannot be drawn says why; the page still renders
            out.append({"category": cat, "error": f"{type(e).__name__}: {e}"})
            continue
        errors: dict = {}
        if data and data.get("ground_truth"):
            try:
                from catpose.align.evaluate import evaluate_alignment

                errors = evaluate_alignment(a_store.url("alignment.parquet"), data["uri"], cat,
                                            endpoint_url=endpoint)["errors"]
            except Exception:  # noqa: BLE001 - colouring by error needs ground truth; by video still works
                errors = {}
        traces, by_video, by_error = [], [], []
        for n, (name, T) in enumerate(sorted(transforms.items())):
            try:
                V = load_surface_features(feats["uri"], cat, name, endpoint).vertices.astype(np.float64)
            except Exception:  # noqa: BLE001 - a video whose features are gone is left out of the view
                continue
            step = max(1, len(V) // MAX_POINTS_PER_VIDEO)
            X = T.apply(V)[::step]
            err = errors.get(name)
            label = (
                name + (" (reference)" if name == ref else "") + (f" · {err:.1f}°" if err is not None else "")
            )
            col = PALETTE[n % len(PALETTE)]
            by_video.append(col)
            by_error.append(_error_rgb(err))
            traces.append({"type": "scatter3d", "mode": "markers", "name": label,
                           "x": np.round(X[:, 0], 4).tolist(), "y": np.round(X[:, 1], 4).tolist(),
                           "z": np.round(X[:, 2], 4).tolist(), "marker": {"size": 2, "color": col}})
        menus = [{"type": "buttons", "direction": "right", "x": 0, "y": 1.08, "xanchor": "left",
                  "buttons": [{"label": "colour by video", "method": "restyle",
                               "args": [{"marker.color": by_video}]}]
                  + ([{"label": "colour by alignment error (green 0°, red ≥ 30°)", "method": "restyle",
                       "args": [{"marker.color": by_error}]}] if errors else [])}]
        layout = {"title": {"text": f"{cat}: {len(traces)} videos in the reference frame (click a video in "
                                    "the legend to hide or show it)"},
                  "scene": {"aspectmode": "data", "xaxis": {"title": {"text": "x"}},
                            "yaxis": {"title": {"text": "y"}}, "zaxis": {"title": {"text": "z"}}},
                  "height": 620, "margin": {"l": 0, "r": 0, "t": 70, "b": 0}, "updatemenus": menus,
                  "legend": {"itemsizing": "constant"}}
        out.append({"category": cat, "figure": {"data": traces, "layout": layout}, "row": rows.get(cat, {}),
                    "ground_truth": bool(errors)})
    return out


def _training(store: Store, endpoint: str | None) -> list[dict]:
    """Per trained category: the template coloured by a PCA of its learned features, the training
    curves (history.json) and the held-out matching by viewpoint (the stage's evaluation)."""
    from catpose.learn.template import Template

    train = _stage(store, "train")
    if not train:
        return []
    rows = {r.get("category"): r for r in train.get("rows", [])}
    out = []
    for cat, run in train.get("runs", {}).items():
        r_store = Store(run, endpoint)
        item: dict = {"category": cat, "run": run}
        try:
            tpl = Template.from_bytes(r_store.read_bytes("template.npz"), r_store.url("template.npz"))
            V = tpl.vertices.astype(np.float64)
            colors = [_rgb(c) for c in _pca_rgb(tpl.features)] if tpl.features is not None else "#1f77b4"
            item["template"] = {
                "data": [
                    {
                        "type": "scatter3d",
                        "mode": "markers",
                        "name": "template vertices",
                        "x": np.round(V[:, 0], 4).tolist(),
                        "y": np.round(V[:, 1], 4).tolist(),
                        "z": np.round(V[:, 2], 4).tolist(),
                        "marker": {"size": 3, "color": colors},
                    }
                ],
                "layout": {
                    "title": {
                        "text": f"{cat}: template, {len(V)} vertices coloured by "
                        "a PCA of their learned features"
                    },
                    "scene": {"aspectmode": "data"},
                    "height": 520,
                    "margin": {"l": 0, "r": 0, "t": 50, "b": 0},
                },
            }
        except Exception as e:  # noqa: BLE001
            item["template_error"] = f"{type(e).__name__}: {e}"
        hist = r_store.read_json("history.json", default=None) if r_store.exists("history.json") else None
        if isinstance(hist, list) and hist:
            ep = [h.get("epoch", i) + 1 for i, h in enumerate(hist)]
            item["curves"] = {
                "data": [
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": "loss",
                        "x": ep,
                        "y": [h.get("loss") for h in hist],
                    },
                    {
                        "type": "scatter",
                        "mode": "lines",
                        "name": "train vertex accuracy",
                        "yaxis": "y2",
                        "x": ep,
                        "y": [h.get("train_vertex_acc") for h in hist],
                    },
                ],
                "layout": {
                    "title": {"text": f"{cat}: training"},
                    "xaxis": {"title": {"text": "epoch"}},
                    "yaxis": {"title": {"text": "loss"}},
                    "yaxis2": {"title": {"text": "vertex accuracy"}, "overlaying": "y", "side": "right"},
                    "height": 380,
                },
            }
        ev = (rows.get(cat) or {}).get("evaluation") or {}
        bars = [{"type": "bar", "name": k, "y": m["by_azimuth"],
                 "x": [f"{int(360 * i / len(m['by_azimuth']))}°" for i in range(len(m["by_azimuth"]))]}
                for k, m in ev.get("methods", {}).items() if m.get("by_azimuth")]
        if bars:
            item["viewpoint"] = {
                "data": bars,
                "layout": {
                    "title": {
                        "text": f"{cat}: held-out matching by camera azimuth "
                        "(ground truth: the held-out videos' cameras and alignment)"
                    },
                    "xaxis": {"title": {"text": "azimuth bin start (0° = front)"}},
                    "yaxis": {"title": {"text": f"matched within {ev.get('threshold_px', '?')} px"}},
                    "barmode": "group",
                    "height": 380,
                },
            }
        out.append(item)
    return out


def _poses(store: Store, endpoint: str | None) -> list[dict]:
    """Per category of the pose stage: its table rows and a gallery of overlays with their errors."""
    pose = _stage(store, "pose")
    if not pose:
        return []
    rows = {r.get("category"): r for r in pose.get("rows", [])}
    out = []
    for cat, uri in pose.get("results", {}).items():
        p_store = Store(uri, endpoint)
        recs = []
        if p_store.exists("results.jsonl"):
            for ln in p_store.read_text("results.jsonl").splitlines():
                try:
                    recs.append(json.loads(ln))
                except ValueError:
                    recs.append({})
        gallery = []
        for i, rec in enumerate(recs[:MAX_OVERLAYS]):
            key = f"overlays/{i:04d}.png"
            if not p_store.exists(key):
                continue
            gallery.append(
                {
                    "src": "data:image/png;base64," + base64.b64encode(p_store.read_bytes(key)).decode(),
                    "error": rec.get("error_deg"),
                    "baseline": rec.get("baseline_error_deg"),
                }
            )
        out.append({"category": cat, "row": rows.get(cat, {}), "gallery": gallery})
    return out


def _methods_table(row: dict) -> str:
    m = row.get("methods") or {}
    if not m:
        return ""
    body = "".join(
        f"<tr><td>{html.escape(k)}</td><td>{v.get('acc_pi_6', float('nan')):.1%}</td>"
        f"<td>{v.get('acc_pi_18', float('nan')):.1%}</td>"
        f"<td>{v.get('median_deg', float('nan')):.1f}</td></tr>"
        for k, v in m.items()
    )
    return ("<table><tr><th>method</th><th>Acc@π/6</th><th>Acc@π/18</th><th>median error (°)</th></tr>"
            f"{body}</table>")


CSS = """body{font-family:system-ui,sans-serif;margin:1.5em auto;max-width:1200px;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:3px 8px;font-size:.9em}
.gallery{display:flex;flex-wrap:wrap;gap:8px}.gallery figure{margin:0;width:180px;font-size:.8em}
.gallery img{width:180px}.note{color:#666;font-size:.9em}pre{background:#f6f6f6;padding:.6em;overflow:auto}"""


def render_report_html(store: Store, summary: list[str] | None = None, endpoint_url: str | None = None,
                       data: dict | None = None) -> str:
    """The page (a string) of the run in ``store``; ``summary``: the report's summary lines (default:
    the summary section of the stored ``report.md``); ``data``: the run's dataset (``uri``,
    ``ground_truth``), default: the synth or ingest stage's artifact (a given dataset is not stored)."""
    from plotly.offline import get_plotlyjs

    endpoint = endpoint_url or store.endpoint_url
    if summary is None:
        text = store.read_text("report.md") if store.exists("report.md") else ""
        summary = (
            text.split("## Summary", 1)[1].split("\n## ", 1)[0].strip().splitlines()
            if "## Summary" in text
            else []
        )
    figs: list[tuple[str, dict]] = []
    parts = [
        "<h1>catpose run report</h1>",
        f"<p class='note'>store: <code>{html.escape(store.uri)}</code></p>",
        "<h2>Summary</h2>",
        "<pre>" + html.escape("\n".join(ln for ln in summary if ln.strip())) + "</pre>",
    ]

    def fig(title: str, f: dict) -> str:
        figs.append((f"fig{len(figs)}", f))
        return f"<div id='fig{len(figs) - 1}' class='plot' title='{html.escape(title)}'></div>"

    parts.append("<h2>Aligned point clouds</h2>")
    clouds = _aligned_clouds(store, endpoint, data)
    if not clouds:
        parts.append("<p class='note'>The alignment stage did not run: no aligned clouds.</p>")
    for c in clouds:
        if "error" in c:
            parts.append(f"<p class='note'>{html.escape(c['category'])}: not drawn "
                         f"({html.escape(c['error'])})</p>")
            continue
        parts.append(fig(f"aligned {c['category']}", c["figure"]))
        if not c["ground_truth"]:
            parts.append("<p class='note'>No ground truth: coloured by video only.</p>")
    parts.append("<h2>Learned template and training</h2>")
    trained = _training(store, endpoint)
    if not trained:
        parts.append("<p class='note'>The training stage did not run: no template, curves or viewpoints.</p>")
    for t in trained:
        parts.append(f"<p>run <code>{html.escape(t['run'])}</code></p>")
        for k in ("template", "curves", "viewpoint"):
            if k in t:
                parts.append(fig(f"{k} {t['category']}", t[k]))
        if "template_error" in t:
            parts.append(f"<p class='note'>template not drawn: {html.escape(t['template_error'])}</p>")
    parts.append("<h2>Pose estimation</h2>")
    poses = _poses(store, endpoint)
    if not poses:
        parts.append("<p class='note'>The pose stage did not run: no pose results.</p>")
    for p in poses:
        parts.append(f"<h3>{html.escape(p['category'])}</h3>" + _methods_table(p["row"])
                     + "<p class='note'>Ground truth: the synthetic in-the-wild images' viewpoints, in the "
                       "template's "
                       "frame; a failed image counts as wrong.</p>")
        cells = "".join(f"<figure><img src='{g['src']}' alt='pose overlay'><figcaption>error "
                        + (f"{g['error']:.1f}°" if isinstance(g["error"], (int, float)) else "n/a")
                        + (" · nearest view "
                           f"{g['baseline']:.1f}°" if isinstance(g["baseline"], (int, float)) else "")
                        + "</figcaption></figure>" for g in p["gallery"])
        parts.append(f"<div class='gallery'>{cells}</div>")
    script = "\n".join(f"Plotly.newPlot({json.dumps(i)}, {json.dumps(f['data'])}, {json.dumps(f['layout'])}, "
                       "{responsive: true, displaylogo: false});" for i, f in figs)
    return ("<!DOCTYPE html>\n<html lang='en'><head><meta charset='utf-8'><title>catpose run report</title>"
            f"<style>{CSS}</style><script type='text/javascript'>{get_plotlyjs()}</script></head><body>"
            + "\n".join(parts) + f"<script type='text/javascript'>{script}</script></body></html>\n")


def write_report_html(store: Store, summary: list[str] | None = None, endpoint_url: str | None = None,
                      data: dict | None = None, artifacts: dict[str, dict] | None = None) -> str:
    """Writes ``report.html`` into the run's store (atomically, as every output); returns its URL.
    ``artifacts``: the run's artifacts as dicts, by name (its dataset among them, also when given)."""
    data = data or (artifacts or {}).get("data")
    store.write_text("report.html", render_report_html(store, summary, endpoint_url, data))
    return store.url("report.html")
