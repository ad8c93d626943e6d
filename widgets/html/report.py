"""Standalone HTML reports: one file, plotly.js inlined once, opens offline without a kernel.

Results render here and in widgets from the same figure builders; this module only lays out
pages. Example:

    r = HtmlReport("Logit lens")
    r.heading("Prompt"); r.text("The Eiffel Tower is in")
    r.figure(fig); r.table(rows, columns=["layer", "token", "p"])
    r.save("out/lens.html")

plotly.js (4.8 MB minified) is inlined gzip-compressed and base64-encoded by default (about
2 MB), and unpacked in the browser with the standard `DecompressionStream` (Chrome 80+, Firefox
113+, Safari 16.4+); `HtmlReport(..., plotlyjs="inline")` inlines it as plain text instead.
Figures share one copy of their layout template.
"""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["HtmlReport", "escape"]

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1d2330;line-height:1.45;padding:0 1rem}
h1{font-size:1.6rem;border-bottom:2px solid #e3e7ef;padding-bottom:.3rem}
h2{font-size:1.25rem;margin-top:2rem}h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:.9rem}
th,td{border:1px solid #d9dee8;padding:.25rem .55rem;text-align:left;vertical-align:top}
th{background:#f3f5f9}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre{background:#f6f8fa;border-radius:4px;padding:.1rem .3rem;font-size:.88rem}
pre{padding:.6rem;overflow:auto}.muted{color:#6a7385}.tok{background:#fff3bf;border-radius:3px}
details{margin:.5rem 0}.figure{margin:.8rem 0}
.scroll{overflow-x:auto;max-width:100%}td{max-width:40rem;overflow-wrap:anywhere}
"""


def escape(text: Any) -> str:
    return html.escape(str(text), quote=True)


class HtmlReport:
    """Accumulate sections, then `save` one self-contained HTML file."""

    def __init__(self, title: str, subtitle: str | None = None, plotlyjs: str = "gzip"):
        if plotlyjs not in ("gzip", "inline"):
            raise ValueError(f"plotlyjs={plotlyjs!r}; choose 'gzip' or 'inline'")
        self.title = title
        self.plotlyjs = plotlyjs
        self._templates: dict[str, int] = {}
        self._parts: list[str] = [f"<h1>{escape(title)}</h1>"]
        if subtitle:
            self._parts.append(f"<p class='muted'>{escape(subtitle)}</p>")
        self._n_fig = 0

    def heading(self, text: str, level: int = 2) -> HtmlReport:
        self._parts.append(f"<h{level}>{escape(text)}</h{level}>")
        return self

    def text(self, text: str) -> HtmlReport:
        self._parts.append(f"<p>{escape(text)}</p>")
        return self

    def html(self, raw: str) -> HtmlReport:
        """Append trusted HTML made by the workbench itself (escape user text first)."""
        self._parts.append(raw)
        return self

    def code(self, text: str) -> HtmlReport:
        self._parts.append(f"<pre>{escape(text)}</pre>")
        return self

    def table(self, rows: Sequence[dict[str, Any]] | Sequence[Sequence[Any]],
              columns: Sequence[str] | None = None, caption: str | None = None,
              digits: int = 4) -> HtmlReport:
        """A table from dict rows (columns default to the first row's keys) or sequences."""
        items: list[Any] = list(rows)
        if columns is None:
            columns = list(items[0].keys()) if items and isinstance(items[0], dict) else []
        out = ["<div class='scroll'><table>"]
        if caption:
            out.append(f"<caption>{escape(caption)}</caption>")
        if columns:
            out.append("<tr>" + "".join(f"<th>{escape(c)}</th>" for c in columns) + "</tr>")
        for r in items:
            vals = [r.get(c, "") for c in columns] if isinstance(r, dict) else list(r)
            out.append("<tr>" + "".join(_cell(v, digits) for v in vals) + "</tr>")
        out.append("</table></div>")
        self._parts.append("".join(out))
        return self

    def figure(self, fig, height: int | None = None) -> HtmlReport:
        """A plotly figure, rendered statically from its JSON by the inlined plotly.js."""
        self._n_fig += 1
        if height:
            fig.update_layout(height=height)
        div = f"wbfig{self._n_fig}"
        spec = json.loads(fig.to_json())
        tpl = spec.get("layout", {}).pop("template", None)
        set_tpl = ""
        if tpl is not None:
            key = json.dumps(tpl, sort_keys=True)
            if key not in self._templates:
                self._templates[key] = len(self._templates)
                self._parts.append(f"<script>window.wbT{self._templates[key]}={_js(key)};</script>")
            set_tpl = f"f.layout.template=window.wbT{self._templates[key]};"
        self._parts.append(
            f"<div class='figure' id='{div}'></div><script>(function(){{var f={_js(json.dumps(spec))};"
            f"{set_tpl}wbPlot('{div}',f);}})();</script>"
        )
        return self

    def json_block(self, data: Any, summary: str = "JSON") -> HtmlReport:
        self._parts.append(f"<details><summary>{escape(summary)}</summary><pre>"
                           f"{escape(json.dumps(data, indent=2, default=str))}</pre></details>")
        return self

    def render(self) -> str:
        head = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{escape(self.title)}</title>",
                f"<style>{_CSS}</style>"]
        tail = ""
        if self._n_fig and self.plotlyjs == "inline":
            from plotly.offline import get_plotlyjs

            head.append(f"<script>{get_plotlyjs()}</script><script>window.wbPlot=function(d,f)"
                        f"{{Plotly.newPlot(d,f.data,f.layout,{_PLOT_CFG});}};</script>")
        elif self._n_fig:
            head.append("<script>window.wbQ=[];window.wbPlot=function(d,f){wbQ.push([d,f]);};</script>")
            tail = _GZIP_LOADER.replace("@B64@", _plotlyjs_gzip_b64())
        head.append("</head><body>")
        return "".join(head) + "\n".join(self._parts) + tail + "</body></html>"

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path


_PLOT_CFG = "{responsive:true,displaylogo:false}"

# Unpack the inlined plotly.js, run it, then draw the queued figures. Errors are shown in the page.
_GZIP_LOADER = """<script>(async function(){try{
var b=atob("@B64@"),u=new Uint8Array(b.length);for(var i=0;i<b.length;i++)u[i]=b.charCodeAt(i);
var code=await new Response(new Blob([u]).stream().pipeThrough(new DecompressionStream('gzip'))).text();
var s=document.createElement('script');s.textContent=code;document.head.appendChild(s);
window.wbPlot=function(d,f){Plotly.newPlot(d,f.data,f.layout,""" + _PLOT_CFG + """);};
wbQ.forEach(function(a){wbPlot(a[0],a[1]);});wbQ=[];
}catch(e){document.body.insertAdjacentHTML('afterbegin',"<p style='color:#b00020'>figures need a "
+"browser with DecompressionStream (Chrome 80+, Firefox 113+, Safari 16.4+): "+e+"</p>");}})();</script>"""


@functools.lru_cache(maxsize=1)
def _plotlyjs_gzip_b64() -> str:
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9, mtime=0)).decode("ascii")


def _js(json_text: str) -> str:
    """JSON made safe inside a <script> element (a token "</script>" must not end it)."""
    return json_text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _cell(v: Any, digits: int) -> str:
    if isinstance(v, float):
        return f"<td class='num'>{v:.{digits}g}</td>"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"<td class='num'>{v}</td>"
    return f"<td>{escape(v)}</td>"
