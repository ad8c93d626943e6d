"""THE edit-evaluation loop: cases -> edit -> evaluate -> undo -> rows + summary.

Every face (CLI ``workbench edit``, the ``edit`` probe, benches, widgets) calls `run_edits`.

Two modes:

* fresh state (``sequential=False``; ROME and MEMIT by default): the cases are cut into batches
  of `batch_size` (ROME: 1); each batch is edited on the unedited model, its cases scored, and
  the edit undone (bitwise) before the next batch.
* sequential (``sequential=True``; AlphaEdit by default): the batches are applied one after
  another through an `editing.ledger.Ledger` and kept; each batch is scored right after its edit
  (``at_edit``) and every case again once all are applied (the reported figures, as AlphaEdit
  reports them), with ``first_batch_efficacy_at_end`` = efficacy of the first batch's cases at
  the end. The ledger is undone at the end (also on error).

Scores (`editing.evaluate`): efficacy, paraphrase, neighbourhood in percent with the probability
gaps (multi-token objects by their per-token geometric mean probability), fluency when
``gen_tokens > 0``. General capability (`editing.capability`): perplexity on `held` windows and
known-fact accuracy, before and after (fresh mode: mean over the first `capability_batches`
edited states). Blast radius (`editing.blast`): before each edit, the reach of the update on
each case's neighbourhood prompt and its break score (reach over the unedited margin);
``blast_auroc`` says how well the break score ranks the prompts that broke (neighbourhood
success lost) above those that held, over the prompts the unedited model got right;
``blast_auroc_reach`` the same for the reach alone.

Repair rounds (``repair_rounds`` = N > 0; 0, the default, is the plain loop): after a batch's
update is applied, each of its requests is scored on its own prompt (efficacy: the new object's
sequence probability above the true one's); the requests that did not take get a fresh update,
computed on the edited model (v* / z* from the current weights), with the keys of the batch's
requests that did take in the preserved set so the round does not undo them (AlphaEdit: added to
the `AlphaEditState`, K_p^T K_p; MEMIT: K_p^T K_p joins its solve, `memit_solve`; ROME: a batch of
one, nothing else to keep). That update is applied too and the batch scored again; up to N
rounds, fewer when every request took. Each round's keys are those of the requests it edited;
after the batch, each request's latest keys (the round that last edited it) join AlphaEdit's
preserved set for the later batches. Every round is its own ledger entry (sequential; outcome
``repair_round``) or its own `editing.apply` handle (fresh state), undone like the first.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from tqdm.auto import tqdm

from workbench.errors import WorkbenchError
from workbench.session import Session

from ._prompts import EditError
from .alphaedit import AlphaEditConfig, AlphaEditState, compute_alphaedit_update
from .apply import apply
from .blast import auroc, blast_radius, break_score, prompt_reach
from .capability import known_accuracy, perplexity
from .covariance import KeyStats
from .evaluate import (
    EditCase,
    case_target_ids,
    generate_texts,
    generation_entropy,
    score_cases,
    summarize,
    usable_cases,
)
from .ledger import Ledger
from .memit import MemitConfig, compute_memit_update, request_keys
from .requests import EditRequest, LayerUpdate, RankOneUpdate
from .rome import RomeConfig, compute_rome_update
from .zcache import ZCache

log = logging.getLogger(__name__)

__all__ = ["EditRun", "run_edits", "default_layers", "layers_from_curve", "METHODS"]

METHODS = ("rome", "memit", "alphaedit")


@dataclass(frozen=True)
class EditRun:
    """Result of `run_edits`.

    Args:
        rows: one dict per case: case_id, batch, subject, target_new, ground_truth, unedited and
            edited (`CaseScores.to_dict()`), at_edit (sequential), reach, break_score, edit_seconds
            (its batch's compute time, repair rounds included, over the batch's cases), repaired
            (repair rounds that re-edited it).
        summary: efficacy, paraphrase, neighborhood, fluency, n (+ gaps), perplexity_before,
            perplexity_after, known_accuracy_before/after, first_batch_efficacy_at_end
            (sequential; else None), efficacy_at_edit (sequential; after the batch's repair rounds),
            efficacy_before_repair (each batch right after its first update, before any repair
            round), repair_rounds (the setting), repair_edits (per repair round, requests
            re-edited, summed over batches), repair_took (per repair round, how many of those
            took right after it), z_cached (z* targets read from `z_cache`, repair rounds
            included; None without a cache), blast_auroc, blast_auroc_reach,
            n_broken_neighbours, unedited (the
            same scores before editing), method, batch_size, n_batches, sequential, layers,
            skipped, seconds, edit_seconds, seconds_per_edit.
        ledger: the sequential run's ledger table (entries as dicts), else [].
    """

    rows: list[dict]
    summary: dict
    ledger: list[dict] = field(default_factory=list)


def layers_from_curve(curve: Sequence[float], method: str, n: int = 5) -> tuple[int, ...]:
    """Layers to edit from an FFN causal-trace curve [layer]: ROME the peak; MEMIT / AlphaEdit
    the `n` consecutive layers with the largest summed indirect effect, below the last layer."""
    from .memit import critical_layers

    if method not in METHODS:
        raise WorkbenchError(f"method={method!r}; choose one of {list(METHODS)}")
    if method == "rome":
        return (max(range(len(curve)), key=lambda i: curve[i]),)
    return critical_layers(list(curve)[: len(curve) - 1], n)


def default_layers(session: Session, method: str, corpus, n: int = 5, facts=None) -> tuple[tuple[int, ...], list[float]]:
    """Layers to edit from the FFN causal trace (`ffn_peak_layer` on `facts`, default a few facts
    every small LM knows), chosen by `layers_from_curve`. Returns (layers, the mean curve)."""
    from .tracing import DEFAULT_FACTS, embedding_std, ffn_peak_layer

    if method not in METHODS:
        raise WorkbenchError(f"method={method!r}; choose one of {list(METHODS)}")
    _, curve = ffn_peak_layer(session, facts or DEFAULT_FACTS, embedding_std(session, corpus))
    return layers_from_curve(curve, method, n), curve


def _request(c: EditCase) -> EditRequest:
    return EditRequest(c.prompt, c.subject, c.target_new)


def _fluency(session: Session, cases, gen_tokens, seed) -> list[float | None]:
    if gen_tokens <= 0:
        return [None] * len(cases)
    texts = generate_texts(session, [c.prompt for c in cases], gen_tokens, seed=seed)
    return [generation_entropy([t]) for t in texts]


def run_edits(session: Session, cases: Sequence[EditCase], stats: Mapping[int, KeyStats], *,
              method: str = "rome", batch_size: int = 1, sequential: bool | None = None,
              config: RomeConfig | MemitConfig | AlphaEditConfig | None = None,
              held=None, known: Sequence[tuple[str, str]] = (), gen_tokens: int = 0,
              capability_batches: int | None = 1, blast: bool = True, blast_corpus=None,
              progress: bool = True, repair_rounds: int = 0,
              on_row: Callable[[dict], None] | None = None, seed: int = 0,
              z_cache: ZCache | None = None) -> EditRun:
    """Edit `cases` with `method` and evaluate (module docstring); the model ends as it began.

    Args:
        session: the model.
        cases: CounterFact-format cases (`load_counterfact`, `load_zsre`); those whose objects
            the tokenizer cannot produce (or whose new and true objects are equal) are skipped
            and counted.
        stats: layer -> `KeyStats` (`layers_key_stats`): ROME edits the one layer given; MEMIT
            and AlphaEdit edit ``config.layers`` or else every layer given.
        method: ``rome`` | ``memit`` | ``alphaedit``.
        batch_size: requests per edit (ROME: 1).
        sequential: keep each batch's edit (see module docstring); default True for AlphaEdit.
        config: the method's config (`RomeConfig`, `MemitConfig`, `AlphaEditConfig`).
        held: [n pos] token windows of held text for perplexity (`capability.held_windows`).
        known: (prompt, answer) facts for known-fact accuracy.
        gen_tokens: tokens generated per case for fluency (0: none).
        capability_batches: fresh mode: edited states on which perplexity and known-fact
            accuracy are measured (None: all).
        blast: predict broken neighbourhood prompts from the update's reach; report AUROC.
        blast_corpus: if given, the first batch's blast radius over its first 4,096 tokens
            (`editing.blast_radius`, before that batch is applied) goes into the summary as
            ``blast_radius``.
        repair_rounds: at most this many repair rounds per batch (module docstring; 0: none).
        on_row: called with each row as soon as it is scored (e.g. to append to a JSONL file).
        z_cache: MEMIT / AlphaEdit: target residuals z* cached per request (`editing.zcache`):
            a run cut short and started again skips the requests it had optimised; a rerun with
            another lam, preserved set or repair setting reuses the unedited model's targets.
    """
    t_start = time.perf_counter()
    if method not in METHODS:
        raise WorkbenchError(f"method={method!r}; choose one of {list(METHODS)}")
    if batch_size < 1:
        raise WorkbenchError(f"batch_size={batch_size} must be >= 1")
    if isinstance(repair_rounds, bool) or not isinstance(repair_rounds, int) or repair_rounds < 0:
        raise WorkbenchError(f"repair_rounds={repair_rounds!r} must be an integer >= 0 (0: no repair "
                             "rounds; N: up to N rounds re-editing a batch's requests that did not take)")
    if method == "rome" and batch_size != 1:
        raise WorkbenchError(f"batch_size={batch_size}: ROME edits one fact at a time; use "
                             "method='memit' or 'alphaedit' for batches")
    sequential = (method == "alphaedit") if sequential is None else bool(sequential)
    if not stats:
        raise EditError("no key statistics given; pass {layer: key_stats(...)}")
    if method == "rome":
        if len(stats) != 1:
            raise EditError(f"ROME edits one layer; statistics given for layers {sorted(stats)}")
        cfg = config or RomeConfig()
        if not isinstance(cfg, RomeConfig):
            raise WorkbenchError(f"method='rome' needs a RomeConfig, got {type(cfg).__name__}")
        layers = [next(iter(stats))]
    elif method == "memit":
        cfg = config or MemitConfig()
        if not isinstance(cfg, MemitConfig):
            raise WorkbenchError(f"method='memit' needs a MemitConfig, got {type(cfg).__name__}")
        layers = list(cfg.layers or sorted(stats))
    else:
        cfg = config or AlphaEditConfig()
        if not isinstance(cfg, AlphaEditConfig):
            raise WorkbenchError(f"method='alphaedit' needs an AlphaEditConfig, got {type(cfg).__name__}")
        layers = list(cfg.layers or sorted(stats))
    missing = [layer for layer in layers if layer not in stats]
    if missing:
        raise EditError(f"no key statistics for layers {missing}; have {sorted(stats)}")

    usable, skipped = usable_cases(session, list(cases))
    if not usable:
        raise EditError(f"no usable case among {len(cases)} ({skipped} skipped: objects the "
                        "tokenizer cannot produce, or new == true)")
    ids = [case_target_ids(session, c) for c in usable]
    batches = [list(range(i, min(i + batch_size, len(usable)))) for i in range(0, len(usable), batch_size)]
    state = AlphaEditState.from_stats({k: stats[k] for k in layers}, cfg.null_energy) \
        if method == "alphaedit" and isinstance(cfg, AlphaEditConfig) else None

    z_cached = 0         # z* targets read from z_cache

    def compute(idx, kept: _Kept = ((), {}, ())):
        """The update of requests `idx` on the current model; `kept`: (updates applied in this
        batch, request -> (update, position) of its latest keys, the requests whose keys to keep)."""
        nonlocal z_cached
        reqs = [_request(usable[i]) for i in idx]
        if method == "rome" and isinstance(cfg, RomeConfig):   # a batch of one: nothing else to keep
            return compute_rome_update(session, reqs[0], stats[layers[0]], cfg)
        if method == "memit" and isinstance(cfg, MemitConfig):
            up = compute_memit_update(session, reqs, stats, cfg, preserved=_gram(*kept), progress=progress,
                                      z_cache=z_cache)
        elif isinstance(cfg, AlphaEditConfig) and state is not None:
            up = compute_alphaedit_update(session, reqs, _preserve(state, *kept), cfg, progress=progress,
                                          z_cache=z_cache)
        else:
            raise WorkbenchError(f"method={method!r} with a {type(cfg).__name__}")   # checked above
        z_cached += up.info["cached"]
        return up

    def edit_batch(idx, up, stack: contextlib.ExitStack | None) -> tuple[list, float]:
        """Apply `up` to the batch `idx` (through the ledger, else on `stack`), then up to
        `repair_rounds` repair rounds; returns the batch's scores after the last round and the
        repair rounds' compute seconds."""
        nonlocal state
        sub, sid = [usable[i] for i in idx], [ids[i] for i in idx]
        at = {i: p for p, i in enumerate(idx)}
        applied, latest = [up], {i: (up, p) for p, i in enumerate(idx)}
        failed: list[int] = []
        got: list = []
        spent = 0.0
        for r in range(repair_rounds + 1):
            if r:
                failed = [i for i in idx if not got[at[i]].efficacy]
                if not failed:
                    break
                t0 = time.perf_counter()
                up = compute(failed, (applied, latest, [i for i in idx if got[at[i]].efficacy]))
                spent += time.perf_counter() - t0
                applied.append(up)
                latest.update({i: (up, p) for p, i in enumerate(failed)})
            entry = ledger.apply(up) if ledger is not None else None
            if stack is not None:
                stack.enter_context(apply(session, up))
            got = score_cases(session, sub, sid)
            if entry is not None and ledger is not None:
                ledger.record(entry, **{k: v for k, v in summarize(got).items()
                                        if k in ("efficacy", "paraphrase", "neighborhood", "n")},
                              **({"repair_round": r} if r else {}))
            if r == 0:
                for i, sc in zip(idx, got):
                    first_round[i] = sc
            else:
                repair_edits[r - 1] += len(failed)
                repair_took[r - 1] += sum(got[at[i]].efficacy for i in failed)
                for i in failed:
                    repaired[i] += 1
        if state is not None and ledger is not None:      # sequential: the batch stays applied
            state = _preserve(state, applied, latest, idx)
        return got, spent

    base = score_cases(session, usable, ids)
    flu_base = _fluency(session, usable, gen_tokens, seed)
    ppl_before = perplexity(session, held) if held is not None else None
    known_before = known_accuracy(session, list(known)) if known else None

    edited: list = [None] * len(usable)
    at_edit: list = [None] * len(usable)
    reach: list = [None] * len(usable)
    risk: list[float | None] = [None] * len(usable)     # break score: reach / unedited margin
    secs: list = [0.0] * len(usable)
    first_round: list = [None] * len(usable)            # each batch right after its first update
    repaired = [0] * len(usable)
    repair_edits, repair_took = [0] * repair_rounds, [0] * repair_rounds
    ppl_after: list[float] = []
    known_after: list[float] = []
    ledger = Ledger(session) if sequential else None
    first_blast = None
    bar = tqdm(total=len(usable), desc=f"{method} edits", unit="case", disable=not progress)
    try:
        for bi, idx in enumerate(batches):
            t0 = time.perf_counter()
            up = compute(idx)
            sec = time.perf_counter() - t0
            if bi == 0 and blast_corpus is not None:
                first_blast = blast_radius(session, up, blast_corpus, n_tokens=4096, top=10,
                                           prompts=[usable[i].locality_prompt for i in idx][:20])
            if blast:
                r = prompt_reach(session, up, [usable[i].locality_prompt for i in idx])
                for i, x in zip(idx, r.tolist()):
                    reach[i] = x
                    risk[i] = break_score(x, base[i].p_true_loc, base[i].p_new_loc)
            sub = [usable[i] for i in idx]
            if ledger is not None:  # sequential
                got, extra = edit_batch(idx, up, None)
                for i, sc in zip(idx, got):
                    at_edit[i] = sc
            else:
                with contextlib.ExitStack() as stack:      # undoes every round's edit on exit
                    got, extra = edit_batch(idx, up, stack)
                    flu = _fluency(session, sub, gen_tokens, seed)
                    for i, sc, f in zip(idx, got, flu):
                        edited[i] = _with_fluency(sc, f)
                    if capability_batches is None or bi < capability_batches:
                        if held is not None:
                            ppl_after.append(perplexity(session, held))
                        if known and (acc := known_accuracy(session, list(known))) is not None:
                            known_after.append(acc)
            for i in idx:
                secs[i] = (sec + extra) / len(idx)
            if ledger is None:
                for i in idx:
                    _emit(on_row, _row(usable[i], bi, base[i], flu_base[i], edited[i], None, reach[i], risk[i],
                                       secs[i], repaired[i]))
            bar.update(len(idx))
        if sequential:
            final = score_cases(session, usable, ids)
            flu = _fluency(session, usable, gen_tokens, seed)
            for i, (sc, f) in enumerate(zip(final, flu)):
                edited[i] = _with_fluency(sc, f)
            if held is not None:
                ppl_after.append(perplexity(session, held))
            if known and (acc := known_accuracy(session, list(known))) is not None:
                known_after.append(acc)
            for bi, idx in enumerate(batches):
                for i in idx:
                    _emit(on_row, _row(usable[i], bi, base[i], flu_base[i], edited[i], at_edit[i], reach[i], risk[i],
                                       secs[i], repaired[i]))
    finally:
        bar.close()
        table = ledger.table() if ledger is not None else []
        if ledger is not None:
            ledger.undo_all()

    base_scores = [_with_fluency(b, f) for b, f in zip(base, flu_base)]
    rows = [_row(usable[i], bi, base_scores[i], None, edited[i], at_edit[i], reach[i], risk[i], secs[i],
                 repaired[i]) for bi, idx in enumerate(batches) for i in idx]
    summary = summarize(edited)
    broken = [b.neighborhood and not e.neighborhood for b, e in zip(base, edited)]
    # prompts that could break (right before the edit), their break score and outcome
    at_risk = [(sc, r, br) for sc, r, br in zip(risk, reach, broken) if sc is not None]
    first = [edited[i] for i in batches[0]]
    edit_s = sum(secs)
    summary.update({
        "perplexity_before": ppl_before,
        "perplexity_after": sum(ppl_after) / len(ppl_after) if ppl_after else None,
        "known_accuracy_before": known_before,
        "known_accuracy_after": sum(known_after) / len(known_after) if known_after else None,
        "first_batch_efficacy_at_end": summarize(first)["efficacy"] if sequential else None,
        "efficacy_at_edit": summarize([a for a in at_edit if a is not None])["efficacy"] if sequential else None,
        "efficacy_before_repair": summarize(first_round)["efficacy"],
        "repair_rounds": repair_rounds, "repair_edits": repair_edits, "repair_took": repair_took,
        "z_cached": z_cached if z_cache is not None else None,
        "blast_auroc": auroc([s for s, _, _ in at_risk], [br for _, _, br in at_risk]) if blast else None,
        "blast_auroc_reach": auroc([r for _, r, _ in at_risk], [br for _, _, br in at_risk]) if blast else None,
        "blast_radius": first_blast.to_dict() if first_blast is not None else None,
        "n_broken_neighbours": sum(broken),
        "unedited": summarize(base_scores),
        "method": method, "batch_size": batch_size, "n_batches": len(batches), "sequential": sequential,
        "layers": layers, "skipped": skipped, "config": cfg.to_dict(),
        "seconds": time.perf_counter() - t_start, "edit_seconds": edit_s,
        "seconds_per_edit": edit_s / len(usable),
    })
    log.info("%s x%d (batch %d%s): eff %.1f para %.1f nb %.1f", method, len(usable), batch_size,
             ", sequential" if sequential else "", summary["efficacy"], summary["paraphrase"],
             summary["neighborhood"])
    return EditRun(rows, summary, table)


# (updates applied in a batch, request -> (update, its position there) of its latest keys, the
# requests whose keys are kept)
_Kept = tuple[Sequence[LayerUpdate | RankOneUpdate], Mapping[int, tuple[LayerUpdate | RankOneUpdate, int]],
              Sequence[int]]


def _latest_positions(applied, latest, keep) -> list[tuple[LayerUpdate, list[int] | None]]:
    """Per update of `applied` (in order) holding the latest keys of some requests of `keep`:
    their positions in it (None: all of its requests, the whole update)."""
    out = []
    for up in applied:
        pos = sorted(latest[i][1] for i in keep if latest[i][0] is up)
        if pos:
            if not isinstance(up, LayerUpdate):
                raise EditError(f"a {type(up).__name__} holds no batch keys to preserve")
            out.append((up, None if pos == list(range(len(up.requests))) else pos))
    return out


def _preserve(state: AlphaEditState, applied, latest, keep) -> AlphaEditState:
    """`state` with the latest keys of the requests `keep` added to the preserved set."""
    for up, pos in _latest_positions(applied, latest, keep):
        state = state.after(up, pos)
    return state


def _gram(applied, latest, keep) -> dict | None:
    """Per layer, K_p^T K_p [d_mlp d_mlp] (float64) of the latest keys of the requests `keep`;
    None when there are none."""
    out: dict = {}
    for up, pos in _latest_positions(applied, latest, keep):
        for layer, K in request_keys(up, pos).items():
            Kd = K.double()
            out[layer] = out[layer] + Kd.T @ Kd if layer in out else Kd.T @ Kd
    return out or None


def _with_fluency(sc, f):
    import dataclasses

    return sc if f is None else dataclasses.replace(sc, fluency=f)


def _emit(on_row, row):
    if on_row is not None:
        on_row(row)


def _row(case: EditCase, batch: int, base, flu_base, edited, at_edit, reach, risk, sec, repaired: int) -> dict:
    if flu_base is not None:
        base = _with_fluency(base, flu_base)
    return {"case_id": case.case_id, "batch": batch, "subject": case.subject,
            "target_new": case.target_new, "ground_truth": case.ground_truth,
            "unedited": base.to_dict(), "edited": edited.to_dict(),
            "at_edit": at_edit.to_dict() if at_edit is not None else None,
            "reach": reach, "break_score": risk, "edit_seconds": sec, "repaired": repaired}
