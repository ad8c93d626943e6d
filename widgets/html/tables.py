"""HTML fragments without a kernel: a plain table and a static plotly figure."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import Any

from .report import _js, escape

__all__ = ["static_figure_html", "table_html"]

_PLOTLYJS_SENT = False


def static_figure_html(fig, include_plotlyjs: bool | None = None) -> str:
    """An HTML fragment drawing `fig` with plotly.js; plotly.js is inlined once per kernel.

    Viewers that strip scripts (GitHub) show nothing for the figure, which is why every
    fallback also carries a table of the same numbers.
    """
    global _PLOTLYJS_SENT
    if include_plotlyjs is None:
        include_plotlyjs = not _PLOTLYJS_SENT
    div = f"wb-{uuid.uuid4().hex[:12]}"
    parts = []
    if include_plotlyjs:
        from plotly.offline import get_plotlyjs

        parts.append(f"<script type='text/javascript'>{get_plotlyjs()}</script>")
        _PLOTLYJS_SENT = True
    parts.append(
        f"<div id='{div}' class='wb-figure'></div><script type='text/javascript'>(function(){{"
        f"var f={_js(fig.to_json())};if(window.Plotly){{Plotly.newPlot('{div}',f.data,f.layout,"
        f"{{displaylogo:false}});}}}})();</script>"
    )
    return "".join(parts)


def table_html(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None,
               caption: str | None = None, digits: int = 4, raw: Sequence[str] = ()) -> str:
    """A plain HTML table (columns in `raw` hold trusted HTML, the rest is escaped)."""
    rows = list(rows)
    if columns is None:
        columns = list(rows[0]) if rows else []
    out = ["<div style='overflow-x:auto;max-width:100%'><table class='wb-table'>"]
    if caption:
        out.append(f"<caption>{escape(caption)}</caption>")
    out.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>")
    for r in rows:
        cells = []
        for c in columns:
            v = r.get(c, "")
            if c in raw:
                cells.append(f"<td>{v}</td>")
            elif isinstance(v, float):
                cells.append(f"<td style='text-align:right'>{v:.{digits}g}</td>")
            else:
                cells.append(f"<td>{escape(v)}</td>")
        out.append("<tr>" + "".join(cells) + "</tr>")
    out.append("</table></div>")
    return "".join(out)
