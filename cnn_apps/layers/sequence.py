"""1-D sequence convolutions: causal, gated and WaveNet blocks (survey S0 §3.1.3, §5.9, §5.10;
SEED_CHECKLIST V-03, V-04, V-13).

Inputs are (batch, time, channels). "Causal" means output t depends only on inputs <= t,
obtained by left-padding (kernel_size - 1) * dilation_rate zeros before a valid convolution.
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.layers.convolution import _ConvBase, _int_tuple, _positive_int

__all__ = ["CausalConv1D", "GatedConv1D", "WaveNetResidualBlock"]

_register = keras.saving.register_keras_serializable(package="cnn_apps")


class _Conv1DBase(_ConvBase):
    """Rank-1 base with dilation and causal/same/valid padding (not public)."""

    _rank = 1
    _paddings = ("causal", "same", "valid")

    def __init__(self, filters, kernel_size, dilation_rate=1, strides=1, padding="causal",
                 **kwargs):
        super().__init__(filters, kernel_size, strides=strides, padding=padding, **kwargs)
        self.dilation_rate = _int_tuple(dilation_rate, 1, "dilation_rate")
        if self.strides[0] > 1 and self.dilation_rate[0] > 1:
            raise ValueError(f"{type(self).__name__}: `strides` > 1 together with "
                             f"`dilation_rate` > 1 is not supported (got {self.strides[0]} and "
                             f"{self.dilation_rate[0]})")

    def _conv(self, x, kernel, padding=None):
        padding = padding or self.padding
        if padding == "causal":
            left = (self.kernel_size[0] - 1) * self.dilation_rate[0]
            x = ops.pad(x, ((0, 0), (left, 0), (0, 0)))
            padding = "valid"
        return ops.conv(x, kernel, strides=self.strides, padding=padding,
                        dilation_rate=self.dilation_rate)

    def get_config(self):
        return {**super().get_config(), "dilation_rate": self.dilation_rate}


@_register
class CausalConv1D(_Conv1DBase):
    """Dilated causal 1-D convolution (WaveNet, ByteNet; survey S0 §3.1.3, §5.9, V-03/V-04).

    ``y_t = act(sum_{tau=0}^{k-1} W_tau x_{t - d*(k-1-tau)} + b)`` with x_t = 0 for t < 0,
    i.e. the S0 dilated convolution (F *_l k)_t = sum_tau k_tau F_{t - l tau} restricted to
    the past: output t never sees inputs after t. Same result as
    ``keras.layers.Conv1D(padding="causal")``; stacking dilations 1, 2, 4, ... grows the
    receptive field exponentially (``receptive_field``). Weights: ``kernel`` (k, in, filters).

    Args: ``filters``, ``kernel_size`` k, ``dilation_rate`` d, ``strides`` and the usual
    activation/initializer/regularizer arguments. Deterministic; any sequence length.

    Example:
        layer = CausalConv1D(16, kernel_size=2, dilation_rate=4)
        y = layer(keras.random.normal((2, 32, 8)))  # (2, 32, 16)
    """

    _paddings = ("causal",)

    def __init__(self, filters, kernel_size, dilation_rate=1, strides=1, **kwargs):
        super().__init__(filters, kernel_size, dilation_rate=dilation_rate, strides=strides,
                         padding="causal", **kwargs)

    def build(self, input_shape):
        channels = self._channels(input_shape)
        self.kernel = self._kernel(self.kernel_size + (channels, self.filters))
        self.bias = self._bias((self.filters,)) if self.use_bias else None

    def call(self, inputs):
        y = self._conv(inputs, self.kernel)
        if self.use_bias:
            y = y + self.bias
        return self.activation(y)

    def get_config(self):
        config = super().get_config()
        config.pop("padding")
        return config


@_register
class GatedConv1D(_Conv1DBase):
    """Gated linear unit convolution (Dauphin et al. 2017 gated CNN; survey S0 §5.10, V-13).

    ``h = (X * W + b) ⊗ sigmoid(X * V + c)``: a linear convolution gated element-wise by a
    sigmoid convolution of the same input; the linear path keeps gradients from vanishing.
    Both are computed as one convolution with 2*filters outputs: ``kernel[..., :filters]`` is
    W, ``kernel[..., filters:]`` is V (``bias`` likewise holds b then c). ``padding="causal"``
    (default, for language models), "same" or "valid".

    Args: ``filters`` output channels, ``kernel_size``, ``dilation_rate``, ``padding``,
    ``strides``, ``activation`` applied to h (default None: the plain GLU) and the usual
    initializer/regularizer arguments. Deterministic; any sequence length.

    Example:
        layer = GatedConv1D(16, kernel_size=3)
        y = layer(keras.random.normal((2, 20, 8)))  # (2, 20, 16)
    """

    def __init__(self, filters, kernel_size, dilation_rate=1, padding="causal", **kwargs):
        super().__init__(filters, kernel_size, dilation_rate=dilation_rate, padding=padding,
                         **kwargs)

    def build(self, input_shape):
        channels = self._channels(input_shape)
        self.kernel = self._kernel(self.kernel_size + (channels, 2 * self.filters))
        self.bias = self._bias((2 * self.filters,)) if self.use_bias else None

    def call(self, inputs):
        y = self._conv(inputs, self.kernel)
        if self.use_bias:
            y = y + self.bias
        linear, gate = ops.split(y, 2, axis=-1)
        return self.activation(linear * ops.sigmoid(gate))


@_register
class WaveNetResidualBlock(_Conv1DBase):
    """WaveNet residual block with gated activation and skip output (van den Oord 2016; S0 §5.9).

    ``z = tanh(W_f *_d x + V_f c + b_f) ⊗ sigmoid(W_g *_d x + V_g c + b_g)`` with *_d a
    causal convolution dilated by d; returns ``(x + z W_r + b_r, z W_s + b_s)``: the residual
    output (same channels as x, fed to the next block) and the skip output (summed over blocks
    by the caller). The optional conditioning c is a second input: (batch, time, cond) for
    local conditioning (e.g. upsampled mel frames) or (batch, cond) for global conditioning
    (broadcast over time); V_f, V_g are 1x1 projections. Weights: ``kernel`` (k, in,
    2*filters) holding W_f then W_g, ``bias``, ``residual_kernel`` (filters, in),
    ``skip_kernel`` (filters, skip_filters), and ``condition_kernel`` (cond, 2*filters).

    Args: ``filters`` gate width, ``dilation_rate`` d, ``kernel_size`` (2 in WaveNet),
    ``skip_filters`` (default ``filters``), usual initializer/regularizer arguments.
    Deterministic; any sequence length.

    Example:
        block = WaveNetResidualBlock(16, dilation_rate=2)
        res, skip = block(keras.random.normal((2, 32, 8)))  # (2, 32, 8), (2, 32, 16)
    """

    def __init__(self, filters, dilation_rate=1, kernel_size=2, skip_filters=None, **kwargs):
        for key in ("strides", "activation"):
            if key in kwargs:
                raise ValueError(f"WaveNetResidualBlock has no `{key}` argument (stride 1, gated "
                                 "tanh * sigmoid unit)")
        super().__init__(filters, kernel_size, dilation_rate=dilation_rate, padding="causal",
                         **kwargs)
        self.skip_filters = self.filters if skip_filters is None else \
            _positive_int(skip_filters, "skip_filters")

    def _split_inputs(self, inputs):
        if isinstance(inputs, (list, tuple)):
            if len(inputs) != 2:
                raise ValueError("WaveNetResidualBlock takes `x` or `[x, conditioning]`, got "
                                 f"{len(inputs)} inputs")
            return inputs[0], inputs[1]
        return inputs, None

    def build(self, input_shape):
        nested = isinstance(input_shape, (list, tuple)) and input_shape \
            and isinstance(input_shape[0], (list, tuple))
        x_shape, cond_shape = (input_shape[0], input_shape[1]) if nested else (input_shape, None)
        channels = self._channels(x_shape)
        f = self.filters
        self.kernel = self._kernel(self.kernel_size + (channels, 2 * f))
        self.bias = self._bias((2 * f,)) if self.use_bias else None
        self.residual_kernel = self._kernel((f, channels), name="residual_kernel")
        self.residual_bias = self._bias((channels,), name="residual_bias") \
            if self.use_bias else None
        self.skip_kernel = self._kernel((f, self.skip_filters), name="skip_kernel")
        self.skip_bias = self._bias((self.skip_filters,), name="skip_bias") \
            if self.use_bias else None
        self.condition_kernel = None
        if cond_shape is not None:
            if len(cond_shape) not in (2, 3) or cond_shape[-1] is None:
                raise ValueError("WaveNetResidualBlock: conditioning must be (batch, cond) or "
                                 f"(batch, time, cond) with known cond, got {cond_shape}")
            self.condition_kernel = self._kernel((cond_shape[-1], 2 * f), name="condition_kernel")

    def call(self, inputs):
        x, cond = self._split_inputs(inputs)
        y = self._conv(x, self.kernel)
        if self.use_bias:
            y = y + self.bias
        if cond is not None:
            projected = ops.matmul(cond, self.condition_kernel)
            y = y + (projected[:, None, :] if len(cond.shape) == 2 else projected)
        linear, gate = ops.split(y, 2, axis=-1)
        z = ops.tanh(linear) * ops.sigmoid(gate)
        residual = x + ops.matmul(z, self.residual_kernel)
        skip = ops.matmul(z, self.skip_kernel)
        if self.use_bias:
            residual, skip = residual + self.residual_bias, skip + self.skip_bias
        return residual, skip

    def compute_output_shape(self, input_shape):
        nested = isinstance(input_shape, (list, tuple)) and input_shape \
            and isinstance(input_shape[0], (list, tuple))
        x_shape = tuple(input_shape[0] if nested else input_shape)
        return x_shape, x_shape[:-1] + (self.skip_filters,)

    def receptive_field_stages(self):
        return [(((self.kernel_size[0] - 1) * self.dilation_rate[0] + 1,), (1,))]

    def get_config(self):
        config = super().get_config()
        for key in ("strides", "padding", "activation"):
            config.pop(key)
        return {**config, "skip_filters": self.skip_filters}

