"""Checks run before an export: only layers that load with Keras ``safe_mode=True``.

A ``keras.layers.Lambda`` stores Python bytecode; loading it needs ``safe_mode=False`` (arbitrary
code execution), so a model containing one is refused for export with the layer's name.
"""

from __future__ import annotations

from cnn_apps.errors import CnnAppsError


def unsafe_layers(model) -> list[str]:
    """Paths (``outer/inner/...``) of every ``keras.layers.Lambda`` in ``model``, nested models
    included."""
    import keras

    found, seen = [], set()

    def visit(layer, prefix):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        path = f"{prefix}/{layer.name}" if prefix else layer.name
        if isinstance(layer, keras.layers.Lambda):
            found.append(path)
        # `_layers` also holds sub-layers a custom layer keeps as attributes.
        for child in list(getattr(layer, "layers", None) or []) + list(
                getattr(layer, "_layers", None) or []):
            visit(child, path)

    visit(model, "")
    return found


def check_exportable(model) -> None:
    """Raise ``CnnAppsError`` naming each Lambda layer of ``model`` (it would need unsafe
    loading)."""
    bad = unsafe_layers(model)
    if bad:
        raise CnnAppsError(
            f"model '{model.name}' contains Lambda layer(s) {', '.join(repr(b) for b in bad)}: "
            "they can only be loaded with keras safe_mode=False (arbitrary code), so they are "
            "not exported; replace each with a registered Keras layer subclass")
