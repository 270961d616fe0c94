"""Benchmark cases for activation, regularization and shortcut layers (``bench/layers.py``).

Each case pairs a ``cnn_apps`` layer with the closest Keras built-in (or a stack of them);
the runner times forward + backward of both on the same input and prints the ratio.
"""

import keras

from cnn_apps.layers import activations as A
from cnn_apps.layers import regularization as R
from cnn_apps.layers import shortcuts as S

_IMAGE = (8, 32, 32, 16)
_VECTOR = (64, 256)


def _conv(filters, kernel=3, **kw):
    return keras.layers.Conv2D(filters, kernel, padding="same", **kw)


def _lrn_baseline():
    """tf.nn.local_response_normalization where TF is the backend, else BatchNormalization."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        return keras.layers.Lambda(
            lambda t: tf.nn.local_response_normalization(t, 2, 2.0, 1e-4, 0.75))
    return keras.layers.BatchNormalization()


def _conv_bn_stack(*convs):
    """Conv2D-BN(-ReLU) stack: the built-in layers a residual branch is made of."""
    layers = []
    for i, (filters, kernel) in enumerate(convs):
        layers += [_conv(filters, kernel, use_bias=False), keras.layers.BatchNormalization()]
        if i < len(convs) - 1:
            layers.append(keras.layers.ReLU())
    return keras.Sequential(layers)


def _dense_block_baseline():
    """DenseBlock(4, 8)'s BN-ReLU-conv layers without the concatenation (fixed 16 channels)."""
    layers = []
    for _ in range(4):
        for filters, kernel in ((32, 1), (16, 3)):
            layers += [keras.layers.BatchNormalization(), keras.layers.ReLU(),
                       _conv(filters, kernel, use_bias=False)]
    return keras.Sequential(layers)


CASES = [
    {"name": "RReLU", "layer": lambda: A.RReLU(),
     "baseline_name": "LeakyReLU", "baseline": lambda: keras.layers.LeakyReLU(0.2),
     "input_shape": _IMAGE},
    {"name": "Maxout(8)", "layer": lambda: A.Maxout(8),
     "baseline_name": "ReLU", "baseline": lambda: keras.layers.ReLU(), "input_shape": _IMAGE},
    {"name": "Probout(8)", "layer": lambda: A.Probout(8),
     "baseline_name": "ReLU", "baseline": lambda: keras.layers.ReLU(), "input_shape": _IMAGE},
    {"name": "ChannelPReLU", "layer": lambda: A.ChannelPReLU(),
     "baseline_name": "PReLU(shared_axes=[1, 2])",
     "baseline": lambda: keras.layers.PReLU(shared_axes=[1, 2]), "input_shape": _IMAGE},
    {"name": "DropConnectDense(256, 0.5)", "layer": lambda: R.DropConnectDense(256, 0.5),
     "baseline_name": "Dense(256)", "baseline": lambda: keras.layers.Dense(256),
     "input_shape": _VECTOR},
    {"name": "DropConnectConv2D(16, 3, 0.5)",
     "layer": lambda: R.DropConnectConv2D(16, 3, 0.5, padding="same"),
     "baseline_name": "Conv2D(16, 3)", "baseline": lambda: _conv(16), "input_shape": _IMAGE},
    {"name": "LocalResponseNormalization", "layer": lambda: R.LocalResponseNormalization(),
     "baseline_name": "tf.nn.local_response_normalization", "baseline": _lrn_baseline,
     "input_shape": _IMAGE},
    {"name": "Highway(relu)", "layer": lambda: S.Highway(),
     "baseline_name": "Dense(256)", "baseline": lambda: keras.layers.Dense(256),
     "input_shape": _VECTOR},
    {"name": "HighwayConv2D(3)", "layer": lambda: S.HighwayConv2D(3),
     "baseline_name": "Conv2D(16, 3)", "baseline": lambda: _conv(16), "input_shape": _IMAGE},
    {"name": "ResidualBlock(16)", "layer": lambda: S.ResidualBlock(16),
     "baseline_name": "Conv2D-BN-ReLU-Conv2D-BN",
     "baseline": lambda: _conv_bn_stack((16, 3), (16, 3)), "input_shape": _IMAGE},
    {"name": "ResidualBlock(4, bottleneck)", "layer": lambda: S.ResidualBlock(4, bottleneck=True),
     "baseline_name": "Conv2D-BN 1x1-3x3-1x1",
     "baseline": lambda: _conv_bn_stack((4, 1), (4, 3), (16, 1)), "input_shape": _IMAGE},
    {"name": "DenseBlock(4, 8)", "layer": lambda: S.DenseBlock(4, 8),
     "baseline_name": "4 x BN-ReLU-Conv2D(1x1, 3x3)", "baseline": _dense_block_baseline,
     "input_shape": _IMAGE},
    {"name": "StochasticDepth(0.8)", "layer": lambda: S.StochasticDepth(0.8),
     "baseline_name": "Add", "baseline": lambda: keras.layers.Add(),
     "input_shape": [_IMAGE, _IMAGE]},
]
