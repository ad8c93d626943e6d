"""``workbench sae train --transcoder``: transcoders for FFN layers (the `sae train` parser's
transcoder mode; the arguments are registered by `widgets.commands.sae`).

    workbench sae train --transcoder --layer 2,7,12,17,22,27 --expansion 4 --k 64 \\
        --corpus ../shared/data/corpus/wikitext2_valid.txt --tokens 80000 --epochs 2 --out out/transcoders

Checks every argument before the model loads, trains one transcoder per layer from one
activation stream (`workbench.saes.transcoder_train.train_transcoders`, with a progress bar),
writes OUT/layer_LL/transcoder.{json,safetensors} and OUT/metrics.json, and prints the held-out
FVU, L0 and loss recovered per layer and every path written. JSON fields: docs/cli.md.
"""

from __future__ import annotations

import time
from pathlib import Path

from workbench.arguments import check_layers, check_model, check_path, check_positive, load_session
from workbench.errors import WorkbenchError
from workbench.provenance import meta, write_json

__all__ = ["SAE_DEFAULTS", "TC_DEFAULTS", "fill_defaults", "parse_layers", "check_transcoder_args",
           "cmd_train_transcoders"]

# defaults that differ between SAEs and transcoders (None on the parser until filled)
SAE_DEFAULTS = {"arch": "topk", "expansion": 16, "tokens": 600_000, "epochs": 1, "batch_size": 4096, "lr": 4e-4,
                "window": 128, "eval_tokens": 8192, "out": "out/sae"}
TC_DEFAULTS = {"expansion": 4, "tokens": 80_000, "epochs": 2, "batch_size": 256, "lr": 4e-3, "window": 64,
               "eval_tokens": 2048, "out": "out/transcoders"}


def fill_defaults(args, table: dict) -> None:
    for k, v in table.items():
        if getattr(args, k, None) is None:
            setattr(args, k, v)


def parse_layers(text: str) -> list[int]:
    """``12`` or ``2,7,12`` -> [2, 7, 12] (each once)."""
    try:
        layers = [int(x) for x in str(text).split(",") if x.strip()]
    except ValueError:
        raise WorkbenchError(f"--layer={text!r} must be layer numbers, e.g. 12 or 2,7,12") from None
    if not layers or len(set(layers)) != len(layers):
        raise WorkbenchError(f"--layer={text!r} must name at least one layer, each once")
    return layers


def check_transcoder_args(args) -> list[int]:
    """Everything about --transcoder that can be checked before the model loads; the layers."""
    if args.site is not None or args.head is not None or args.arch not in (None, "topk"):
        raise WorkbenchError("--transcoder trains TopK transcoders of FFN layers: give --layer, "
                             "not --site / --head / --arch")
    if args.layer is None:
        raise WorkbenchError("--transcoder needs --layer (e.g. --layer 12 or --layer 2,7,12)")
    layers = parse_layers(args.layer)
    fill_defaults(args, TC_DEFAULTS)
    check_positive(expansion=args.expansion, k=args.k, tokens=args.tokens, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr)
    if args.window < 2:
        raise WorkbenchError(f"--window={args.window} is too short; use at least 2 tokens")
    if args.eval_tokens < 0 or args.ce_tokens < 0:
        raise WorkbenchError(f"--eval-tokens={args.eval_tokens} and --ce-tokens={args.ce_tokens} must be >= 0")
    if args.ce_tokens and not args.eval_tokens:
        raise WorkbenchError("--ce-tokens scores held-out windows: give --eval-tokens > 0 (or --ce-tokens 0)")
    facts = check_model(args)
    if not str(args.corpus).startswith("hf:"):
        check_path(args.corpus, "--corpus")
    check_layers(facts, layers)
    return layers


def cmd_train_transcoders(args) -> int:
    from workbench.corpus import Corpus
    from workbench.saes.transcoder import TranscoderConfig
    from workbench.saes.transcoder_train import TranscoderTrainConfig, train_transcoders

    layers = check_transcoder_args(args)
    s = load_session(args)
    d = s.d_model
    if args.k > args.expansion * d:
        raise WorkbenchError(f"--k={args.k} is out of range; valid range is 1..{args.expansion * d} "
                             f"(--expansion {args.expansion} x d_model {d})")
    cfgs = [TranscoderConfig(d_model=d, d_tc=args.expansion * d, k=args.k, layer=layer, skip=not args.no_skip)
            for layer in layers]
    tcfg = TranscoderTrainConfig(total_tokens=args.tokens, epochs=args.epochs, batch_size=args.batch_size,
                                 lr=args.lr, window=args.window, eval_tokens=args.eval_tokens,
                                 ce_tokens=args.ce_tokens, seed=args.seed)
    out = Path(args.out)
    corpus = Corpus.load(args.corpus, s.tokenizer)
    t0 = time.perf_counter()
    res = train_transcoders(s, corpus, cfgs, tcfg, out_dir=out, progress=not args.no_progress)
    total = time.perf_counter() - t0
    paths = {str(r.transcoder.cfg.layer): str(out / f"layer_{r.transcoder.cfg.layer:02d}") for r in res}
    data = {"meta": meta(s), "corpus": str(args.corpus), "train": tcfg.to_dict(),
            "seconds": res[0].seconds, "seconds_with_eval": total,
            "transcoders": [{"config": r.transcoder.cfg.to_dict(), "tokens": r.tokens,
                             "metrics": r.metrics.to_dict() if r.metrics else None, "history": r.history}
                            for r in res],
            "paths": paths}
    write_json(out / "metrics.json", data)
    for r in res:
        m, c = r.metrics, r.transcoder.cfg
        line = f"transcoder L{c.layer}: FVU {r.fvu:.3f}  L0 {r.l0:.1f}"
        if m is not None:
            line += f"  dead {m.dead}/{c.d_tc}"
            if m.ce_tokens:
                line += f"  loss recovered {m.loss_recovered:.1%}"
        print(line)
    print(f"trained in {data['seconds']:.0f} s (harvest included), {total:.0f} s with the held-out metrics")
    for layer, path in paths.items():
        print(f"layer {layer}: {path}")
    print(f"json: {out / 'metrics.json'}")
    return 0
