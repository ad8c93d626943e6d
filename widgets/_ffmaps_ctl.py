"""Controller method for the FF-maps view: decompose a prompt's layers (Kobayashi et al. 2024).

Mixed into `widgets.controller.Controller` (add `FFMapsMixin` to its bases); the view calls
this and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence

from workbench.ffmaps import FFMaps, ffmaps

from ._base import Progress
from ._state import ControllerState

__all__ = ["FFMapsMixin"]


class FFMapsMixin(ControllerState):
    """Contextualisation maps of the controller's session."""

    def ffmaps(self, prompt: str, layers: Sequence[int] | None = None, steps: int = 64,
               progress: Progress | None = None, **config) -> FFMaps:
        """`workbench.ffmaps.ffmaps` (maps after each component, FF statistics, amplified pairs)."""
        if progress:
            progress(0.1, f"decomposing {'every layer' if layers is None else f'{len(layers)} layers'}")
        with self.lock:
            r = ffmaps(self.session, prompt, layers, steps=steps, **config)
        return self._remember(r)
