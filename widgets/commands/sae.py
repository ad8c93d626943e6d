"""``workbench sae``: train, evaluate and inspect sparse autoencoders.

    workbench sae train --site resid_post:15 --arch topk --expansion 16 --k 64 \\
        --corpus ../shared/data/corpus --tokens 600000 --out out/sae
    workbench sae train --transcoder --layer 2,7,12 --expansion 4 --k 64 \\
        --corpus ../shared/data/corpus/wikitext2_valid.txt --tokens 80000 --epochs 2 --out out/transcoders
    workbench sae eval out/sae/final --corpus ../shared/data/corpus --tokens 8192
    workbench sae features out/sae/final --corpus ../shared/data/corpus --top 24 --out out/sae/features

train writes OUT/final (sae.json + sae.safetensors), OUT/checkpoints/step_N, OUT/metrics.json
and OUT/dashboard.html (with --transcoder: one transcoder per --layer, FFN input mlp_in -> FFN
output mlp_out, TopK, affine skip unless --no-skip, all layers from one activation stream; it
writes OUT/layer_LL with transcoder.json + transcoder.safetensors and OUT/metrics.json with
held-out FVU, L0 and loss recovered per layer, which `workbench graph --basis transcoder
--transcoders OUT` reads); eval writes a metrics JSON; features writes features.json and
features.html. JSON fields: docs/cli.md. ``features --lens tuned|jacobian`` reads each decoder
row through that saved lens's linear part (`workbench.saes.decoder_vocab`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.arguments import (
    add_lens_arg,
    add_model_args,
    check_lens,
    check_model,
    check_path,
    load_session,
)
from workbench.provenance import meta, write_json
from workbench.session import Session


def register(sub) -> None:
    p = sub.add_parser("sae", help="train, evaluate and inspect sparse autoencoders",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ss = p.add_subparsers(dest="sae_command", metavar="ACTION")
    t = ss.add_parser("train", help="train an SAE (or transcoders) on streamed activations")
    add_model_args(t)
    t.add_argument("--site", default=None, help="hook site, e.g. resid_post:15, attn_z:3")
    t.add_argument("--transcoder", action="store_true",
                   help="train transcoders (FFN input -> FFN output) for --layer instead of an SAE")
    t.add_argument("--layer", default=None, help="with --transcoder: layer(s), e.g. 12 or 2,7,12")
    t.add_argument("--head", type=int, default=None, help="one head of a per-head site")
    t.add_argument("--arch", default=None, choices=["topk", "relu", "jumprelu"], help="SAE kind (default topk)")
    t.add_argument("--expansion", type=int, default=None,
                   help="latents = expansion x d_in (default 16; transcoders 4)")
    t.add_argument("--k", type=int, default=64, help="active latents (topk, transcoders)")
    t.add_argument("--no-skip", action="store_true", help="transcoders without the affine skip x W_skip")
    t.add_argument("--l1", type=float, default=5.0, help="L1 coefficient (relu)")
    t.add_argument("--l0", type=float, default=1e-3, help="L0 coefficient (jumprelu)")
    t.add_argument("--corpus", required=True, help="text file, directory of .txt, or hf:NAME")
    t.add_argument("--tokens", type=int, default=None,
                   help="training vectors, repeats included (default 600000; transcoders 80000)")
    t.add_argument("--epochs", type=int, default=None,
                   help="passes over the harvested activations (default 1; transcoders 2)")
    t.add_argument("--batch-size", type=int, default=None, help="default 4096; transcoders 256")
    t.add_argument("--lr", type=float, default=None, help="default 4e-4; transcoders 4e-3")
    t.add_argument("--window", type=int, default=None, help="tokens per window (default 128; transcoders 64)")
    t.add_argument("--eval-tokens", type=int, default=None,
                   help="held-out vectors (default 8192; transcoders 2048)")
    t.add_argument("--ce-tokens", type=int, default=1024,
                   help="transcoders: held-out tokens scored for loss recovered (0 skips it)")
    t.add_argument("--checkpoint-every", type=int, default=0)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--out", default=None, help="output folder (default out/sae; transcoders out/transcoders)")
    t.add_argument("--no-progress", action="store_true")
    t.set_defaults(func=cmd_train)
    e = ss.add_parser("eval", help="L0, FVU, dead/dense latents and loss recovered")
    add_model_args(e)
    e.add_argument("sae", help="SAE directory (ours or SAELens layout)")
    e.add_argument("--corpus", required=True)
    e.add_argument("--tokens", type=int, default=8192)
    e.add_argument("--window", type=int, default=128)
    e.add_argument("--seed", type=int, default=0, help="same seed as training = its held-out windows")
    e.add_argument("--out", default=None, help="JSON path (default SAE_DIR/eval.json)")
    e.set_defaults(func=cmd_eval)
    f = ss.add_parser("features", help="top-activating examples, histograms, vocabulary reading")
    add_model_args(f)
    f.add_argument("sae")
    f.add_argument("--corpus", required=True)
    f.add_argument("--features", default=None, help="comma-separated latent ids (default: most frequent)")
    f.add_argument("--top", type=int, default=16, help="features shown when --features is not given")
    f.add_argument("--examples", type=int, default=8)
    f.add_argument("--tokens", type=int, default=32768)
    f.add_argument("--out", default=None, help="folder (default SAE_DIR/features)")
    add_lens_arg(f, "decoder rows are read")
    f.set_defaults(func=cmd_features)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def _check(args, sae_dir: bool = False) -> None:
    """Paths and the model, before the model loads."""
    if sae_dir:
        check_path(args.sae, "SAE", "dir")
    if not str(args.corpus).startswith("hf:"):
        check_path(args.corpus, "--corpus")
    check_model(args)


def _corpus(session: Session, path, max_tokens=None):
    from workbench.corpus import Corpus

    return Corpus.load(path, session.tokenizer, max_tokens=max_tokens)


def cmd_train(args) -> int:
    from workbench.errors import WorkbenchError
    from workbench.hooks import parse_site
    from workbench.saes import SAEConfig, TrainConfig, evaluate_sae, train_sae
    from workbench.saes.sites import site_d_in

    from .sae_transcoder import SAE_DEFAULTS, cmd_train_transcoders, fill_defaults

    if args.transcoder:
        return cmd_train_transcoders(args)
    if args.site is None:
        raise WorkbenchError("sae train needs --site (an SAE) or --transcoder --layer L (transcoders)")
    if args.layer is not None or args.no_skip:
        raise WorkbenchError("--layer and --no-skip go with --transcoder")
    fill_defaults(args, SAE_DEFAULTS)
    parse_site(args.site)
    _check(args)
    s = load_session(args)
    d_in = site_d_in(s, parse_site(args.site).check(s), args.head)
    scfg = SAEConfig(args.arch, d_in, args.expansion * d_in, site=args.site, head=args.head,
                     k=args.k, l1_coefficient=args.l1, l0_coefficient=args.l0)
    tcfg = TrainConfig(total_tokens=args.tokens, epochs=args.epochs, batch_size=args.batch_size,
                       lr=args.lr, window=args.window, eval_tokens=args.eval_tokens,
                       buffer_tokens=max(args.batch_size * 8, 65536),
                       checkpoint_every=args.checkpoint_every, seed=args.seed)
    corpus = _corpus(s, args.corpus)
    out = Path(args.out)
    res = train_sae(s, corpus, scfg, tcfg, out_dir=out, progress=not args.no_progress)
    ev = evaluate_sae(s, res.sae, corpus, max_tokens=max(args.eval_tokens, 256),
                      window=args.window, seed=args.seed)
    data = {"meta": meta(s), "sae": scfg.to_dict(), "train": tcfg.to_dict(),
            "tokens": res.tokens, "seconds": res.seconds, "tokens_per_second": res.tokens_per_second,
            "scale": res.scale, **ev.to_dict(), "history": res.history,
            "paths": {"final": str(out / "final"), "dashboard": str(out / "dashboard.html")}}
    write_json(out / "metrics.json", data)
    _dashboard(s, res.sae, corpus, data, out / "dashboard.html", features=None, top=12, examples=6,
               tokens=16384)
    r, sp = ev.reconstruction, ev.splice
    print(f"SAE {args.site}: L0 {r.l0:.1f}  FVU {r.fvu:.3f}  dead {r.dead}/{r.d_sae}"
          + (f"  loss recovered {sp.loss_recovered:.1%}" if sp else ""))
    print(f"json: {out / 'metrics.json'}\nhtml: {out / 'dashboard.html'}")
    return 0


def cmd_eval(args) -> int:
    from workbench.saes import evaluate_sae, load_sae

    _check(args, sae_dir=True)
    s = load_session(args)
    sae = load_sae(args.sae, session=s, device=s.device)
    ev = evaluate_sae(s, sae, _corpus(s, args.corpus), max_tokens=args.tokens, window=args.window,
                      seed=args.seed)
    path = Path(args.out) if args.out else Path(args.sae) / "eval.json"
    write_json(path, {"meta": meta(s), "sae": sae.cfg.to_dict(), "eval_tokens": args.tokens,
                      "window": args.window, "seed": args.seed, **ev.to_dict()})
    r, sp = ev.reconstruction, ev.splice
    print(f"L0 {r.l0:.1f}  FVU {r.fvu:.3f}  dead {r.dead}  dense {r.dense}"
          + (f"  CE clean {sp.ce_clean:.3f} sae {sp.ce_sae:.3f} zero {sp.ce_zero:.3f}"
             f"  loss recovered {sp.loss_recovered:.1%}" if sp else ""))
    print(f"json: {path}")
    return 0


def cmd_features(args) -> int:
    from workbench.saes import load_sae

    from .lens import read_lens

    check_lens(args.lens)
    _check(args, sae_dir=True)
    s = load_session(args)
    reader = read_lens(s, args.lens, None)        # a missing / foreign lens fails before any work
    sae = load_sae(args.sae, session=s, device=s.device)
    feats = [int(x) for x in args.features.split(",")] if args.features else None
    out = Path(args.out) if args.out else Path(args.sae) / "features"
    data = {"meta": meta(s), "sae": sae.cfg.to_dict(), "lens_kind": args.lens}
    data = _dashboard(s, sae, _corpus(s, args.corpus), data, out / "features.html", feats,
                      args.top, args.examples, args.tokens, lens=reader)
    write_json(out / "features.json", data)
    print(f"json: {out / 'features.json'}\nhtml: {out / 'features.html'}")
    return 0


def _dashboard(s, sae, corpus, data, path, features, top, examples, tokens, lens="logit") -> dict:
    """Harvest features and render a standalone HTML dashboard; adds `features` to `data`
    (decoder rows read through `lens`, a kind or a loaded reader)."""
    import torch

    from widgets.html.figures_sae import (
        feature_histogram,
        frequency_histogram,
        training_curves,
        vocab_bar,
    )
    from widgets.html.report import HtmlReport, escape
    from workbench.lenses import kind_of
    from workbench.saes import decoder_vocab, feature_contexts, harvest_features

    h_all = harvest_features(s, sae, corpus, features=None, k=examples, max_tokens=tokens)
    if features is None:
        order = h_all.frequencies.argsort(descending=True)
        features = [int(i) for i in order[:top] if h_all.frequencies[i] > 0]
    idx = torch.as_tensor([int(f) for f in features])
    rep = HtmlReport(f"SAE dashboard: {sae.cfg.site}",
                     f"{sae.cfg.architecture}, d_in {sae.d_in}, d_sae {sae.d_sae}, model {s.name}")
    if "reconstruction" in data:
        rep.heading("Metrics").table([{**data["reconstruction"], **(data.get("splice") or {})}])
    if data.get("history"):
        rep.figure(training_curves(data["history"]))
    rep.figure(frequency_histogram(h_all.frequencies.tolist()))
    rows = []
    for f in idx.tolist():
        i = h_all.index(f)
        voc = decoder_vocab(s, sae, f, k=8, lens=lens)
        ctx = feature_contexts(corpus, h_all, f, before=20, after=3)
        rows.append({"feature": f, "frequency": float(h_all.frequencies[i]),
                     "max_activation": float(h_all.top_values[i, 0]),
                     "top_tokens": list(voc.top_tokens), "top_logits": list(voc.top_logits),
                     "bottom_tokens": list(voc.bottom_tokens), "examples": ctx,
                     "histogram": h_all.histograms[i].tolist()})
        rep.heading(f"Feature {f}  (fires on {float(h_all.frequencies[i]):.3%} of tokens)", 3)
        rep.html("<table>" + "".join(
            f"<tr><td class='num'>{c['value']:.3g}</td><td>{escape(c['before'])}"
            f"<span class='tok'>{escape(c['token'])}</span>{escape(c['after'])}</td></tr>"
            for c in ctx) + "</table>")
        rep.figure(feature_histogram(h_all.histograms[i].tolist(), h_all.edges.tolist(), f))
        rep.figure(vocab_bar(voc.top_tokens, voc.top_logits,
                             f"feature {f}: decoder row, top logits ({kind_of(lens)} lens)"))
    rep.save(path)
    data["features"] = rows
    data["harvest_tokens"] = h_all.n_tokens
    data["dead_in_harvest"] = int((h_all.frequencies == 0).sum())
    return data
