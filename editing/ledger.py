"""The edit ledger: every applied edit accounted for, undone exactly, saved and replayed bit for bit.

An entry holds the edit's requests, layers, update norms, the SHA-256 of the parameters it
writes before and after it was applied, and its outcome (whatever evaluation the caller
records). Weights are written only through `editing.apply`, which keeps each parameter's
original bytes and rewrites it as original + the remaining deltas in the order applied; so
undoing any entry leaves exactly the weights that applying the other entries in order gives,
and undoing all restores the original bytes.

Saving writes ``deltas.safetensors`` (the exact tensors added to each parameter, in its layout
and dtype, keyed ``e{id}:{param name}``) and ``ledger.json``; `Ledger.load` on a fresh session
checks that the touched parameters hold the recorded original bytes, re-applies the entries in
order and checks every entry's after-hash: the edited weights are reproduced bit for bit.
`Ledger.export` writes the edited model as a safetensors directory that transformers loads.

Example:
    >>> led = Ledger(s)
    >>> e = led.apply(update, outcome={"efficacy": 100.0})
    >>> led.undo(e.id); led.save("out/ledger"); Ledger.load("out/ledger", fresh_session)
"""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from workbench.session import Session

from ._prompts import EditError
from .apply import RestoreHandle, apply, original_weights
from .requests import EditRequest, LayerUpdate, RankOneUpdate
from .weights import live_w_out

log = logging.getLogger(__name__)

__all__ = ["Ledger", "LedgerEntry", "params_hash"]

FORMAT = 1


def params_hash(session: Session, names: list[str]) -> str:
    """SHA-256 over the named parameters' names, dtypes, shapes and bytes (sorted by name)."""
    params = dict(session.hf_model.named_parameters())
    return _hash_tensors({n: params[n] for n in names})


@dataclass
class LedgerEntry:
    """One applied edit.

    Args:
        id: ledger-unique number (never reused).
        kind: ``rome``, ``memit``, ``alphaedit``, ``boost``, ``replay``, ...
        requests: the facts (prompt, subject, target) as dicts.
        layers: edited blocks; norms: Frobenius norm of each layer's delta.
        params: names of the written parameters.
        hash_before, hash_after: `params_hash` of `params` just before / after applying.
        outcome: the caller's evaluation of the edit (efficacy, ...), JSON-ready.
        created: UTC time of applying.
    """

    id: int
    kind: str
    requests: list[dict]
    layers: list[int]
    norms: dict[str, float]
    params: list[str]
    hash_before: str
    hash_after: str
    outcome: dict = field(default_factory=dict)
    created: str = ""
    handle: RestoreHandle | None = field(default=None, repr=False, compare=False)

    def restore_handle(self) -> RestoreHandle:
        """The handle that undoes this entry (every entry a `Ledger` applies has one)."""
        if self.handle is None:
            raise EditError(f"ledger entry {self.id} has no restore handle: it was not applied by a Ledger")
        return self.handle

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("id", "kind", "requests", "layers", "norms", "params",
                                               "hash_before", "hash_after", "outcome", "created")}


def _describe(update) -> tuple[str, list[EditRequest], dict[int, float]]:
    if isinstance(update, RankOneUpdate):
        norm = float(update.u.double().norm() * update.r.double().norm())
        return "rome", [update.request], {update.layer: norm}
    if isinstance(update, LayerUpdate):
        return update.method, list(update.requests), update.norms()
    raise EditError(f"cannot record a {type(update).__name__}; give a RankOneUpdate or LayerUpdate")


