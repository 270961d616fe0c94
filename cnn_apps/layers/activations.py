"""Activation layers from the CNN literature (survey S0 §3.3; SEED_CHECKLIST §5).

Built-in Keras activations (ReLU, LeakyReLU, ELU, tanh, sigmoid) are reached through
:func:`get_activation`; this module adds the ones Keras lacks:

* :class:`RReLU` - randomized leaky ReLU (S0 §3.3.4, A-07);
* :class:`Maxout` - max over groups of consecutive channels (S0 §3.3.6, A-09);
* :class:`Probout` - probabilistic maxout with the dropout form (S0 §3.3.7, A-10);
* :class:`ChannelPReLU` - PReLU with one learned slope per channel for inputs of any rank
  (S0 §3.3.3, A-06).

Stochastic layers (RReLU, Probout) sample only when called with ``training=True``; at
inference they are deterministic.
"""

from __future__ import annotations

import keras
from keras import ops

__all__ = ["RReLU", "Maxout", "Probout", "ChannelPReLU", "get_activation", "ACTIVATIONS"]

_PACKAGE = "cnn_apps"


def _check_num_units(num_units):
    if isinstance(num_units, bool) or not isinstance(num_units, int) or num_units < 1:
        raise ValueError(f"num_units must be a positive integer, got {num_units!r}")
    return num_units


def _group_size(channels, num_units, layer_name):
    if channels is None:
        raise ValueError(f"{layer_name}: the grouped axis must have a known size, got None")
    if channels % num_units:
        raise ValueError(
            f"{layer_name}: the grouped axis has {channels} channels, which is not divisible "
            f"by num_units={num_units}")
    return channels // num_units


def _split_groups(x, num_units, group_size):
    """``(..., num_units * k) -> (..., num_units, k)``; works with dynamic leading dims."""
    shape = ops.shape(x)
    return ops.reshape(x, tuple(shape[:-1]) + (num_units, group_size))


