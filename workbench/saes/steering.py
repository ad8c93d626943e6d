"""Steering with an SAE latent: the model's next tokens and continuation with a code raised.

    x -> x + amount * d_f     at every position of the SAE's site (d_f: the latent's decoder row)

spliced with the SAE error kept, so an amount of 0 is the identity and the steer acts alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..session import Session
from ..vocab import next_tokens
from .splice import splice, steer_feature

__all__ = ["SteerOutcome", "steer_outcome"]


@dataclass(frozen=True)
class SteerOutcome:
    """The model with an SAE latent steered (code + amount) against the plain model.

    Args:
        prompt, feature, amount: what was steered, and by how much (added to the code, so
            amount * d_feature is added to the activation at every position).
        top_before, top_after: [k] (token, p) next tokens without / with steering.
        gen_before, gen_after: greedy continuations.
    """

    prompt: str
    feature: int
    amount: float
    top_before: tuple[tuple[str, float], ...]
    top_after: tuple[tuple[str, float], ...]
    gen_before: str
    gen_after: str


def steer_outcome(session: Session, sae, prompt: str, feature: int, amount: float,
                  max_new_tokens: int = 12, k: int = 5) -> SteerOutcome:
    """Next tokens and a greedy continuation of `prompt` with `amount` added to latent `feature`."""
    s = session
    before, gen_before = next_tokens(s, prompt, k), s.generate(prompt, max_new_tokens=max_new_tokens)
    with splice(s, sae, [steer_feature(feature, amount)], keep_error=True):
        after, gen_after = next_tokens(s, prompt, k), s.generate(prompt, max_new_tokens=max_new_tokens)
    return SteerOutcome(prompt, int(feature), float(amount), before, after, gen_before, gen_after)
