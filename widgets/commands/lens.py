"""``workbench lens``: logit lens of a prompt and the top FFN sub-updates (Geva et al. 2022).

    workbench lens "The Eiffel Tower is in the city of" --target " Paris" --out out/lens
    workbench lens --prompt "The Eiffel Tower is in the city of"       # same; OUT defaults to out/lens

Reads the residual stream (resid_pre, resid_mid, resid_post of every layer) in the vocabulary
with the model's final norm and unembedding, follows the target's rank and probability across
layers (default target: the model's own top next token), and splits the FFN update of
``--layer`` (default: every layer, summarised) at the last position into sub-updates m_i v_i
ranked by |m_i| ||v_i|| and by their effect on the target's logit. ``--lens tuned`` or
``--lens jacobian`` also reads each layer's resid_post through a saved tuned lens (Belrose et al.
2023) or Jacobian lens (TransformerLens 4.3) next to the logit lens, and the sub-updates and FFN
updates through its linear part (`workbench.lenses`; the logit-lens fields stay as they are;
``workbench lens-train`` trains and saves a lens). Writes OUT/lens.json (fields: docs/cli.md)
and OUT/lens.html.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from workbench.arguments import (
    LENS_KINDS,
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
    p.add_argument("--lens", default="logit", choices=LENS_KINDS,
                   help="lens that reads each layer's resid_post next to the logit lens (tuned / "
                        "jacobian: a saved lens, see --lens-path)")
    p.add_argument("--lens-path", default=None,
                   help="safetensors file of the tuned / Jacobian lens (default: the workbench cache "
                        "path for the model)")
    p.set_defaults(func=run)


TRAIN_HINT = {
    "tuned": "workbench lens-train --lens tuned --model {model} (in Python: "
             "workbench.lenses.train_tuned_lens(s, corpus).save(session=s))",
    "jacobian": "workbench lens-train --lens jacobian --model {model} (in Python: "
                "workbench.lenses.fit_jacobian_lens(s, prompts).save(session=s))",
}


def read_lens(s, kind: str, path: str | None):
    """The reader of `kind` (workbench.lenses.load_lens), or one error naming how to make one."""
    from workbench.lenses import LensNotFound, load_lens

    try:
        return load_lens(s, kind, path)
    except LensNotFound as exc:
        raise LensNotFound(f"--lens {kind}: {str(exc).split('; ')[0]}; train and save a {kind} lens for "
                           "this model first with: " + TRAIN_HINT[kind].format(model=s.name)) from None


def lens_rows(s, prompt: str, reader, target_id: int, top: int) -> list[dict]:
    """Per layer, at the last position: the target's probability and rank, and the top tokens,
    of resid_post read through `reader` (None where the lens has no translator for the layer)."""
    import torch

    from workbench.capture import capture
    from workbench.errors import WorkbenchError

    cap = capture(s, prompt, [f"resid_post:{layer}" for layer in range(s.n_layers)])
    last = int(cap.batch.lengths[0]) - 1
    rows: list[dict[str, Any]] = []
    for layer in range(s.n_layers):
        try:
            with torch.no_grad():
                logp = reader.logits(s, cap[f"resid_post:{layer}"][0, last], layer).float().log_softmax(-1)
        except WorkbenchError:              # a lens trained on a subset of layers
            rows.append({"prob": None, "rank": None, "top_tokens": None})
            continue
        tp, ti = logp.topk(top)
        rows.append({"prob": float(logp[target_id].exp()), "rank": int((logp > logp[target_id]).sum()),
                     "top_tokens": [{"token": t, "prob": float(p)}
                                    for t, p in zip(s.to_str_tokens(ti), tp.exp().tolist())]})
    return rows


def _tokens(ts) -> list[dict]:
    return [{"token": t.token, "id": t.id, "score": t.score} for t in ts]


def _sub(r, via_lens) -> dict:
    """One sub-update; `via_lens`: the same sub-update read through the --lens lens."""
    return {"neuron": r.neuron, "coefficient": r.coefficient, "value_norm": r.value_norm,
            "magnitude": r.magnitude, "target_effect": r.target_effect,
            "promoted": [t.token for t in r.promoted],
            "lens_promoted": [t.token for t in via_lens.promoted]}


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
    reader = read_lens(s, args.lens, args.lens_path)     # a missing / foreign lens fails before any work
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
    # directions read through the --lens lens too (its linear part; the logit fields stay as they are)
    logit = args.lens == "logit"
    written_l = written if logit else written_tokens(s, args.prompt, "mlp_resid", -1, 5, lens=reader)
    per_layer: list[dict[str, Any]] = [{"layer": layer, "ffn_target_effect": effects.ffn[layer],
                  "attn_target_effect": effects.attn[layer],
                  "top_promoted": [t.token for t in written[layer]],
                  "lens_top_promoted": [t.token for t in written_l[layer]]} for layer in range(s.n_layers)]
    chosen = args.layer or [r["layer"] for r in sorted(per_layer, key=lambda r: -r["ffn_target_effect"])[:3]]
    subs_all = {layer: ffn_sub_updates(s, args.prompt, layer, -1, target, k=args.k) for layer in chosen}
    subs_l = subs_all if logit else {layer: ffn_sub_updates(s, args.prompt, layer, -1, target, k=args.k,
                                                             lens=reader) for layer in chosen}
    kinds = list(lens.kinds)
    post = kinds.index("resid_post")
    n = len(lens.str_tokens)
    chosen_rows = lens_rows(s, args.prompt, reader, int(lens.target_ids[0]), args.top)
    data = {
        "meta": meta(s),
        "lens_kind": args.lens,
        "lens_path": None if args.lens == "logit" else str(getattr(reader, "path", None) or args.lens_path
                                                          or default_lens_path(s, args.lens)),
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
                                  "prob": float(lens.top_probs[post, layer, -1, j])} for j in range(args.top)],
                  "lens_prob": chosen_rows[layer]["prob"], "lens_rank": chosen_rows[layer]["rank"],
                  "lens_top_tokens": chosen_rows[layer]["top_tokens"]}
                 for layer in range(s.n_layers)],
        "ffn_layers": per_layer,
        "direct_effects": effects.to_dict(),
        "sub_updates": [{"layer": layer, "position": subs_all[layer].position, "token": subs_all[layer].token,
                         "by_magnitude": [_sub(r, rl) for r, rl in zip(subs_all[layer].by_magnitude,
                                                                       subs_l[layer].by_magnitude)],
                         "by_target": [_sub(r, rl) for r, rl in zip(subs_all[layer].by_target,
                                                                    subs_l[layer].by_target)],
                         "update_promoted": _tokens(subs_all[layer].update_promoted),
                         "lens_update_promoted": _tokens(subs_l[layer].update_promoted)} for layer in chosen],
    }
    data["lens_first_top1_layer"] = next((r["layer"] for r in data["lens"] if r["lens_rank"] == 0), None)
    out = Path(args.out)
    write_json(out / "lens.json", data)
    rep = HtmlReport("Logit lens and FFN sub-updates", f"model {s.name} · prompt {args.prompt!r}")
    rep.heading(f"Target {target!r}: p = {data['final_prob']:.3f} at the output; first top-1 at layer "
                f"{data['first_top1_layer']}")
    rep.figure(target_curve(lens))
    rep.figure(logit_lens_heatmap(lens))
    if args.lens != "logit":
        rep.heading(f"Logit lens and {args.lens} lens: the target at the last position, per layer", 3)
        rep.text(f"The {args.lens} lens translates each layer's resid_post before the final norm and "
                 "unembedding; where it finds the target earlier or surer than the logit lens, the "
                 "layer holds the answer in a form the output does not read directly.")
        rep.table([{"layer": r["layer"], "logit lens p": r["resid_post_prob"], "logit lens rank": r["resid_post_rank"],
                    f"{args.lens} lens p": r["lens_prob"], f"{args.lens} lens rank": r["lens_rank"],
                    f"{args.lens} lens top": " ".join(repr(t["token"]) for t in (r["lens_top_tokens"] or [])[:3])}
                   for r in data["lens"]], digits=3)
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


def default_lens_path(s, kind: str) -> str:
    from workbench.lenses import default_path

    return str(default_path(s, kind))


def target_note(s, target: str) -> str | None:
    """A note when `target` lacks the leading space the model writes after a word (and the spaced
    form is one token too): names both tokens, so "--target Paris" is not followed silently."""
    spaced = " " + target
    if target.startswith((" ", "\n")) or len(s.tokenizer.encode(spaced, add_special_tokens=False)) != 1:
        return None
    return (f"note: --target {target!r} is token {target!r} (id {s.token_id(target)}); after a word "
            f"the model writes {spaced!r} (id {s.token_id(spaced)}); following {target!r} as given "
            f"(pass --target {spaced!r} for the other)")
