"""``workbench ffmaps``: FF blocks through the lens of attention maps (Kobayashi et al. 2024).

    workbench ffmaps "The Eiffel Tower is located in the city of Paris" --out out/ffmaps
    workbench ffmaps --prompt "..." --layers 3 10 17 --steps 32

Splits every vector a layer computes at position i into contributions from each input position
j, component by component (norm-based attention per head, residual, frozen-scale norms, the
gated FF block split by integrated gradients with STEPS quadrature points), and draws the
contextualisation maps after each component, the per-layer FF change and its cancellation by
the following residual / norm, and the token pairs whose mixing the FF block amplifies most
(`workbench.ffmaps`). Writes OUT/ffmaps.json (fields: docs/cli.md) and OUT/ffmaps.html.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.arguments import (
    add_model_args,
    add_prompt_args,
    check_layers,
    check_model,
    check_positive,
    load_session,
    prompt_of,
)
from workbench.errors import ShapeError
from workbench.provenance import meta, write_json

RULES = ("midpoint", "gauss")   # workbench.ffmaps.RULES, without importing torch before the checks


def register(sub) -> None:
    p = sub.add_parser("ffmaps", help="FF blocks through attention maps: contextualisation maps per component",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_prompt_args(p)
    p.add_argument("--layers", type=int, nargs="+", default=None,
                   help="blocks to decompose (default: every layer)")
    p.add_argument("--steps", type=int, default=64,
                   help="integrated-gradients quadrature points of the FF split (error ~1/steps^2)")
    p.add_argument("--rule", default="midpoint", choices=RULES, help="quadrature rule")
    p.add_argument("--top", type=int, default=10, help="amplified token pairs listed")
    p.add_argument("--min-share", type=float, default=0.01,
                   help="pairs need at least this share of the row before the FF block")
    p.add_argument("--out", default="out/ffmaps", help="output folder (ffmaps.json, ffmaps.html)")
    p.set_defaults(func=run)


def check_args(args) -> str:
    """Every argument checked before the model loads; returns the prompt."""
    prompt = prompt_of(args)
    check_positive(steps=args.steps, top=args.top)
    if not 0 <= args.min_share < 1:
        raise ShapeError(f"--min-share={args.min_share} must be in [0, 1)")
    if args.layers is not None and len(set(args.layers)) != len(args.layers):
        raise ShapeError(f"--layers {args.layers} names a layer twice; give each once")
    check_layers(check_model(args), args.layers, "--layers")
    return prompt


def run(args) -> int:
    prompt = check_args(args)

    from widgets.html.ffmaps import ff_change_figure, layer_rows, maps_slider_figure, pairs_rows
    from widgets.html.report import HtmlReport
    from workbench.ffmaps import ffmaps

    s = load_session(args)
    r = ffmaps(s, prompt, args.layers, steps=args.steps, rule=args.rule, top=args.top,
               min_share=args.min_share)
    out = Path(args.out)
    data = {"meta": meta(s), **r.to_dict()}
    write_json(out / "ffmaps.json", data)

    rep = HtmlReport("FF blocks through attention maps",
                     f"model {s.name} · prompt {prompt!r} · {len(r.layers)} layers · IG {r.steps} "
                     f"{r.rule} steps")
    lm0 = r.layers[0]
    rep.heading("Contextualisation maps after each component")
    rep.text("Row i shows how the vector at position i, after the named component, is made of the "
             "input tokens j (norm share of each source); move the slider to see where the FF "
             f"block ({lm0.scopes[lm0.ff_scope]}) reshapes a map and where the residual after it "
             "restores the map it was given.")
    rep.figure(maps_slider_figure(r))
    rep.heading("FF change and cancellation per layer")
    rep.text("1 − ff_rho and ff_change measure how much the FF block re-ranks and changes the map it "
             "receives; cancel_rho < 0 means the residual (and norm) after it push the map back, and "
             "ff_retained is the share of the FF's change that is still in the layer's output.")
    rep.figure(ff_change_figure(r))
    rep.table(layer_rows(r), digits=3)
    rep.heading("Token pairs the FF block amplifies most")
    rep.text("Each row is a query token reading a source token whose share of the query's vector "
             "the FF block raises most (gain = share after FF / share before; source 0 left out).")
    if r.pairs:
        rep.table(pairs_rows(r), digits=3)
    else:
        rep.text(f"No pair reaches --min-share={args.min_share} before the FF block.")
    rep.save(out / "ffmaps.html")
    worst = max(lm.errors[lm.ff_scope] for lm in r.layers)
    top = r.pairs[0] if r.pairs else None
    print(f"{len(r.layers)} layers; FF split max relative error {worst:.2e}; "
          + (f"top pair L{top.layer} {top.query!r} <- {top.source!r} x{top.gain:.2f}" if top else "no pairs"))
    print(f"json: {out / 'ffmaps.json'}\nhtml: {out / 'ffmaps.html'}")
    return 0
