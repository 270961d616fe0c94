"""Inception modules vs explicit Keras compositions and parameter-count formulas (V-06..V-08, S-07)."""

import keras
import numpy as np
import pytest

from cnn_apps.layers import InceptionModule, InceptionResNetBlock, receptive_field
from tests.layers.harness import check_layer

FILTERS = dict(filters_1x1=3, filters_3x3_reduce=2, filters_3x3=4, filters_5x5_reduce=2,
               filters_5x5=3, filters_pool_proj=2)


def _np(y):
    return keras.ops.convert_to_numpy(y).astype("float64")


def _convs(layer):
    return [u for u in layer.units if isinstance(u, keras.layers.Conv2D)]


def _randomize(layer, seed=0):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.uniform(-0.5, 0.5, w.shape).astype("float32")
                       for w in layer.get_weights()])


def test_inception_v1_contract():
    check_layer(lambda: InceptionModule(**FILTERS), [(2, 6, 6, 3)])


def test_inception_v3_batchnorm_contract():
    # check_grads=False: the harness's gradient pass runs training=True, which (TF backend)
    # moves the BN statistics before its jit comparison; gradients are covered by the v1 test.
    check_layer(lambda: InceptionModule(**FILTERS, variant="v3", n=3, use_batch_norm=True),
                [(2, 6, 6, 3)], check_grads=False)


