"""Prompt explorer: logit-lens heatmap, a cell's top FFN sub-updates with zero/scale/boost
controls, and the next-token distribution, redrawn live as units are edited.

    view = PromptExplorer(lens, recompute=ctl.prompt_lens, sub_updates=ctl.sub_updates,
                          lenses=ctl.lens_choices())

`recompute(prompt, edits) -> PromptLens` and `sub_updates(lens, layer, pos) -> SubUpdates` are
the only ways the view reaches the model (through `widgets.controller.Controller`). The lens
dropdown (logit / tuned / jacobian) lists the lenses `lenses` marks drawable (kind -> None; else
kind -> why not, shown as a note); with none but the logit lens it is disabled, with the note.
A lens other than logit is passed as ``recompute(prompt, edits, lens=KIND)``; the sub-updates'
tokens are read through the same lens (`PromptLens.lens`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import ipywidgets as W

from workbench.prompt_lens import PromptLens, UnitScale
from workbench.vocab import SubUpdates

from ._base import View, figure_widget, lens_picker, with_lens
from .html.figures import lens_heatmap, next_token_bars, round4, short
from .html.report import escape

__all__ = ["PromptExplorer"]

BOOST = 3.0


class PromptExplorer(View):
    """Live view of a `PromptLens`; see the module docstring."""

    title = "Prompt explorer"

    def __init__(self, lens: PromptLens, recompute: Callable[..., PromptLens],
                 sub_updates: Callable[..., SubUpdates], run_async: bool = True,
                 lenses: Mapping[str, str | None] | None = None):
        super().__init__(run_async)
        self.lens = lens
        self._recompute = recompute
        self._sub_updates = sub_updates
        self.factors: dict[tuple[int, int, int], float] = {
            (e.layer, e.pos, e.neuron): e.factor for e in lens.edits}
        self.selected = (lens.n_layers - 1, len(lens.str_tokens) - 1)
        self.subs: SubUpdates | None = None
        self.prompt_box = W.Text(value=lens.prompt, description="prompt",
                                 layout=W.Layout(width="70%"))
        self.run_btn = W.Button(description="Run", button_style="primary", icon="play")
        self.reset_btn = W.Button(description="Reset edits", icon="undo")
        self.lens_pick, self.lens_note = lens_picker(lenses, lens.lens)
        self.lens_pick.observe(lambda change: self.set_lens(change["new"]), "value")
        self.edits_label = W.HTML()
        self.heat = figure_widget(lens_heatmap(lens, self.selected))
        self.bars = figure_widget(next_token_bars(lens))
        self.sub_box = W.VBox(layout=W.Layout(width="100%"))
        self.sub_title = W.HTML()
        self.heat.data[0].on_click(self._on_cell)
        self.run_btn.on_click(lambda _: self.set_prompt(self.prompt_box.value))
        self.reset_btn.on_click(lambda _: self.reset())
        self.body = W.VBox([
            W.HBox([self.prompt_box, self.run_btn, self.reset_btn]),
            W.HBox([self.lens_pick, self.lens_note]),
            self.heat,
            self.sub_title, self.sub_box, self.bars,
            self.edits_label,
        ])
        self.body.add_class("wb-prompt-explorer")
        self._show_edits()
        self.select(*self.selected)

    # ------------------------------------------------------------------ actions
    @property
    def edits(self) -> tuple[UnitScale, ...]:
        return tuple(sorted(UnitScale(ly, p, n, f) for (ly, p, n), f in self.factors.items() if f != 1.0))

    def _run(self, prompt: str, edits, kind: str) -> PromptLens:
        return with_lens(self._recompute, kind, prompt, edits)

    def set_prompt(self, prompt: str) -> None:
        """Run a new prompt (edits are cleared: they name token positions of the old one)."""
        self.factors.clear()
        kind = self.lens.lens
        self.submit(lambda progress: self._run(prompt, (), kind), self._new_lens, "running prompt")

    def set_lens(self, kind: str) -> None:
        """Read the cells (and the sub-updates' tokens) through lens `kind`; edits are kept."""
        if kind == self.lens.lens:
            return
        edits, prompt = self.edits, self.lens.prompt
        self.submit(lambda progress: self._run(prompt, edits, kind), self._relens,
                    f"reading through the {kind} lens")

    def select(self, layer: int, pos: int) -> None:
        """Show the top sub-updates of FFN `layer` at token `pos` (what a click on a cell does)."""
        self.selected = (int(layer), int(pos))
        lens = self.lens
        self.submit(lambda progress: self._sub_updates(lens, layer, pos), self._show_subs,
                    f"sub-updates of layer {layer} at token {pos}")

    def set_factor(self, neuron: int, factor: float, layer: int | None = None,
                   pos: int | None = None) -> None:
        """Scale unit `neuron` (at the selected cell by default) by `factor`; 1 removes the edit."""
        layer = self.selected[0] if layer is None else layer
        pos = self.selected[1] if pos is None else pos
        key = (int(layer), int(pos), int(neuron))
        if float(factor) == 1.0:
            self.factors.pop(key, None)
        else:
            self.factors[key] = float(factor)
        self._apply()

    def reset(self) -> None:
        self.factors.clear()
        self._apply()

    def _apply(self) -> None:
        edits, prompt, kind = self.edits, self.lens.prompt, self.lens.lens
        self._show_edits()
        self.submit(lambda progress: self._run(prompt, edits, kind), self._update_lens,
                    "recomputing with edits")

    # ------------------------------------------------------------------ drawing
    def _new_lens(self, lens: PromptLens) -> None:
        self.lens = lens
        self.prompt_box.value = lens.prompt
        self.selected = (lens.n_layers - 1, len(lens.str_tokens) - 1)
        new_heat = lens_heatmap(lens, self.selected)
        with self.heat.batch_update():
            self.heat.layout = new_heat.layout
            for t_old, t_new in zip(self.heat.data, new_heat.data):
                t_old.update(t_new.to_plotly_json())
        self._update_lens(lens)
        subs = self._sub_updates(lens, *self.selected)
        self._show_subs(subs)

    def _relens(self, lens: PromptLens) -> None:
        """Redraw under another lens: cells, title, and the selected cell's sub-updates."""
        self._update_lens(lens)
        with self.heat.batch_update():
            self.heat.layout.title.text = lens_heatmap(lens, self.selected).layout.title.text
        if self.lens_pick.value != lens.lens:
            self.lens_pick.value = lens.lens
        self._show_subs(self._sub_updates(lens, *self.selected))

    def _update_lens(self, lens: PromptLens) -> None:
        """Redraw both figures in place from a recomputed lens."""
        self.lens = lens
        text = [[short(t, 8) for t in row] for row in lens.top_strs]
        with self.heat.batch_update():
            self.heat.data[0].z = round4(lens.top_probs)
            self.heat.data[0].text = text
        fresh = next_token_bars(lens)
        with self.bars.batch_update():
            for i in range(2):
                self.bars.data[i].x = fresh.data[i].x
                self.bars.data[i].y = fresh.data[i].y
            self.bars.layout.title.text = fresh.layout.title.text
        self._show_edits()

    def _on_cell(self, trace, points, state) -> None:
        if points.point_inds:
            layer, pos = points.point_inds[0]
            self.select(layer, pos)

    def _show_subs(self, subs: SubUpdates) -> None:
        self.subs = subs
        with self.heat.batch_update():
            self.heat.data[1].x = [subs.position]
            self.heat.data[1].y = [subs.layer]
        self.sub_title.value = (f"<b>Layer {subs.layer}, token {subs.position} "
                                f"<code>{escape(subs.token)}</code></b>: top FFN sub-updates "
                                f"m<sub>i</sub>v<sub>i</sub> and the tokens they promote")
        self.sub_box.children = [self._sub_row(subs, u) for u in subs.by_magnitude]

    def _sub_row(self, subs: SubUpdates, u) -> W.Widget:
        key = (subs.layer, subs.position, u.neuron)
        factor = self.factors.get(key, 1.0)
        label = W.HTML(f"<code>n{u.neuron}</code> m={u.coefficient:+.2f} "
                       f"‖v‖={u.value_norm:.2f} ↑ {escape(', '.join(repr(t.token) for t in u.promoted[:4]))}",
                       layout=W.Layout(width="520px"))
        mode = {1.0: "keep", 0.0: "zero", BOOST: "boost"}.get(factor)
        toggle = W.ToggleButtons(options=["keep", "zero", "boost"], value=mode,
                                 style={"button_width": "60px"}, tooltips=[
                                     "leave the unit as is", "knock out this sub-update",
                                     f"multiply the coefficient by {BOOST:g}"])
        toggle.add_class(f"wb-sub-{u.neuron}")
        scale = W.FloatText(value=factor, step=0.5, layout=W.Layout(width="64px"),
                            tooltip="scale factor")

        def on_toggle(change):
            if change["new"] is not None:
                scale.value = {"keep": 1.0, "zero": 0.0, "boost": BOOST}[change["new"]]

        def on_scale(change):
            toggle.value = {1.0: "keep", 0.0: "zero", BOOST: "boost"}.get(float(change["new"]))
            self.set_factor(u.neuron, float(change["new"]), subs.layer, subs.position)

        toggle.observe(on_toggle, "value")
        scale.observe(on_scale, "value")
        return W.HBox([label, toggle, scale])

    def _show_edits(self) -> None:
        edits = self.edits
        if not edits:
            self.edits_label.value = "<span style='color:#6a7385'>no edits</span>"
            return
        txt = ", ".join(f"L{e.layer}@{e.pos} n{e.neuron} ×{e.factor:g}" for e in edits)
        self.edits_label.value = f"<b>edits:</b> {escape(txt)}"

    # ------------------------------------------------------------------ static
    def static_parts(self):
        lens = self.lens
        parts = [("text", f"Prompt: {lens.prompt!r} → next token {lens.prediction!r}"),
                 ("figure", lens_heatmap(lens, self.selected)), ("figure", next_token_bars(lens))]
        rows = [{"token": t, "p now": float(p), "p before edits": float(b)}
                for t, p, b in zip(lens.next_strs, lens.next_probs, lens.base_next_probs)]
        parts.append(("table", (rows, ["token", "p now", "p before edits"])))
        if self.subs is not None:
            s = self.subs
            parts.append(("text", f"Top sub-updates of layer {s.layer} at token {s.position} ({s.token!r})"))
            parts.append(("table", ([{"neuron": u.neuron, "m": u.coefficient, "|v|": u.value_norm,
                                      "promotes": " ".join(repr(t.token) for t in u.promoted),
                                      "suppresses": " ".join(repr(t.token) for t in u.suppressed)}
                                     for u in s.by_magnitude], None)))
        if lens.edits:
            parts.append(("table", ([{"layer": e.layer, "pos": e.pos, "neuron": e.neuron,
                                      "factor": e.factor} for e in lens.edits], None)))
        return parts
