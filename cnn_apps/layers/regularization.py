"""Regularization, normalization and initialization from the CNN literature.

Survey S0 §3.5 (regularization), §3.6.2 (weight initialization); SEED_CHECKLIST §6, §8, §9.

* :class:`DropConnectDense`, :class:`DropConnectConv2D` - DropConnect (S0 §3.5.3, R-12);
* :class:`LpRegularizer` - ``strength · Σ|w|^p`` for any ``p > 0`` (S0 §3.5.1, R-01);
* :class:`LocalResponseNormalization` - AlexNet's cross-channel LRN (N-02);
* :func:`alexnet_normal`, :func:`alexnet_bias_initializer`, ``ALEXNET_BIAS_ONE_LAYERS`` -
  AlexNet's initialization (S0 §3.6.2, I-02);
* :func:`lsuv_initialize` - layer-sequential unit-variance initialization (S0 §3.6.2, I-07).

Rate convention: S0 writes DropConnect and Dropout with ``R_ij ~ Bernoulli(p)``, p the KEEP
probability; here (as in ``keras.layers.Dropout``) ``rate`` is the DROP probability, so the
keep probability is ``1 - rate`` (SEED_CHECKLIST §19.4).
"""

from __future__ import annotations

import math
import warnings

import keras
import numpy as np
from keras import ops
from cnn_apps.layers._validation import positive_int as _positive_int

__all__ = ["DropConnectDense", "DropConnectConv2D", "LpRegularizer",
           "LocalResponseNormalization", "alexnet_normal", "alexnet_bias_initializer",
           "ALEXNET_BIAS_ONE_LAYERS", "lsuv_initialize"]

_PACKAGE = "cnn_apps"


def _check_rate(rate):
    rate = float(rate)
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate (the drop probability) must be in [0, 1), got {rate}")
    return rate


def _int_tuple(value, name, n=2):
    values = (value,) * n if isinstance(value, int) else tuple(value)
    if len(values) != n or any(isinstance(v, bool) or not isinstance(v, int) or v < 1
                               for v in values):
        raise ValueError(f"{name} must be a positive integer or {n} of them, got {value!r}")
    return values


