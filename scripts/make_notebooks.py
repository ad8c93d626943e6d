"""Write the tour notebooks (outputs stripped) from the cell lists below.

    .venv/bin/python scripts/make_notebooks.py            # all tours
    .venv/bin/python scripts/make_notebooks.py 01         # the tours whose name holds "01"

Each tour uses only the public API and runs top to bottom on the embedded default model, from
notebooks/ as its working directory (it reads ../data, writes reports under ../out/tours);
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
for u in subs.by_magnitude[:6]:
    print(f"unit {u.neuron:5d}  m={u.coefficient:+.2f}  |v|={u.value_norm:.2f}  promotes {[t.token for t in u.promoted[:4]]}")"""),
        ("md", """Knock out the ten largest sub-updates of every one of the last four layers at the last
token and compare the prediction's probability (an intervention, undone after the call):"""),
        ("code", """from workbench.prompt_lens import UnitScale

edits = []
for ly in range(s.n_layers - 4, s.n_layers):
    top = ctl.sub_updates(lens, ly, last, k=10)
    edits += [UnitScale(ly, last, u.neuron, 0.0) for u in top.by_magnitude]
knocked = ctl.prompt_lens(prompt, edits)
target = lens.next_ids[0]
p_after = dict(zip(knocked.next_ids.tolist(), knocked.next_probs.tolist())).get(int(target), 0.0)
print(f"p({lens.prediction!r}): {lens.next_probs[0]:.3f} -> {p_after:.3f} with {len(edits)} sub-updates zeroed")
print("new top tokens:", list(knocked.next_strs[:5]))"""),
        ("md", """The probability *rises* (0.70 to 0.83 on SmolLM2): the largest sub-updates by size are not the
ones that write the answer, and some of them push it down. Ranking by the effect on the
target's logit instead (`by_target`: each sub-update's direct contribution through the frozen
final norm) picks the memories that carry the fact; knocking out five of those in the layer
that writes the answer most lowers it:"""),
        ("code", """from workbench import ffn_sub_updates, intervene, zero_neurons
from workbench.direct_effects import direct_effects

answer = lens.prediction
effects = direct_effects(s, prompt, answer)
best = max(range(s.n_layers), key=lambda l: effects.ffn[l])
units = [u.neuron for u in ffn_sub_updates(s, prompt, best, target=answer, k=5).by_target]
p = lambda: float(s.last_logits(prompt)[0].float().softmax(-1)[s.token_id(answer)])
before = p()
with intervene(s, zero_neurons(best, units, positions=[-1])):
    after = p()
print(f"layer {best} writes {answer!r} most (direct effect {effects.ffn[best]:+.2f} logits); "
      f"zeroing its 5 strongest memories for it: p {before:.3f} -> {after:.3f}")
assert after < before"""),
        ("md", """## Memories: what triggers a key, what its value writes
`workbench.memories.harvest` streams a corpus once and keeps, per FFN key, the prefixes with
the largest coefficient $m_i$ at their last token; `workbench.vocab.value_tokens` reads the
value $v_i$ in the vocabulary. A small corpus (4k tokens) keeps the tour quick."""),
        ("code", """from workbench import Corpus
from workbench.memories import harvest
from workbench.vocab import value_tokens

corpus = Corpus.load("../data/corpus/tiny_corpus.txt", s.tokenizer, max_tokens=4096)
index = harvest(s, corpus, layers=[20, 26], k=8, max_tokens=4096, progress=False)
unit = int(index.values[index.row(26), :, 0].argmax())     # the key with the strongest trigger
for ex in index.examples(26, unit, corpus, context=12)[:4]:
    print(f"m={ex.coefficient:6.2f}  ...{ex.prefix!r} [{ex.trigger!r}] -> {ex.next_token!r}")
vt = value_tokens(s, 26, [unit], k=6)[0]
print("value promotes:", [t.token for t in vt.promoted])
print("value suppresses:", [t.token for t in vt.suppressed])"""),
        ("code", """from widgets import MemoryExplorer

mctl = Controller(s, corpus=corpus)
memories = MemoryExplorer(mctl.memory(index, 26, unit), lambda ly, n: mctl.memory(index, ly, n),
                          lambda tok: mctl.search_memories(index, tok), index.layers, s.d_mlp)
memories.search(" Paris")   # units whose value most promotes ' Paris'; click one to open it
memories"""),
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
        ("code", """explorer.wait(); attention.wait(); memories.wait()
path = export_html([explorer, attention, memories, knocked], "../out/tours/tour1_report.html", title="Tour 1")
print(path, f"{path.stat().st_size / 1e6:.1f} MB")"""),
    ]


