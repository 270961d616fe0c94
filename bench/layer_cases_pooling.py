"""Benchmark cases for the pooling / aggregation layers (read by ``bench/layers.py``).

Each case pairs a ``cnn_apps`` layer with the closest Keras built-in; the runner times
forward + backward of both on the same input and prints the ratio.
"""

import keras

from cnn_apps.layers import pooling as P

_IMAGE = (8, 32, 32, 16)
_SEQUENCE = (8, 64, 32)

CASES = [
    {"name": "LpPooling2D(p=3)", "layer": lambda: P.LpPooling2D(p=3),
     "baseline_name": "MaxPooling2D", "baseline": lambda: keras.layers.MaxPooling2D(2),
     "input_shape": _IMAGE},
    {"name": "MixedPooling2D", "layer": lambda: P.MixedPooling2D(),
     "baseline_name": "MaxPooling2D", "baseline": lambda: keras.layers.MaxPooling2D(2),
     "input_shape": _IMAGE},
    {"name": "StochasticPooling2D", "layer": lambda: P.StochasticPooling2D(),
     "baseline_name": "MaxPooling2D", "baseline": lambda: keras.layers.MaxPooling2D(2),
     "input_shape": _IMAGE},
    {"name": "SpectralPooling2D((16,16))", "layer": lambda: P.SpectralPooling2D((16, 16)),
     "baseline_name": "AveragePooling2D", "baseline": lambda: keras.layers.AveragePooling2D(2),
     "input_shape": _IMAGE},
    {"name": "SpectralPooling2D((16,16), fft)",
     "layer": lambda: P.SpectralPooling2D((16, 16), method="fft"),
     "baseline_name": "AveragePooling2D", "baseline": lambda: keras.layers.AveragePooling2D(2),
     "input_shape": _IMAGE},
    {"name": "SpatialPyramidPooling2D((1,2,4))",
     "layer": lambda: P.SpatialPyramidPooling2D((1, 2, 4)),
     "baseline_name": "GlobalMaxPooling2D", "baseline": lambda: keras.layers.GlobalMaxPooling2D(),
     "input_shape": _IMAGE},
    {"name": "SpatialPyramidPooling2D((1,3,6)) uneven bins",
     "layer": lambda: P.SpatialPyramidPooling2D((1, 3, 6)),
     "baseline_name": "GlobalMaxPooling2D", "baseline": lambda: keras.layers.GlobalMaxPooling2D(),
     "input_shape": _IMAGE},
    {"name": "VLADPooling(8)", "layer": lambda: P.VLADPooling(8),
     "baseline_name": "GlobalAveragePooling2D",
     "baseline": lambda: keras.layers.GlobalAveragePooling2D(), "input_shape": _IMAGE},
    {"name": "BilinearPooling", "layer": lambda: P.BilinearPooling(),
     "baseline_name": "GlobalAveragePooling2D",
     "baseline": lambda: keras.layers.GlobalAveragePooling2D(), "input_shape": _IMAGE},
    {"name": "KMaxPooling1D(4)", "layer": lambda: P.KMaxPooling1D(4),
     "baseline_name": "GlobalMaxPooling1D", "baseline": lambda: keras.layers.GlobalMaxPooling1D(),
     "input_shape": _SEQUENCE},
    {"name": "DynamicKMaxPooling1D(4, 1, 2)",
     "layer": lambda: P.DynamicKMaxPooling1D(k_top=4, layer_index=1, num_layers=2),
     "baseline_name": "GlobalMaxPooling1D", "baseline": lambda: keras.layers.GlobalMaxPooling1D(),
     "input_shape": _SEQUENCE},
    {"name": "Folding1D", "layer": lambda: P.Folding1D(),
     "baseline_name": "MaxPooling1D", "baseline": lambda: keras.layers.MaxPooling1D(2),
     "input_shape": _SEQUENCE},
]