def test_inception_batchnorm_uses_batch_statistics_only_in_training():
    x = np.random.default_rng(5).uniform(-1, 1, (2, 6, 6, 3)).astype("float32")
    layer = InceptionModule(**FILTERS, variant="v2", use_batch_norm=True, activation=None)
    first_conv = layer.units[0]
    layer.build(x.shape)
    pre = _np(first_conv(x))  # branch 1 = 1x1 conv -> BN (gamma 1, beta 0, eps 1e-3)
    f1 = FILTERS["filters_1x1"]
    infer = _np(layer(x, training=False))[..., :f1]  # fresh moving stats: mean 0, var 1
    np.testing.assert_allclose(infer, pre / np.sqrt(1 + 1e-3), rtol=1e-5, atol=1e-5)
    train = _np(layer(x, training=True))[..., :f1]
    mean, var = pre.mean(axis=(0, 1, 2)), pre.var(axis=(0, 1, 2))
    np.testing.assert_allclose(train, (pre - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-4)


def _reference_module(variant, n, channels, f):
    """Keras functional Inception module written out branch by branch (GoogLeNet / v2 / v3)."""
    conv = lambda filters, k: keras.layers.Conv2D(filters, k, padding="same", activation="relu")
    x = keras.Input((None, None, channels))
    if variant == "v1":
        mid = [conv(f["filters_3x3_reduce"], 1), conv(f["filters_3x3"], 3)]
        wide = [conv(f["filters_5x5_reduce"], 1), conv(f["filters_5x5"], 5)]
    elif variant == "v2":
        mid = [conv(f["filters_3x3_reduce"], 1), conv(f["filters_3x3"], 3)]
        wide = [conv(f["filters_5x5_reduce"], 1), conv(f["filters_5x5"], 3),
                conv(f["filters_5x5"], 3)]
    else:
        r3, r5 = f["filters_3x3_reduce"], f["filters_5x5_reduce"]
        mid = [conv(r3, 1), conv(r3, (1, n)), conv(f["filters_3x3"], (n, 1))]
        wide = [conv(r5, 1), conv(r5, (1, n)), conv(r5, (n, 1)), conv(r5, (1, n)),
                conv(f["filters_5x5"], (n, 1))]
    first, proj = conv(f["filters_1x1"], 1), conv(f["filters_pool_proj"], 1)
    pool = keras.layers.AveragePooling2D if variant == "v3" else keras.layers.MaxPooling2D
    outs = [first(x)]
    for chain in (mid, wide):
        y = x
        for layer in chain:
            y = layer(y)
        outs.append(y)
    outs.append(proj(pool(3, strides=1, padding="same")(x)))
    return keras.Model(x, keras.layers.Concatenate()(outs)), [first] + mid + wide + [proj]


@pytest.mark.parametrize("variant", ["v1", "v2", "v3"])
def test_inception_module_equals_functional_composition(variant):
    x = np.random.default_rng(1).uniform(-1, 1, (2, 7, 6, 3)).astype("float32")
    layer = InceptionModule(**FILTERS, variant=variant, n=3)
    layer.build(x.shape)
    _randomize(layer)
    ref, ref_convs = _reference_module(variant, 3, 3, FILTERS)
    for mine, theirs in zip(_convs(layer), ref_convs, strict=True):
        theirs.set_weights(mine.get_weights())
    y = _np(layer(x))
    assert y.shape == (2, 7, 6, 3 + 4 + 3 + 2)  # sum of branch filters
    np.testing.assert_allclose(y, _np(ref(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant,n", [("v1", 7), ("v2", 7), ("v3", 7), ("v3", 3)])
def test_inception_module_param_count_formula(variant, n):
    c, f = 5, dict(filters_1x1=6, filters_3x3_reduce=4, filters_3x3=7, filters_5x5_reduce=3,
                   filters_5x5=5, filters_pool_proj=2)
    f1, r3, f3, r5, f5, fp = f.values()

    def conv(k_h, k_w, cin, cout):
        return k_h * k_w * cin * cout + cout

    expected = conv(1, 1, c, f1) + conv(1, 1, c, r3) + conv(1, 1, c, r5) + conv(1, 1, c, fp)
    if variant == "v1":
        expected += conv(3, 3, r3, f3) + conv(5, 5, r5, f5)
    elif variant == "v2":
        expected += conv(3, 3, r3, f3) + conv(3, 3, r5, f5) + conv(3, 3, f5, f5)
    else:
        expected += conv(1, n, r3, r3) + conv(n, 1, r3, f3)
        expected += conv(1, n, r5, r5) + conv(n, 1, r5, r5) + conv(1, n, r5, r5) \
            + conv(n, 1, r5, f5)
    layer = InceptionModule(**f, variant=variant, n=n)
    y = layer(np.zeros((1, 9, 9, c), "float32"))
    assert layer.count_params() == expected
    assert y.shape[-1] == layer.compute_output_shape((1, 9, 9, c))[-1] == f1 + f3 + f5 + fp


def test_googlenet_3a_shape_and_params():
    # GoogLeNet inception (3a): 192 -> 64 + 128 + 32 + 32 = 256 channels (1x1 64; 3x3 reduce
    # 96, 3x3 128; 5x5 reduce 16, 5x5 32; pool proj 32); 163,328 weights plus biases.
    layer = InceptionModule(64, 96, 128, 16, 32, 32)
    layer.build((None, 28, 28, 192))
    assert layer.compute_output_shape((None, 28, 28, 192)) == (None, 28, 28, 256)
    weights = 192 * 64 + 192 * 96 + 9 * 96 * 128 + 192 * 16 + 25 * 16 * 32 + 192 * 32
    assert layer.count_params() == weights + 64 + 96 + 128 + 16 + 32 + 32


def test_inception_receptive_fields():
    assert receptive_field([InceptionModule(**FILTERS)]).size == (5, 5)
    assert receptive_field([InceptionModule(**FILTERS, variant="v2")]).size == (5, 5)
    assert receptive_field([InceptionModule(**FILTERS, variant="v3", n=7)]).size == (13, 13)
    assert receptive_field([InceptionResNetBlock(variant="b")]).size == (7, 7)


# ----------------------------------------------------------------------------- Inception-ResNet
SMALL_A = ((2,), (2, 3), (2, 3, 4))


def test_inception_resnet_contract():
    check_layer(lambda: InceptionResNetBlock(scale=0.2, variant="a", branch_filters=SMALL_A),
                [(2, 6, 6, 4)])


def test_inception_resnet_a_equals_composition():
    x = np.random.default_rng(2).uniform(-1, 1, (2, 6, 5, 4)).astype("float32")
    layer = InceptionResNetBlock(scale=0.3, variant="a", branch_filters=SMALL_A)
    layer.build(x.shape)
    _randomize(layer, seed=3)
    conv = lambda filters, k: keras.layers.Conv2D(filters, k, padding="same", activation="relu")
    chains = [[conv(2, 1)], [conv(2, 1), conv(3, 3)], [conv(2, 1), conv(3, 3), conv(4, 3)]]
    inp = keras.Input((6, 5, 4))
    outs = []
    for chain in chains:
        y = inp
        for c in chain:
            y = c(y)
        outs.append(y)
    proj = keras.layers.Conv2D(4, 1)
    branch = proj(keras.layers.Concatenate()(outs))
    out = keras.layers.ReLU()(keras.layers.Add()([inp, keras.layers.Rescaling(0.3)(branch)]))
    ref = keras.Model(inp, out)
    for mine, theirs in zip(_convs(layer) + [layer.projection],
                            [c for chain in chains for c in chain] + [proj], strict=True):
        theirs.set_weights(mine.get_weights())
    np.testing.assert_allclose(_np(layer(x)), _np(ref(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("variant,filters", [("a", SMALL_A), ("b", ((3,), (2, 3, 4))),
                                             ("c", ((3,), (2, 3, 4)))])
def test_inception_resnet_shapes_and_params(variant, filters):
    c = 6
    kernels = {"a": [[1], [1, 9], [1, 9, 9]], "b": [[1], [1, 7, 7]], "c": [[1], [1, 3, 3]]}
    expected, concat = 0, 0
    for ks, fs in zip(kernels[variant], filters):
        cin = c
        for k, f in zip(ks, fs):
            expected += k * cin * f + f
            cin = f
        concat += fs[-1]
    expected += concat * c + c  # linear 1x1 projection back to the input width
    layer = InceptionResNetBlock(variant=variant, branch_filters=filters)
    y = layer(np.zeros((1, 8, 8, c), "float32"))
    assert y.shape == (1, 8, 8, c)
    assert layer.count_params() == expected
    assert layer.scale == {"a": 0.17, "b": 0.1, "c": 0.2}[variant]


def test_inception_resnet_zero_branch_is_activation_of_input():
    # With the projection zeroed the block reduces to act(x): the shortcut is an identity.
    x = np.random.default_rng(4).uniform(-1, 1, (2, 5, 5, 3)).astype("float32")
    layer = InceptionResNetBlock(variant="c", branch_filters=((2,), (2, 2, 2)))
    layer.build(x.shape)
    for w in layer.projection.weights:
        w.assign(np.zeros(w.shape, "float32"))
    np.testing.assert_allclose(_np(layer(x)), np.maximum(x, 0), atol=1e-7)


@pytest.mark.parametrize("make,match", [
    (lambda: InceptionModule(**FILTERS, variant="v4"), "variant"),
    (lambda: InceptionModule(**{**FILTERS, "filters_3x3": 0}), "filters_3x3"),
    (lambda: InceptionModule(**FILTERS, pool_type="min"), "pool_type"),
    (lambda: InceptionResNetBlock(variant="a", branch_filters=((2,), (2,))), "branch_filters"),
    (lambda: InceptionResNetBlock(variant="d"), "variant"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()
