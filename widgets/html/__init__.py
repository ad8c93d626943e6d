"""Rendering without a kernel: results -> plotly figures and standalone HTML (never imports ipywidgets).

    from widgets.html import export_html, HtmlReport
    export_html(result, "out/result.html")     # any result the analyses return

Modules: `report` (the page: HtmlReport), `render` (the one result -> HTML dispatch:
`register_renderer`, `render_into`, `export_html`), `tables` (HTML fragments), figure builders
per pillar (`figures` lens/attention, `figures_vocab`, `figures_editing`, `figures_sae`,
`figures_probes`) and HTML per result (`editing`, `memory`, `sae`). The live widgets in
`widgets` draw with the same builders.
"""

from .render import (
           MAX_REPORT_BYTES,
           export_html,
           export_session,
           register_renderer,
           render_into,
           renderer_for,
)
from .report import HtmlReport, escape

__all__ = ["HtmlReport", "escape", "export_html", "export_session", "register_renderer",
           "render_into", "renderer_for", "MAX_REPORT_BYTES"]
