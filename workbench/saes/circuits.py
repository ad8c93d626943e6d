"""Circuits from discrete SAE codes (O'Neill & Bui 2024, "Sparse Autoencoders Enable Scalable
and Reliable Circuit Identification in Language Models"), checked against activation patching.

SAE method: for every head h, a small TopK SAE is trained on the head's output at the last
token (site head_out, z_h W_O[h], [d_model]) over positive (clean) and negative (corrupt)
prompts. Each prompt's code at h is its set of active latents (k=1: one codebook index).
    score_h = share of positive prompts whose code never occurs among the negatives
Heads with high scores write something task-specific. All heads' SAEs train at once as one
batched SAE: W_enc [head d_model m].

Ground truth: patch one head's z (all positions) from the corrupt into the clean run and
measure  importance_h = (LD_clean - LD_patched) / (LD_clean - LD_corrupt)  with LD the logit
difference; the true circuit is the `n_true` heads of largest |importance|.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
from tqdm.auto import tqdm

from .._types import Float, Tensor
from ..capture import capture
from ..errors import WorkbenchError
from ..session import Session
from .tasks import CircuitTask

__all__ = ["CircuitConfig", "CircuitResult", "logit_diff", "head_patching_importance", "top_heads",
           "head_code_scores", "find_circuit"]


@dataclass
class CircuitConfig:
    """Args:
        d_sae: latents per head SAE. k: active latents per code (1 = a codebook).
        steps: full-batch Adam steps. lr: learning rate. n_true: size of the true circuit.
        n_pred: heads the SAE method predicts (default n_true). seed: init seed.
    """

    d_sae: int = 32
    k: int = 1
    steps: int = 300
    lr: float = 1e-2
    n_true: int = 10
    n_pred: int | None = None
    seed: int = 0

    def __post_init__(self):
        if self.d_sae < 2 or not 1 <= self.k <= self.d_sae:
            raise WorkbenchError(f"d_sae={self.d_sae} must be >= 2 and k={self.k} in 1..d_sae")
        if self.steps < 1 or self.lr <= 0 or self.n_true < 1:
            raise WorkbenchError("steps, lr and n_true must be positive")


@dataclass(frozen=True)
class CircuitResult:
    """Heads as (layer, head); scores and importances are [n_layers n_heads]."""

    task: str
    n_prompts: int
    code_scores: torch.Tensor
    importance: torch.Tensor
    true_heads: tuple[tuple[int, int], ...]
    predicted_heads: tuple[tuple[int, int], ...]
    precision: float
    recall: float
    sae_seconds: float
    patching_seconds: float
    ld_clean: float
    ld_corrupt: float
    ranked: tuple[tuple[int, int, float, float], ...] = field(repr=False, default=())

    def to_dict(self, top: int = 30) -> dict:
        return {"task": self.task, "n_prompts": self.n_prompts,
                "precision": self.precision, "recall": self.recall,
                "sae_seconds": self.sae_seconds, "patching_seconds": self.patching_seconds,
                "logit_diff_clean": self.ld_clean, "logit_diff_corrupt": self.ld_corrupt,
                "true_heads": [list(h) for h in self.true_heads],
                "predicted_heads": [list(h) for h in self.predicted_heads],
                "heads_ranked": [{"layer": la, "head": h, "code_score": s, "importance": i}
                                 for la, h, s, i in self.ranked[:top]]}


def logit_diff(logits, last, correct, wrong) -> torch.Tensor:
    """[batch] logit(correct) - mean logit(wrong) at each row's last token (means over sets)."""
    rows = logits[torch.arange(len(last), device=logits.device), last.to(logits.device)].float()
    out = []
    for r, c, w in zip(rows, correct, wrong):
        out.append(r[list(c)].mean() - r[list(w)].mean())
    return torch.stack(out)


@torch.no_grad()
def head_patching_importance(session: Session, task: CircuitTask, progress: bool = True) -> tuple[torch.Tensor, float, float]:
    """[n_layers n_heads] normalised effect of patching each head's z from corrupt into clean."""
    clean, corrupt = session.tokenize(list(task.clean)), session.tokenize(list(task.corrupt))
    if not torch.equal(clean.lengths, corrupt.lengths):
        raise WorkbenchError("clean and corrupt prompts must have equal token lengths pairwise; got "
                             f"{clean.lengths.tolist()} and {corrupt.lengths.tolist()}")
    sites = [f"attn_z:{layer}" for layer in range(session.n_layers)]
    cap = capture(session, corrupt, sites, logits=True)
    ld_clean = logit_diff(session.logits(clean), clean.last, task.correct, task.wrong).mean().item()
    ld_corr = logit_diff(cap.logits, corrupt.last, task.correct, task.wrong).mean().item()
    denom = ld_clean - ld_corr if abs(ld_clean - ld_corr) > 1e-6 else 1.0
    imp = torch.zeros(session.n_layers, session.n_heads)
    for layer in tqdm(range(session.n_layers), desc=f"patching heads ({task.name})", disable=not progress,
                      leave=False):
        src = cap[sites[layer]]
        for h in range(session.n_heads):
            def fn(act, hook=None, h=h, src=src):
                act = act.clone()
                act[:, :, h] = src[:, :, h]
                return act

            with session.hooks([(f"blocks.{layer}.attn.hook_z", fn)]):
                ld = logit_diff(session.logits(clean), clean.last, task.correct, task.wrong).mean()
            imp[layer, h] = (ld_clean - ld.item()) / denom
    return imp, ld_clean, ld_corr


