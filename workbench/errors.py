"""Exceptions for user mistakes. Each names the bad value and the valid range or choices."""

from __future__ import annotations

import operator
from collections.abc import Iterable


class WorkbenchError(ValueError):
    """Base class of every user-facing error raised by the workbench."""


class WorkbenchWarning(UserWarning):
    """Base class of the workbench's own warnings (tests turn them into errors)."""


class UnknownModelError(WorkbenchError):
    """A model name that is neither embedded, a local directory, nor loadable by name."""


class LayerOutOfRange(WorkbenchError):
    """A layer index outside 0..n_layers-1."""


class NeuronOutOfRange(WorkbenchError):
    """An FFN unit index outside 0..d_mlp-1."""


class HeadOutOfRange(WorkbenchError):
    """An attention head index outside 0..n_heads-1."""


class PositionOutOfRange(WorkbenchError):
    """A token position outside the prompt."""


class EmptyPromptError(WorkbenchError):
    """An empty prompt or an empty list of prompts."""


class UnknownSiteError(WorkbenchError):
    """A hook site kind that the workbench does not know."""


class CorpusError(WorkbenchError):
    """A corpus path that does not exist, or a corpus with no usable text."""


class TokenError(WorkbenchError):
    """A target string that is not exactly one token of the model's vocabulary."""


class ShapeError(WorkbenchError):
    """A tensor whose shape does not fit where it is used."""


class NonFiniteError(WorkbenchError):
    """A tensor that holds NaN or infinite values where finite ones are required."""


def choices(values: Iterable[object], limit: int = 12) -> str:
    """Render a list of valid choices for an error message, shortened past `limit` items."""
    vals = [repr(v) for v in values]
    if len(vals) > limit:
        return ", ".join(vals[:limit]) + f", ... ({len(vals)} in all)"
    return ", ".join(vals)


def check_index(value: int, size: int, what: str, exc: type[WorkbenchError]) -> int:
    """Return `value` as an int when 0 <= value < size, else raise `exc` naming the range."""
    if isinstance(value, bool):
        raise exc(f"{what}={value!r} is a bool, not an integer; valid range is 0..{size - 1}")
    try:
        ivalue = int(value)
    except (TypeError, ValueError):
        raise exc(f"{what}={value!r} is not an integer; valid range is 0..{size - 1}") from None
    if ivalue != value or not 0 <= ivalue < size:
        raise exc(f"{what}={value!r} is out of range; valid range is 0..{size - 1} ({size} in all)")
    return ivalue


def as_int(value: object) -> int | None:
    """`value` as an int when it is an integer (Python, NumPy, or a one-element integer tensor),
    else None; a bool is not an integer here."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)  # type: ignore[arg-type]
    except TypeError:
        return None


def check_int(value: object, what: str, exc: type[WorkbenchError] = WorkbenchError,
              lo: int | None = None, hi: int | None = None) -> int:
    """Return `value` as an int when it is an integer in lo..hi (either bound optional), else
    raise `exc` naming the value and the valid range (a bool or an integral float is no int)."""
    ivalue = as_int(value)
    if ivalue is None or (lo is not None and ivalue < lo) or (hi is not None and ivalue > hi):
        if lo is not None and hi is not None:
            valid = f" in {lo}..{hi}"
        elif lo is not None:
            valid = f" >= {lo}"
        elif hi is not None:
            valid = f" <= {hi}"
        else:
            valid = ""
        raise exc(f"{what}={value!r} must be an int{valid}")
    return ivalue


def check_units(units: object, what: str, exc: type[WorkbenchError]) -> tuple[int, ...]:
    """`units` (one int or a list of ints: neurons, heads, positions) as a tuple of ints, else
    raise `exc` naming the value (ranges are checked where the model is known)."""
    one = as_int(units)
    if one is not None:
        return (one,)
    if isinstance(units, Iterable) and not isinstance(units, (str, bytes)):
        out: list[int] = []
        try:
            for u in units:
                iu = as_int(u)
                if iu is None:
                    break
                out.append(iu)
            else:
                return tuple(out)
        except TypeError:  # e.g. iterating a 0-d tensor
            pass
    raise exc(f"{what}={units!r} must be an int or a list of ints")


def check_finite(tensor, what: str) -> None:
    """Raise NonFiniteError when `tensor` holds NaN or inf."""
    import torch

    if not torch.isfinite(tensor).all():
        n_bad = int((~torch.isfinite(tensor)).sum())
        raise NonFiniteError(f"{what} holds {n_bad} NaN or infinite values")
