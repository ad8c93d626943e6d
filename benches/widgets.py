"""Widget round trip: a control change (zero one FFN sub-update) to the updated prediction and
redrawn figures, against the bare forward pass of the same prompt.

Model: the embedded default (SmolLM2-135M, real weights) on CPU (`--random`: random-init
weights of its shape, same timing); on CUDA `random_session`
(random-init weights of its shape, bf16) since real weights do not travel. Prompt: 32 tokens.
The prompt explorer runs inline (run_async=False), so the time covers: the ToggleButtons value
change -> callback -> `Controller.prompt_lens` (forward with the intervention, lens of the
changed cells) -> both FigureWidgets updated. Times keep -> zero of the top sub-update of
layer n_layers-2 at the last token (set back to keep, untimed, between reps); median of --reps.

    .venv/bin/python benches/widgets.py [--device auto|cpu|cuda] [--reps 15] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

# run as a script, this file's folder comes first on sys.path and its name would hide the
# `widgets` package: drop the folder
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

GOAL_MS = 300.0
PROMPT_WORDS = ("The Eiffel Tower is located in the city of Paris, which is the capital of France. "
                "Many people visit the tower every year to see the view over the river and the old")


def prompt_of(session, n_tokens: int = 32) -> str:
    """A prompt that is exactly `n_tokens` tokens for this tokenizer (BOS included)."""
    ids = session.encode(PROMPT_WORDS * 4)
    extra = len(ids) - len(session.tokenizer(PROMPT_WORDS * 4, add_special_tokens=False)["input_ids"])
    body = session.tokenizer(PROMPT_WORDS * 4, add_special_tokens=False)["input_ids"][: n_tokens - extra]
    text = session.tokenizer.decode(body)
    assert len(session.encode(text)) == n_tokens, len(session.encode(text))
    return text


def median_ms(fn, reps: int, sync) -> list[float]:
    out = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t) * 1e3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--out", default="out/bench/widgets.json")
    ap.add_argument("--random", action="store_true",
                    help="random-init weights of the default model's shape (same timing; for "
                         "machines without the embedded weights)")
    args = ap.parse_args()

    from widgets import Controller, PromptExplorer
    from workbench import Session
    from workbench.session import resolve_device
    from workbench.testing import random_session

    dev = resolve_device(args.device)
    if dev.type == "cuda":
        s = random_session(device=str(dev), dtype=torch.bfloat16)
        model = "random-init SmolLM2-135M shape, bf16"
    elif args.random:
        s = random_session(device="cpu", dtype=torch.float32)
        model = "random-init SmolLM2-135M shape, fp32"
    else:
        s = Session.load("smollm2-135m", device="cpu")
        model = "SmolLM2-135M (embedded), fp32"

    def sync():
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)

    prompt = prompt_of(s, 32)
    ctl = Controller(s)
    view = PromptExplorer(ctl.prompt_lens(prompt), ctl.prompt_lens, ctl.sub_updates, run_async=False)
    view.select(s.n_layers - 2, 31)
    toggle = view.sub_box.children[0].children[1]
    batch = s.tokenize(prompt)

    def forward():
        with torch.no_grad():
            s.model(batch.tokens, return_type="logits")

    def round_trip():  # timed: keep -> zero; then back to keep untimed (no forward needed)
        t = time.perf_counter()
        toggle.value = "zero"
        sync()
        ms = (time.perf_counter() - t) * 1e3
        assert view.lens.edits and view.lens.edits[0].factor == 0.0
        toggle.value = "keep"
        return ms

    for _ in range(3):  # warm-up
        forward()
        round_trip()
    fwd = median_ms(forward, args.reps, sync)
    rt = [round_trip() for _ in range(args.reps)]
    rows = [("bare forward (logits), 32 tokens", statistics.median(fwd)),
            ("round trip: zero sub-update -> redrawn figures", statistics.median(rt))]
    ratio = rows[1][1] / rows[0][1]
    print(f"device={dev} model={model} torch_threads={torch.get_num_threads()} reps={args.reps}")
    print(f"{'what':52s} {'median ms':>10s}")
    for what, ms in rows:
        print(f"{what:52s} {ms:10.1f}")
    print(f"ratio round trip / forward: {ratio:.2f}x; goal round trip < {GOAL_MS:.0f} ms: "
          f"{'met' if rows[1][1] < GOAL_MS else 'NOT met'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({
        "bench": "widgets", "device": str(dev), "model": model, "prompt_tokens": 32,
        "torch_threads": torch.get_num_threads(), "machine": platform.machine(), "reps": args.reps,
        "forward_ms": {"median": statistics.median(fwd), "all": fwd},
        "round_trip_ms": {"median": statistics.median(rt), "all": rt},
        "ratio": ratio, "goal_ms": GOAL_MS, "goal_met": rows[1][1] < GOAL_MS,
    }, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
