"""Locate and edit: causal tracing, ROME rank-one edits with exact undo, edit evaluation."""

__all__: list[str] = []
