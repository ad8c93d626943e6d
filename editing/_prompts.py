"""Prompts with a subject: locating the subject's tokens, target tokens, and the edit errors."""

from __future__ import annotations

from dataclasses import dataclass

from workbench.errors import LayerOutOfRange, TokenError, WorkbenchError
from workbench.session import Session

__all__ = ["SubjectNotFound", "EditError", "SubjectPrompt", "locate_subject", "target_id",
           "target_ids", "check_edit_layer"]


class SubjectNotFound(WorkbenchError):
    """The subject string does not occur in the prompt."""


class EditError(WorkbenchError):
    """An edit that cannot be applied or undone as asked (wrong shape, already undone, ...)."""


@dataclass(frozen=True)
class SubjectPrompt:
    """A prompt tokenized with the span of its subject.

    Args:
        text: the prompt as run (template filled in).
        ids: token ids (BOS first when the session prepends it).
        start: index of the subject's first token.
        end: one past the subject's last token (`end - 1` is the "subject last" position).
    """

    text: str
    ids: tuple[int, ...]
    start: int
    end: int

    @property
    def last(self) -> int:
        """Position of the subject's last token."""
        return self.end - 1


def fill(prompt: str, subject: str) -> str:
    """A ROME-style template ``"{} is located in"`` filled with the subject, else the prompt."""
    return prompt.replace("{}", subject) if "{}" in prompt else prompt


def locate_subject(session: Session, prompt: str, subject: str, search_from: int = 0) -> SubjectPrompt:
    """Tokenize `prompt` and find the tokens that cover the (last) occurrence of `subject`.

    The search starts at character `search_from` (used to skip a context prefix). Tokens whose
    character span overlaps the subject's are the subject tokens.
    """
    if not isinstance(subject, str) or not subject.strip():
        raise SubjectNotFound(f"subject={subject!r} is empty; give the subject's text as it "
                              "appears in the prompt")
    text = fill(prompt, subject)
    if not text:
        raise SubjectNotFound("prompt='' is empty; give a prompt that contains the subject")
    at = text.rfind(subject, search_from)
    if at < 0:
        raise SubjectNotFound(f"subject={subject!r} does not occur in prompt={text[search_from:]!r}; "
                              "the subject must appear verbatim (or write '{}' where it goes)")
    enc = session.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    offsets = list(enc["offset_mapping"])
    lo, hi = at, at + len(subject)
    covered = [i for i, (a, b) in enumerate(offsets) if b > lo and a < hi]
    if not covered:
        raise SubjectNotFound(f"subject={subject!r} covers no token of prompt={text!r}")
    shift = 0
    bos = session.tokenizer.bos_token_id
    if session.prepend_bos and bos is not None:
        ids = [bos, *ids]
        shift = 1
    return SubjectPrompt(text, tuple(ids), covered[0] + shift, covered[-1] + 1 + shift)


def target_text(prompt: str, target: str) -> str:
    """The target as it follows the prompt: with a leading space unless one is already there."""
    if not isinstance(target, str) or not target.strip():
        raise TokenError(f"target={target!r} is empty; give a word that is one token")
    if prompt.endswith(" ") or target.startswith(" "):
        return target
    return " " + target


def target_id(session: Session, prompt: str, target: str) -> int:
    """Token id of `target` after `prompt`; TokenError unless it is exactly one token."""
    return session.token_id(target_text(prompt, target))


def target_ids(session: Session, prompt: str, target: str) -> tuple[int, ...]:
    """Token ids of `target` (any number of tokens) as it follows `prompt`.

    TokenError when the target is empty or the tokenizer cannot produce it: its tokens decode to
    another string (characters outside the vocabulary, an unknown-token id).
    """
    text = target_text(prompt, target)
    try:
        ids = tuple(session.tokenizer(text, add_special_tokens=False)["input_ids"])
        back = session.tokenizer.decode(list(ids))
    except (TypeError, ValueError, UnicodeError) as e:
        raise TokenError(f"target={target!r} cannot be produced by this tokenizer "
                         f"({type(e).__name__}: {e}); give plain text") from None
    unk = session.tokenizer.unk_token_id
    if not ids or (unk is not None and unk in ids) or back != text:
        raise TokenError(f"target={target!r} cannot be produced by this tokenizer: {text!r} "
                         f"encodes to {list(ids)}, which decodes to {back!r}")
    return ids


def check_edit_layer(session: Session, layer) -> int:
    """The layer as an int, or LayerOutOfRange naming the valid range."""
    if isinstance(layer, bool):
        raise LayerOutOfRange(f"layer={layer!r} is not an integer; valid range is 0..{session.n_layers - 1}")
    return session.check_layer(layer)
