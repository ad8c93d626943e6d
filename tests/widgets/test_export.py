"""Standalone HTML export: one file, plotly.js once, every figure, under the size budget."""

from __future__ import annotations

import dataclasses
import re

import pytest

from widgets import Controller, Workbench, export_html
from widgets.html.render import MAX_REPORT_BYTES

PROMPT = "Paris is the capital of"


def test_export_results_and_session(tiny, tmp_path):
    app = Workbench(tiny, prompt=PROMPT, run_async=False)
    app.view("Attention")
    path = app.export(tmp_path / "session.html")
    html = path.read_text()
    assert html.count("class='figure'") >= 4
    assert html.count("DecompressionStream('gzip')") == 1   # plotly.js inlined once, gzipped
    assert not re.search(r"<script[^>]+src=", html)         # nothing to fetch
    assert path.stat().st_size < 2.5e6 < MAX_REPORT_BYTES
    assert "Prompt explorer" in html and "Attention" in html


def test_report_inline_mode_and_script_safe_text(tmp_path):
    import plotly.graph_objects as go

    from widgets import HtmlReport

    fig = go.Figure(go.Bar(x=["</script><b>x"], y=[1.0]))
    html = HtmlReport("t", plotlyjs="inline").figure(fig).render()
    assert len(re.findall(r"plotly\.js v\d", html)) == 1 and "</script><b>" not in html
    assert "<\\/script><b>x" in html


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
