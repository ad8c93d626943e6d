"""Target residuals z_i for MEMIT and AlphaEdit: the residual after block L that says target t_i.

For request i with prompts P_i (the bare prompt first, then context prefixes + prompt), target
tokens t_i1..t_im and the essence prompt e_i ("{s_i} is a"), delta_i [d_model] is added to the
residual after block L at the subject's last token of every row of request i and minimises

    -mean_{p in P_i} mean_j log p(t_ij | p, t_i<j) + kl_factor * KL(p0_i || p_i)(e_i)
    + weight_decay * (|delta_i| / |h_i|)^2,        |delta_i| <= clamp * |h_i|

with h_i the unedited residual of the bare prompt there. z_i = h_i + delta_i. All requests of a
chunk share one forward pass (row r carries delta of its request); the terms are independent, so
one Adam over the stacked deltas equals n separate runs. A request whose NLL falls below
`stop_nll` keeps the delta of that step and stops (ROME's early stop, per request).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from workbench._types import Float, Tensor
from workbench.session import Session

from ._hf import logits_at, pure_lm, trunk_layer
from ._prompts import SubjectPrompt
from .zcache import ZCache, request_key

log = logging.getLogger(__name__)

__all__ = ["target_residuals"]


def _rows(session: Session, prompts, ess, tids):
    """Tokens of a chunk: each request's prompts (with its target tail), then its essence row."""
    seqs: list[list[int]] = []
    req, subj, tgt_rows, tgt_cols, tgt_ids, tgt_req, ess_rows, ess_cols, bare = \
        [], [], [], [], [], [], [], [], []
    for i, (sps, e, t) in enumerate(zip(prompts, ess, tids)):
        for j, sp in enumerate(sps):
            if j == 0:
                bare.append(len(seqs))
            for a, tok in enumerate(t):
                tgt_rows.append(len(seqs))
                tgt_cols.append(len(sp.ids) - 1 + a)
                tgt_ids.append(tok)
                tgt_req.append(i)
            seqs.append(list(sp.ids) + list(t[:-1]))
            req.append(i)
            subj.append(sp.last)
        ess_rows.append(len(seqs))
        ess_cols.append(len(e.ids) - 1)
        seqs.append(list(e.ids))
        req.append(i)
        subj.append(e.last)
    width = max(len(s) for s in seqs)
    tokens = torch.full((len(seqs), width), session.pad_id, dtype=torch.long)
    for r, s in enumerate(seqs):
        tokens[r, : len(s)] = torch.tensor(s)
    dev = session.device

    def t_(x):
        return torch.tensor(x, device=dev)

    return (tokens.to(dev), t_(req), t_(subj), t_(tgt_rows), t_(tgt_cols), t_(tgt_ids), t_(tgt_req),
            t_(ess_rows), t_(ess_cols), t_(bare))


def target_residuals(session: Session, last: int, prompts: Sequence[Sequence[SubjectPrompt]],
                     ess: Sequence[SubjectPrompt], tids: Sequence[tuple[int, ...]], cfg,
                     progress: bool = False, cache: ZCache | None = None
                     ) -> tuple[Float[Tensor, "n d_model"], dict]:
    """z_i for every request (module docstring); returns (Z [n d_model] on CPU, info).

    With `cache` (`editing.zcache.ZCache`), requests whose targets it holds for the current
    weights and settings are not optimised again, and every chunk optimised here is written
    to it as soon as it is done (a run cut short resumes there).

    info: ``h0`` [n d_model] the unedited residuals, ``nll`` per request at its stop,
    ``steps`` per request, ``delta_norm`` mean |delta_i|, ``cached`` requests read from `cache`.
    """
    block = trunk_layer(pure_lm(session), last)
    n = len(prompts)
    Zl: list = [None] * n
    H0l: list = [None] * n
    NLL: list = [0.0] * n
    STEPS: list = [0] * n
    store = cache.store(session, last, cfg) if cache is not None else None
    keys = [request_key(prompts[i], ess[i], tids[i]) for i in range(n)] if store is not None else []
    found = store.load(keys) if store is not None else {}
    for i, k in enumerate(keys):
        if k in found:
            Zl[i], H0l[i], NLL[i], STEPS[i] = found[k]
    todo = [i for i in range(n) if Zl[i] is None]
    if found:
        log.info("z*: %d of %d requests from the cache %s", n - len(todo), n, cache)
    # longest requests first: chunks of similar widths pad less (a request's z* does not depend
    # on its chunk), and the widest chunk runs first
    todo.sort(key=lambda i: -max(len(sp.ids) + len(tids[i]) for sp in prompts[i]))
    bar = tqdm(total=n, initial=n - len(todo), desc="z* targets", disable=not progress, leave=False)
    for lo in range(0, len(todo), cfg.chunk):
        t_chunk = time.perf_counter()
        part = todo[lo : lo + cfg.chunk]
        m = len(part)
        z_c, h_c, nll_c, steps_c = _chunk_targets(session, block, [prompts[i] for i in part],
                                                  [ess[i] for i in part], [tids[i] for i in part], cfg)
        for j, i in enumerate(part):
            Zl[i], H0l[i], NLL[i], STEPS[i] = z_c[j], h_c[j], nll_c[j], steps_c[j]
        if store is not None:
            store.save([keys[i] for i in part], z_c, h_c, nll_c, steps_c)
        log.info("z* chunk %d/%d: %d requests in %.1f s, mean NLL %.3f, mean steps %.1f",
                 lo // cfg.chunk + 1, -(-len(todo) // cfg.chunk), m, time.perf_counter() - t_chunk,
                 sum(nll_c) / m, sum(steps_c) / m)
        bar.update(m)
    bar.close()
    Zt = torch.stack(Zl)
    h0 = torch.stack(H0l)
    info = {"h0": h0, "nll": NLL, "steps": STEPS, "mean_nll": sum(NLL) / len(NLL),
            "delta_norm": float((Zt - h0).norm(dim=-1).mean()), "cached": n - len(todo)}
    log.info("z*: mean NLL %.3f, mean |delta| %.3f, mean steps %.1f", info["mean_nll"],
             info["delta_norm"], sum(STEPS) / len(STEPS))
    return Zt, info


