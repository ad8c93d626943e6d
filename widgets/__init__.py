"""Front ends: ipywidgets + plotly views over result objects, and standalone HTML reports."""

from .report import HtmlReport

__all__ = ["HtmlReport"]
