"""``workbench lens-train``: train a tuned lens or fit a Jacobian lens for a model, and save it.

    workbench lens-train --lens tuned --steps 300 --tokens 4096        # the project's corpus
    workbench lens-train --lens jacobian --tokens 512 --corpus my_texts/

Trains on the first ``--tokens`` tokens of ``--corpus`` (default: the project's natural text,
data/corpus/natural) and measures, on the ``--held-tokens`` tokens that follow them (never
trained on; ``--held-start`` moves them further on), the mean KL(p_final || q_lens) per layer of the logit lens, the new lens and any
other lens already saved for the model. ``tuned``: `workbench.lenses.train_tuned_lens`
(Belrose et al. 2023; ``--steps`` SGD steps of ``--batch`` tokens, every layer at once).
``jacobian``: `workbench.lenses.fit_jacobian_lens` (TransformerLens 4.3's `JacobianLens.fit`) on
the training tokens cut into ``--window``-token prompts. Prints an estimate of the time (from one
timed step here) before it starts, shows a progress bar, saves the lens to ``--save`` (default:
the workbench cache path that ``workbench lens --lens KIND`` and the widgets read), and writes
OUT/lens_train.json (fields: docs/cli.md) and OUT/lens_train.html.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from workbench.arguments import (
    add_model_args,
    check_model,
    check_path,
    check_positive,
    load_session,
)
from workbench.errors import ShapeError, WorkbenchError, choices
from workbench.provenance import meta, write_json

PROJECT_CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "natural"
TRAINABLE = ("tuned", "jacobian")
SKIP = 16                         # TransformerLens DEFAULT_SKIP_FIRST_POSITIONS
DEFAULTS: dict[str, dict[str, float]] = {"tuned": {"steps": 250, "batch": 32, "lr": 0.1, "tokens": 4096},
            "jacobian": {"dim_batch": 16, "tokens": 256}}


def register(sub) -> None:
    p = sub.add_parser("lens-train", help="train a tuned lens / fit a Jacobian lens and save it",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_args(p)
    p.add_argument("--lens", default="tuned", help=f"the lens to train: {' or '.join(TRAINABLE)}")
    p.add_argument("--corpus", default=None,
                   help="a .txt file, a folder of them, or hf:NAME[:SPLIT] (default: data/corpus/natural)")
    p.add_argument("--tokens", type=int, default=None,
                   help="corpus tokens trained on (default 4096 tuned, 256 jacobian)")
    p.add_argument("--held-tokens", type=int, default=512,
                   help="held-out tokens after the training ones, for the KL curve")
    p.add_argument("--held-start", type=int, default=None,
                   help="stream offset where the held-out text starts (default: --tokens; at least "
                        "--tokens, e.g. to measure on text another lens was not trained on either)")
    p.add_argument("--window", type=int, default=128, help="window / prompt length in tokens")
    p.add_argument("--steps", type=int, default=None, help="tuned: SGD steps (default 250)")
    p.add_argument("--batch", type=int, default=None, help="tuned: tokens per step (default 32)")
    p.add_argument("--lr", type=float, default=None, help="tuned: learning rate (default 0.1)")
    p.add_argument("--dim-batch", type=int, default=None,
                   help="jacobian: output dimensions per backward pass (default 16)")
    p.add_argument("--seed", type=int, default=0, help="tuned: token sampling seed")
    p.add_argument("--save", default=None,
                   help="safetensors file to write (default: the workbench cache path for the model)")
    p.add_argument("--out", default="out/lens-train", help="output folder (lens_train.json, .html)")
    p.set_defaults(func=run)


def check(args) -> None:
    """Every flag, before the model loads (and before torch is imported)."""
    if args.lens not in TRAINABLE:
        extra = "; the logit lens has nothing to train" if args.lens == "logit" else ""
        raise WorkbenchError(f"--lens={args.lens!r} is not a trainable lens; choose "
                             f"{choices(TRAINABLE)}{extra}")
    other = "jacobian" if args.lens == "tuned" else "tuned"
    for flag in DEFAULTS[other]:
        if flag not in DEFAULTS[args.lens] and getattr(args, flag) is not None:
            raise WorkbenchError(f"--{flag.replace('_', '-')} applies to the {other} lens only; "
                                 f"this run trains a {args.lens} lens")
    for flag, v in DEFAULTS[args.lens].items():
        if getattr(args, flag) is None:
            setattr(args, flag, v)
    if args.lens == "tuned":
        check_positive(steps=args.steps, batch=args.batch, lr=args.lr)
    else:
        check_positive(dim_batch=args.dim_batch)
    check_positive(tokens=args.tokens, held_tokens=args.held_tokens, window=args.window)
    if args.window < 2:
        raise ShapeError(f"--window={args.window} is too short; use at least 2 tokens")
    if args.lens == "jacobian" and args.window <= SKIP + 1:
        raise ShapeError(f"--window={args.window} is too short for the Jacobian lens: TransformerLens "
                         f"skips the first {SKIP} positions of each prompt; use more than {SKIP + 1}")
    if args.tokens < args.window:
        raise ShapeError(f"--tokens={args.tokens} is shorter than one --window={args.window}")
    if args.held_start is None:
        args.held_start = args.tokens
    elif args.held_start < args.tokens:
        raise ShapeError(f"--held-start={args.held_start} is inside the training tokens "
                         f"(0..{args.tokens - 1}); use at least --tokens={args.tokens}")
    if args.corpus is not None and not str(args.corpus).startswith("hf:"):
        check_path(args.corpus, "--corpus")
    if args.save is not None and Path(args.save).expanduser().is_dir():
        raise WorkbenchError(f"--save={args.save!r} is a directory; give a .safetensors file path")
    check_model(args)


def _split(s, args):
    """(training corpus, held corpus): the first --tokens tokens and the --held-tokens from
    --held-start on."""
    from workbench.corpus import Corpus

    src = args.corpus or PROJECT_CORPUS
    corpus = Corpus.load(src, s.tokenizer, max_tokens=args.held_start + args.held_tokens)
    need = args.held_start + min(args.held_tokens, args.window)
    if len(corpus) < need:
        raise WorkbenchError(f"corpus {corpus.name!r} has {len(corpus)} tokens; held text from "
                             f"{args.held_start} plus one window of {args.window} needs {need}")
    name, start = corpus.name, args.held_start
    train = Corpus(f"{name}[:{args.tokens}]", corpus.ids[: args.tokens], s.tokenizer)
    held = Corpus(f"{name}[{start}:{len(corpus)}]", corpus.ids[start:], s.tokenizer)
    return src, train, held


def _train(s, args, train) -> tuple[Any, dict, float, float]:
    """The trained lens, its settings, the estimate (printed before training) and the seconds
    training took."""
    from workbench import lenses

    if args.lens == "tuned":
        cfg = lenses.TunedLensConfig(steps=args.steps, batch=args.batch, lr=args.lr,
                                     max_tokens=args.tokens, window=args.window, seed=args.seed)
        est = lenses.estimate_tuned_seconds(s, cfg)
        print(f"training a tuned lens for {s.name}: {cfg.steps} steps of {cfg.batch} tokens x "
              f"{s.n_layers} layers, {len(train)} tokens of {train.name}; estimate {_dur(est)} here",
              file=sys.stderr)
        t0 = time.perf_counter()
        return lenses.train_tuned_lens(s, train, cfg), cfg.to_dict(), est, time.perf_counter() - t0
    ids = train.ids[: len(train) // args.window * args.window].reshape(-1, args.window)
    prompts = [s.tokenizer.decode(row.tolist()) for row in ids]
    est = lenses.estimate_jacobian_seconds(s, len(prompts), args.window, args.dim_batch)
    print(f"fitting a Jacobian lens for {s.name}: {len(prompts)} prompts of {args.window} tokens "
          f"of {train.name}, dim_batch {args.dim_batch}; estimate {_dur(est)} here", file=sys.stderr)
    t0 = time.perf_counter()
    lens = lenses.fit_jacobian_lens(s, prompts, corpus=train.name, dim_batch=args.dim_batch,
                                    max_seq_len=args.window)
    settings = {"n_prompts": len(prompts), "window": args.window, "dim_batch": args.dim_batch}
    return lens, settings, est, time.perf_counter() - t0


def _dur(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _others(s, trained: str) -> tuple[dict, dict]:
    """Other lenses saved for this model at their default paths: {kind: reader}, {kind: note}."""
    from workbench.lenses import LensNotFound, default_path, load_lens

    readers, notes = {}, {}
    for kind in TRAINABLE:
        if kind == trained:
            continue
        try:
            readers[kind] = load_lens(s, kind)
            notes[kind] = str(default_path(s, kind))
        except LensNotFound:
            notes[kind] = "none saved"
        except WorkbenchError as exc:            # saved for another model, or refused
            notes[kind] = f"not compared: {exc}"
    return readers, notes


def run(args) -> int:
    check(args)

    from widgets.html.moe import lens_kl_figure
    from widgets.html.report import HtmlReport
    from workbench.lenses import LogitReader, default_path, lens_kl, load_lens

    s = load_session(args)
    src, train, held = _split(s, args)
    lens, settings, estimate, seconds = _train(s, args, train)
    path = Path(args.save).expanduser() if args.save else default_path(s, args.lens)
    lens.save(path)
    back = load_lens(s, args.lens, path)                  # the file reads back for this model
    others, notes = _others(s, args.lens)
    readers = {"logit": LogitReader(), args.lens: back, **others}
    kl = lens_kl(s, held, readers, max_tokens=args.held_tokens, window=args.window)
    rows = kl.rows()
    below = [r["layer"] for r in rows[:-1] if r[args.lens] < r["logit"]]
    data: dict[str, Any] = {
        "meta": meta(s),
        "lens_kind": args.lens,
        "lens_path": str(path),
        "corpus": str(src),
        "train_tokens": len(train),
        "held_tokens": kl.n_tokens,
        "held_range": [args.held_start, args.held_start + kl.n_tokens],
        "settings": settings,
        "estimate_seconds": estimate,
        "train_seconds": seconds,
        "first_loss": lens.meta.get("first_loss"),
        "final_loss": lens.meta.get("final_loss"),
        "compared": notes,
        "kl": kl.to_dict(),
        "rows": rows,
        "below_logit_layers": below,
        "below_logit_everywhere": len(below) == len(rows) - 1,
    }
    out = Path(args.out)
    write_json(out / "lens_train.json", data)
    rep = HtmlReport(f"{args.lens.capitalize()} lens for {s.name}",
                     f"trained on {len(train)} tokens of {src}; KL on {kl.n_tokens} held tokens from "
                     f"offset {args.held_start}")
    rep.text(f"Saved to {path}. Training took {_dur(seconds)} (estimate {_dur(estimate)}). The "
             f"{args.lens} lens is below the logit lens at {len(below)} of the {len(rows) - 1} layers "
             "below the last (at the last layer every lens reads the output itself).")
    rep.figure(lens_kl_figure(kl))
    rep.table(rows, digits=3)
    rep.json_block({k: v for k, v in data.items() if k not in ("rows", "kl")}, "settings and provenance")
    rep.save(out / "lens_train.html")
    print(f"{args.lens} lens below the logit lens at {len(below)}/{len(rows) - 1} layers below the last; "
          f"mean KL logit {sum(kl.kl['logit']) / len(rows):.3f}, {args.lens} "
          f"{sum(kl.kl[args.lens]) / len(rows):.3f} nats")
    print(f"lens: {path}\njson: {out / 'lens_train.json'}\nhtml: {out / 'lens_train.html'}")
    return 0
