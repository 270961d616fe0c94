"""Inception modules (survey S0 §3.1.5 and §3.6.5; SEED_CHECKLIST V-06, V-07, V-08, S-07).

Both layers are composites of Keras ``Conv2D`` / ``MaxPooling2D`` / ``BatchNormalization``
sublayers, channels-last, stride 1 ("same" padding throughout), so they run on every backend.
"""

from __future__ import annotations

import keras
from keras import ops

from cnn_apps.layers.convolution import _choice, _positive_int

__all__ = ["InceptionModule", "InceptionResNetBlock"]

_register = keras.saving.register_keras_serializable(package="cnn_apps")


class _BranchLayer(keras.layers.Layer):
    """Parallel branches of conv units, concatenated on channels (not public).

    A branch is a list of (kh, kw, filters) conv units, each conv -> [BN] -> activation, with
    an optional leading 3x3 stride-1 pool. Sublayers sit in one flat list so that Keras tracks
    and saves them; ``self._plan`` holds the per-branch index ranges.
    """

    def __init__(self, activation="relu", use_batch_norm=False, kernel_initializer="glorot_uniform",
                 kernel_regularizer=None, **kwargs):
        super().__init__(**kwargs)
        self.activation = keras.activations.get(activation)
        self.use_batch_norm = bool(use_batch_norm)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.kernel_regularizer = keras.regularizers.get(kernel_regularizer)

    def _make_branches(self, branches, pool_type=None):
        """``branches``: list of lists of (kh, kw, filters); a leading "pool" entry pools."""
        self.units, plan = [], []
        for b, branch in enumerate(branches):
            start = len(self.units)
            for u, unit in enumerate(branch):
                if unit == "pool":
                    pool = keras.layers.MaxPooling2D if pool_type == "max" else \
                        keras.layers.AveragePooling2D
                    self.units.append(pool(3, strides=1, padding="same", dtype=self.dtype_policy,
                                           name=f"branch{b}_{pool_type}pool"))
                    continue
                kh, kw, filters = unit
                self.units.append(keras.layers.Conv2D(
                    filters, (kh, kw), padding="same", use_bias=not self.use_batch_norm,
                    kernel_initializer=self.kernel_initializer,
                    kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy,
                    name=f"branch{b}_conv{u}_{kh}x{kw}"))
                if self.use_batch_norm:
                    self.units.append(keras.layers.BatchNormalization(
                        dtype=self.dtype_policy, name=f"branch{b}_bn{u}"))
                self.units.append(keras.layers.Activation(
                    self.activation, dtype=self.dtype_policy, name=f"branch{b}_act{u}"))
            plan.append((start, len(self.units)))
        self._plan = plan

    def _check_input(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(f"{type(self).__name__} expects a 4-D channels-last input with "
                             f"known channels, got {input_shape}")

    def _build_branches(self, input_shape):
        channels = 0
        for start, stop in self._plan:
            shape = tuple(input_shape)
            for layer in self.units[start:stop]:
                layer.build(shape)
                shape = layer.compute_output_shape(shape)
            channels += shape[-1]
        return channels

    def _run_branches(self, inputs, training):
        outputs = []
        for start, stop in self._plan:
            y = inputs
            for layer in self.units[start:stop]:
                y = layer(y, training=training) if isinstance(
                    layer, keras.layers.BatchNormalization) else layer(y)
            outputs.append(y)
        return ops.concatenate(outputs, axis=-1)

    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {**super().get_config(),
                "activation": keras.activations.serialize(self.activation),
                "use_batch_norm": self.use_batch_norm,
                "kernel_initializer": ser(self.kernel_initializer),
                "kernel_regularizer": ser(self.kernel_regularizer)}


@_register
class InceptionModule(_BranchLayer):
    """Inception module with dimension reductions (Szegedy et al.; survey S0 §3.1.5, V-06..V-08).

    Four parallel branches on the same input, concatenated on channels:
      1. 1x1 conv (``filters_1x1``);
      2. 1x1 (``filters_3x3_reduce``) -> "3x3" (``filters_3x3``);
      3. 1x1 (``filters_5x5_reduce``) -> "5x5" (``filters_5x5``);
      4. 3x3 stride-1 pool -> 1x1 projection (``filters_pool_proj``).
    ``variant`` decides what the "3x3" and "5x5" convolutions are:
      * "v1" (GoogLeNet): a 3x3, and a 5x5 conv;
      * "v2" (S0 Fig. 5c, V-07): the 5x5 is two stacked 3x3 convs, both ``filters_5x5`` wide
        (same receptive field, 18 vs 25 weights per channel pair);
      * "v3" (Inception-v3, V-08): every n x n is factorised as 1xn then nx1 (``n``, default 7
        as on the 17x17 grid): branch 2 = 1x1 -> 1xn -> nx1, branch 3 = 1x1 -> 1xn -> nx1 ->
        1xn -> nx1; the inner convs keep the reduce width, the last gives the branch filters.
    Output channels = filters_1x1 + filters_3x3 + filters_5x5 + filters_pool_proj.

    Each conv is followed by ``activation`` (ReLU), with BatchNormalization between them when
    ``use_batch_norm`` (conv then has no bias; v2/v3 networks use it). ``pool_type`` "max" |
    "avg"; default "max" for v1/v2 and "avg" for v3 as in Inception-v3. With BN the layer uses
    batch statistics when ``training=True`` and moving averages at inference; otherwise it is
    deterministic. Works on any spatial size (stride 1, "same" padding).

    Example:
        block = InceptionModule(64, 96, 128, 16, 32, 32)  # GoogLeNet inception (3a)
        y = block(keras.random.normal((2, 28, 28, 192)))  # (2, 28, 28, 256)
    """

    def __init__(self, filters_1x1, filters_3x3_reduce, filters_3x3, filters_5x5_reduce,
                 filters_5x5, filters_pool_proj, variant="v1", n=7, pool_type=None, **kwargs):
        super().__init__(**kwargs)
        names = ("filters_1x1", "filters_3x3_reduce", "filters_3x3", "filters_5x5_reduce",
                 "filters_5x5", "filters_pool_proj")
        values = (filters_1x1, filters_3x3_reduce, filters_3x3, filters_5x5_reduce, filters_5x5,
                  filters_pool_proj)
        for name, value in zip(names, values):
            setattr(self, name, _positive_int(value, name))
        self.variant = _choice(variant, ("v1", "v2", "v3"), "variant")
        self.n = _positive_int(n, "n")
        default_pool = "avg" if self.variant == "v3" else "max"
        self.pool_type = _choice(pool_type or default_pool, ("max", "avg"), "pool_type")
        f1, r3, f3, r5, f5, fp = values
        if self.variant == "v1":
            mid, wide = [(1, 1, r3), (3, 3, f3)], [(1, 1, r5), (5, 5, f5)]
        elif self.variant == "v2":
            mid, wide = [(1, 1, r3), (3, 3, f3)], [(1, 1, r5), (3, 3, f5), (3, 3, f5)]
        else:
            k = self.n
            mid = [(1, 1, r3), (1, k, r3), (k, 1, f3)]
            wide = [(1, 1, r5), (1, k, r5), (k, 1, r5), (1, k, r5), (k, 1, f5)]
        self._make_branches([[(1, 1, f1)], mid, wide, ["pool", (1, 1, fp)]], self.pool_type)

    def build(self, input_shape):
        self._check_input(input_shape)
        self._build_branches(input_shape)

    def call(self, inputs, training=None):
        return self._run_branches(inputs, training)

    def compute_output_shape(self, input_shape):
        out = self.filters_1x1 + self.filters_3x3 + self.filters_5x5 + self.filters_pool_proj
        return tuple(input_shape[:-1]) + (out,)

    def receptive_field_stages(self):
        size = {"v1": 5, "v2": 5, "v3": 2 * self.n - 1}[self.variant]
        return [((size, size), (1, 1))]

    def get_config(self):
        return {**super().get_config(), "filters_1x1": self.filters_1x1,
                "filters_3x3_reduce": self.filters_3x3_reduce, "filters_3x3": self.filters_3x3,
                "filters_5x5_reduce": self.filters_5x5_reduce, "filters_5x5": self.filters_5x5,
                "filters_pool_proj": self.filters_pool_proj, "variant": self.variant,
                "n": self.n, "pool_type": self.pool_type}


# Inception-ResNet-v2 branch layouts: per branch a list of (kh, kw); filters come separately.
_IR_KERNELS = {
    "a": [[(1, 1)], [(1, 1), (3, 3)], [(1, 1), (3, 3), (3, 3)]],
    "b": [[(1, 1)], [(1, 1), (1, 7), (7, 1)]],
    "c": [[(1, 1)], [(1, 1), (1, 3), (3, 1)]],
}
_IR_DEFAULT_FILTERS = {
    "a": ((32,), (32, 32), (32, 48, 64)),
    "b": ((192,), (128, 160, 192)),
    "c": ((192,), (192, 224, 256)),
}
_IR_DEFAULT_SCALE = {"a": 0.17, "b": 0.1, "c": 0.2}


@_register
class InceptionResNetBlock(_BranchLayer):
    """Residual Inception block (Inception-ResNet-v2; survey S0 §3.1.5 Fig. 5d, §3.6.5, S-07).

    ``y = act(x + scale * W_p * concat(branch_1(x), ..., branch_m(x)) + b_p)`` where W_p is a
    linear 1x1 projection back to the input channels and every branch conv is conv -> [BN] ->
    ReLU. ``variant``:
      * "a" (35x35 grid): 1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 -> 3x3, default filters
        ((32,), (32, 32), (32, 48, 64)), scale 0.17;
      * "b" (17x17): 1x1 | 1x1 -> 1x7 -> 7x1, default ((192,), (128, 160, 192)), scale 0.1;
      * "c" (8x8): 1x1 | 1x1 -> 1x3 -> 3x1, default ((192,), (192, 224, 256)), scale 0.2.
    ``branch_filters`` overrides the filters with the same nesting (one tuple per branch, one
    int per conv). Scaling the residual (``scale`` ~0.1-0.3) stabilises very wide residual
    Inception nets. ``activation=None`` gives a linear block (as the last IR-v2 block).

    With ``use_batch_norm`` the BN layers use batch statistics when ``training=True`` and
    moving averages at inference; otherwise deterministic. Any spatial size works. Cost: seven
    convolutions (variant "a"), so ~3x one Conv2D of the same width; it is the composition.

    Example:
        block = InceptionResNetBlock(variant="a", branch_filters=((8,), (8, 8), (8, 12, 16)))
        y = block(keras.random.normal((2, 16, 16, 32)))  # (2, 16, 16, 32)
    """

    def __init__(self, scale=None, variant="a", branch_filters=None, activation="relu",
                 **kwargs):
        super().__init__(activation="relu", **kwargs)
        self.variant = _choice(variant, tuple(_IR_KERNELS), "variant")
        self.scale = float(_IR_DEFAULT_SCALE[self.variant] if scale is None else scale)
        self.block_activation = keras.activations.get(activation)
        layout = _IR_KERNELS[self.variant]
        filters = _IR_DEFAULT_FILTERS[self.variant] if branch_filters is None else branch_filters
        try:
            ok = len(filters) == len(layout) and all(
                len(f) == len(k) for f, k in zip(filters, layout))
        except TypeError:
            ok = False
        if not ok:
            raise ValueError(f"`branch_filters` for variant {self.variant!r} must have branch "
                             f"lengths {[len(k) for k in layout]}, got {branch_filters!r}")
        self.branch_filters = tuple(tuple(_positive_int(v, "branch_filters[i][j]") for v in f)
                                    for f in filters)
        self._make_branches([[(kh, kw, f) for (kh, kw), f in zip(kernels, fs)]
                             for kernels, fs in zip(layout, self.branch_filters)])

    def build(self, input_shape):
        self._check_input(input_shape)
        concat_channels = self._build_branches(input_shape)
        self.projection = keras.layers.Conv2D(
            int(input_shape[-1]), 1, kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer, dtype=self.dtype_policy,
            name="projection")
        self.projection.build(tuple(input_shape[:-1]) + (concat_channels,))

    def call(self, inputs, training=None):
        branch = self.projection(self._run_branches(inputs, training))
        return self.block_activation(inputs + ops.cast(self.scale, branch.dtype) * branch)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def receptive_field_stages(self):
        branches = _IR_KERNELS[self.variant]
        size = tuple(1 + max(sum(kernel[axis] - 1 for kernel in branch) for branch in branches)
                     for axis in (0, 1))
        return [(size, (1, 1))]

    def get_config(self):
        config = super().get_config()
        config.update(scale=self.scale, variant=self.variant,
                      branch_filters=[list(f) for f in self.branch_filters],
                      activation=keras.activations.serialize(self.block_activation))
        return config
