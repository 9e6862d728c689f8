"""The main job's report: ``report.md`` (a one-screen summary, then every stage's section), the console
tables with their readings, and ``report.html`` (:mod:`catpose.report.html`). Each stage's declaration
renders its own parts from its typed artifact (:class:`catpose.run.graph.Stage`); this module puts them
together in the graph's order and names no stage."""

from __future__ import annotations

import dataclasses

from catpose.run.graph import Artifact, Ctx, Stage


def assemble_report(cfg, ctx: Ctx, graph: list[Stage], times: dict, skipped: list[str], wall: float) -> dict:
    """Writes ``report.md`` (a one-screen summary, then every stage's section), prints the stage tables
    with their readings, and returns the report as a dict (the artifacts' contents)."""
    store, arts = ctx.store, ctx.arts
    done = [(s, arts[s.key]) for s in graph if s.key in arts]
    failed: dict[str, str] = {}
    for _, a in done:
        if isinstance(a, Artifact):
            failed.update(a.lost_categories())
    ran = [s.name for s in graph if s.name in times]
    summary = [
        "# catpose pipeline report",
        "",
        "## Summary",
        "",
        f"- **Ran**: {' → '.join(ran)}"
        + (f" ({', '.join(skipped)} done before, skipped)" if skipped else ""),
    ]
    summary += [ln for s, a in done for ln in s.summary(a, arts)]
    summary += [f"- **Time**: {sum(times.values()):.0f} s of stages (this invocation {wall:.0f} s): "
                + ", ".join(f"{k} {v:.0f}" for k, v in times.items()),
                f"- **Store**: `{store.uri}` (config.yaml repeats the run: `catpose run --config "
                f"{store.url('config.yaml')}`)"]
    heads = [h for s, a in done if (h := s.headline(a))]
    summary += [f"- {h}" for h in heads] or ["- no accuracy measured (no ground truth)"]
    summary += [f"- **Pictures**: `{store.url('plots')}/` (frames with their clouds, aligned clouds, error "
                "histograms, "
                "training curves, pose errors)"]
    if failed:
        summary += ["", "**Failed categories** (left out of every later stage):", ""] + [
            f"- `{k}`: {v}" for k, v in failed.items()]
    lines = summary + [""]
    for s, a in done:
        if s.section is not None:
            lines += [""] + s.section(a)
    lines += ["", "## Stage times (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in times.items()]
    store.write_text("report.md", "\n".join(lines) + "\n")
    html_note = ""
    try:  # the interactive page of the same run, from its stored outputs (said, never silent, when it fails)
        from catpose.report.html import write_report_html

        stored = {k: dataclasses.asdict(v) for k, v in arts.items() if dataclasses.is_dataclass(v)}
        html_note = f"  html: {write_report_html(store, summary, artifacts=stored)}"
    except Exception as e:  # noqa: BLE001 - report.md is written; the page's failure is printed, not hidden
        html_note = f"  (report.html not written: {type(e).__name__}: {e})"
    # the console: the stage tables, each with its reading
    for s, a in done:
        if t := s.table(a):
            print("\n" + "\n".join(t))
    print("\n" + "\n".join(summary[2:]))
    print(f"\nreport: {store.url('report.md')}  plots: {store.url('plots')}{html_note}")
    report: dict = {"stages": times, "skipped": skipped, "summary": summary}
    for s, a in done:
        report.update(s.results(a))
    if failed:
        report["failed_categories"] = failed
    return report
