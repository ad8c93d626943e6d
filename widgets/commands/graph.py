"""``workbench graph``: the attribution graph of one prediction, exact over FFN memories.

    workbench graph "The Eiffel Tower is located in the city of" --target " Paris" --out out/graph
    workbench graph --prompt "..." --memories out/memories/index      # hover cards with triggers
    workbench graph --prompt "..." --basis transcoder --transcoders out/transcoders   # latents + error nodes
    workbench graph --prompt "..." --basis sae --saes out/saes       # residual SAE features + error nodes
    workbench graph --prompt "..." --target " Paris" --edit-subject "The Eiffel Tower" \\
        --edit-target " Rome"                                        # the graph before / after a ROME edit

Freezes the model's attention patterns, norm scales and FFN gates on the prompt; the residual
stream is then linear in the token embeddings and in every FFN unit's output m_i v_i, so each
unit's coefficient and each logit is exactly the sum of its incoming edges (plus bias). Edges
come from batched vector-Jacobian products; nodes are pruned by their influence on the chosen
logits; the top units are then ablated in the real model to measure faithfulness
(`workbench.graphs`). With --basis transcoder, the layers that have a saved transcoder
(`workbench sae train --transcoder`) are written by its active latents (TopK selection frozen)
plus one error node per position holding what it misses, so the graph stays exact; the other
layers keep their FFN units (--other-layers units) or become error nodes (errors). With --basis
sae, each residual site resid_post:L that has an SAE (`workbench sae train --site resid_post:L`,
or a SAELens folder) is replaced by the SAE's active features (active set frozen) plus one error
node per position (Marks et al. 2024); the FFN layers keep their units or become error nodes
(--other-layers). Writes OUT/graph.json (nodes, edges, settings, `summary` with `nodes`,
`edges`, `completeness`, `exactness_max_rel_error`, `faithfulness_spearman`, `seconds`; fields:
docs/cli.md) and OUT/graph.html (opens offline; hover a unit for its memory card).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from workbench.arguments import (
    add_model_args,
    add_prompt_args,
    check_model,
    check_path,
    check_positive,
    load_session,
    prompt_of,
)
from workbench.provenance import meta, write_json


def register(sub) -> None:
    p = sub.add_parser("graph", help="attribution graph of one prediction over FFN memories",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_prompt_args(p)
    p.add_argument("--target", default=None,
                   help="one token whose logit the graph explains (default: the top predictions)")
    p.add_argument("--basis", default="units", choices=["units", "transcoder", "sae"],
                   help="node basis (units: FFN memories, exact, no training; transcoder: latents of "
                        "--transcoders with error nodes; sae: features of --saes at residual sites "
                        "resid_post:L with error nodes)")
    p.add_argument("--transcoders", default=None,
                   help="with --basis transcoder: a folder of saved transcoders (OUT of `workbench sae "
                        "train --transcoder`, one layer_LL folder each) or one transcoder folder")
    p.add_argument("--saes", default=None,
                   help="with --basis sae: a folder of saved SAEs on resid_post:L sites (one SAE folder, "
                        "the OUT of `workbench sae train`, or sub-folders of either; SAELens folders too)")
    p.add_argument("--other-layers", default="units", choices=["units", "errors"],
                   help="with --basis transcoder: layers without a transcoder keep their FFN units, "
                        "or become one error node per position; with --basis sae: the same for every "
                        "FFN layer")
    p.add_argument("--keep", type=float, default=None,
                   help="share of the logits' influence the kept nodes must explain (default 0.8)")
    p.add_argument("--max-nodes", type=int, default=None, help="at most this many unit / latent nodes")
    p.add_argument("--skip-first-position", action="store_true",
                   help="units at position 0 (the attention sink) are not nodes "
                        "(GraphConfig.skip_first_position)")
    p.add_argument("--faithfulness", type=int, default=None,
                   help="top units / latents ablated in the real model to measure faithfulness (0: skip)")
    p.add_argument("--faithfulness-factor", type=float, default=None,
                   help="scale applied to each tested unit / latent in the real model: 0 ablates "
                        "(default), a value in (0, 1) scales partially")
    p.add_argument("--prediction", default=None, choices=["graph", "live"],
                   help="what faithfulness_spearman ranks against the measured effects: the graph's "
                        "path sums (graph, default) or attribution patching in the real model (live); "
                        "both are reported")
    p.add_argument("--memories", default=None,
                   help="a saved memory index (`workbench memories` OUT/index) for trigger prefixes")
    p.add_argument("--edit-subject", default=None, help="with --edit-target: ROME-edit this fact "
                                                        "and report the graph before and after")
    p.add_argument("--edit-target", default=None, help="the edit's new object")
    p.add_argument("--edit-layer", type=int, default=4, help="layer of that ROME edit")
    p.add_argument("--out", default="out/graph", help="output folder (graph.json, graph.html)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.set_defaults(func=run)


def _check(args) -> str:
    from workbench.errors import WorkbenchError
    from workbench.graphs import BASES, UnknownBasisError

    prompt = prompt_of(args)
    if args.basis not in BASES:
        raise UnknownBasisError(f"--basis={args.basis!r} is not implemented; implemented bases: {list(BASES)}")
    if (args.basis == "transcoder") != (args.transcoders is not None):
        raise WorkbenchError("--basis transcoder and --transcoders DIR go together")
    if (args.basis == "sae") != (args.saes is not None):
        raise WorkbenchError("--basis sae and --saes DIR go together")
    if args.keep is not None and not 0 < args.keep <= 1:
        raise WorkbenchError(f"--keep={args.keep} must be in (0, 1]")
    check_positive(max_nodes=args.max_nodes)
    if args.faithfulness is not None and args.faithfulness < 0:
        raise WorkbenchError(f"--faithfulness={args.faithfulness} must be >= 0")
    if args.faithfulness_factor is not None and not 0 <= args.faithfulness_factor < 1:
        raise WorkbenchError(f"--faithfulness-factor={args.faithfulness_factor} must be in [0, 1)")
    check_path(args.memories, "--memories", "dir")
    if (args.edit_subject is None) != (args.edit_target is None):
        raise WorkbenchError("--edit-subject and --edit-target go together")
    facts = check_model(args)
    if facts is not None and not 0 <= args.edit_layer < facts.n_layers:
        raise WorkbenchError(f"--edit-layer={args.edit_layer} is out of range (0..{facts.n_layers - 1})")
    if args.transcoders is not None:
        _check_transcoders(args, facts)
    if args.saes is not None:
        _check_saes(args, facts)
    return prompt


def _check_saes(args, facts) -> None:
    """The saved SAEs' configs (no weights) against --model and the supported sites, before the
    model loads (their widths are checked once it has)."""
    from workbench.arguments import check_layers
    from workbench.graphs.sae_sites import (
        SAE_SITES,
        SAEBasisError,
        read_sae_header,
        sae_dirs,
        same_model,
    )
    from workbench.hooks import parse_site

    check_path(args.saes, "--saes", "dir")
    supported = ", ".join(f"{k}:L" for k in SAE_SITES)
    seen: dict[str, str] = {}
    for d in sae_dirs(args.saes):
        site, _, model = read_sae_header(d)
        if model and not same_model(model, args.model):
            raise SAEBasisError(f"--saes: {str(d)!r} (site {site or '-'}) was trained on model {model!r}, "
                                f"not {args.model!r}")
        at = parse_site(site) if site else None
        if at is None or at.kind not in SAE_SITES:
            raise SAEBasisError(f"--saes: {str(d)!r} is an SAE at site {site or '(none)'!r}, which the sae "
                                f"basis does not support; supported sites: {supported} (the residual "
                                "leaving block L)")
        check_layers(facts, [at.layer], f"--saes: {str(d)!r} reads site {site}; layer")
        if site in seen:
            raise SAEBasisError(f"--saes: two SAEs for site {site} ({seen[site]!r} and {str(d)!r}); give one per site")
        seen[site] = str(d)


def _check_transcoders(args, facts) -> None:
    """The saved transcoders' configs (no weights) against --model, before the model loads."""
    from workbench.arguments import check_layers
    from workbench.saes.transcoder import (
        TranscoderMismatch,
        read_transcoder_config,
        transcoder_dirs,
    )

    check_path(args.transcoders, "--transcoders", "dir")
    for d in transcoder_dirs(args.transcoders):
        c = read_transcoder_config(d)
        if c.model and c.model != args.model:
            raise TranscoderMismatch(f"--transcoders: {str(d)!r} (layer {c.layer}) was trained on model "
                                     f"{c.model!r}, not {args.model!r}")
        check_layers(facts, [c.layer], f"--transcoders: {str(d)!r} replaces layer")