class _DropConnectMixin:
    """Shared weight masking: ``W' = (M ∘ W) / (1 - rate)``, ``M_ij ~ Bernoulli(1 - rate)``."""

    def _init_drop_connect(self, rate, seed, activation, use_bias, kernel_initializer,
                           bias_initializer, kernel_regularizer, bias_regularizer,
                           kernel_constraint, bias_constraint):
        self.rate = _check_rate(rate)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.activation = keras.activations.get(activation)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)
        self.bias_regularizer = keras.regularizers.get(bias_regularizer)
        self.kernel_constraint = keras.constraints.get(kernel_constraint)
        self.bias_constraint = keras.constraints.get(bias_constraint)

    def _add_weights(self, kernel_shape, bias_shape):
        self.kernel = self.add_weight(name="kernel", shape=kernel_shape,
                                      initializer=self.kernel_initializer,
                                      regularizer=self.kernel_regularizer,
                                      constraint=self.kernel_constraint)
        self.bias = None
        if self.use_bias:
            self.bias = self.add_weight(name="bias", shape=bias_shape,
                                        initializer=self.bias_initializer,
                                        regularizer=self.bias_regularizer,
                                        constraint=self.bias_constraint)

    def _dropped(self, weight, training):
        weight = ops.cast(weight, self.compute_dtype)
        if not training or self.rate == 0.0:
            return weight
        keep = keras.random.uniform(ops.shape(weight), dtype="float32",
                                    seed=self.seed_generator) >= self.rate
        scale = ops.cast(1.0 / (1.0 - self.rate), self.compute_dtype)
        return ops.where(keep, weight * scale, ops.zeros_like(weight))

    def _drop_connect_config(self):
        ser = keras.saving.serialize_keras_object
        return {"rate": self.rate, "seed": self.seed,
                "activation": keras.activations.serialize(self.activation),
                "use_bias": self.use_bias,
                "kernel_initializer": ser(self.kernel_initializer),
                "bias_initializer": ser(self.bias_initializer),
                "kernel_regularizer": ser(self.kernel_regularizer),
                "bias_regularizer": ser(self.bias_regularizer),
                "kernel_constraint": ser(self.kernel_constraint),
                "bias_constraint": ser(self.bias_constraint)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropConnectDense(_DropConnectMixin, keras.layers.Layer):
    """Dense layer with DropConnect: ``y = a(x · (M ∘ W) / (1-rate) + (m ∘ b) / (1-rate))``.

    Survey S0 §3.5.3 (Wan et al.; SEED_CHECKLIST R-12): instead of dropping outputs, each
    weight (and each bias, "the biases are also masked out") is zeroed with probability
    ``rate``. ``rate`` is the DROP probability (S0's Bernoulli(p) uses the keep probability p;
    SEED_CHECKLIST §19.4); kept weights are scaled by ``1/(1-rate)`` (inverted DropConnect) so
    the expected output equals the inference output. Training (``training=True``): one mask
    pair ``(M, m)`` is drawn per call and shared by every example of the batch (per-example
    masks would need a weight copy per example). Inference: a plain Dense layer
    ``a(x·W + b)``, deterministic.

    Args:
        units: output size.
        rate: drop probability of each weight and bias, in [0, 1).
        activation, use_bias, *_initializer, *_regularizer, *_constraint: as in Dense.
        seed: integer seed of the mask generator (``None``: random).

    Example:
        >>> layer = DropConnectDense(64, rate=0.5, activation="relu")
        >>> y_train = layer(keras.ops.ones((8, 32)), training=True)   # masked weights
        >>> y_test = layer(keras.ops.ones((8, 32)))                    # plain Dense
    """

    def __init__(self, units, rate, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.units = _positive_int(units, "units")
        self._init_drop_connect(rate, seed, activation, use_bias, kernel_initializer,
                                bias_initializer, kernel_regularizer, bias_regularizer,
                                kernel_constraint, bias_constraint)

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError("DropConnectDense needs a known last input dimension, got None")
        self._add_weights((input_shape[-1], self.units), (self.units,))
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        y = ops.matmul(x, self._dropped(self.kernel, training))
        if self.use_bias:
            y = y + self._dropped(self.bias, training)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update({"units": self.units, **self._drop_connect_config()})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DropConnectConv2D(_DropConnectMixin, keras.layers.Layer):
    """2-D convolution with DropConnect on its kernel and bias (S0 §3.5.3, R-12).

    ``y = a(conv(x, (M ∘ K) / (1-rate)) + (m ∘ b) / (1-rate))`` in training, with
    ``M, m ~ Bernoulli(1 - rate)`` element-wise, one mask pair per call shared by the batch;
    ``rate`` is the DROP probability (SEED_CHECKLIST §19.4). Inference: a plain
    ``keras.layers.Conv2D`` computation ``a(conv(x, K) + b)``, deterministic. Channels-last
    inputs ``(batch, H, W, C)``; kernel layout is Keras's ``(kh, kw, C, filters)``.

    Args:
        filters: number of output channels.
        kernel_size: int or (kh, kw).
        rate: drop probability of each kernel and bias element, in [0, 1).
        strides, padding ("valid"/"same"), dilation_rate: as in Conv2D.
        activation, use_bias, *_initializer, *_regularizer, *_constraint: as in Conv2D.
        seed: integer seed of the mask generator (``None``: random).

    Example:
        >>> layer = DropConnectConv2D(16, 3, rate=0.3, padding="same")
        >>> layer(keras.ops.ones((2, 8, 8, 3)), training=True).shape
        (2, 8, 8, 16)
    """

    def __init__(self, filters, kernel_size, rate, strides=1, padding="valid",
                 dilation_rate=1, activation=None, use_bias=True,
                 kernel_initializer="glorot_uniform", bias_initializer="zeros",
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                 bias_constraint=None, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _int_tuple(kernel_size, "kernel_size")
        self.strides = _int_tuple(strides, "strides")
        self.dilation_rate = _int_tuple(dilation_rate, "dilation_rate")
        padding = str(padding).lower()
        if padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {padding!r}")
        self.padding = padding
        self._init_drop_connect(rate, seed, activation, use_bias, kernel_initializer,
                                bias_initializer, kernel_regularizer, bias_regularizer,
                                kernel_constraint, bias_constraint)

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise ValueError(f"DropConnectConv2D expects a rank-4 input, got {input_shape}")
        channels = input_shape[-1]
        if channels is None:
            raise ValueError("DropConnectConv2D needs a known number of input channels")
        self._add_weights(self.kernel_size + (channels, self.filters), (self.filters,))
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        y = ops.conv(x, self._dropped(self.kernel, training), strides=self.strides,
                     padding=self.padding, data_format="channels_last",
                     dilation_rate=self.dilation_rate)
        if self.use_bias:
            y = y + self._dropped(self.bias, training)
        return self.activation(y)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        for i, axis in enumerate((1, 2)):
            size = shape[axis]
            if size is not None:
                span = (self.kernel_size[i] - 1) * self.dilation_rate[i] + 1
                size = (size - span) // self.strides[i] + 1 if self.padding == "valid" \
                    else -(-size // self.strides[i])
            shape[axis] = size
        shape[-1] = self.filters
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"filters": self.filters, "kernel_size": self.kernel_size,
                       "strides": self.strides, "padding": self.padding,
                       "dilation_rate": self.dilation_rate,
                       **self._drop_connect_config()})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LpRegularizer(keras.regularizers.Regularizer):
    """ℓp-norm weight penalty ``R(w) = strength · Σ_j |w_j|^p`` for any ``p > 0``.

    Survey S0 §3.5.1 (SEED_CHECKLIST R-01): ``E(θ) = L(θ) + λ·R(θ)``. ``p = 2`` is weight
    decay (equals ``keras.regularizers.L2(strength)``), ``p = 1`` equals
    ``keras.regularizers.L1(strength)``; ``p ≥ 1`` is convex, ``p < 1`` is sparser but
    non-convex. For ``p < 1`` the derivative is unbounded at 0; exact zeros get gradient 0.

    Args:
        p: the exponent, ``p > 0``.
        strength: λ, ``>= 0``.

    Example:
        >>> reg = LpRegularizer(p=1.5, strength=1e-4)
        >>> keras.layers.Dense(10, kernel_regularizer=reg)
    """

    def __init__(self, p=2.0, strength=0.01):
        p, strength = float(p), float(strength)
        if not p > 0.0 or not math.isfinite(p):
            raise ValueError(f"p must be a finite number > 0, got {p}")
        if not strength >= 0.0:
            raise ValueError(f"strength must be >= 0, got {strength}")
        self.p = p
        self.strength = strength

    def __call__(self, x):
        x = ops.convert_to_tensor(x)
        magnitude = ops.abs(x)
        if self.p == 2.0:
            powered = ops.square(x)
        elif self.p == 1.0:
            powered = magnitude
        else:
            # The safe base keeps pow's gradient finite at exact zeros (|w|^p has slope
            # p·|w|^(p-1), infinite at 0 for p < 1).
            nonzero = magnitude > 0
            safe = ops.where(nonzero, magnitude, ops.ones_like(magnitude))
            powered = ops.where(nonzero, ops.power(safe, self.p), ops.zeros_like(magnitude))
        return ops.cast(self.strength, powered.dtype) * ops.sum(powered)

    def get_config(self):
        return {"p": self.p, "strength": self.strength}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class LocalResponseNormalization(keras.layers.Layer):
    """AlexNet local response normalization across channels (SEED_CHECKLIST N-02).

    ``b_c = a_c / (k + α · Σ_{c'=max(0,c-r)}^{min(C-1,c+r)} a_{c'}²)^β`` over the last
    (channel) axis, window ``n = 2r + 1`` channels. Defaults are AlexNet's k = 2, n = 5,
    α = 1e-4, β = 0.75. Convention: this layer (like ``tf.nn.local_response_normalization``)
    multiplies the window sum by ``alpha`` itself; Caffe and PyTorch's ``LocalResponseNorm``
    use ``α/n``. To reproduce a model written in the α/n convention pass
    ``alpha = α / (2r + 1)``. AlexNet's paper uses α itself (no /n), matching the defaults.
    Seed: S2 (AlexNet Norm1/Norm2); no formula in S0. Deterministic; no weights. The window
    sum is a matmul with a C×C 0/1 band matrix (cheap for the usual C <= 384).

    Args:
        depth_radius: r, half-width of the channel window (n = 2r + 1).
        bias: k, added before the power (``k > 0`` keeps the denominator non-zero).
        alpha: α, scale of the window's sum of squares.
        beta: β, the exponent.

    Example:
        >>> lrn = LocalResponseNormalization()   # AlexNet: r=2, k=2, alpha=1e-4, beta=0.75
        >>> lrn(keras.ops.ones((2, 13, 13, 96))).shape
        (2, 13, 13, 96)
    """

    def __init__(self, depth_radius=2, bias=2.0, alpha=1e-4, beta=0.75, **kwargs):
        super().__init__(**kwargs)
        if isinstance(depth_radius, bool) or not isinstance(depth_radius, int) \
                or depth_radius < 0:
            raise ValueError(f"depth_radius must be a non-negative integer, got {depth_radius!r}")
        bias, alpha, beta = float(bias), float(alpha), float(beta)
        if not bias > 0.0:
            raise ValueError(f"bias (k) must be > 0, got {bias}")
        if alpha < 0.0 or beta < 0.0:
            raise ValueError(f"alpha and beta must be >= 0, got alpha={alpha}, beta={beta}")
        self.depth_radius = depth_radius
        self.bias = bias
        self.alpha = alpha
        self.beta = beta
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[-1] is None:
            raise ValueError("LocalResponseNormalization needs a known channel count")
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        channels = x.shape[-1]
        # Window sums as one matmul with the 0/1 band matrix |c - c'| <= r: on CPU this is
        # about 4x faster (forward + backward) than adding 2r+1 shifted slices.
        index = np.arange(channels)
        band = (np.abs(index[:, None] - index[None, :]) <= self.depth_radius)
        window = ops.matmul(ops.square(x), ops.convert_to_tensor(band, dtype=x.dtype))
        return x * self._inverse_power(self.bias + self.alpha * window)

    def _inverse_power(self, base):
        """``base ** -beta``; the common betas avoid pow, whose gradient is costly."""
        if self.beta == 0.75:                      # AlexNet
            inv_sqrt = ops.rsqrt(base)
            return inv_sqrt * ops.sqrt(inv_sqrt)
        if self.beta == 0.5:
            return ops.rsqrt(base)
        if self.beta == 1.0:
            return 1.0 / base
        return ops.exp(-self.beta * ops.log(base))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"depth_radius": self.depth_radius, "bias": self.bias,
                       "alpha": self.alpha, "beta": self.beta})
        return config


