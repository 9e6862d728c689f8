"""MkDocs hook: pages generated at build time, so that they cannot go stale.

* ``reference/config.md``: every config dataclass of ``catpose/config/`` (and the main job's
  ``PipelineConfig`` in ``catpose/run/config.py``) with each field's name, type, default and docstring,
  read from the source with :mod:`ast` (nothing is imported: the docs build needs neither torch nor Ray).
* ``benchmarks.md``: the tables of ``bench/results/*.json``, every number read from those files.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
MAIN_JOB_CONFIG = ROOT / "catpose" / "run" / "config.py"
CONFIG_SOURCES = [
    *(ROOT / "catpose" / "config" / f"{m}.py" for m in ("context", "data", "align", "train", "pose")),
    MAIN_JOB_CONFIG,
]
RESULTS = ROOT / "bench" / "results"


# ------------------------------------------------------------------------------ configuration reference
def _is_dataclass(node: ast.ClassDef) -> bool:
    return any(
        (isinstance(d, ast.Name) and d.id == "dataclass")
        or (isinstance(d, ast.Call) and getattr(d.func, "id", "") == "dataclass")
        for d in node.decorator_list
    )


def _default(value: ast.expr | None, src: str) -> str:
    """The default as written; ``field(default_factory=...)`` shows the factory's result expression."""
    if value is None:
        return "required"
    if isinstance(value, ast.Call) and getattr(value.func, "id", "") == "field":
        for kw in value.keywords:
            if kw.arg == "default_factory":
                f = kw.value
                body = f.body if isinstance(f, ast.Lambda) else f
                text = ast.get_source_segment(src, body) or ""
                return text if isinstance(f, ast.Lambda) else f"{text}()"
            if kw.arg == "default":
                return ast.get_source_segment(src, kw.value) or ""
    return ast.get_source_segment(src, value) or ""


def config_classes() -> dict[str, dict]:
    """``{class name: {doc, bases, fields: [(name, type, default, doc)]}}`` of the config dataclasses."""
    out: dict[str, dict] = {}
    for path in CONFIG_SOURCES:
        src = path.read_text()
        for node in ast.parse(src).body:
            if not (isinstance(node, ast.ClassDef) and _is_dataclass(node)):
                continue
            if path == MAIN_JOB_CONFIG and node.name != "PipelineConfig":
                continue  # only the main job's config, nothing else of that module
            fields = []
            body = node.body
            for i, st in enumerate(body):
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name):
                    nxt = body[i + 1] if i + 1 < len(body) else None
                    doc = (
                        nxt.value.value
                        if isinstance(nxt, ast.Expr)
                        and isinstance(nxt.value, ast.Constant)
                        and isinstance(nxt.value.value, str)
                        else ""
                    )
                    fields.append((st.target.id, ast.get_source_segment(src, st.annotation) or "",
                                   _default(st.value, src), " ".join(doc.split())))
            out[node.name] = {"doc": " ".join((ast.get_docstring(node) or "").split()),
                              "bases": [b.id for b in node.bases if isinstance(b, ast.Name)],
                              "fields": fields, "source": path.relative_to(ROOT).as_posix()}
    return out


def _all_fields(classes: dict, name: str) -> list[tuple[str, str, str, str, str]]:
    """The fields of ``name`` including inherited ones (dataclass order: bases first, reversed MRO)."""
    seen: dict[str, tuple] = {}
    for base in reversed(classes[name]["bases"]):
        if base in classes:
            for f in _all_fields(classes, base):
                seen[f[0]] = f
    for f in classes[name]["fields"]:
        seen[f[0]] = (*f, name)
    return [v if len(v) == 5 else (*v, name) for v in seen.values()]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    classes = config_classes()
    lines = ["# Configuration reference", "",
             "Generated at build time from the config dataclasses (`catpose/config/`, and `PipelineConfig` "
             "in "
             "`catpose/run/config.py`): each field's name, type, default and docstring. In the main job's "
             "YAML a "
             "stage's section is its field of `PipelineConfig` (`train: {epochs: 40}`); on the command line "
             "`--train.epochs 40`, and on a stage's own subcommand `--epochs 40`. Fields marked *inherited* "
             "come "
             "from the run context classes, declared once.", ""]
    for name, c in classes.items():
        lines += [f"## {name} {{#{name.lower()}}}", "", f"`{c['source']}`"
                  + (f" · inherits {', '.join(f'[{b}](#{b.lower()})' for b in c['bases'] if b in classes)}"
                     if any(b in classes for b in c["bases"]) else ""), "", c["doc"], ""]
        fields = _all_fields(classes, name)
        if not fields:
            lines += ["(no fields of its own)", ""]
            continue
        lines += ["| field | type | default | meaning |", "|---|---|---|---|"]
        for fname, typ, default, doc, owner in fields:
            inh = f" *(inherited from [{owner}](#{owner.lower()}))*" if owner != name else ""
            lines.append(f"| `{fname}` | `{_cell(typ)}` | `{_cell(default)}` | {_cell(doc)}{inh} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------ benchmarks
def _fmt(v) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:,.4g}" if abs(v) < 1e6 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return _cell(str(v))