def run(args) -> int:
    prompt = _check(args)
    from widgets.html.graph import graph_figure, graph_summary_rows
    from widgets.html.report import HtmlReport
    from workbench.graphs import build_graph, graph_diff, memory_cards
    from workbench.memories import MemoryIndex

    s = load_session(args)
    overrides: dict[str, Any] = {k: v for k, v in (("basis", args.basis), ("keep", args.keep),
                                   ("max_nodes", args.max_nodes),
                                   ("faithfulness_nodes", args.faithfulness),
                                   ("faithfulness_factor", args.faithfulness_factor),
                                   ("prediction", args.prediction)) if v is not None}
    if args.skip_first_position:
        overrides["skip_first_position"] = True
    if args.transcoders is not None:
        from workbench.saes.transcoder import load_transcoders

        overrides.update(transcoders=load_transcoders(args.transcoders, s, device=s.device),
                         other_layers=args.other_layers)
    if args.saes is not None:
        from workbench.graphs import load_saes

        overrides.update(saes=load_saes(args.saes, s, device=s.device), other_layers=args.other_layers)
    progress = not args.no_progress
    g = build_graph(s, prompt, args.target, progress=progress, **overrides)
    index = MemoryIndex.load(args.memories) if args.memories else None
    cards = memory_cards(s, g, index=index, limit=60)
    data = {"meta": meta(s, command="graph"), **g.to_dict(),
            "memory_cards": {k: c.to_dict() for k, c in cards.items()}}
    diff = after = None
    if args.edit_subject:
        from editing import EditRequest, RomeConfig, apply, compute_rome_update, key_stats
        from workbench.corpus import Corpus

        corpus = Corpus.load(Path(__file__).resolve().parents[2] / "data" / "corpus" / "natural",
                             s.tokenizer, max_tokens=30_000)
        stats = key_stats(s, args.edit_layer, corpus, n_tokens=20_000, progress=progress)
        upd = compute_rome_update(s, EditRequest(prompt, args.edit_subject, args.edit_target), stats,
                                  RomeConfig(steps=15, prefixes_per_length=2))
        with apply(s, upd):
            after = build_graph(s, prompt, args.target, progress=progress, **overrides)
        diff = graph_diff(g, after)
        data["edit"] = {"subject": args.edit_subject, "target": args.edit_target,
                        "layer": args.edit_layer, "after": after.to_dict(), "diff": diff.to_dict()}
    out = Path(args.out)
    write_json(out / "graph.json", data)
    rep = HtmlReport("Attribution graph", f"model {s.name} · prompt {prompt!r}")
    rep.text("Each node is a token embedding (bottom), an FFN memory (unit i of a layer at a "
             "position), a transcoder latent or error node (--basis transcoder), an SAE feature or "
             "error node at a residual site (--basis sae, drawn between layers) or a logit (top); "
             "an edge is the direct effect of its source on its target in the frozen model. Hover "
             "a unit for what its value writes.")
    rep.table(graph_summary_rows(g), caption="summary")
    rep.figure(graph_figure(g, cards))
    rep.table([{"node": n.id, "label": n.label, "activation": n.activation, "influence": n.influence}
               for n in g.nodes[:40]], caption="top nodes by influence")
    if after is not None and diff is not None:
        rep.heading(f"After the edit {args.edit_subject!r} → {args.edit_target!r} (layer {args.edit_layer})")
        rep.figure(graph_figure(after, memory_cards(s, after, index=index, limit=60)))
        rep.table([{"node": c.id, "before": c.before, "after": c.after, "delta": c.delta}
                   for c in diff.nodes[:25]], caption="nodes whose influence changed most")
    rep.save(out / "graph.html")
    sm = g.summary
    tested = "units" if g.basis == "units" else "units / features"
    def r(key: str) -> str:  # a rank correlation as printed (None when not measured, nan when < 3 nodes)
        v = sm.get(key)
        return "n/a" if v is None else f"{v:+.2f}"

    print(f"graph: {sm['nodes']} nodes, {sm['edges']} edges, completeness {sm['completeness']:.3f}, "
          f"exactness {sm['exactness_max_rel_error']:.2e}, faithfulness "
          f"{r('faithfulness_spearman')} ({sm.get('faithfulness_prediction')}; graph "
          f"{r('faithfulness_spearman_graph')}, live {r('faithfulness_spearman_live')}) over "
          f"{sm.get('faithfulness_nodes')} {tested} at positions >= 1 "
          f"(attention-sink {tested} at position 0: {r('faithfulness_spearman_sink')} over "
          f"{sm.get('faithfulness_sink_nodes')}), {sm['seconds']:.1f} s")
    if sm.get("replacement_score") is not None:
        what = "SAE features" if g.basis == "sae" else "latents"
        print(f"{g.basis} basis: {sm['features_kept']} {what}, {sm['units_kept']} units, {sm['errors_kept']} "
              f"error nodes kept; replacement score {sm['replacement_score']:.3f} "
              f"(unpruned {sm['replacement_score_unpruned']:.3f})")
    print(f"json: {out / 'graph.json'}\nhtml: {out / 'graph.html'}")
    return 0
