"""The Workbench app: every view in a tab over one session, plus one-click HTML export.

    app = Workbench(Session.load(), prompt="The Eiffel Tower is located in the city of")
    app            # in JupyterLab: tabs; elsewhere: the static fallback of the built tabs
    app.export("out/session.html")

Tabs are built when first opened (each costs a forward pass or more), in a worker thread so
the other tabs stay usable. A tab appears only for pillars whose modules are installed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import ipywidgets as W

from workbench.session import Session

from ._base import View
from .controller import Controller
from .html.report import escape

log = logging.getLogger(__name__)

__all__ = ["Workbench", "TAB_BUILDERS"]

DEFAULT_PROMPT = "The Eiffel Tower is located in the city of"


def _prompt_tab(app: Workbench) -> View:
    from .prompt import PromptExplorer

    c = app.controller
    return PromptExplorer(c.prompt_lens(app.prompt), c.prompt_lens, c.sub_updates,
                          run_async=app.run_async, lenses=c.lens_choices())


def _attention_tab(app: Workbench) -> View:
    from .attention import AttentionView

    c = app.controller
    return AttentionView(c.attention(app.prompt), c.attention, run_async=app.run_async)


def _memory_tab(app: Workbench) -> View:
    from .memory import MemoryExplorer

    c = app.controller
    idx = c.memory_index(max_tokens=app.memory_tokens)
    layer = idx.layers[len(idx.layers) * 2 // 3]
    top = int(idx.values[idx.row(layer), :, 0].argmax())   # the unit with the strongest trigger
    return MemoryExplorer(c.memory(idx, layer, top), lambda ly, n, **kw: c.memory(idx, ly, n, **kw),
                          lambda t: c.search_memories(idx, t), idx.layers, c.session.d_mlp,
                          run_async=app.run_async, lenses=c.lens_choices())


def _edit_tab(app: Workbench) -> View:
    from .edit_studio import TraceEditStudio

    c = app.controller
    return TraceEditStudio(c.trace, c.apply_edit, c.undo_edit, prompt=app.prompt,
                           subject=app.subject, target=app.target, n_layers=c.session.n_layers,
                           run_async=app.run_async, lenses=c.lens_choices())


def _sae_tab(app: Workbench) -> View:
    from .sae_browser import FeatureBrowser

    c, sae = app.controller, app.sae
    h = c.harvest(sae, max_tokens=app.sae_tokens)
    return FeatureBrowser(h, lambda f: c.feature_contexts(h, f),
                          lambda f, lens="logit": c.feature_vocab(sae, f, lens=lens),
                          lambda p, f, a: c.steer(sae, p, f, a), prompt=app.prompt,
                          run_async=app.run_async, lenses=c.lens_choices())


# (title, builder, import that must succeed for the tab to exist); pillars append theirs
TAB_BUILDERS: list[tuple[str, Callable[[Workbench], View], str | None]] = [
    ("Prompt explorer", _prompt_tab, None),
    ("Memories", _memory_tab, "workbench.memories"),
    ("Attention", _attention_tab, None),
    ("Trace & edit", _edit_tab, "editing"),
    ("SAE features", _sae_tab, "workbench.saes"),
]


class Workbench(View):
    """Tabs of views over one `Controller` (one session).

    Args:
        session: a `workbench.Session`, or a `Controller` to share with other views.
        prompt: the prompt the tabs open on; subject, target: the studio's default edit.
        run_async: run model work in worker threads (False for tests and scripts).
        tabs: titles to include (default: every available tab).
        sae: an SAE for the feature browser tab (no tab without one); sae_tokens: corpus
            tokens harvested for its dashboards. memory_tokens: corpus tokens of the memory index.
    """

    title = "Workbench"

    def __init__(self, session: Session, prompt: str = DEFAULT_PROMPT, run_async: bool = True,
                 tabs: list[str] | None = None, subject: str = "The Eiffel Tower",
                 target: str = "Rome", sae=None, sae_tokens: int = 8192,
                 memory_tokens: int = 8192):
        super().__init__(run_async)
        self.subject, self.target = subject, target
        self.sae, self.sae_tokens = sae, sae_tokens
        self.memory_tokens = memory_tokens
        self.controller = session if isinstance(session, Controller) else Controller(session)
        self.prompt = prompt
        self.specs = [(t, b) for t, b, need in TAB_BUILDERS
                      if (tabs is None or t in tabs) and _importable(need)
                      and (b is not _sae_tab or sae is not None)]
        self.views: dict[str, View] = {}
        self.tabs = W.Tab(children=[W.VBox([W.HTML(f"<i>{escape(t)}: opening…</i>")])
                                    for t, _ in self.specs])
        for i, (t, _) in enumerate(self.specs):
            self.tabs.set_title(i, t)
        self.export_path = W.Text(value="workbench_session.html", description="export to",
                                  layout=W.Layout(width="50%"))
        self.export_btn = W.Button(description="Export HTML", icon="download")
        self.export_msg = W.HTML()
        self.export_btn.on_click(lambda _: self._export_clicked())
        self.tabs.observe(lambda ch: self.open(ch["new"]), "selected_index")
        self.body = W.VBox([self.tabs, W.HBox([self.export_path, self.export_btn, self.export_msg])])
        self.body.add_class("wb-app")
        if self.specs:
            self.open(0)

    def open(self, index: int | None) -> None:
        """Build tab `index` if it is not built yet (what selecting the tab does)."""
        if index is None or self.specs[index][0] in self.views:
            return
        title, build = self.specs[index]

        def done(view: View) -> None:
            self.views[title] = view
            self.tabs.children = tuple(view.widget if i == index else w
                                       for i, w in enumerate(self.tabs.children))

        self.submit(lambda progress: build(self), done, f"opening {title}", supersede=False)

    def view(self, title: str) -> View:
        """The built view of a tab (opening it, and waiting, if needed)."""
        idx = [t for t, _ in self.specs].index(title)
        self.open(idx)
        self.wait()
        return self.views[title]

    def export(self, path: str | Path, max_bytes: int | None = None) -> Path:
        """One standalone HTML file with every opened tab's current state."""
        from .html.render import MAX_REPORT_BYTES, export_session

        views = [self.views[t] for t, _ in self.specs if t in self.views]
        return export_session(self.controller, path, views,
                              max_bytes=MAX_REPORT_BYTES if max_bytes is None else max_bytes)

    def _export_clicked(self) -> None:
        try:
            p = self.export(self.export_path.value)
            self.export_msg.value = f"wrote <code>{escape(p)}</code> ({p.stat().st_size / 1e6:.1f} MB)"
        except (OSError, ValueError) as exc:
            self.export_msg.value = f"<span style='color:#b00020'>{escape(exc)}</span>"

    def static_parts(self):
        parts = []
        for t, _ in self.specs:
            if t in self.views:
                parts.append(("html", f"<h4>{escape(t)}</h4>"))
                parts.extend(self.views[t].static_parts())
        return parts or [("text", "no tab opened yet")]

    def report(self, r) -> None:
        for t, _ in self.specs:
            if t in self.views:
                self.views[t].report(r)


def _importable(module: str | None) -> bool:
    if module is None:
        return True
    import importlib

    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False