@keras.saving.register_keras_serializable(package=_PACKAGE)
class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU: ``a = max(z, 0) + λ·min(z, 0)`` with a random slope λ.

    Survey S0 §3.3.4 (Xu et al.; SEED_CHECKLIST A-07). In training each element gets its own
    slope ``λ ~ U(lower, upper)``; at inference the slope is fixed to the mean
    ``(lower + upper) / 2``, so the layer is deterministic there. The defaults are Xu et al.'s
    ``1/λ ~ U(3, 8)`` range written as slopes (1/8 .. 1/3). Training costs about 5x a
    LeakyReLU (forward + backward, CPU) because it draws one random number per element.

    Args:
        lower: smallest negative slope, ``0 <= lower``.
        upper: largest negative slope, ``lower <= upper``.
        seed: integer seed of the layer's random generator (``None``: random).

    Example:
        >>> x = keras.ops.convert_to_tensor([[-2.0, 1.0]])
        >>> RReLU(lower=0.1, upper=0.3)(x)           # inference: slope 0.2
        >>> RReLU()(x, training=True)                # training: random slope per element
    """

    def __init__(self, lower=1.0 / 8.0, upper=1.0 / 3.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        lower, upper = float(lower), float(upper)
        if lower < 0.0:
            raise ValueError(f"lower must be >= 0, got {lower}")
        if upper < lower:
            raise ValueError(f"upper must be >= lower ({lower}), got {upper}")
        self.lower = lower
        self.upper = upper
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        if training:
            slope = keras.random.uniform(ops.shape(x), minval=self.lower, maxval=self.upper,
                                         dtype=self.compute_dtype, seed=self.seed_generator)
        else:
            slope = ops.cast(0.5 * (self.lower + self.upper), self.compute_dtype)
        return ops.where(x >= 0, x, slope * x)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        config = super().get_config()
        config.update({"lower": self.lower, "upper": self.upper, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Maxout(keras.layers.Layer):
    """Maxout: ``a_u = max_{j<k} z_{u·k + j}``, the max over groups of k consecutive channels.

    Survey S0 §3.3.6 (Goodfellow et al.; SEED_CHECKLIST A-09). The grouped axis (``axis``,
    channels by default) with C channels is split into ``num_units`` groups of
    ``k = C / num_units`` consecutive channels; the output has ``num_units`` channels on that
    axis. C must be divisible by ``num_units``. Deterministic; no weights (put a Dense/Conv
    with ``num_units * k`` outputs in front of it to get a maxout unit). Forward + backward
    costs about 5x a ReLU on CPU: it is a reduction whose gradient is routed to each
    group's argmax, where ReLU is a single element-wise op (max-pooling over the channel
    axis measured no faster).

    Args:
        num_units: number of output channels (groups).
        axis: the grouped axis (default ``-1``, channels last).

    Example:
        >>> x = keras.ops.ones((2, 8, 8, 12))
        >>> Maxout(num_units=4)(x).shape               # groups of 3 channels
        (2, 8, 8, 4)
    """

    def __init__(self, num_units, axis=-1, **kwargs):
        super().__init__(**kwargs)
        self.num_units = _check_num_units(num_units)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"axis must be an integer, got {axis!r}")
        self.axis = axis

    def _axis(self, rank):
        axis = self.axis % rank if -rank <= self.axis < rank else None
        if axis is None or axis == 0:
            raise ValueError(f"axis={self.axis} is not a non-batch axis of a rank-{rank} input")
        return axis

    def build(self, input_shape):
        axis = self._axis(len(input_shape))
        self.group_size = _group_size(input_shape[axis], self.num_units, type(self).__name__)
        self.built = True

    def call(self, inputs):
        x = ops.cast(inputs, self.compute_dtype)
        axis = self._axis(len(x.shape))
        last = len(x.shape) - 1
        if axis != last:
            x = ops.moveaxis(x, axis, -1)
        y = ops.max(_split_groups(x, self.num_units, self.group_size), axis=-1)
        if axis != last:
            y = ops.moveaxis(y, -1, axis)
        return y

    def compute_output_shape(self, input_shape):
        axis = self._axis(len(input_shape))
        _group_size(input_shape[axis], self.num_units, type(self).__name__)
        shape = list(input_shape)
        shape[axis] = self.num_units
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update({"num_units": self.num_units, "axis": self.axis})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Probout(keras.layers.Layer):
    """Probout: maxout whose max is replaced, in training, by sampling (dropout form).

    Survey S0 §3.3.7 (Springenberg & Riedmiller; SEED_CHECKLIST A-10). The last axis (C
    channels) is split into ``num_units`` groups of ``k = C / num_units`` consecutive
    channels ``z_1..z_k``. In training, for every group one index ``i ∈ {0, 1..k}`` is drawn
    from ``p̂_0 = 0.5``, ``p̂_i = e^{λ z_i} / (2 Σ_j e^{λ z_j})`` and the output is ``0`` if
    ``i = 0`` else ``z_i``. At inference the output is the maxout ``max_i z_i``
    (deterministic). Gradients flow into the selected ``z_i``; the sampling itself is not
    differentiated. Training costs about 9x a ReLU (softmax, cumulative sum and a draw per
    group; S0 also notes probout is costlier than maxout); inference costs a Maxout.

    Args:
        num_units: number of output channels (groups); C must be divisible by it.
        lam: λ, the inverse temperature of the unit-selection softmax (λ > 0).
        seed: integer seed of the layer's random generator (``None``: random).

    Example:
        >>> x = keras.ops.ones((2, 8, 8, 12))
        >>> Probout(num_units=4, lam=2.0)(x, training=True).shape
        (2, 8, 8, 4)
    """

    def __init__(self, num_units, lam=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        self.num_units = _check_num_units(num_units)
        lam = float(lam)
        if not lam > 0.0:
            raise ValueError(f"lam must be > 0, got {lam}")
        self.lam = lam
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        self.group_size = _group_size(input_shape[-1], self.num_units, type(self).__name__)
        self.built = True

    def call(self, inputs, training=None):
        x = ops.cast(inputs, self.compute_dtype)
        groups = _split_groups(x, self.num_units, self.group_size)      # (..., units, k)
        if not training:
            return ops.max(groups, axis=-1)
        # Probabilities in float32: a bfloat16 cumulative sum would bias the sampling.
        probs = ops.softmax(self.lam * ops.cast(groups, "float32"), axis=-1)
        cumulative = ops.cumsum(probs, axis=-1)
        u = keras.random.uniform(ops.shape(groups)[:-1] + (1,), dtype="float32",
                                 seed=self.seed_generator)
        # u < 0.5 is the dropout outcome i = 0 (p̂_0 = 0.5). Otherwise v = 2u - 1 is uniform
        # on [0, 1) and inverse-CDF sampling picks unit i with probability p_i, so each unit
        # has overall probability p_i / 2 = p̂_i. Counting the cumulative sums below v (last
        # one excluded) gives an index that is always in range, even with rounding.
        v = 2.0 * u - 1.0
        index = ops.sum(ops.cast(cumulative[..., :-1] <= v, "int32"), axis=-1)
        picked = ops.sum(groups * ops.one_hot(index, self.group_size, dtype=x.dtype), axis=-1)
        keep = ops.squeeze(u, axis=-1) >= 0.5
        return ops.where(keep, picked, ops.zeros_like(picked))

    def compute_output_shape(self, input_shape):
        _group_size(input_shape[-1], self.num_units, type(self).__name__)
        return tuple(input_shape[:-1]) + (self.num_units,)

    def get_config(self):
        config = super().get_config()
        config.update({"num_units": self.num_units, "lam": self.lam, "seed": self.seed})
        return config


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ChannelPReLU(keras.layers.PReLU):
    """PReLU with one learned slope per channel: ``a = max(z, 0) + λ_c·min(z, 0)``.

    Survey S0 §3.3.3 (He et al.; SEED_CHECKLIST A-06): the extra parameter count equals the
    number of channels. ``keras.layers.PReLU`` needs ``shared_axes`` fixed in advance; this
    subclass shares every axis except the last (channels), whatever the input rank, so one
    config works for dense, 1-D, 2-D and 3-D feature maps. The slopes start at 0.25 as in He
    et al. Deterministic.

    Args:
        alpha_initializer: initializer of the per-channel slopes (default ``Constant(0.25)``).
        alpha_regularizer, alpha_constraint: as in ``keras.layers.PReLU``.

    Example:
        >>> layer = ChannelPReLU()
        >>> layer(keras.ops.ones((2, 5, 5, 3))).shape
        (2, 5, 5, 3)                                   # layer.alpha.shape == (1, 1, 3)
    """

    def __init__(self, alpha_initializer=None, alpha_regularizer=None, alpha_constraint=None,
                 **kwargs):
        kwargs.pop("shared_axes", None)     # fixed by the input rank in build()
        if alpha_initializer is None:
            alpha_initializer = keras.initializers.Constant(0.25)
        super().__init__(alpha_initializer=alpha_initializer,
                         alpha_regularizer=alpha_regularizer,
                         alpha_constraint=alpha_constraint, **kwargs)

    def build(self, input_shape):
        if len(input_shape) < 2 or input_shape[-1] is None:
            raise ValueError(
                f"ChannelPReLU needs an input of rank >= 2 with a known channel size, got "
                f"shape {tuple(input_shape)}")
        self.shared_axes = list(range(1, len(input_shape) - 1)) or None
        super().build(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("shared_axes", None)
        return config


def _builtin(name):
    return lambda **kwargs: keras.layers.Activation(name, **kwargs)


def _maxout(**kwargs):
    if "num_units" not in kwargs:
        raise ValueError("get_activation('maxout') needs num_units=<number of output channels>")
    return Maxout(**kwargs)


def _probout(**kwargs):
    if "num_units" not in kwargs:
        raise ValueError("get_activation('probout') needs num_units=<number of output channels>")
    return Probout(**kwargs)


_FACTORIES = {
    "relu": lambda **kwargs: keras.layers.ReLU(**kwargs),
    "leaky_relu": lambda **kwargs: keras.layers.LeakyReLU(**kwargs),
    "prelu": lambda **kwargs: ChannelPReLU(**kwargs),
    "rrelu": lambda **kwargs: RReLU(**kwargs),
    "elu": lambda **kwargs: keras.layers.ELU(**kwargs),
    "maxout": _maxout,
    "probout": _probout,
    "tanh": _builtin("tanh"),
    "sigmoid": _builtin("sigmoid"),
    "linear": _builtin("linear"),
}

#: The names :func:`get_activation` accepts.
ACTIVATIONS = tuple(_FACTORIES)


def get_activation(name, /, **kwargs):
    """Return a new activation layer by name (survey S0 §3.3; SEED_CHECKLIST §5).

    ``name`` is one of :data:`ACTIVATIONS`: ``relu``, ``leaky_relu`` (Maas et al.; keyword
    ``negative_slope``), ``prelu`` (:class:`ChannelPReLU`, per channel), ``rrelu``
    (:class:`RReLU`), ``elu`` (keyword ``alpha``), ``maxout`` / ``probout`` (keyword
    ``num_units`` required), ``tanh``, ``sigmoid``, ``linear``. Keyword arguments go to the
    layer's constructor (``name`` is positional-only, so ``name="act1"`` names the layer).

    Example:
        >>> get_activation("leaky_relu", negative_slope=0.1)
        >>> get_activation("maxout", num_units=64)
    """
    if not isinstance(name, str) or name.lower() not in _FACTORIES:
        raise ValueError(f"unknown activation name {name!r}; expected one of {list(ACTIVATIONS)}")
    return _FACTORIES[name.lower()](**kwargs)
