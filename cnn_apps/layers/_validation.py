"""Argument checks shared by the layer modules (one clear ValueError naming the argument)."""

import numpy as np


def positive_int(value, name):
    """``value`` as a Python int if it is a positive integer (bool excluded), else ValueError."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def int_pair(value, name):
    """An int or a pair of positive ints -> ``(a, b)``, else ValueError naming ``name``."""
    values = (value,) * 2 if isinstance(value, (int, np.integer)) else tuple(value)
    if len(values) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer))
                               or v < 1 for v in values):
        raise ValueError(f"{name} must be a positive integer or 2 of them, got {value!r}")
    return tuple(int(v) for v in values)