@tour("02_trace_and_edit")
def _02():
    return [
        ("md", """# Tour 2: locate a fact, then edit it

Causal tracing (Meng et al. 2022) corrupts the subject's embeddings with noise and restores one
hidden state at a time from the clean run: the states whose restoration brings the answer
back carry the fact. ROME then rewrites one FFN's output weights with a rank-one update
$W' = W + u r^\\top$ so that the subject's key $k^*$ maps to a new value; `apply` returns a
handle that undoes the edit exactly. This tour runs both on the embedded default model."""),
        ("code", """import torch
from workbench import Session, Corpus
from editing import (EditRequest, RomeConfig, TraceConfig, apply, compute_rome_update,
                     embedding_std, key_stats, trace_fact)
from widgets import Controller, export_html
from widgets.html.figures_editing import trace_heatmap

s = Session.load()
corpus = Corpus.load("../data/corpus/tiny_corpus.txt", s.tokenizer, max_tokens=20_000)
prompt, subject, new_target = "The Eiffel Tower is located in the city of", "The Eiffel Tower", "Rome"
s.next_token(prompt)"""),
        ("md", """## Causal trace
Noise of 3 embedding standard deviations on the subject tokens; p(answer) when each single
residual state (or a window of FFN outputs) is restored. One noise sample keeps the tour quick
(ROME averages ten)."""),
        ("code", """sigma = embedding_std(s, corpus, max_tokens=4096)
trace = trace_fact(s, prompt, subject, sigma, config=TraceConfig(kinds=("resid", "mlp"), samples=1))
curve = trace.subject_last_curve("mlp")
layer = int(curve.argmax())
print(f"answer {trace.answer!r}: p clean {trace.clean_prob:.3f}, corrupted {trace.corrupted_prob:.3f}")
print(f"FFN indirect effect at the subject's last token peaks at layer {layer} ({float(curve.max()):.3f})")
assert trace.clean_prob > trace.corrupted_prob
trace_heatmap(trace, "mlp")"""),
        ("md", """## A rank-one edit, and its exact undo"""),
        ("code", """stats = key_stats(s, layer, corpus, n_tokens=10_000, progress=False)
update = compute_rome_update(s, EditRequest(prompt, subject, new_target), stats,
                             RomeConfig(steps=8, prefixes_per_length=1))
w_before = s.model.blocks[layer].mlp.W_out.detach().clone()
before = s.generate(prompt, max_new_tokens=8)
with apply(s, update):                       # undone when the block ends
    after = s.generate(prompt, max_new_tokens=8)
    p_new = float(torch.softmax(s.last_logits(prompt)[0], -1)[update.target_id])
print("before:", repr(before)); print("after: ", repr(after), f"p({new_target!r}) = {p_new:.3f}")
assert torch.equal(s.model.blocks[layer].mlp.W_out, w_before)   # restored exactly
print("restored:", s.next_token(prompt))"""),
        ("md", """## The studio
Trace, pick a layer (the FFN peak is preselected), apply the edit, compare before and after,
read the edit diff (which rows of $W_{out}$ moved, what $r$ promotes) and undo."""),
        ("code", """ctl = Controller(s, corpus=corpus)
ctl.trace_samples, ctl.stats_tokens = 1, 10_000
from widgets.edit_studio import TraceEditStudio

studio = TraceEditStudio(ctl.trace, lambda *a, **k: ctl.apply_edit(*a, rome_config=RomeConfig(steps=8, prefixes_per_length=1), **k),
                         ctl.undo_edit, prompt, subject, new_target, n_layers=s.n_layers,
                         trace_result=trace)
studio"""),
        ("code", """studio.apply(); studio.wait(600)          # what the "Apply edit" button does
print("after edit:", studio.outcome.p_after, "active:", studio.outcome.active)
studio.undo(); studio.wait(600)
assert torch.equal(s.model.blocks[layer].mlp.W_out, w_before)
path = export_html([studio], "../out/tours/tour2_report.html", title="Tour 2")
print(path, f"{path.stat().st_size / 1e6:.1f} MB")"""),
    ]


