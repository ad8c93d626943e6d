"""Controller methods for the SAE feature browser (harvest, contexts, vocabulary, steering).

Mixed into `widgets.controller.Controller`; the browser calls these and nothing else.
"""

from __future__ import annotations

from workbench.saes.steering import SteerOutcome, steer_outcome

from ._base import Progress
from ._state import ControllerState


class SaeMixin(ControllerState):
    """SAE feature dashboards and steering on the controller's session and corpus."""

    def harvest(self, sae, max_tokens: int = 8192, features=None, k: int = 8,
                progress: Progress | None = None):
        """`workbench.saes.harvest_features` over the controller's corpus (a FeatureHarvest)."""
        from workbench.saes import harvest_features

        if progress:
            progress(0.1, f"harvesting features over {max_tokens} tokens")
        with self.lock:
            h = harvest_features(self.session, sae, self._corpus(), features=features, k=k,
                                 max_tokens=max_tokens, window=64, progress=False)
        return self._remember(h)

    def feature_contexts(self, harvest, feature: int) -> list[dict]:
        from workbench.saes import feature_contexts

        return feature_contexts(self._corpus(), harvest, feature, before=12, after=2)

    def feature_vocab(self, sae, feature: int, k: int = 8, lens: str = "logit"):
        """`workbench.saes.decoder_vocab`: the decoder row read through `lens` (its linear part)."""
        from workbench.saes import decoder_vocab

        reader = self.reader(lens)
        with self.lock:
            return decoder_vocab(self.session, sae, feature, k=k, lens=reader)

    def steer(self, sae, prompt: str, feature: int, amount: float, max_new_tokens: int = 12,
              progress: Progress | None = None) -> SteerOutcome:
        """`workbench.saes.steer_outcome`: next tokens and a continuation with the code raised."""
        with self.lock:
            out = steer_outcome(self.session, sae, prompt, feature, amount, max_new_tokens)
        return self._remember(out)
