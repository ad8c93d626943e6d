"""HTML of SAE features: top-activating contexts and a steering outcome."""

from __future__ import annotations

from workbench.saes.steering import SteerOutcome

from .report import escape
from .tables import table_html

__all__ = ["examples_html", "steer_html"]


def examples_html(rows: list[dict]) -> str:
    """Top-activating contexts, the trigger token highlighted."""
    out = [{"act": r["value"],
            "context": (f"{escape(r['before'])}<mark class='tok'>{escape(r['token'])}</mark>"
                        f"{escape(r['after'])}")} for r in rows]
    return table_html(out, ["act", "context"], raw=("context",)) if out else "<i>never fired</i>"


def steer_html(out: SteerOutcome) -> str:
    rows = [{"": "greedy continuation", "plain": out.gen_before, "steered": out.gen_after},
            {"": "top next tokens", "plain": ", ".join(f"{t!r} {p:.2f}" for t, p in out.top_before),
             "steered": ", ".join(f"{t!r} {p:.2f}" for t, p in out.top_after)}]
    return (f"<p><b>Steering</b> feature {out.feature} by {out.amount:+g} on "
            f"{escape(repr(out.prompt))}</p>" + table_html(rows, ["", "plain", "steered"]))