@tour("03_saes")
def _03():
    return [
        ("md", """# Tour 3: sparse autoencoders

An SAE rewrites an activation $x$ as a sparse code $f = \\mathrm{TopK}(W_{enc}(x - b_{dec}))$
and a reconstruction $\\hat x = W_{dec} f + b_{dec}$: each latent is a direction that fires on
few tokens. This tour trains a small TopK SAE on one residual site of the embedded default
model (a few tens of thousands of tokens: enough to see features form, far from a production
SAE), measures it, browses its features and steers with one."""),
        ("code", """import torch
from workbench import Corpus, Session
from workbench.saes import (SAEConfig, TrainConfig, harvest_features, reconstruction_metrics,
                            splice, steer_feature, train_sae)
from widgets import Controller, FeatureBrowser, export_html
from widgets.html.figures_sae import frequency_histogram, training_curves

s = Session.load()
corpus = Corpus.load("../data/corpus/tiny_corpus.txt", s.tokenizer, max_tokens=40_000)
torch.manual_seed(0)"""),
        ("code", """res = train_sae(s, corpus, SAEConfig("topk", s.d_model, 4 * s.d_model, site="resid_post:8", k=16),
                TrainConfig(total_tokens=24_576, batch_size=512, window=64, tokens_per_forward=4096,
                            buffer_tokens=8192, eval_tokens=2048, warmup_steps=5, amp=False),
                progress=False)
sae = res.sae
m = reconstruction_metrics(sae, res.eval_vectors)
print(f"trained on {res.tokens} vectors in {res.seconds:.0f}s; held-out FVU {m.fvu:.3f}, L0 {m.l0:.1f}")
assert m.fvu < 1.0            # better than predicting the mean
training_curves(res.history)"""),
        ("md", """## Feature dashboards
`harvest_features` streams the corpus once and keeps each latent's top activations, firing
frequency and activation histogram; the browser shows the contexts (trigger token
highlighted), the histogram and what the decoder direction promotes in the vocabulary."""),
        ("code", """ctl = Controller(s, corpus=corpus)
harvest = ctl.harvest(sae, max_tokens=4096, k=8)
print(f"{int((harvest.frequencies > 0).sum())} of {sae.d_sae} latents fired on {harvest.n_tokens} tokens")
frequency_histogram(harvest.frequencies.tolist())"""),
        ("code", """prompt = "The Eiffel Tower is located in the city of"
browser = FeatureBrowser(harvest, lambda f: ctl.feature_contexts(harvest, f),
                         lambda f: ctl.feature_vocab(sae, f),
                         lambda p, f, a: ctl.steer(sae, p, f, a), prompt=prompt)
browser"""),
        ("md", """## Steering
Adding $a$ to a latent's code adds $a\\,d_i$ (its decoder row) to the activation at every
position; the SAE's error term is kept, so with $a = 0$ the model is unchanged."""),
        ("code", """browser.wait()
feature = browser.feature_id
out = ctl.steer(sae, prompt, feature, 30.0)
print("plain:  ", repr(out.gen_before)); print("steered:", repr(out.gen_after))
with splice(s, sae, [steer_feature(feature, 0.0)], keep_error=True):
    same = s.last_logits(prompt)
assert torch.allclose(same, s.last_logits(prompt), atol=1e-3)
browser.amount.value = 30.0; browser.run_steer(); browser.wait()
path = export_html([browser], "../out/tours/tour3_report.html", title="Tour 3")
print(path, f"{path.stat().st_size / 1e6:.1f} MB")"""),
    ]


@tour("04_probes")
def _04():
    return [
        ("md", """# Tour 4: probe batteries

A battery is a TOML spec of probes (validated before any model loads) that `run_battery` runs
on one session, caching each probe's result and writing JSON plus a standalone HTML report.
Linear probes decode a label from each layer's residual stream and are scored against a
control task (Hewitt and Liang 2019: the same probe on shuffled labels), so selectivity, not
raw accuracy, says whether the layer holds the information. This tour runs a small battery on
the embedded default model."""),
        ("code", """import tomllib
from probes import parse_spec, results_paths, run_battery
from widgets.html.figures_probes import linear_probe_figure, selectivity_overview
from workbench import Session

s = Session.load()
TOML = '''
[battery]
name = "tour"
title = "Tour battery"
model = "smollm2-135m"
corpus = "../data/corpus/tiny_corpus.txt"
max_tokens = 6000
window = 128
seed = 0

[[probe]]
kind = "linear"
name = "next_is_number"
label = "next_is_number"
layers = [0, 5, 10, 15, 20, 25, 29]
balance = true
max_examples = 800

[[probe]]
kind = "linear"
name = "next_is_capitalised"
label = "next_is_capitalised"
layers = [0, 5, 10, 15, 20, 25, 29]
balance = true
max_examples = 800
'''
spec = parse_spec(tomllib.loads(TOML))
[p.name for p in spec.probes]"""),
        ("code", """results = run_battery(spec, "../out/tours/battery", session=s, progress=False)
print(results["counts"], f"{results['timings']['total_s']:.0f}s")
ran = [(r["name"], r["result"]) for r in results["probes"] if r["status"] in ("ran", "cached")]
assert len(ran) == 2
selectivity_overview(ran)"""),
        ("code", """name, res = ran[0]
linear_probe_figure(res, title=name)"""),
        ("md", """The battery's HTML report (plotly.js inlined, opens offline) lies beside its JSON:"""),
        ("code", """json_path, html_path = results_paths(spec, "../out/tours/battery")
print(html_path, f"{html_path.stat().st_size / 1e6:.1f} MB")
assert html_path.stat().st_size < 5e6"""),
    ]