#: AlexNet layers whose biases start at 1 (Krizhevsky et al. 2012 §5: conv2, conv4, conv5
#: and the fully-connected hidden layers); every other bias starts at 0.
ALEXNET_BIAS_ONE_LAYERS = ("conv2", "conv4", "conv5", "fc6", "fc7")
_ALEXNET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def alexnet_normal(seed=None):
    """AlexNet weight initializer ``w ~ N(0, 0.01²)`` (S0 §3.6.2, SEED_CHECKLIST I-02).

    Returns ``keras.initializers.RandomNormal(mean=0.0, stddev=0.01, seed=seed)`` (plain
    normal, not truncated), so it serializes as a built-in Keras initializer.

    Example:
        >>> conv = keras.layers.Conv2D(96, 11, strides=4, kernel_initializer=alexnet_normal(),
        ...                            bias_initializer=alexnet_bias_initializer("conv1"))
    """
    return keras.initializers.RandomNormal(mean=0.0, stddev=0.01, seed=seed)


def alexnet_bias_initializer(layer_name):
    """AlexNet bias initializer for ``layer_name`` in ``conv1..conv5, fc6..fc8`` (I-02).

    ``Constant(1)`` for the layers in ``ALEXNET_BIAS_ONE_LAYERS`` (conv2, conv4, conv5, fc6,
    fc7), ``Zeros()`` otherwise: positive biases give the ReLUs positive inputs early on. S0
    §3.6.2 says "all the fully-connected layers"; Krizhevsky et al. set 1 for the hidden FC
    layers and 0 for the others, which is followed here (fc8, the classifier, starts at 0).

    Example:
        >>> keras.layers.Dense(4096, activation="relu", name="fc6",
        ...                    bias_initializer=alexnet_bias_initializer("fc6"))
    """
    if layer_name not in _ALEXNET_LAYERS:
        raise ValueError(f"layer_name must be one of {list(_ALEXNET_LAYERS)}, got {layer_name!r}")
    if layer_name in ALEXNET_BIAS_ONE_LAYERS:
        return keras.initializers.Constant(1.0)
    return keras.initializers.Zeros()


