"""Where an SAE training step's time goes, without a model: one TopK SAE on random activations,
the step of `workbench.saes.train.train_sae` (dense, compiled dense or sparse), profiled by
torch.profiler.

Compared against: the same step's matmul-only floor (the encoder GEMM), printed alongside.

    python benches/sae_step.py --d-in 4096 --d-sae 65536 --batch 4096 [--sparse] [--compile] [--aux-cols]
        [--adam pick|torch]
"""

from __future__ import annotations

import argparse
import time

import torch

from workbench.saes import SAEConfig
from workbench.saes.models import make_sae
from workbench.saes.pick_adam import sae_pick_adam
from workbench.saes.sparse_decode import use_triton_decode
from workbench.saes.topk_sparse import column_major, sparse_aux_loss, sparse_topk_step
from workbench.saes.train import compiled_dense_step, dense_step_loss


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-in", type=int, default=4096)
    ap.add_argument("--d-sae", type=int, default=65536)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--k", type=int, default=64)
    ap.add_argument("--aux-k", type=int, default=256)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--sparse", action="store_true")
    ap.add_argument("--dead-share", type=float, default=0.1)
    ap.add_argument("--compile", action="store_true", help="torch.compile the dense step's forward + loss")
    ap.add_argument("--outer", choices=("triton", "gemm"), default="triton",
                    help="the sparse step's dW_enc: the Triton sorted-pick kernel or a dense GEMM of scattered picks")
    ap.add_argument("--adam", choices=("pick", "torch"), default="pick",
                    help="the sparse step's optimiser: gradients summed inside the update (pick_adam, train_sae's "
                         "default with Triton) or written out, then torch's fused Adam and the row kernels")
    ap.add_argument("--aux-cols", action="store_true",
                    help="AuxK on the dead latents' columns only (train_sae's aux_candidates)")
    a = ap.parse_args()
    import workbench.saes.topk_sparse as ts

    ts.TRITON_OUTER = a.outer == "triton"
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sae = make_sae(SAEConfig("topk", a.d_in, a.d_sae, k=a.k)).to(dev)
    triton = a.sparse and a.outer == "triton" and use_triton_decode(sae.W_enc)
    if triton:                      # train_sae's layout on this path
        sae.W_enc = column_major(sae.W_enc)
    sinks = w_enc_low = None
    if triton and a.adam == "pick":        # train_sae's optimiser, with its bfloat16 W_enc under amp
        opt, sinks, w_enc_low = sae_pick_adam(sae, 1e-4, low=dev.type == "cuda")
    else:
        opt = torch.optim.Adam(sae.parameters(), lr=1e-4,  # type: ignore[assignment]
                               fused=dev.type in ("cuda", "cpu"))  # as train_sae
    x = torch.randn(a.batch, a.d_in, device=dev)
    dead = torch.rand(a.d_sae, device=dev) < a.dead_share
    n_dead = int(dead.sum())
    cols = dead.nonzero().squeeze(1) if a.aux_cols else None

    dense = compiled_dense_step() if a.compile else dense_step_loss
    amp = dev.type == "cuda"

    def step():
        if a.sparse:
            sp = sparse_topk_step(sae, x, dead, a.aux_k, n_dead, amp=dev.type == "cuda", cols=cols, sinks=sinks,
                                  w_enc_low=w_enc_low)
            loss = (sp.recon - x).pow(2).sum(-1).mean() + sparse_aux_loss(x, sp) / 32
        else:
            loss = dense(sae, x, dead, a.aux_k, n_dead, cols, 1 / 32, amp)[0]
        opt.zero_grad(set_to_none=True)
        loss.float().backward()
        if sinks is None:
            sae.remove_parallel_grad()
        opt.step()
        if sinks is None:
            sae.normalize_decoder()

    for _ in range(3):
        step()
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        step()
    sync()
    per = (time.perf_counter() - t0) / a.steps
    w = sae.W_enc.detach().to(torch.bfloat16)
    xb = x.to(torch.bfloat16)
    sync()
    t0 = time.perf_counter()
    for _ in range(a.steps):
        xb @ w
    sync()
    gemm = (time.perf_counter() - t0) / a.steps
    print(f"step {per * 1e3:.1f} ms ({a.batch / per:,.0f} tok/s); one encoder GEMM {gemm * 1e3:.2f} ms; "
          f"{'sparse' if a.sparse else 'dense'}{' compiled' if a.compile else ''}"
          f"{' aux-cols' if a.aux_cols else ''}{' pick-adam' if sinks else ''} d_sae {a.d_sae}")
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
    with profile(activities=acts) as prof:
        for _ in range(3):
            step()
        sync()
    key = "cuda_time_total" if dev.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=18, max_name_column_width=60))


if __name__ == "__main__":
    main()
