"""Causal tracing (Meng et al. 2022), batched: which hidden states carry a fact.

Run the prompt three ways:

    clean      p_clean   = p(answer | prompt)
    corrupted  p_corrupt = p(answer | prompt, subject embeddings + eps),  eps ~ N(0, (s * sigma)^2)
    restored   p[l, t]   = corrupted run, but the state at (layer l, token t) set to its clean value

sigma is the standard deviation of the embedding output measured on a corpus, s = 3 by
default. Kinds: ``resid`` restores the block output (resid_post) at one layer; ``mlp`` and
``attn`` restore the raw sublayer outputs (mlp_out / attn_out) at a window of layers centred on
l (ROME's window of 10). The indirect effect is p[l, t] - p_corrupt, averaged over noise samples.

Every (cell, noise sample) is one row of a batch: a whole grid takes a few forward passes
instead of one per cell (`rows_per_batch` = samples gives the one-pass-per-cell loop).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
from tqdm.auto import tqdm

from workbench._types import Float, Tensor
from workbench.errors import WorkbenchError
from workbench.session import Session

from ._prompts import SubjectPrompt, locate_subject, target_id

log = logging.getLogger(__name__)

__all__ = ["TraceConfig", "TraceResult", "trace_fact", "embedding_std", "ffn_peak_layer",
           "subject_last_curve", "KINDS", "DEFAULT_FACTS"]

# kind -> hook name of the state restored at one layer
KINDS = {
    "resid": "blocks.{l}.hook_resid_post",
    "mlp": "blocks.{l}.mlp.hook_out",
    "attn": "blocks.{l}.attn.hook_out",
}


class _Stop(Exception):
    pass


@dataclass(frozen=True)
class TraceConfig:
    """Settings of a causal trace.

    Args:
        kinds: which states to restore, from ``resid``, ``mlp``, ``attn``.
        samples: noise samples averaged per cell (ROME: 10; 3 by default to keep one trace on
            a CPU short: the cost is kinds x layers x prompt tokens x samples forward rows).
        noise_scale: noise std as a multiple of the embedding std (ROME: 3).
        window: layers restored together for ``mlp`` / ``attn`` (ROME: 10).
        seed: seeds the noise (drawn on the CPU, so every device gets the same noise).
        rows_per_batch: rows per forward pass (0: as many as `max_logit_elems` allows).
        max_logit_elems: bound on rows * positions * d_vocab per forward (memory).
    """

    kinds: tuple[str, ...] = ("resid", "mlp", "attn")
    samples: int = 3
    noise_scale: float = 3.0
    window: int = 10
    seed: int = 0
    rows_per_batch: int = 0
    max_logit_elems: int = 200_000_000

    def __post_init__(self):
        bad = [k for k in self.kinds if k not in KINDS]
        if bad or not self.kinds:
            raise WorkbenchError(f"kinds={self.kinds!r}: each must be one of {sorted(KINDS)}")
        if self.samples < 1:
            raise WorkbenchError(f"samples={self.samples} must be >= 1")
        if not self.noise_scale >= 0:
            raise WorkbenchError(f"noise_scale={self.noise_scale} must be >= 0")
        if self.window < 1:
            raise WorkbenchError(f"window={self.window} must be >= 1")
        if self.rows_per_batch < 0:
            raise WorkbenchError(f"rows_per_batch={self.rows_per_batch} must be >= 0")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TraceConfig:
        d = dict(d)
        d["kinds"] = tuple(d.get("kinds", cls.kinds))
        return cls(**d)


@dataclass(frozen=True)
class TraceResult:
    """One traced fact.

    Args:
        prompt, subject: the fact; `subject_span` = (start, end) token positions.
        answer, answer_id: the token whose probability is traced.
        str_tokens: the prompt's tokens.
        clean_prob, corrupted_prob: p(answer) clean and with the subject corrupted (noise mean).
        scores: kind -> [layer pos] p(answer) with that state restored (noise mean).
        noise_std: sigma * noise_scale actually used.
    """

    prompt: str
    subject: str
    answer: str
    answer_id: int
    str_tokens: tuple[str, ...]
    subject_span: tuple[int, int]
    clean_prob: float
    corrupted_prob: float
    scores: dict[str, Float[Tensor, "layer pos"]] = field(repr=False)
    noise_std: float
    config: TraceConfig

    def indirect_effect(self, kind: str) -> Float[Tensor, "layer pos"]:
        """p(answer | restored) - p(answer | corrupted)."""
        return self.scores[kind] - self.corrupted_prob

    def subject_last_curve(self, kind: str) -> Float[Tensor, " layer"]:
        """Indirect effect at the subject's last token, per layer."""
        return self.indirect_effect(kind)[:, self.subject_span[1] - 1]

    def to_dict(self) -> dict:
        return {
            "prompt": self.prompt, "subject": self.subject, "answer": self.answer,
            "answer_id": self.answer_id, "str_tokens": list(self.str_tokens),
            "subject_span": list(self.subject_span), "clean_prob": self.clean_prob,
            "corrupted_prob": self.corrupted_prob, "noise_std": self.noise_std,
            "scores": {k: v.tolist() for k, v in self.scores.items()},
            "indirect_effect": {k: self.indirect_effect(k).tolist() for k in self.scores},
            "config": self.config.to_dict(),
        }