def _chunk_targets(session: Session, block, prompts, ess, tids, cfg, compact: bool = True
                   ) -> tuple[Tensor, Tensor, list[float], list[int]]:
    """z* of one chunk's requests: (z [m d_model], h0 [m d_model], NLL at the stop, steps), on CPU.

    With `compact` the forward runs the rows of the requests still optimising only: when some
    stop, the batch is rebuilt without their rows (each row's forward is independent of the
    others', and a stopped request's delta is frozen), so a chunk costs the sum of its requests'
    steps, not its slowest request's steps times its size. Without it every row runs every
    step (the same targets: `benches/zstar.py` times both)."""
    m = len(prompts)
    dev = session.device
    delta = torch.zeros(m, session.d_model, device=dev, requires_grad=True)
    state: dict = {}
    cur: dict = {}

    def build(active: list[int]) -> None:
        (tokens, req, subj, t_rows, t_cols, t_ids, t_req, e_rows, e_cols, bare) = \
            _rows(session, [prompts[i] for i in active], [ess[i] for i in active], [tids[i] for i in active])
        g = torch.tensor(active, device=dev)
        cur.update(tokens=tokens, req=g[req], subj=subj, t_ids=t_ids, t_req=g[t_req], bare=bare, active=g,
                   rows=torch.cat([t_rows, e_rows]), cols=torch.cat([t_cols, e_cols]), n_t=len(t_rows),
                   all_rows=torch.arange(len(req), device=dev))

    def add(module, inputs, out):
        h = out[0] if isinstance(out, tuple) else out
        if "h0" not in state:
            state["h0"] = h[cur["all_rows"], cur["subj"]].detach().float()
        h = h.index_put((cur["all_rows"], cur["subj"]), delta[cur["req"]].to(h.dtype), accumulate=True)
        return (h, *out[1:]) if isinstance(out, tuple) else h

    def logp_at() -> Tensor:
        return torch.log_softmax(logits_at(session, cur["tokens"], cur["rows"], cur["cols"]), -1)

    build(list(range(m)))
    # per-request mean over its (prompt, token) terms
    counts = torch.zeros(m, device=dev).index_add_(0, cur["t_req"], torch.ones_like(cur["t_req"], dtype=torch.float))
    handle = block.register_forward_hook(add)
    try:
        with torch.no_grad():
            p0 = logp_at()[cur["n_t"]:]                                  # [m vocab], essence rows
        h0 = state["h0"][cur["bare"]]                                     # [m d_model]
        max_norm = cfg.clamp * h0.norm(dim=-1)
        opt = torch.optim.Adam([delta], lr=cfg.lr)
        done = torch.zeros(m, dtype=torch.bool, device=dev)
        nll_at = torch.zeros(m, device=dev)
        steps = torch.zeros(m, dtype=torch.long, device=dev)
        frozen = torch.zeros_like(delta)
        n_done = 0
        for _ in range(cfg.steps):
            opt.zero_grad(set_to_none=True)
            with torch.enable_grad():
                logp = logp_at()
                n_t, act = cur["n_t"], cur["active"]
                tok_lp = logp[torch.arange(n_t, device=dev), cur["t_ids"]]
                nll = -torch.zeros(m, device=dev).index_add(0, cur["t_req"], tok_lp) / counts
                kl = torch.zeros(m, device=dev).index_put(
                    (act,), (p0[act].exp() * (p0[act] - logp[n_t:])).sum(-1))  # KL(p0 || p)
                wd = (delta.norm(dim=-1) / h0.norm(dim=-1)) ** 2
                loss = (nll + cfg.kl_factor * kl + cfg.weight_decay * wd)[~done].sum()
            with torch.no_grad():
                newly = (~done) & (nll.detach() < cfg.stop_nll)
                frozen[newly] = delta[newly]                               # this step's delta was good
                nll_at[~done] = nll.detach()[~done]
                steps[~done] += 1
                done |= newly
            stopped, n_done = n_done, int(done.sum())            # one host sync per step
            if n_done == m:
                break
            loss.backward()
            opt.step()
            with torch.no_grad():
                scale = (max_norm / delta.norm(dim=-1).clamp(min=1e-12)).clamp(max=1.0)
                delta.mul_(scale[:, None])
                delta[done] = frozen[done]
            if compact and n_done > stopped:
                build(torch.nonzero(~done).flatten().tolist())
    finally:
        handle.remove()
    return (h0 + delta.detach()).cpu(), h0.cpu(), nll_at.tolist(), steps.tolist()
