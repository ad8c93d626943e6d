"""Front ends: ipywidgets + plotly views over result objects, and standalone HTML reports.

    from widgets import Workbench
    app = Workbench(session)            # tabs over one session; app.export("session.html")

Views take result objects plus callbacks bound to a `Controller` (the only code here that
talks to the session); each also renders statically (nbconvert, GitHub) and into `HtmlReport`.
Rendering without a kernel lives in `widgets.html`, which never imports ipywidgets; the names
below are imported lazily, so ``import widgets.html`` (batteries, the command line) loads no
ipywidgets.
"""

from __future__ import annotations

import importlib

_WHERE = {
    "Workbench": "app", "AttentionView": "attention", "Controller": "controller",
    "TraceEditStudio": "edit_studio", "MemoryExplorer": "memory", "PromptExplorer": "prompt",
    "FeatureBrowser": "sae_browser", "LedgerView": "ledger_view", "GraphView": "graph_view", "FFMapsView": "ffmaps_view",
    "export_html": "html.render", "export_session": "html.render",
    "register_renderer": "html.render", "HtmlReport": "html.report",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return __all__