def _scalars(d: dict) -> dict:
    return {k: v for k, v in d.items() if not isinstance(v, (dict, list))}


def _table(rows: dict[str, dict], key_name: str, max_cols: int = 14) -> list[str]:
    """A table whose rows are ``rows``' keys and whose columns are their scalar fields (union, in order)."""
    cols: list[str] = []
    for r in rows.values():
        for k in _scalars(r):
            if k not in cols:
                cols.append(k)
    cols = cols[:max_cols]
    if not cols:
        return []
    out = ["| " + " | ".join([key_name, *cols]) + " |", "|" + "---|" * (len(cols) + 1)]
    for k, r in rows.items():
        out.append("| " + " | ".join([_cell(k), *(_fmt(r[c]) if c in r else "" for c in cols)]) + " |")
    return out


def render_result(name: str, d) -> list[str]:
    """One results file: its scalar settings, then a table for every mapping of mappings in it (runs,
    categories, methods ...), one level deep."""
    lines = [f"### {name}", ""]
    if not isinstance(d, dict):
        return lines + [f"(a {type(d).__name__} of {len(d)} entries)", ""]
    sc = _scalars(d)
    if sc:
        lines += ["| setting | value |", "|---|---|"] + [f"| {k} | {_fmt(v)} |" for k, v in sc.items()] + [""]
    for k, v in d.items():
        if isinstance(v, dict) and v and all(isinstance(x, dict) for x in v.values()):
            t = _table(v, k)
            if t:
                lines += [f"**{k}**", "", *t, ""]
            for sub, sv in v.items():  # one more level: e.g. runs -> run -> methods -> method
                for kk, vv in sv.items():
                    if isinstance(vv, dict) and vv and all(isinstance(x, dict) for x in vv.values()):
                        t = _table(vv, kk)
                        if t:
                            lines += [f"**{k} · {sub} · {kk}**", "", *t, ""]
        elif isinstance(v, dict) and v and _scalars(v):
            lines += [f"**{k}**", "", "| | value |", "|---|---|"] + [f"| {kk} | {_fmt(vv)} |"
                                                                     for kk, vv in _scalars(v).items()] + [""]
    return lines


HEADLINE = {  # file -> (label, keys): the engine's throughput next to each other, read from the files
    "align": ("alignment engine", ["device", "pairs", "pairs_per_s_batched", "pairs_per_s_per_pair",
                                   "speedup_batched_vs_per_pair"]),
}


def benchmarks_page() -> str:
    files = sorted(RESULTS.glob("*.json"))
    data = {f.stem: json.loads(f.read_text()) for f in files}
    lines = ["# Benchmarks", "",
             "Every number on this page is read from `bench/results/*.json` when the site is built "
             "(`docs/hooks.py`); "
             "rerun a benchmark (`make bench`, or the `bench/*.py` script named in each file) and rebuild to "
             "update "
             "it. What each benchmark measures and how to read it: [benchmark notes](benchmarks-notes.md); "
             "the "
             "accuracies are defined on the [metrics](metrics.md) page.", ""]
    eng = [n for n in data if n.startswith("align-") and isinstance(data[n], dict)
           and "pairs_per_s_batched" in data[n]]
    if eng:
        label, keys = HEADLINE["align"]
        lines += ["## Headline: "
                  f"{label}", "", "| file | " + " | ".join(keys) + " |", "|" + "---|" * (len(keys) + 1)]
        lines += [f"| `{n}.json` | "
                  "" + " | ".join(_fmt(data[n].get(k, "")) for k in keys) + " |" for n in eng] + [""]
    groups: dict[str, list[str]] = {}
    for n in data:
        groups.setdefault(n.split("-")[0], []).append(n)
    for g, names in groups.items():
        lines += [f"## {g}", ""]
        for n in names:
            lines += render_result(f"{n}.json", data[n])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------- the hook
def on_files(files, config):
    for uri, content in (("reference/config.md", config_reference()), ("benchmarks.md", benchmarks_page())):
        files.append(File.generated(config, uri, content=content))
    return files
