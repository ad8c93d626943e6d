"""The ``memory`` probe kind: FFN key-value memory tables per layer (workbench.memories).

Harvests every FFN key's top trigger prefixes over the battery corpus
(`workbench.memories.harvest`), then reports per layer

    agreement        share of keys whose value's top-k promoted tokens contain the token that
                     follows one of the key's top trigger prefixes (Geva et al. 2021)
    random_baseline  the same with values paired to random other keys
    composition      share of tokens whose FFN output top token is the top token of none of the
                     strongest memories
    active_share     mean over tokens of the share of keys active on the token, active meaning
                     |m_i| > threshold * max_j |m_j| (`workbench.moe.activation_sparsity`; gated
                     MLPs have no exact zeros), with its std over tokens and the keys never active
    positive_share   mean share of coefficients m_i > 0 (from the harvest's key frequencies)
    hoyer            Hoyer sparsity of |mean m_i| across keys: (sqrt(n) - |x|_1/|x|_2) / (sqrt(n) - 1)

and, in ``summary``, the mean agreement and baseline over the upper third of the model's layers
(layers >= L - L // 3) and over the lower third, with their ratios: Geva et al. find upper-layer
values predicting the next token of their keys' prefixes well above chance. ``note`` says in one
sentence what the section shows. ``corpus_path`` harvests from its own text instead of the
battery corpus (the demo uses real prose, data/corpus/natural, since template sentences put
agreement at chance).
"""

from __future__ import annotations

import importlib.util
import math
from typing import Any

from .context import ProbeContext, parse_layers
from .registry import Param, SpecError, register_kind

__all__ = ["run_memory", "sparsity_rows"]


def _available() -> str | None:
    for mod in ("workbench.memories", "workbench.moe"):
        if importlib.util.find_spec(mod) is None:
            return f"{mod} is not in this checkout"
    return None


def _check(params: dict, where: str) -> None:
    reason = _available()
    if reason:
        raise SpecError(f"{where}: probe kind 'memory' is unavailable: {reason}")
    layers = params["layers"]
    if not 0 < params["threshold"] < 1:
        raise SpecError(f"{where} threshold={params['threshold']} must be in (0, 1)")
    if isinstance(layers, str) and layers != "all":
        raise SpecError(f"{where} layers={layers!r} must be 'all' or a list of layer indices")
    for k in ("k", "k_tokens", "prefixes", "top_memories", "window"):
        if params[k] < 1:
            raise SpecError(f"{where} {k}={params[k]} must be >= 1")


def sparsity_rows(layers, frequency, mean) -> list[dict]:
    """Per-layer statistics from a memory index's [L d_mlp] key frequencies and mean m_i."""
    rows = []
    for i, layer in enumerate(layers):
        f, m = frequency[i].float(), mean[i].float().abs()
        n = m.numel()
        l1, l2 = float(m.sum()), float(m.norm())
        hoyer = (math.sqrt(n) - l1 / max(l2, 1e-30)) / (math.sqrt(n) - 1)
        rows.append({"layer": int(layer), "positive_share": float(f.mean()),
                     "hoyer_mean_coefficient": hoyer})
    return rows


