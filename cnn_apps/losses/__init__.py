"""Loss functions from the CNN literature (survey S0 §3.4) and the task losses the pipelines need.

Every class is a ``keras.losses.Loss`` written with ``keras.ops`` (TF, JAX and PyTorch
backends), registered serializable under the package name ``cnn_apps``; each docstring gives
the formula and its seed section. The L-Softmax margin itself is the layer
``cnn_apps.layers.LSoftmaxDense``; ``LSoftmaxLoss`` is the loss it is trained with.
"""

from cnn_apps.losses import divergence, margin, metric_learning, task
from cnn_apps.losses.divergence import *  # noqa: F401,F403
from cnn_apps.losses.margin import *  # noqa: F401,F403
from cnn_apps.losses.metric_learning import *  # noqa: F401,F403
from cnn_apps.losses.task import *  # noqa: F401,F403

_MODULES = (margin, metric_learning, divergence, task)

__all__ = [name for module in _MODULES for name in module.__all__] + ["list_losses"]


def list_losses():
    """``[(name, one-line description)]`` for every public loss and helper, in survey order."""
    rows = []
    for module in _MODULES:
        for name in module.__all__:
            doc = (getattr(module, name).__doc__ or "").strip().splitlines()
            rows.append((name, doc[0].strip() if doc else ""))
    return rows