def _has_kernel(layer):
    kernel = getattr(layer, "kernel", None)
    return isinstance(kernel, keras.Variable) and len(kernel.shape) >= 2


def _recording_call(layer, outputs, order):
    """A call() that records the layer's output BEFORE its built-in activation, if any."""
    original = layer.call
    activation = getattr(layer, "activation", None)
    fused = callable(activation) and activation is not keras.activations.linear

    def call(*args, **kwargs):
        if fused:   # Dense/Conv apply self.activation last: run linear, then apply it here
            layer.activation = keras.activations.linear
            try:
                pre_activation = original(*args, **kwargs)
            finally:
                layer.activation = activation
            result = activation(pre_activation)
        else:
            pre_activation = result = original(*args, **kwargs)
        if id(layer) not in outputs:
            order.append(layer)
        outputs[id(layer)] = pre_activation
        return result
    return call


def lsuv_initialize(model, batch, tol=0.1, max_iter=10, seed=None):
    """Layer-sequential unit-variance initialization (Mishkin & Matas; S0 §3.6.2, I-07).

    1. Every layer of ``model`` (nested ones included) that owns a ``kernel`` of rank >= 2
       (Dense, Conv*, DropConnect*, ...) gets an orthonormal kernel
       (``keras.initializers.Orthogonal``; Saxe et al.). Biases are left as they are.
    2. In forward order, each such layer's output variance ``v`` on ``batch`` (all elements,
       inference mode) is measured and its kernel divided by ``sqrt(v)``, repeated until
       ``|v - 1| < tol`` or ``max_iter`` rescalings, "like BN performed only on the first
       mini-batch" (S0). As in Mishkin & Matas, the measured output is the layer's
       pre-activation output: a built-in ``activation`` (``Dense(..., activation="tanh")``)
       is applied after the measurement, so saturating activations do not cap the variance.

    Each step runs the whole model once on ``batch``, so use one small mini-batch. A layer
    whose output has zero variance cannot be rescaled and is left after a warning. Modifies
    ``model`` in place and returns it.

    Args:
        model: a built (or buildable on ``batch``) ``keras.Model``.
        batch: one input mini-batch (array or list of arrays, as ``model`` takes).
        tol: tolerance on the unit variance, ``> 0``.
        max_iter: maximum rescalings per layer, ``>= 1``.
        seed: seed of the orthonormal draws.

    Example:
        >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(8, 3)])
        >>> lsuv_initialize(model, np.random.rand(16, 8, 8, 3).astype("float32"))
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"model must be a keras.Model, got {type(model).__name__}")
    tol = float(tol)
    if not tol > 0.0:
        raise ValueError(f"tol must be > 0, got {tol}")
    max_iter = _positive_int(max_iter, "max_iter")
    if not model.built:
        model(batch, training=False)
    layers = [layer for layer in model._flatten_layers(include_self=False) if _has_kernel(layer)]
    if not layers:
        raise ValueError("model has no layer with a kernel (Dense/Conv) to initialize")

    orthogonal = keras.initializers.Orthogonal(seed=keras.random.SeedGenerator(seed))
    for layer in layers:
        layer.kernel.assign(orthogonal(layer.kernel.shape, dtype=layer.kernel.dtype))

    outputs, order = {}, []
    for layer in layers:   # temporary forward hooks: the instance attribute shadows call()
        layer.call = _recording_call(layer, outputs, order)
    try:
        model(batch, training=False)
        for layer in list(order):
            for _ in range(max_iter):
                model(batch, training=False)
                variance = float(np.var(ops.convert_to_numpy(
                    ops.cast(outputs[id(layer)], "float32")).astype("float64")))
                if not np.isfinite(variance) or variance <= 1e-12:
                    warnings.warn(f"lsuv_initialize: layer {layer.name!r} has output variance "
                                  f"{variance} on the batch; left unscaled", stacklevel=2)
                    break
                if abs(variance - 1.0) < tol:
                    break
                layer.kernel.assign(layer.kernel / math.sqrt(variance))
    finally:
        for layer in layers:
            if "call" in layer.__dict__:
                del layer.call      # back to the class's call()
    return model
