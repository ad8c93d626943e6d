"""Trace and edit studio: causal-trace heatmaps, pick a layer, apply a ROME edit, compare the
model before and after (probabilities, generations), read the edit diff, undo.

    studio = TraceEditStudio(trace=ctl.trace, apply_edit=ctl.apply_edit, undo=ctl.undo_edit,
                             prompt="The Eiffel Tower is located in the city of",
                             subject="The Eiffel Tower", target="Rome", lenses=ctl.lens_choices())

The lens dropdown (`lenses`, as in the prompt explorer) picks the lens the edit's value change
r = v* - v is read through (its linear part at the edited layer): ``apply_edit(..., lens=KIND)``
for a lens other than logit.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ipywidgets as W
import plotly.graph_objects as go

from editing.outcome import EditOutcome

from ._base import View, figure_widget, lens_picker, with_lens
from .html.editing import compare_html, edit_bars

__all__ = ["TraceEditStudio"]


def _trace_fig(result, kind: str) -> go.Figure:
    from .html.figures_editing import trace_heatmap

    fig = trace_heatmap(result, kind)
    fig.update_layout(height=min(120 + 22 * len(result.str_tokens), 520))
    return fig


class TraceEditStudio(View):
    """Live trace-and-edit view over callbacks into the controller."""

    title = "Trace and edit"

    def __init__(self, trace: Callable, apply_edit: Callable, undo: Callable,
                 prompt: str = "", subject: str = "", target: str = "", n_layers: int = 1,
                 trace_result=None, run_async: bool = True,
                 lenses: Mapping[str, str | None] | None = None):
        super().__init__(run_async)
        self.lens_pick, self.lens_note = lens_picker(lenses)
        self._trace, self._apply, self._undo = trace, apply_edit, undo
        self.trace_result = trace_result
        self.outcome: EditOutcome | None = None
        self.prompt = W.Text(value=prompt, description="prompt", layout=W.Layout(width="70%"))
        self.subject = W.Text(value=subject, description="subject")
        self.target = W.Text(value=target, description="new target")
        self.layer = W.Dropdown(options=list(range(n_layers)), value=n_layers // 2,
                                description="layer")
        self.trace_btn = W.Button(description="Trace", icon="search", button_style="info")
        self.edit_btn = W.Button(description="Apply edit", icon="pencil", button_style="danger")
        self.undo_btn = W.Button(description="Undo", icon="undo", disabled=True)
        self.trace_btn.on_click(lambda _: self.run_trace())
        self.edit_btn.on_click(lambda _: self.apply())
        self.undo_btn.on_click(lambda _: self.undo())
        self.trace_box = W.HBox()
        self.compare = W.HTML()
        self.bars: go.FigureWidget | None = None
        self.bars_box = W.VBox()
        self.body = W.VBox([
            self.prompt, W.HBox([self.subject, self.target]),
            W.HBox([self.trace_btn, self.layer, self.edit_btn, self.undo_btn, self.lens_pick]),
            self.lens_note,
            self.trace_box, self.bars_box, self.compare,
        ])
        self.body.add_class("wb-edit-studio")
        if trace_result is not None:
            self._show_trace(trace_result)

    # ------------------------------------------------------------------ actions
    def run_trace(self) -> None:
        p, s = self.prompt.value, self.subject.value
        self.submit(lambda progress: self._trace(p, s, progress=progress), self._show_trace,
                    "causal trace")

    def apply(self) -> None:
        p, s, t, ly = self.prompt.value, self.subject.value, self.target.value, self.layer.value
        kind = self.lens_pick.value          # the lens v* - v is read through
        self.submit(lambda progress: with_lens(self._apply, kind, p, s, t, ly, progress=progress),
                    self._show_outcome, f"ROME edit at layer {ly}")

    def undo(self) -> None:
        self.submit(lambda progress: self._undo(), self._show_undone, "undo")

    # ------------------------------------------------------------------ drawing
    def _show_trace(self, res) -> None:
        self.trace_result = res
        figs = [figure_widget(_trace_fig(res, k)) for k in res.scores]
        self.trace_box.children = figs
        if "mlp" in res.scores:  # suggest the FFN layer with the largest effect at the subject end
            curve = res.subject_last_curve("mlp")
            self.layer.value = int(curve.argmax())

    def _show_outcome(self, out: EditOutcome) -> None:
        self.outcome = out
        self.undo_btn.disabled = not out.active
        fig = edit_bars(out)
        if self.bars is None:
            self.bars = figure_widget(fig)
            self.bars_box.children = [self.bars]
        else:
            with self.bars.batch_update():
                for i in range(2):
                    self.bars.data[i].y = fig.data[i].y
                self.bars.layout.title.text = fig.layout.title.text
        self.compare.value = compare_html(out)

    def _show_undone(self, out: EditOutcome | None) -> None:
        if out is None:
            self.status.value = "no edit to undo"
            return
        self._show_outcome(out)

    # ------------------------------------------------------------------ static
    def static_parts(self):
        parts = []
        if self.trace_result is not None:
            r = self.trace_result
            parts.append(("text", f"Causal trace of {r.prompt!r} (subject {r.subject!r}, answer "
                                  f"{r.answer!r}): p clean {r.clean_prob:.3f}, corrupted "
                                  f"{r.corrupted_prob:.3f}"))
            parts += [("figure", _trace_fig(r, k)) for k in r.scores]
        if self.outcome is not None:
            parts.append(("figure", edit_bars(self.outcome)))
            parts.append(("html", compare_html(self.outcome)))
        return parts or [("text", "nothing traced or edited yet")]
