"""Standalone HTML export: one file, plotly.js once, every figure, under the size budget."""

from __future__ import annotations

import dataclasses
import re

import pytest

from widgets import Controller, Workbench, export_html
from widgets.export import MAX_REPORT_BYTES

PROMPT = "Paris is the capital of"


def test_export_results_and_session(tiny, tmp_path):
    app = Workbench(tiny, prompt=PROMPT, run_async=False)
    app.view("Attention")
    path = app.export(tmp_path / "session.html")
    html = path.read_text()
    assert html.count("Plotly.newPlot(") >= 4
    assert len(re.findall(r"plotly\.js v\d", html)) == 1  # inlined once
    assert "src=\"http" not in html and "cdn" not in html.split("<script>")[0]
    assert path.stat().st_size < MAX_REPORT_BYTES
    assert "Prompt explorer" in html and "Attention" in html


def test_export_generic_and_budget(tiny, tmp_path):
    @dataclasses.dataclass(frozen=True)
    class Other:
        name: str
        score: float

    ctl = Controller(tiny)
    lens = ctl.prompt_lens(PROMPT)
    p = export_html([lens, Other("x", 0.5)], tmp_path / "r.html")
    text = p.read_text()
    assert "Other" in text and "0.5" in text and "Logit lens" in text
    with pytest.raises(ValueError, match="max_bytes"):
        export_html(lens, tmp_path / "big.html", max_bytes=1000)
