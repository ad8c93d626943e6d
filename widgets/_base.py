"""What every live view shares: background work with a progress bar, and a static fallback.

A view owns an ipywidgets tree (`view.widget`). Displayed in a notebook it sends two
representations: the live widget (JupyterLab, VS Code) and `text/html` with static plotly
figures and tables (nbconvert, GitHub, any viewer without a kernel). Work that touches the model
goes through a callback (usually a `widgets.controller.Controller` method) and runs in a worker
thread, so the kernel's other widgets stay responsive; `run_async=False` runs it inline (tests,
benches).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import ipywidgets as W

from .html.report import escape
from .html.tables import static_figure_html, table_html

log = logging.getLogger(__name__)

__all__ = ["View", "Progress", "figure_widget", "lens_picker", "with_lens"]

Progress = Callable[[float, str], None]
"""progress(fraction in [0, 1], message): reported by long work, shown in the view's bar."""



def figure_widget(fig):
    """A plotly FigureWidget of `fig` (needs anywidget, which plotly>=6 builds widgets on)."""
    import plotly.graph_objects as go

    return go.FigureWidget(fig)


LENS_ORDER = ("logit", "tuned", "jacobian")


def lens_picker(lenses: Mapping[str, str | None] | None, value: str = "logit"):
    """(dropdown, note) choosing the lens a view reads directions and residuals through.

    `lenses`: kind -> None where the lens can be drawn for the session's model, else why not
    (`Controller.lens_choices`). The dropdown lists the drawable kinds and is disabled when the
    logit lens is the only one; the note says why the others are missing.
    """
    notes = dict(lenses) if lenses is not None else {"logit": None}
    drawable = [k for k in LENS_ORDER if k in notes and notes[k] is None]
    if value not in drawable:
        drawable.append(value)
    pick = W.Dropdown(options=drawable, value=value, description="lens", disabled=len(drawable) < 2,
                      layout=W.Layout(width="180px"))
    missing = [v for v in notes.values() if v is not None]
    note = W.HTML("" if not missing else "<span style='color:#6a7385'>"
                  + "<br>".join(escape(v) for v in missing) + "</span>")
    return pick, note


def with_lens(fn: Callable, kind: str, *args, **kwargs):
    """fn(*args, **kwargs), with ``lens=kind`` only for a lens other than logit (callbacks written
    before lenses were selectable take no `lens`)."""
    return fn(*args, **kwargs) if kind == "logit" else fn(*args, lens=kind, **kwargs)


class View:
    """Base of the live views: a status line with a progress bar, worker-thread jobs, fallback.

    Subclasses build `self.body` (a widget) and implement `report(r)` (add static sections to
    an `HtmlReport`-like object) and `static_parts()` (figures and tables for the fallback).
    """

    title = "view"

    def __init__(self, run_async: bool = True):
        self.run_async = run_async
        self.progress = W.FloatProgress(value=0.0, min=0.0, max=1.0, bar_style="info",
                                        layout=W.Layout(width="220px", visibility="hidden"))
        self.status = W.HTML(value="", layout=W.Layout(min_height="1.4em"))
        self.error = W.HTML(value="")
        self._jobs: list[threading.Thread] = []
        self._seq = 0  # jobs started; only the newest one's result is drawn
        self.last_ms: float | None = None  # wall time of the last job, for the status line
        self.body: W.Widget = W.VBox()
        self._widget: W.Widget | None = None

    # ------------------------------------------------------------------ widget tree
    @property
    def widget(self) -> W.Widget:
        if self._widget is None:
            bar = W.HBox([self.progress, self.status])
            self._widget = W.VBox([self.body, bar, self.error],
                                  layout=W.Layout(width="100%"))
            self._widget.add_class("wb-view")
        return self._widget

    def _repr_mimebundle_(self, include=None, exclude=None):
        bundle = dict(self.widget._repr_mimebundle_(include=include, exclude=exclude) or {})
        try:
            bundle["text/html"] = self.static_html()
        except Exception as exc:  # a broken fallback must not hide the live widget
            log.warning("static fallback of %s failed: %s", type(self).__name__, exc)
        return bundle

    # ------------------------------------------------------------------ fallback
    def static_parts(self) -> list[tuple[str, Any]]:
        """[("figure", fig) | ("table", (rows, columns)) | ("html", str) | ("text", str)]."""
        return []

    def static_html(self, include_plotlyjs: bool | None = None) -> str:
        out = [f"<div class='wb-static'><h3>{escape(self.title)}</h3>"]
        first = include_plotlyjs
        for kind, item in self.static_parts():
            if kind == "figure":
                out.append(static_figure_html(item, first))
                first = False if first is not None else None
            elif kind == "table":
                rows, cols = item
                out.append(table_html(rows, cols))
            elif kind == "html":
                out.append(item)
            else:
                out.append(f"<p>{escape(item)}</p>")
        out.append("</div>")
        return "".join(out)

    def report(self, r) -> None:
        """Add this view's current state to `r` (a `widgets.report.HtmlReport`)."""
        r.heading(self.title)
        for kind, item in self.static_parts():
            if kind == "figure":
                r.figure(item)
            elif kind == "table":
                rows, cols = item
                r.table(rows, columns=cols)
            elif kind == "html":
                r.html(item)
            else:
                r.text(item)

    # ------------------------------------------------------------------ jobs
    def _report_progress(self, frac: float, msg: str = "") -> None:
        self.progress.value = max(0.0, min(1.0, float(frac)))
        if msg:
            self.status.value = escape(msg)

    def submit(self, work: Callable[[Progress], Any], done: Callable[[Any], None],
               label: str = "working", supersede: bool = True) -> threading.Thread | None:
        """Run `work(progress)` (in a thread when `run_async`), then `done(result)`.

        Errors from the workbench are shown in the view; the widgets keep their last state.
        When a newer job was started meanwhile (two quick clicks), a finished older job's
        result is dropped, so the view never goes back to a stale state.
        """
        self.progress.layout.visibility = "visible"
        self.progress.value = 0.0
        self.status.value = escape(f"{label}…")
        self.error.value = ""

        if supersede:
            self._seq += 1
        seq = self._seq if supersede else None

        def job():
            t0 = time.perf_counter()
            try:
                result = work(self._report_progress)
                if seq is not None and seq != self._seq:
                    log.info("%s: a newer job superseded this one", label)
                    return
                done(result)
                self.last_ms = (time.perf_counter() - t0) * 1e3
                self.status.value = escape(f"{label}: done in {self.last_ms:.0f} ms")
            except Exception as exc:  # shown to the user; the view stays usable
                log.exception("%s failed", label)
                self.error.value = (f"<pre style='color:#b00020;white-space:pre-wrap'>"
                                    f"{escape(type(exc).__name__)}: {escape(exc)}</pre>")
                self.status.value = escape(f"{label}: failed")
                if not self.run_async:
                    raise
            finally:
                if seq is None or seq == self._seq:
                    self.progress.value = 1.0
                    self.progress.layout.visibility = "hidden"

        if not self.run_async:
            job()
            return None
        t = threading.Thread(target=job, name=f"wb-{type(self).__name__}", daemon=True)
        self._jobs = [j for j in self._jobs if j.is_alive()] + [t]
        t.start()
        return t

    def wait(self, timeout: float | None = 300.0) -> None:
        """Block until every running job finishes (tests, scripted use)."""
        for j in list(self._jobs):
            j.join(timeout)
