"""Scripted probe batteries: specs, scikit-learn probes, metrics and HTML reports."""

__all__: list[str] = []
