"""MkDocs hooks: the benchmark charts and tables, drawn from the figures the benchmarks measured
(docs/benchmarks/*.json, written by their --json). bench/chart.py draws the charts before every
build; a page's `<!-- figures: NAME -->` becomes NAME's charts, each with its table of medians and
spreads, so no figure on the site is typed by hand."""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "bench"))

import chart  # noqa: E402

MARKER = re.compile(r"<!-- figures: ([a-z0-9-]+) -->")


def on_pre_build(config, **kwargs) -> None:
    figures = sorted((DOCS / "benchmarks").glob("*.json"))
    if figures:
        chart.main([*map(str, figures), "--out", str(DOCS / "benchmarks" / "charts")])


CHANGELOG = re.compile(r"<!-- changelog -->")


def on_page_markdown(markdown: str, page, config, files) -> str:
    # The changelog page is the repository's CHANGELOG.md, one file for both (its own heading dropped).
    markdown = CHANGELOG.sub(lambda m: (DOCS.parent / "CHANGELOG.md").read_text().split("\n", 1)[1], markdown)
    return MARKER.sub(lambda m: figures_markdown(m.group(1), page.file.src_uri), markdown)


def figures_markdown(bench: str, page_uri: str) -> str:
    """The charts of one bench's JSON, each followed by a table: series, median, fastest, slowest,
    runs, and the median over the chart's first series."""
    path = DOCS / "benchmarks" / f"{bench}.json"
    if not path.is_file():
        raise ValueError(f"{page_uri}: no measured figures for {bench!r} (run bench/{bench}.py --json {path})")
    doc = json.loads(path.read_text())
    depth = page_uri.count("/")
    prefix = "../" * depth
    out = [f"*Measured {doc['date']} on {doc['host']} by `bench/{doc['bench']}.py`.*", ""]
    for n, spec in enumerate(doc["charts"], 1):
        series = {label: values for label, values in spec["series"].items() if values}
        unit = spec.get("unit", "")
        first = statistics.median(next(iter(series.values())))
        out += [
            f"![{spec['title']}]({prefix}benchmarks/charts/{doc['bench']}-{n}.svg)",
            "",
            f"| {spec['title']} | median | fastest | slowest | runs | × first row |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, values in series.items():
            median = statistics.median(values)
            out.append(
                f"| {label} | {median:.3g} {unit} | {min(values):.3g} {unit} | {max(values):.3g} {unit} "
                f"| {len(values)} | {median / first:.2f}x |"
            )
        out.append("")
    return "\n".join(out)
