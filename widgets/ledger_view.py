"""Live view of an edit ledger: every applied edit as a row, undo any one, see what it wrote.

The table lists the `editing.Ledger` entries (kind, requests, layers, update norms, weight
hashes before / after, outcome); each row has its own undo button (`Ledger.undo`: the later
entries stay applied exactly) and selecting a row shows that entry's edit: the requests and
the per-layer norms of what it added to W_out, and the top next tokens of its first request's
prompt now.
"""

from __future__ import annotations

import ipywidgets as W

from editing.ledger import Ledger
from workbench.vocab import next_tokens

from ._base import View
from .html.report import escape
from .html.tables import table_html

__all__ = ["LedgerView"]

COLUMNS = ["id", "kind", "n_requests", "layers", "hash_before", "hash_after"]


class LedgerView(View):
    """A table of `ledger`'s entries with per-row undo and the selected entry's edit."""

    title = "Edit ledger"

    def __init__(self, ledger: Ledger, run_async: bool = False):
        super().__init__(run_async)
        self.ledger = ledger
        self.selected: int | None = None
        self.rows = W.VBox()
        self.detail = W.HTML()
        self.undo_all_btn = W.Button(description="undo all", icon="undo", button_style="warning")
        self.undo_all_btn.on_click(lambda _: self.undo_all())
        self.body = W.VBox([self.rows, self.undo_all_btn, self.detail])
        self.body.add_class("wb-ledger")
        self.refresh()

    def _row(self, e) -> W.HBox:
        label = W.Button(description=f"#{e.id} {e.kind} · {len(e.requests)} req · L{e.layers}",
                         layout=W.Layout(width="360px"))
        label.on_click(lambda _, i=e.id: self.select(i))
        undo = W.Button(description="undo", icon="undo", layout=W.Layout(width="90px"))
        undo.add_class(f"wb-undo-{e.id}")
        undo.on_click(lambda _, i=e.id: self.undo(i))
        return W.HBox([label, undo])

    def refresh(self) -> None:
        self.rows.children = [self._row(e) for e in self.ledger.entries] or [
            W.HTML("<i>no edits applied</i>")]
        if self.selected is not None and self.selected not in [e.id for e in self.ledger.entries]:
            self.selected = None
        self.detail.value = self._detail_html()

    def select(self, entry_id: int) -> None:
        self.ledger.entry(entry_id)   # EditError names the ids in the ledger
        self.selected = entry_id
        self.detail.value = self._detail_html()

    def undo(self, entry_id: int) -> None:
        self.ledger.undo(entry_id)
        self.refresh()

    def undo_all(self) -> None:
        self.ledger.undo_all()
        self.refresh()

    def _detail_html(self) -> str:
        if self.selected is None:
            return "<i>select an entry to see its edit</i>"
        e = self.ledger.entry(self.selected)
        reqs = [{"prompt": r["prompt"], "subject": r["subject"], "target": r["target"]} for r in e.requests[:10]]
        norms = [{"layer": k, "||delta W_out||_F": v} for k, v in e.norms.items()]
        now = next_tokens(self.ledger.session, e.requests[0]["prompt"], 5) if e.requests else ()
        return (f"<p><b>Entry #{e.id}</b> ({escape(e.kind)}), weights {escape(e.hash_before[:12])} → "
                f"{escape(e.hash_after[:12])}; outcome {escape(e.outcome)}</p>"
                + table_html(reqs, ["prompt", "subject", "target"], caption="requests (first 10)")
                + table_html(norms, ["layer", "||delta W_out||_F"], caption="what it added, per layer")
                + table_html([{"token": t, "p": p} for t, p in now], ["token", "p"],
                             caption="next tokens of the first request's prompt now"))

    def static_parts(self):
        rows = [{c: r.get(c) for c in COLUMNS} for r in self.ledger.table()]
        parts = [("table", (rows, COLUMNS))] if rows else [("text", "no edits applied")]
        if self.selected is not None:
            parts.append(("html", self._detail_html()))
        return parts
