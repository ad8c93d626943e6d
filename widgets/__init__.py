"""Front ends: ipywidgets + plotly views over result objects, and standalone HTML reports.

    from widgets import Workbench
    app = Workbench(session)            # tabs over one session; app.export("session.html")

Views take result objects plus callbacks bound to a `Controller` (the only code here that
talks to the session); each also renders statically (nbconvert, GitHub) and into `HtmlReport`.
"""

from .app import Workbench
from .attention import AttentionView
from .controller import Controller
from .edit_studio import TraceEditStudio
from .export import export_html, export_session, register_renderer
from .memory import MemoryExplorer
from .prompt import PromptExplorer
from .report import HtmlReport
from .results import (
    AttentionResult,
    Edit,
    EditOutcome,
    MemoryHits,
    MemoryRecord,
    PromptLens,
    SteerOutcome,
    SubUpdate,
    SubUpdates,
)
from .sae_browser import FeatureBrowser

__all__ = [
    "HtmlReport", "Workbench", "Controller", "PromptExplorer", "AttentionView",
    "export_html", "export_session", "register_renderer",
    "AttentionResult", "Edit", "EditOutcome", "PromptLens", "SteerOutcome", "SubUpdate",
    "SubUpdates", "TraceEditStudio", "FeatureBrowser", "MemoryExplorer", "MemoryRecord",
    "MemoryHits",
]