@register_kind(
    "memory",
    params={
        "layers": Param((str, list), "all", doc="'all' or a list of layer indices"),
        "corpus_path": Param(str, "", doc="text to harvest from ('': the battery corpus)"),
        "k": Param(int, 10, doc="trigger prefixes kept per key"),
        "window": Param(int, 64, doc="corpus window for the harvest"),
        "max_tokens": Param(int, 0, doc="corpus tokens harvested (0: the battery's max_tokens)"),
        "k_tokens": Param(int, 10, doc="top promoted tokens of a value"),
        "prefixes": Param(int, 3, doc="top prefixes whose next token is checked"),
        "top_memories": Param(int, 10, doc="strongest memories for the composition share"),
        "composition_tokens": Param(int, 1024, doc="tokens sampled for composition (0: skip)"),
        "threshold": Param(float, 0.1, doc="active key: |m_i| > threshold * max_j |m_j| (moe)"),
    },
    doc="FFN key-value memories: per layer, how often a key's value promotes the token that "
        "follows its top trigger prefixes (vs random pairing), how often the FFN output is a "
        "composition of memories, and how sparsely the keys fire.",
    available=_available,
    check=_check,
)
def run_memory(ctx: ProbeContext, params: dict) -> dict:
    from workbench.memories import harvest
    from workbench.memory_agreement import agreement
    from workbench.moe import activation_sparsity

    s = ctx.session
    layers = parse_layers(params["layers"], s.n_layers, s.check_layer)
    corpus = ctx.corpus
    if params["corpus_path"]:
        from workbench.corpus import Corpus

        n = params["max_tokens"] or ctx.spec.max_tokens
        corpus = Corpus.load(params["corpus_path"], s.tokenizer, max_tokens=n + 1)
    else:
        n = min(params["max_tokens"] or ctx.spec.max_tokens, ctx.spec.max_tokens)
    index = harvest(s, corpus, layers=layers, k=params["k"], window=params["window"],
                    max_tokens=n, progress=ctx.progress)
    table = agreement(s, index, corpus, k_tokens=params["k_tokens"], prefixes=params["prefixes"],
                      top_memories=params["top_memories"],
                      composition_tokens=params["composition_tokens"],
                      seed=ctx.seed_for("memory"), progress=ctx.progress)
    spars = {r["layer"]: r for r in sparsity_rows(index.layers, index.frequency, index.mean)}
    act = activation_sparsity(s, corpus, layers=layers, threshold=params["threshold"],
                              window=params["window"], max_tokens=n)
    active = {r["layer"]: {"active_share": r["active_share"], "active_std": r["std"],
                           "dead_keys": r["dead_keys"]} for r in act.rows()}
    rows = [{**r, **active[r["layer"]], **{k: v for k, v in spars[r["layer"]].items() if k != "layer"}}
            for r in table.rows()]
    agree = [r["agreement"] for r in rows]
    base = [r["random_baseline"] for r in rows]
    bands = band_summary(rows, s.n_layers)
    return {"title": "FFN memories by layer", "corpus": str(params["corpus_path"] or ctx.spec.corpus),
            "note": agreement_note(bands), "n_tokens": index.n_tokens, "k": index.k,
            "k_tokens": table.k_tokens, "prefixes": table.prefixes,
            "top_memories": table.top_memories, "composition_tokens": table.composition_tokens,
            "threshold": act.threshold,
            "layers": rows,
            "summary": {"mean_agreement": sum(agree) / len(agree),
                        "mean_random_baseline": sum(base) / len(base),
                        "mean_active_share": sum(r["active_share"] for r in rows) / len(rows),
                        "best_layer": rows[max(range(len(rows)), key=lambda i: agree[i] - base[i])]["layer"],
                        **bands}}


def band_summary(rows: list[dict], n_layers: int) -> dict:
    """Mean agreement, baseline and their ratio over the upper and lower thirds of the layers.

    upper: layers >= L - L // 3; lower: layers < L // 3 (only the harvested ones count). The
    ratio is of the means (None when the band was not harvested or its baseline is 0).
    """
    third = n_layers // 3
    out: dict[str, Any] = {}
    for band, keep in (("upper", lambda layer: layer >= n_layers - third),
                       ("lower", lambda layer: layer < third)):
        sel = [r for r in rows if keep(r["layer"])]
        a = sum(r["agreement"] for r in sel) / len(sel) if sel else None
        b = sum(r["random_baseline"] for r in sel) / len(sel) if sel else None
        out[f"{band}_layers"] = [r["layer"] for r in sel]
        out[f"{band}_agreement"], out[f"{band}_baseline"] = a, b
        out[f"{band}_ratio"] = a / b if sel and b else None
    return out


def agreement_note(bands: dict) -> str:
    """One sentence on what the section shows, from the numbers themselves."""
    r = bands.get("upper_ratio")
    if r is None or not bands["upper_layers"]:
        return "Agreement by layer against its random baseline (the upper third was not harvested)."
    up = bands["upper_layers"]
    what = (f"Upper layers ({up[0]}-{up[-1]}): key/value agreement {bands['upper_agreement']:.3f} "
            f"against a random baseline of {bands['upper_baseline']:.3f} ({r:.1f}x)")
    if bands.get("lower_ratio"):
        what += f", lower layers {bands['lower_ratio']:.1f}x"
    verdict = ("upper-layer values promote the tokens that follow their keys' top prefixes, well "
               "above chance (Geva et al. 2021)" if r >= 2 else
               "close to chance on this text: a small or repetitive corpus hides the effect")
    return f"{what}: {verdict}."
