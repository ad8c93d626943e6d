"""Write the tour notebooks (outputs stripped) from the cell lists below.

    .venv/bin/python scripts/make_notebooks.py            # all tours
    .venv/bin/python scripts/make_notebooks.py 01         # the tours whose name holds "01"

Each tour uses only the public API and runs top to bottom on the embedded default model;
tests/notebooks/test_notebooks.py executes them.
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]
NB = ROOT / "notebooks"

TOURS: dict[str, list[tuple[str, str]]] = {}


def tour(name: str):
    def deco(fn):
        TOURS[name] = fn()
        return fn
    return deco


@tour("01_memories_and_vocab")
def _01():
    return [
        ("md", """# Tour 1: FFN memories and the vocabulary

The feed-forward layers of a transformer can be read as key-value memories (Geva et al. 2021):
each unit's key fires on a pattern of the prefix, and its value vector, added to the residual
stream with coefficient $m_i$, promotes some tokens and suppresses others (Geva et al. 2022).
This tour reads the embedded default model (SmolLM2-135M) with the logit lens, lists the FFN
sub-updates $m_i v_i$ behind a prediction, knocks some out, and opens the live views."""),
        ("code", """from workbench import Session
from widgets import AttentionView, Controller, PromptExplorer, export_html

s = Session.load()          # SmolLM2-135M-Instruct, embedded, offline
ctl = Controller(s)         # the one object the widgets use to reach the model
s"""),
        ("md", """## The logit lens
Each layer's residual output $h_\\ell$ read with the final norm and unembedding:
$p_\\ell = \\mathrm{softmax}(W_U\\,\\mathrm{norm}(h_\\ell))$. The last layer's lens at the last
token is the model's own next-token distribution."""),
        ("code", """prompt = "The Eiffel Tower is located in the city of"
lens = ctl.prompt_lens(prompt)
print("prediction:", repr(lens.prediction), f"p={lens.next_probs[0]:.3f}")
last = len(lens.str_tokens) - 1
for layer in range(0, s.n_layers, 4):
    print(f"layer {layer:2d}: top token at the last position {lens.top_strs[layer][last]!r} "
          f"(p={lens.top_probs[layer, last]:.3f})")
assert lens.top_strs[-1][last] == lens.prediction"""),
        ("md", """## Sub-updates behind the prediction
At one layer and token, the FFN output is $\\sum_i m_i v_i$. The largest sub-updates by
$|m_i|\\,\\|v_i\\|$, with the tokens each promotes (the top of $\\mathrm{sign}(m_i)\\,v_i W_U$):"""),
        ("code", """layer = s.n_layers - 2
subs = ctl.sub_updates(lens, layer, last)
for u in subs.items[:6]:
    print(f"unit {u.neuron:5d}  m={u.coefficient:+.2f}  |v|={u.norm:.2f}  promotes {list(u.promoted[:4])}")"""),
        ("md", """Knock out the ten largest sub-updates of every one of the last four layers at the last
token and compare the prediction's probability (an intervention, undone after the call):"""),
        ("code", """from widgets import Edit

edits = []
for ly in range(s.n_layers - 4, s.n_layers):
    top = ctl.sub_updates(lens, ly, last, k=10)
    edits += [Edit(ly, last, u.neuron, 0.0) for u in top.items]
knocked = ctl.prompt_lens(prompt, edits)
target = lens.next_ids[0]
p_after = dict(zip(knocked.next_ids.tolist(), knocked.next_probs.tolist())).get(int(target), 0.0)
print(f"p({lens.prediction!r}): {lens.next_probs[0]:.3f} -> {p_after:.3f} with {len(edits)} sub-updates zeroed")
print("new top tokens:", list(knocked.next_strs[:5]))"""),
        ("md", """## Live views
Click a heatmap cell to list that layer's top sub-updates at that token; **zero**, **boost** or
scale any of them and the next-token distribution redraws. The attention view shows each head's
pattern and how much each head writes per token."""),
        ("code", """explorer = PromptExplorer(lens, ctl.prompt_lens, ctl.sub_updates)
explorer"""),
        ("code", """attention = AttentionView(ctl.attention(prompt), ctl.attention, layer=s.n_layers - 1)
attention"""),
        ("md", """## A report that opens anywhere
One HTML file with plotly.js inlined: the views' current state as static figures and tables."""),
        ("code", """explorer.wait(); attention.wait()
path = export_html([explorer, attention, knocked], "tour_report.html", title="Tour 1")
print(path, f"{path.stat().st_size / 1e6:.1f} MB")"""),
    ]


def build(name: str, cells: list[tuple[str, str]]) -> Path:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src)
                for kind, src in cells]
    for i, c in enumerate(nb.cells):
        c["id"] = f"{name[:2]}-{i:02d}"
    path = NB / f"{name}.ipynb"
    path.parent.mkdir(exist_ok=True)
    nbf.write(nb, path)
    return path


if __name__ == "__main__":
    wanted = sys.argv[1:]
    for name, cells in TOURS.items():
        if not wanted or any(w in name for w in wanted):
            print(build(name, cells))  # noqa: T201