class Ledger:
    """The applied edits of one session, in order (see the module docstring)."""

    def __init__(self, session: Session):
        self.session = session
        self.entries: list[LedgerEntry] = []
        self._next = 1

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self):
        return iter(self.entries)

    def apply(self, update: RankOneUpdate | LayerUpdate, kind: str | None = None,
              outcome: dict | None = None) -> LedgerEntry:
        """Apply `update` (through `editing.apply`) and record it; returns the entry."""
        method, requests, norms = _describe(update)
        names = [live_w_out(self.session, layer)[0] for layer in sorted(norms)]
        before = params_hash(self.session, names)
        handle = apply(self.session, update)
        entry = LedgerEntry(self._next, kind or method,
                            [{"prompt": r.prompt, "subject": r.subject, "target": r.target} for r in requests],
                            sorted(norms), {str(k): v for k, v in norms.items()}, list(handle.deltas),
                            before, params_hash(self.session, list(handle.deltas)), dict(outcome or {}),
                            datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                            handle)
        self._next += 1
        self.entries.append(entry)
        log.info("ledger: entry %d (%s, %d requests, layers %s)", entry.id, entry.kind, len(requests),
                 entry.layers)
        return entry

    def entry(self, entry_id: int | LedgerEntry) -> LedgerEntry:
        """The entry with this id; EditError naming the ids in the ledger otherwise."""
        eid = entry_id.id if isinstance(entry_id, LedgerEntry) else entry_id
        for e in self.entries:
            if e.id == eid:
                return e
        raise EditError(f"entry {eid!r} is not in the ledger; its entries are "
                        f"{[e.id for e in self.entries]}")

    def record(self, entry_id: int | LedgerEntry, **outcome) -> None:
        """Add fields to an entry's outcome."""
        self.entry(entry_id).outcome.update(outcome)

    def undo(self, entry_id: int | LedgerEntry) -> LedgerEntry:
        """Take back one entry; the later ones stay applied, exactly as if it had never been."""
        e = self.entry(entry_id)
        e.restore_handle().undo()
        self.entries.remove(e)
        log.info("ledger: undid entry %d", e.id)
        return e

    def undo_last(self) -> LedgerEntry:
        if not self.entries:
            raise EditError("the ledger is empty; nothing to undo")
        return self.undo(self.entries[-1])

    def undo_all(self) -> list[LedgerEntry]:
        """Undo every entry, last first; the touched parameters get their original bytes back."""
        return [self.undo(e) for e in list(reversed(self.entries))]

    def table(self) -> list[dict]:
        """One JSON-ready row per entry (for tables and widgets)."""
        return [{**e.to_dict(), "n_requests": len(e.requests)} for e in self.entries]

    # ---- persistence -------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write ``deltas.safetensors`` and ``ledger.json`` under `directory`."""
        from safetensors.torch import save_file

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"e{e.id}:{n}": t.detach().cpu().contiguous()
                   for e in self.entries for n, t in e.restore_handle().deltas.items()}
        names = sorted({n for e in self.entries for n in e.params})
        params = dict(self.session.hf_model.named_parameters())
        originals = {}
        for n in names:
            o = original_weights(self.session, n)
            originals[n] = params[n] if o is None else o
        base = _hash_tensors(originals)
        meta = {"format": FORMAT, "model": getattr(self.session, "name", ""), "base_hash": base,
                "base_params": names, "state_hash": params_hash(self.session, names),
                "entries": [e.to_dict() for e in self.entries], "next_id": self._next}
        save_file(tensors, str(d / "deltas.safetensors"), metadata={"format": str(FORMAT)})
        (d / "ledger.json").write_text(json.dumps(meta, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path, session: Session) -> Ledger:
        """Replay a saved ledger on `session` (unedited in the touched parameters); the weights
        then equal the saved state bit for bit (checked; EditError and nothing applied if not)."""
        from safetensors.torch import load_file

        d = Path(directory)
        if not (d / "ledger.json").is_file() or not (d / "deltas.safetensors").is_file():
            raise EditError(f"{str(d)!r} holds no saved ledger (ledger.json + deltas.safetensors)")
        meta = json.loads((d / "ledger.json").read_text())
        if meta.get("format") != FORMAT:
            raise EditError(f"ledger format {meta.get('format')!r}; this workbench reads {FORMAT}")
        names = meta["base_params"]
        params = dict(session.hf_model.named_parameters())
        miss = [n for n in names if n not in params]
        if miss:
            raise EditError(f"the session has no parameters {miss}; the ledger was saved from "
                            f"{meta.get('model')!r}")
        if params_hash(session, names) != meta["base_hash"]:
            raise EditError("the session's weights differ from those the ledger was saved from "
                            f"({meta.get('model')!r}, unedited); load it on a fresh session")
        tensors = load_file(str(d / "deltas.safetensors"))
        led = cls(session)
        try:
            for rec in meta["entries"]:
                deltas = {}
                for layer in rec["layers"]:
                    name, _, transposed = live_w_out(session, layer)
                    t = tensors[f"e{rec['id']}:{name}"]
                    deltas[layer] = t.T if transposed else t
                reqs = tuple(EditRequest(r["prompt"], r["subject"], r["target"]) for r in rec["requests"])
                e = led.apply(LayerUpdate(deltas, reqs, rec["kind"]), kind=rec["kind"], outcome=rec["outcome"])
                e.id = rec["id"]
                e.created = rec["created"]
            if params_hash(session, names) != meta["state_hash"]:
                raise EditError("replayed weights differ from the saved state; nothing kept")
        except BaseException:
            led.undo_all()
            raise
        led._next = meta.get("next_id", led._next)
        return led

    def export(self, directory: str | Path) -> Path:
        """Save the model with every active edit as a safetensors directory (config, weights,
        tokenizer) that ``transformers.AutoModelForCausalLM.from_pretrained`` loads."""
        from ._hf import pure_lm

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        pure_lm(self.session).save_pretrained(str(d), safe_serialization=True)
        self.session.tokenizer.save_pretrained(str(d))
        (d / "edit_ledger.json").write_text(json.dumps([e.to_dict() for e in self.entries], indent=1))
        return d


def _hash_tensors(tensors: dict) -> str:
    h = hashlib.sha256()
    for n in sorted(tensors):
        p = tensors[n].detach().cpu().contiguous()
        h.update(f"{n}|{p.dtype}|{tuple(p.shape)}|".encode())
        h.update(p.view(torch.uint8).numpy().tobytes() if p.numel() else b"")
    return h.hexdigest()
