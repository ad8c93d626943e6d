"""``workbench lens``: logit lens of a prompt and the top FFN sub-updates (Geva et al. 2022).

    workbench lens "The Eiffel Tower is in the city of" --target " Paris" --out out/lens
    workbench lens --prompt "The Eiffel Tower is in the city of"       # same; OUT defaults to out/lens

Reads the residual stream (resid_pre, resid_mid, resid_post of every layer) in the vocabulary
with the model's final norm and unembedding, follows the target's rank and probability across
layers (default target: the model's own top next token), and splits the FFN update of
``--layer`` (default: every layer, summarised) at the last position into sub-updates m_i v_i
ranked by |m_i| ||v_i|| and by their effect on the target's logit. Writes OUT/lens.json
(fields: docs/cli.md) and OUT/lens.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.arguments import (
    add_model_args,
    add_prompt_args,
    check_layers,
    check_model,
    check_positive,
    load_session,
    prompt_of,
)
from workbench.provenance import meta, write_json


def register(sub) -> None:
    p = sub.add_parser("lens", help="logit lens + top FFN sub-updates for a prompt",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    add_prompt_args(p)
    p.add_argument("--out", default="out/lens", help="output folder (lens.json, lens.html)")
    p.add_argument("--target", default=None, help="a single token to follow (default: the top prediction)")
    p.add_argument("--layer", type=int, action="append",
                   help="layer whose sub-updates are listed in full (repeatable; default: the 3 layers "
                        "whose FFN adds most to the target's logit)")
    p.add_argument("--k", type=int, default=10, help="sub-updates listed per ranking")
    p.add_argument("--top", type=int, default=5, help="lens tokens kept per position")
    p.set_defaults(func=run)


def _tokens(ts) -> list[dict]:
    return [{"token": t.token, "id": t.id, "score": t.score} for t in ts]


def _sub(r) -> dict:
    return {"neuron": r.neuron, "coefficient": r.coefficient, "value_norm": r.value_norm,
            "magnitude": r.magnitude, "target_effect": r.target_effect,
            "promoted": [t.token for t in r.promoted]}


def run(args) -> int:
    prompt = prompt_of(args)
    check_positive(k=args.k, top=args.top)
    check_layers(check_model(args), args.layer)      # all before the model loads (and torch)

    from widgets.html.figures_vocab import (
        direct_effects_figure,
        logit_lens_heatmap,
        sub_update_bars,
        target_curve,
    )
    from widgets.html.report import HtmlReport
    from workbench.direct_effects import direct_effects
    from workbench.vocab import ffn_sub_updates, logit_lens, written_tokens

    s = load_session(args)
    args.prompt = prompt
    if args.target is not None:
        s.token_id(args.target)          # one clear TokenError before any work
        note = target_note(s, args.target)
        if note:
            print(note, file=sys.stderr)
    lens = logit_lens(s, args.prompt, [args.target] if args.target else None, k=args.top)
    target = lens.targets[0]
    effects = direct_effects(s, args.prompt, target)          # what reaches the residual
    written = written_tokens(s, args.prompt, "mlp_resid", -1, 5)
    per_layer: list[dict[str, Any]] = [{"layer": layer, "ffn_target_effect": effects.ffn[layer],
                  "attn_target_effect": effects.attn[layer],
                  "top_promoted": [t.token for t in written[layer]]} for layer in range(s.n_layers)]
    chosen = args.layer or [r["layer"] for r in sorted(per_layer, key=lambda r: -r["ffn_target_effect"])[:3]]
    subs_all = {layer: ffn_sub_updates(s, args.prompt, layer, -1, target, k=args.k) for layer in chosen}
    kinds = list(lens.kinds)
    post = kinds.index("resid_post")
    n = len(lens.str_tokens)
    data = {
        "meta": meta(s),
        "prompt": args.prompt,
        "str_tokens": list(lens.str_tokens),
        "target": target,
        "target_id": int(lens.target_ids[0]),
        "final_prob": float(lens.final_probs[-1, 0]),
        "first_top1_layer": lens.first_top1_layer(0),
        "lens": [{"layer": layer,
                  **{f"{kd}_prob": float(lens.target_probs[ki, layer, -1, 0]) for ki, kd in enumerate(kinds)},
                  **{f"{kd}_rank": int(lens.target_ranks[ki, layer, -1, 0]) for ki, kd in enumerate(kinds)},
                  "top_tokens": [{"token": lens.top_strs[post][layer][n - 1][j],
                                  "prob": float(lens.top_probs[post, layer, -1, j])} for j in range(args.top)]}
                 for layer in range(s.n_layers)],
        "ffn_layers": per_layer,
        "direct_effects": effects.to_dict(),
        "sub_updates": [{"layer": layer, "position": subs_all[layer].position, "token": subs_all[layer].token,
                         "by_magnitude": [_sub(r) for r in subs_all[layer].by_magnitude],
                         "by_target": [_sub(r) for r in subs_all[layer].by_target],
                         "update_promoted": _tokens(subs_all[layer].update_promoted)} for layer in chosen],
    }
    out = Path(args.out)
    write_json(out / "lens.json", data)
    rep = HtmlReport("Logit lens and FFN sub-updates", f"model {s.name} · prompt {args.prompt!r}")
    rep.heading(f"Target {target!r}: p = {data['final_prob']:.3f} at the output; first top-1 at layer "
                f"{data['first_top1_layer']}")
    rep.figure(target_curve(lens))
    rep.figure(logit_lens_heatmap(lens))
    rep.heading("Direct effect on the target's logit per layer (what each sublayer writes into the "
                "residual, through the frozen final norm)")
    rep.text(f"Embedding {effects.embedding:+.2f} + attention {sum(effects.attn):+.2f} + FFN "
             f"{sum(effects.ffn):+.2f} + bias {effects.bias:+.2f} = {effects.total:+.2f}; the model's "
             f"logit is {effects.logit:+.2f}.")
    rep.figure(direct_effects_figure(effects))
    rep.table([{"layer": r["layer"], "FFN effect": r["ffn_target_effect"],
                "attention effect": r["attn_target_effect"],
                "FFN update promotes": " ".join(r["top_promoted"])} for r in per_layer])
    for layer in chosen:
        rep.heading(f"Layer {layer}", 3)
        rep.figure(sub_update_bars(subs_all[layer], "target"))
        rep.figure(sub_update_bars(subs_all[layer], "magnitude"))
    rep.save(out / "lens.html")
    print(f"target {target!r}: p={data['final_prob']:.3f}, first top-1 at layer {data['first_top1_layer']}; "
          f"layers listed: {chosen}")
    print(f"json: {out / 'lens.json'}\nhtml: {out / 'lens.html'}")
    return 0


def target_note(s, target: str) -> str | None:
    """A note when `target` lacks the leading space the model writes after a word (and the spaced
    form is one token too): names both tokens, so "--target Paris" is not followed silently."""
    spaced = " " + target
    if target.startswith((" ", "\n")) or len(s.tokenizer.encode(spaced, add_special_tokens=False)) != 1:
        return None
    return (f"note: --target {target!r} is token {target!r} (id {s.token_id(target)}); after a word "
            f"the model writes {spaced!r} (id {s.token_id(spaced)}); following {target!r} as given "
            f"(pass --target {spaced!r} for the other)")