@tour("05_graphs")
def _05():
    return [
        ("md", """# Tour 5: attribution graphs

How does the model get from "The Eiffel Tower is located in the city of" to " Paris"? One real
forward fixes the attention patterns, the norm factors and every FFN gate; what remains is linear
in the token embeddings and the FFN units' coefficients $m_i$, so each unit's coefficient and each
logit is *exactly* the sum of its incoming edges (`exactness_max_rel_error` checks it on the
prompt). The graph keeps the units that carry most of the influence on the target, and each unit
is a key-value memory with a card. Then we check the graph against the real model, where attention
is free, and look at a contrastive circuit with its attention heads."""),
        ("code", """import torch
from workbench import Session
from workbench.graphs import build_graph, contrastive_graph
from workbench.saes.tasks import load_task
from widgets import Controller, GraphView, export_html

torch.set_num_threads(2)
s = Session.load()
ctl = Controller(s)
prompt, target = "The Eiffel Tower is located in the city of", " Paris"
g = build_graph(s, prompt, target, max_nodes=150, faithfulness_nodes=10, progress=False)
sm = g.summary
print(f"{sm['nodes']} nodes, {sm['edges']} edges, completeness {sm['completeness']:.3f}, "
      f"exactness {sm['exactness_max_rel_error']:.1e}, {sm['seconds']:.1f} s")
assert sm["exactness_max_rel_error"] < 1e-4"""),
        ("md", """## The graph, live
Layers run bottom to top, positions left to right; edge width is the edge's weight. Click units to
pin them, then ablate or boost them in the real model: the next-token distribution updates.
Hover a unit for its memory card (what its value promotes, and the sub-update $m_i v_i$ it writes
on this prompt)."""),
        ("code", """cards = ctl.graph_cards(g)
view = GraphView(g, cards, ctl.graph_intervene)
view"""),
        ("code", """top = [n.id for n in g.units()[:3]]
view.set_pinned(top)
view.scale(0.0)          # ablate the three strongest units in the real model
view.wait()
ch = view.change
print("pinned:", top)
print("top token before:", ch.before[0].token, f"{ch.before[0].score:.3f}", "| after:", ch.after[0].token,
      f"{ch.after[0].score:.3f}")
card = cards[top[0]]
print(f"{top[0]}: value promotes {[t.token for t in card.promoted[:5]]}, "
      f"m*v promotes {[t.token for t in card.sub_update[:5]]}")"""),
        ("md", """## Does the graph predict the real model?
Each of the top units is ablated in the real model (attention, norms and gates free) and the
measured change of the target logit is rank-correlated with two predictions: the graph's own
path sums (frozen model) and attribution patching (the real model's gradient, one backward
pass). Units at position 0, the attention sink, are reported apart: ablating them moves every
attention pattern."""),
        ("code", """print(f"graph's path sums: Spearman {sm['faithfulness_spearman_graph']:+.2f}; "
      f"live attribution patching: {sm['faithfulness_spearman_live']:+.2f} "
      f"(over {sm['faithfulness_nodes']} units at positions >= 1)")
print(f"attention-sink units: graph {sm['faithfulness_spearman_sink']:+.2f}, "
      f"live {sm['faithfulness_spearman_sink_live']:+.2f} (over {sm['faithfulness_sink_nodes']})")"""),
        ("md", """## A contrastive circuit and its heads
Marks et al. (2024): explain logit(IO) - logit(S) on an IOI prompt against a corrupt prompt whose
second name is replaced. Edges are weighted by clean - corrupt activations; attention is frozen in
the graph, so the circuit's heads are listed apart, ranked by the estimated effect of patching
each head's output from the corrupt run."""),
        ("code", """task = load_task("ioi", s, None, n=1)
io, sub = s.to_str_tokens([task.correct[0][0]])[0], s.to_str_tokens([task.wrong[0][0]])[0]
c = contrastive_graph(s, task.clean[0], task.corrupt[0], io, sub, max_nodes=150, faithfulness_nodes=10,
                      progress=False)
cs = c.summary
print(task.clean[0], "|", task.corrupt[0])
print(f"logit diff clean {cs['metric_clean']:+.2f}, corrupt {cs['metric_corrupt']:+.2f}; "
      f"{cs['nodes']} nodes; faithfulness (live) {cs['faithfulness_spearman']:+.2f}")
print("heads:", [(h['layer'], h['head'], round(h['patch_effect'], 2)) for h in cs["heads"][:5]])"""),
        ("code", """path = export_html([view], "../out/tours/tour5_report.html", title="Tour 5")
print(path, f"{path.stat().st_size:,} bytes")"""),
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
