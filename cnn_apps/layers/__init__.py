"""Custom Keras 3 layers from the CNN literature (survey sections 3.1-3.3, 3.5, 3.6).

Every public class is a ``keras.layers.Layer`` written with ``keras.ops`` (so it runs on the
TensorFlow and JAX backends and compiles with XLA), registered serializable under the package
name ``cnn_apps``. ``list_layers()`` gives one line per public name.
"""

from cnn_apps.layers.activations import *  # noqa: F401,F403
from cnn_apps.layers.convolution import *  # noqa: F401,F403
from cnn_apps.layers.fast import *  # noqa: F401,F403
from cnn_apps.layers.grouped import *  # noqa: F401,F403
from cnn_apps.layers.inception import *  # noqa: F401,F403
from cnn_apps.layers.margin import *  # noqa: F401,F403
from cnn_apps.layers.pooling import *  # noqa: F401,F403
from cnn_apps.layers.quantized import *  # noqa: F401,F403
from cnn_apps.layers.regularization import *  # noqa: F401,F403
from cnn_apps.layers.roi import *  # noqa: F401,F403
from cnn_apps.layers.sequence import *  # noqa: F401,F403
from cnn_apps.layers.shortcuts import *  # noqa: F401,F403
from cnn_apps.layers.structured import *  # noqa: F401,F403
from cnn_apps.layers import (activations, convolution, fast, grouped, inception, margin,
                             pooling, quantized, regularization, roi, sequence, shortcuts,
                             structured)

_MODULES = (convolution, grouped, inception, sequence, shortcuts, pooling, activations, regularization,
            margin, roi, structured, quantized, fast)


def list_layers():
    """``[(name, one-line description)]`` for every public layer, initializer and helper."""

    rows = []
    for module in _MODULES:
        for name in module.__all__:
            obj = getattr(module, name)
            if not callable(obj) or isinstance(obj, (tuple, list, dict)):
                continue  # constants such as ACTIVATIONS are not layers
            doc = (obj.__doc__ or "").strip().splitlines()
            rows.append((name, doc[0].strip() if doc else ""))
    return rows
