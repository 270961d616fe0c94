"""Placeholder module: filled in by the losses work (L-Softmax layer)."""

__all__ = []
