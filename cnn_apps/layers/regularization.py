"""Placeholder module: filled in by the layer-library work."""

__all__ = []
