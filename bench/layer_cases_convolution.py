"""Benchmark cases for the convolution, inception and sequence layers (read by ``bench/layers.py``).

Each case pairs a ``cnn_apps`` layer with the closest Keras built-in; the runner times
forward + backward of both on the same input and prints the ratio.
"""

import keras

from cnn_apps.layers import convolution as C
from cnn_apps.layers import inception as I
from cnn_apps.layers import sequence as S

_IMAGE = (8, 32, 32, 16)
_SEQUENCE = (8, 64, 32)


def _conv(filters, kernel=3, padding="same", **kw):
    return lambda: keras.layers.Conv2D(filters, kernel, padding=padding, **kw)


CASES = [
    {"name": "TiledConv2D(32, 3, tile_size=2)",
     "layer": lambda: C.TiledConv2D(32, 3, tile_size=2, padding="same"),
     "baseline_name": "Conv2D(32, 3)", "baseline": _conv(32), "input_shape": _IMAGE},
    {"name": "LocallyConnected2D(32, 3)", "layer": lambda: C.LocallyConnected2D(32, 3),
     "baseline_name": "Conv2D(32, 3, valid)", "baseline": _conv(32, padding="valid"),
     "input_shape": _IMAGE},
    {"name": "MLPConv2D([32, 32, 32], 3)", "layer": lambda: C.MLPConv2D([32, 32, 32], 3),
     "baseline_name": "Conv2D(32, 3)", "baseline": _conv(32, activation="relu"),
     "input_shape": _IMAGE},
    {"name": "DeformableConv2D(32, 3)", "layer": lambda: C.DeformableConv2D(32, 3),
     "baseline_name": "Conv2D(32, 3)", "baseline": _conv(32), "input_shape": _IMAGE},
    {"name": "SpaceToDepthConv2D(32, block 2)", "layer": lambda: C.SpaceToDepthConv2D(32, 2),
     "baseline_name": "Conv2D(32, 3, strides=2)", "baseline": _conv(32, strides=2),
     "input_shape": _IMAGE},
    {"name": "BlurPool2D(2, filter_size=3)", "layer": lambda: C.BlurPool2D(2, 3),
     "baseline_name": "AveragePooling2D(2)", "baseline": lambda: keras.layers.AveragePooling2D(2),
     "input_shape": _IMAGE},
    {"name": "InceptionModule v1 (16,16,32,8,16,16)",
     "layer": lambda: I.InceptionModule(16, 16, 32, 8, 16, 16),
     "baseline_name": "Conv2D(80, 3)", "baseline": _conv(80, activation="relu"),
     "input_shape": _IMAGE},
    {"name": "InceptionResNetBlock a (8,(8,8),(8,12,16))",
     "layer": lambda: I.InceptionResNetBlock(variant="a",
                                             branch_filters=((8,), (8, 8), (8, 12, 16))),
     "baseline_name": "Conv2D(16, 3)", "baseline": _conv(16, activation="relu"),
     "input_shape": _IMAGE},
    {"name": "CausalConv1D(32, 3, dilation 2)",
     "layer": lambda: S.CausalConv1D(32, 3, dilation_rate=2),
     "baseline_name": "Conv1D(32, 3, causal, dilation 2)",
     "baseline": lambda: keras.layers.Conv1D(32, 3, padding="causal", dilation_rate=2),
     "input_shape": _SEQUENCE},
    {"name": "GatedConv1D(32, 3)", "layer": lambda: S.GatedConv1D(32, 3),
     "baseline_name": "Conv1D(32, 3, causal)",
     "baseline": lambda: keras.layers.Conv1D(32, 3, padding="causal"),
     "input_shape": _SEQUENCE},
    {"name": "WaveNetResidualBlock(32, dilation 4)",
     "layer": lambda: S.WaveNetResidualBlock(32, dilation_rate=4),
     "baseline_name": "Conv1D(32, 2, causal, dilation 4)",
     "baseline": lambda: keras.layers.Conv1D(32, 2, padding="causal", dilation_rate=4),
     "input_shape": _SEQUENCE},
]
