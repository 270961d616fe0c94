"""Grouped convolution that trains at full speed on TensorFlow's CPU backend.

``keras.layers.Conv2D(groups=G)`` on the TensorFlow backend always compiles the convolution
with XLA, because grouped convolutions once failed on CPU without it. XLA's CPU convolutions
are generic Eigen kernels, not oneDNN's, and their backward pass for grouped kernels is
two orders of magnitude slower: ResNeXt-50 trained at 0.1 img/s (1.6% of the matmul peak) in
``bench/backbones.py``, against 6 img/s for ResNet-50 at the same FLOPs. TensorFlow 2.21's
own grouped ``tf.nn.convolution`` is correct on CPU (forward and both gradients equal the
split-and-concatenate reference, see ``tests/layers/test_grouped.py``) and fast, so this
layer calls it directly on the TensorFlow backend and defers to Keras everywhere else.
"""

from __future__ import annotations

import keras

__all__ = ["GroupedConv2D"]


@keras.saving.register_keras_serializable(package="cnn_apps")
class GroupedConv2D(keras.layers.Conv2D):
    """2-D convolution with ``groups`` channel groups (ResNeXt's aggregated transforms).

    Input channels are split into G groups of ``C_in / G`` and output channels into G groups
    of ``C_out / G``; output group g sees only input group g (Krizhevsky's two-GPU AlexNet;
    Xie et al.'s ResNeXt, survey S0 §3.1)::

        y[..., g·m + j] = Σ_{i < C_in/G} Σ_{u,v} W[u, v, i, g·m + j] · x[..., g·(C_in/G) + i]

    with ``m = C_out / G``; the kernel has shape ``(kh, kw, C_in / G, C_out)``, exactly as in
    ``keras.layers.Conv2D(groups=G)``, so weights transfer between the two. Same arguments
    and results as ``keras.layers.Conv2D``; only the TensorFlow channels-last computation
    path differs (no forced XLA).

    Example::

        >>> layer = GroupedConv2D(128, 3, groups=32, padding="same", use_bias=False)
        >>> layer(keras.ops.ones((2, 56, 56, 128))).shape
        (2, 56, 56, 128)
    """

    def convolution_op(self, inputs, kernel):
        if (self.groups == 1 or keras.backend.backend() != "tensorflow"
                or self.data_format != "channels_last"):
            return super().convolution_op(inputs, kernel)
        import tensorflow as tf

        return tf.nn.convolution(inputs, kernel, strides=list(self.strides),
                                 padding=self.padding.upper(),
                                 dilations=list(self.dilation_rate), data_format="NHWC")
