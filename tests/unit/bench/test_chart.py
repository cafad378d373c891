"""bench/chart.py: the benchmark charts show what was measured, every label whole."""

from __future__ import annotations

import re
import sys

import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "bench"))
import chart


def test_each_series_is_drawn_at_its_median_with_every_run_and_its_label_whole():
    label = "vagabond up + run (prebuilt box, from the catalog)"
    svg = chart.chart({"title": "T", "unit": "s", "series": {"short": [1.0, 2.0, 9.0], label: [4.0, 5.0, 6.0]}}, "src")
    assert len(re.findall(r"<circle ", svg)) == 6, "every run is a dot"
    assert "short: median 2 s" in svg and f"{label}: median 5 s" in svg
    # The labels end where the bars start, right-aligned: the longest must fit left of that.
    anchor = float(re.search(r'<text x="([\d.]+)" y="[\d.]+" text-anchor="end">short<', svg)[1])
    assert anchor >= 7 * len(label), "the longest label would be cut at the left edge"
    widths = [float(w) for w in re.findall(r'<rect x="[\d.]+" y="[\d.]+" width="([\d.]+)"', svg)]
    assert widths[0] / widths[1] == pytest.approx(2 / 5, rel=0.01), "bars are proportional to the medians"


def test_a_chart_without_values_is_refused():
    with pytest.raises(ValueError, match="no measured values"):
        chart.chart({"title": "T", "series": {"a": []}}, "src")