@torch.no_grad()
def embedding_std(session: Session, corpus, max_tokens: int = 20_000) -> float:
    """Standard deviation of the embedding output (all elements) over corpus tokens."""
    vals = []

    def grab(act, hook=None):
        vals.append(act.detach().float().flatten())
        raise _Stop

    n = 0
    for wb in corpus.batches(session, window=128, tokens_per_batch=4096, max_tokens=max_tokens,
                             progress=False):
        try:
            with session.hooks([("hook_embed", grab)]):
                session.model(wb.tokens)
        except _Stop:
            pass
        n += wb.tokens.numel()
        if n >= max_tokens:
            break
    return float(torch.cat(vals).std())


def _cells(kind: str, n_layers: int, n_pos: int, window: int) -> list[tuple[int, list[int]]]:
    """For each (layer, pos) cell: the layers whose state gets restored."""
    out = []
    for layer in range(n_layers):
        if kind == "resid":
            layers = [layer]
        else:
            layers = list(range(max(0, layer - window // 2), min(n_layers, layer - (-window // 2))))
        for pos in range(n_pos):
            out.append((pos, layers))
    return out


@torch.no_grad()
def trace_fact(session: Session, prompt: str, subject: str, noise_std: float, answer: str | None = None,
               config: TraceConfig | None = None, progress: bool = False) -> TraceResult:
    """Trace one fact: restored-probability grids for each kind in `config.kinds`.

    Args:
        prompt: the prompt (contains `subject`, or ``{}`` where it goes).
        subject: the subject's text.
        noise_std: the embedding std sigma (see `embedding_std`); noise is `noise_scale * sigma`.
        answer: the traced token (one token); default the model's top-1 next token.
    """
    cfg = config or TraceConfig()
    sp: SubjectPrompt = locate_subject(session, prompt, subject)
    T, L = len(sp.ids), session.n_layers
    tokens = torch.tensor([sp.ids], device=session.device)
    logits = session.model(tokens, return_type="logits")[0, -1].float()
    if answer is None:
        ans_id = int(logits.argmax())
    else:
        ans_id = target_id(session, sp.text, answer)
    clean_prob = float(torch.softmax(logits, -1)[ans_id])
    sigma = float(noise_std) * cfg.noise_scale
    noise = _noise(session, cfg, sp, sigma)
    clean = _clean_states(session, tokens, cfg.kinds)

    rows_per = cfg.rows_per_batch or max(cfg.samples, cfg.max_logit_elems // (T * session.d_vocab))
    scores: dict[str, Tensor] = {}
    corrupted = None
    total = cfg.samples + sum(len(_cells(k, L, T, cfg.window)) for k in cfg.kinds) * cfg.samples
    bar = tqdm(total=total, desc="trace", unit="row", disable=not progress, leave=False)
    for k in cfg.kinds:
        cells = _cells(k, L, T, cfg.window)
        # row = (cell index or -1 for the plain corrupted run, noise sample); cell-major order
        rows = [(-1, s) for s in range(cfg.samples)] if corrupted is None else []
        rows += [(c, s) for c in range(len(cells)) for s in range(cfg.samples)]
        probs = torch.empty(len(rows))
        bar.set_postfix_str(k)
        for lo in range(0, len(rows), rows_per):
            chunk = rows[lo : lo + rows_per]
            probs[lo : lo + len(chunk)] = _run_rows(session, tokens, sp, noise, chunk, cells, clean[k],
                                                    KINDS[k], ans_id)
            bar.update(len(chunk))
        if corrupted is None:
            corrupted = float(probs[: cfg.samples].mean())
            probs = probs[cfg.samples :]
        scores[k] = probs.view(L, T, cfg.samples).mean(-1)
    bar.close()
    assert corrupted is not None  # set by the first kind; TraceConfig rejects empty kinds
    ids = list(sp.ids)
    return TraceResult(
        prompt=sp.text, subject=subject, answer=session.tokenizer.decode([ans_id]), answer_id=ans_id,
        str_tokens=tuple(session.to_str_tokens(ids)), subject_span=(sp.start, sp.end),
        clean_prob=clean_prob, corrupted_prob=float(corrupted), scores=scores, noise_std=sigma,
        config=cfg,
    )


def _noise(session: Session, cfg: TraceConfig, sp: SubjectPrompt, sigma: float) -> Tensor:
    """[samples n_subj d_model] noise for the subject's tokens, drawn on the CPU from cfg.seed."""
    gen = torch.Generator().manual_seed(cfg.seed)
    noise = torch.randn(cfg.samples, sp.end - sp.start, session.d_model, generator=gen) * sigma
    return noise.to(session.device, session.dtype)


def _clean_states(session: Session, tokens: Tensor, kinds: Sequence[str]) -> dict[str, list[Tensor]]:
    """kind -> the clean state at every layer ([pos d_model] each), from one forward pass."""
    L = session.n_layers
    got: dict[str, dict[int, Tensor]] = {k: {} for k in kinds}
    saves = []
    for k in kinds:
        for layer in range(L):
            def save(act, hook=None, k=k, layer=layer):
                got[k][layer] = act[0].detach().clone()
            saves.append((KINDS[k].format(l=layer), save))
    with session.hooks(saves):
        session.model(tokens, return_type=None)
    return {k: [got[k][layer] for layer in range(L)] for k in kinds}


def _run_rows(session: Session, tokens, sp: SubjectPrompt, noise: Tensor, rows: Sequence[tuple[int, int]],
              cells, clean_states: list[Tensor], template: str, ans_id: int) -> Tensor:
    """One forward pass of corrupted rows, each restoring its cell; p(answer) per row."""
    B = len(rows)
    batch = tokens.expand(B, -1)
    sample_idx = torch.tensor([s for _, s in rows], device=tokens.device)
    per_layer: dict[int, tuple[list[int], list[int]]] = {}
    for r, (c, _) in enumerate(rows):
        if c < 0:
            continue
        pos, layers = cells[c]
        for layer in layers:
            rr, pp = per_layer.setdefault(layer, ([], []))
            rr.append(r)
            pp.append(pos)

    def corrupt(act, hook=None):
        act = act.clone()
        act[:, sp.start : sp.end] += noise[sample_idx].to(act.dtype)
        return act

    def restorer(layer: int):
        rr = torch.tensor(per_layer[layer][0], device=tokens.device)
        pp = torch.tensor(per_layer[layer][1], device=tokens.device)
        src = clean_states[layer]

        def fn(act, hook=None):
            act = act.clone()
            act[rr, pp] = src[pp].to(act.dtype)
            return act

        return fn

    last: list[Tensor] = []

    def stop(act, hook=None):
        # the answer is read at the last position only: keep that residual and skip the
        # unembedding of every other position (about a fifth of the forward on SmolLM2)
        last.append(act[:, -1])
        raise _Stop

    hooks = [("hook_embed", corrupt)]
    hooks += [(template.format(l=layer), restorer(layer)) for layer in sorted(per_layer)]
    hooks += [(f"blocks.{session.n_layers - 1}.hook_resid_post", stop)]
    try:
        with session.hooks(hooks):
            session.model(batch, return_type=None)
    except _Stop:
        pass
    logits = session.unembed(last[0]).float()
    return torch.softmax(logits, -1)[:, ans_id].cpu()


@torch.no_grad()
def subject_last_curve(session: Session, prompt: str, subject: str, noise_std: float, kind: str = "mlp",
                       answer: str | None = None, config: TraceConfig | None = None) -> Float[Tensor, " layer"]:
    """Indirect effect of restoring `kind` at the subject's last token, per layer.

    Equals ``trace_fact(...).subject_last_curve(kind)`` (same noise, same rows) but runs only
    that column of the grid: layers x samples rows instead of layers x tokens x samples, which
    is what choosing an edit layer needs.
    """
    if kind not in KINDS:
        raise WorkbenchError(f"kind={kind!r} must be one of {sorted(KINDS)}")
    cfg = config or TraceConfig(kinds=(kind,))
    sp: SubjectPrompt = locate_subject(session, prompt, subject)
    L = session.n_layers
    tokens = torch.tensor([sp.ids], device=session.device)
    logits = session.model(tokens, return_type="logits")[0, -1].float()
    ans_id = int(logits.argmax()) if answer is None else target_id(session, sp.text, answer)
    noise = _noise(session, cfg, sp, float(noise_std) * cfg.noise_scale)
    clean = _clean_states(session, tokens, (kind,))[kind]
    pos = sp.end - 1
    cells = [(pos, layers) for p, layers in _cells(kind, L, 1, cfg.window) if p == 0]
    rows = [(-1, s) for s in range(cfg.samples)] + [(c, s) for c in range(L) for s in range(cfg.samples)]
    rows_per = cfg.rows_per_batch or max(cfg.samples, cfg.max_logit_elems // (len(sp.ids) * session.d_vocab))
    probs = torch.cat([_run_rows(session, tokens, sp, noise, rows[lo : lo + rows_per], cells, clean,
                                 KINDS[kind], ans_id) for lo in range(0, len(rows), rows_per)])
    corrupted = probs[: cfg.samples].mean()
    return probs[cfg.samples :].view(L, cfg.samples).mean(-1) - corrupted


# a few facts every small English LM knows, for choosing a layer when no fact file is given
DEFAULT_FACTS: tuple[tuple[str, str], ...] = (
    ("The Eiffel Tower is located in the city of", "The Eiffel Tower"),
    ("The Colosseum is located in the city of", "The Colosseum"),
    ("The capital of Japan is the city of", "Japan"),
    ("Barack Obama was born in the state of", "Barack Obama"),
    ("The mother tongue of Vladimir Putin is", "Vladimir Putin"),
    ("Microsoft was founded by Bill", "Microsoft"),
)


def ffn_peak_layer(session: Session, facts, noise_std: float, config: TraceConfig | None = None,
                   progress: bool = False) -> tuple[int, list[float]]:
    """The layer where the mean FFN indirect effect at the subject's last token peaks.

    Args:
        facts: (prompt, subject) pairs.
    Returns:
        (layer, the mean curve [layer]).
    """
    cfg = config or TraceConfig(kinds=("mlp",), samples=3)
    if "mlp" not in cfg.kinds:
        raise WorkbenchError(f"kinds={cfg.kinds!r} must include 'mlp' to find the FFN peak")
    if not facts:
        raise WorkbenchError("facts is empty; give at least one (prompt, subject) pair")
    curves = [subject_last_curve(session, p, s, noise_std, "mlp", config=cfg)
              for p, s in tqdm(facts, desc="FFN peak", unit="fact", disable=not progress, leave=False)]
    mean = torch.stack(curves).mean(0)
    return int(mean.argmax()), mean.tolist()
