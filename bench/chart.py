"""Charts of the benchmarks' measured figures, as SVG: one horizontal bar per series at its median,
a whisker from its fastest to its slowest run, every run a dot. The documentation's hook runs this
on the JSON files the benchmarks write (--json), so a chart shows what was measured and nothing else.

  .venv/bin/python bench/chart.py FIGURES.json [...] --out DIR
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from html import escape
from pathlib import Path

WIDTH, LABEL_W, ROW_H, TOP, RIGHT = 760, 300, 34, 46, 70
COLOURS = ["#3f51b5", "#009688", "#ff7043", "#8e24aa", "#546e7a"]


def chart(spec: dict, source: str) -> str:
    """One chart's SVG from {"title", "unit", "series": {label: [values]}}."""
    series = {label: values for label, values in spec["series"].items() if values}
    if not series:
        raise ValueError(f"{source}: chart {spec.get('title')!r} has no measured values")
    top = max(max(v) for v in series.values())
    # Room for the longest label (about 7 px a character at 13 px sans-serif), so none is cut.
    label_w = max(LABEL_W, 16 + 7 * max(len(label) for label in series))
    scale = (WIDTH - label_w - RIGHT) / (top * 1.05)
    height = TOP + ROW_H * len(series) + 34
    unit = spec.get("unit", "")
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">',
        f'<text x="10" y="22" font-size="15" font-weight="bold">{escape(spec["title"])}</text>',
        f'<text x="10" y="38" fill="#666">median of each (bar), fastest to slowest (line), every run (dots); '
        f"{escape(source)}</text>",
    ]
    for i, (label, values) in enumerate(series.items()):
        y = TOP + i * ROW_H
        median = statistics.median(values)
        colour = COLOURS[i % len(COLOURS)]
        out.append(f'<text x="{label_w - 8}" y="{y + 21}" text-anchor="end">{escape(label)}</text>')
        out.append(
            f'<rect x="{label_w}" y="{y + 8}" width="{median * scale:.1f}" height="18" fill="{colour}" '
            f'fill-opacity="0.75"><title>{escape(label)}: median {median:.3g} {unit}</title></rect>'
        )
        lo, hi = label_w + min(values) * scale, label_w + max(values) * scale
        out.append(f'<line x1="{lo:.1f}" x2="{hi:.1f}" y1="{y + 17}" y2="{y + 17}" stroke="#222" stroke-width="1.5"/>')
        for value in values:
            out.append(f'<circle cx="{label_w + value * scale:.1f}" cy="{y + 17}" r="2.5" fill="#222"/>')
        out.append(f'<text x="{hi + 6:.1f}" y="{y + 21}" fill="#333">{median:.3g} {escape(unit)}</text>')
    axis_y = TOP + ROW_H * len(series) + 6
    out.append(f'<line x1="{label_w}" x2="{WIDTH - RIGHT}" y1="{axis_y}" y2="{axis_y}" stroke="#999"/>')
    for tick in _ticks(top * 1.05):
        x = label_w + tick * scale
        out.append(f'<text x="{x:.1f}" y="{axis_y + 16}" text-anchor="middle" fill="#666">{tick:g}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _ticks(top: float) -> list[float]:
    step = 10 ** len(str(int(top))) / 10 if top >= 1 else 0.01
    while top / step > 8:
        step *= 2
    return [round(i * step, 6) for i in range(int(top / step) + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("figures", nargs="+", type=Path, help="JSON files written by the benchmarks' --json")
    parser.add_argument("--out", type=Path, required=True, help="directory for the SVG files")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.figures:
        doc = json.loads(path.read_text())
        source = f"bench/{doc['bench']}.py, {doc['date']}, {doc['host']}"
        for n, spec in enumerate(doc["charts"], 1):
            (args.out / f"{doc['bench']}-{n}.svg").write_text(chart(spec, source))
    return 0


if __name__ == "__main__":
    sys.exit(main())