def _train_head_saes(x: torch.Tensor, cfg: CircuitConfig) -> torch.Tensor:
    """x [H N d] -> codes [H N d_sae] of per-head TopK SAEs trained jointly (full batch)."""
    g = torch.Generator().manual_seed(cfg.seed)
    H, N, d = x.shape
    x = x / x.norm(dim=-1).mean(-1).clamp_min(1e-8)[:, None, None]
    b_dec = x.mean(1, keepdim=True).clone()
    W_dec = torch.randn(H, cfg.d_sae, d, generator=g).to(x)
    W_dec /= W_dec.norm(dim=-1, keepdim=True)
    W_enc = W_dec.transpose(1, 2).clone()
    b_enc = torch.zeros(H, 1, cfg.d_sae, dtype=x.dtype, device=x.device)
    params = [p.requires_grad_() for p in (W_enc, b_enc, W_dec, b_dec)]
    opt = torch.optim.Adam(params, lr=cfg.lr)

    def codes_of():
        pre = torch.einsum("hnd,hdm->hnm", x - b_dec, W_enc) + b_enc
        v, i = pre.topk(cfg.k, dim=-1)
        return torch.zeros_like(pre).scatter(-1, i, torch.relu(v)), pre

    with torch.enable_grad():
        for _ in range(cfg.steps):
            codes, _ = codes_of()
            rec = torch.einsum("hnm,hmd->hnd", codes, W_dec) + b_dec
            loss = (rec - x).pow(2).sum(-1).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                W_dec /= W_dec.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    with torch.no_grad():
        _, pre = codes_of()
        return torch.zeros_like(pre).scatter(-1, pre.topk(cfg.k, dim=-1).indices, 1.0)


@torch.no_grad()
def head_code_scores(session: Session, task: CircuitTask, cfg: CircuitConfig) -> torch.Tensor:
    """[n_layers n_heads] share of positive prompts whose discrete code no negative uses."""
    sites = [f"head_out:{layer}" for layer in range(session.n_layers)]
    feats = []
    for prompts in (task.clean, task.corrupt):
        b = session.tokenize(list(prompts))
        cap = capture(session, b, sites)
        idx = torch.arange(len(b), device=b.tokens.device)
        feats.append(torch.stack([cap[s][idx, b.last] for s in sites]))  # [L B H d]
    x = torch.cat(feats, 1).float()  # [L 2B H d]
    L, N, H, d = x.shape
    x = x.permute(0, 2, 1, 3).reshape(L * H, N, d)
    codes = _train_head_saes(x, cfg)  # [LH N m] binary
    n_pos = len(task.clean)
    pos, neg = codes[:, :n_pos], codes[:, n_pos:]
    # a code is a binary pattern; positive code unseen among negatives <=> no exact match
    match = (pos[:, :, None, :] == neg[:, None, :, :]).all(-1).any(-1)  # [LH n_pos]
    return (~match).float().mean(-1).reshape(L, H).cpu()


def top_heads(scores: Float[Tensor, "L H"], k: int) -> tuple[tuple[int, int], ...]:
    """The k heads of largest |score|, as (layer, head), largest first."""
    idx = scores.abs().flatten().topk(min(k, scores.numel())).indices
    return tuple((int(i) // scores.shape[1], int(i) % scores.shape[1]) for i in idx)


def find_circuit(session: Session, task: CircuitTask, cfg: CircuitConfig | None = None) -> CircuitResult:
    """Rank heads by SAE code uniqueness; compare with activation-patching ground truth."""
    cfg = cfg or CircuitConfig()
    t0 = time.perf_counter()
    scores = head_code_scores(session, task, cfg)
    t1 = time.perf_counter()
    imp, ld_c, ld_x = head_patching_importance(session, task)
    t2 = time.perf_counter()
    true = top_heads(imp, cfg.n_true)
    order = scores.flatten().argsort(descending=True, stable=True)
    H = scores.shape[1]
    pred = tuple((int(i) // H, int(i) % H) for i in order[: cfg.n_pred or cfg.n_true])
    hit = len(set(true) & set(pred))
    ranked = tuple((int(i) // H, int(i) % H, float(scores.flatten()[i]), float(imp.flatten()[i]))
                   for i in order)
    return CircuitResult(task.name, len(task), scores, imp, true, pred, hit / len(pred),
                         hit / len(true), t1 - t0, t2 - t1, ld_c, ld_x, ranked)
