"""ResNet family, highway/tiled and mobile backbones: parameter counts against published
figures (or the paper spec's arithmetic), forward/backward smoke tests, feature strides,
custom layers against numpy, bad-input errors."""

import numpy as np
import pytest
import tensorflow as tf

from cnn_apps import backbones


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


# --------------------------------------------------------------------------- spec arithmetic
# Independent counts written from the papers' layer tables (no model code involved).
def conv(k, cin, cout, bias=False):
    return k * k * cin * cout + (cout if bias else 0)


def bn(channels):                       # trainable gamma and beta only
    return 2 * channels


def fc(cin, cout):
    return cin * cout + cout


def preact_basic_resnet(blocks, classes=1000):
    """He et al. 2016 (v2) basic blocks: BN(in)-conv3-BN-conv3, 1x1 projection when the
    shape changes (no BN on it), 7x7 stem without BN, final BN, FC."""
    total, cin = conv(7, 3, 64), 64
    for stage, n in enumerate(blocks):
        f = 64 * 2 ** stage
        for b in range(n):
            total += bn(cin) + conv(3, cin, f) + bn(f) + conv(3, f, f)
            total += conv(1, cin, f) if (cin != f or (stage and not b)) else 0
            cin = f
    return total + bn(512) + fc(512, classes)


def wide_resnet_count(depth, k, classes=10):
    """Zagoruyko & Komodakis: 3x3 stem(16), groups of (depth-4)/6 pre-act basic blocks with
    16k/32k/64k filters, 1x1 shortcut conv where in != out, final BN, FC."""
    n, total, cin = (depth - 4) // 6, conv(3, 3, 16), 16
    for g in range(3):
        f = 16 * k * 2 ** g
        for _ in range(n):
            total += bn(cin) + conv(3, cin, f) + bn(f) + conv(3, f, f)
            total += conv(1, cin, f) if cin != f else 0
            cin = f
    return total + bn(cin) + fc(cin, classes)


def cifar_resnet_option_a(depth, classes=10):
    """He et al. CIFAR ResNet (6n+2 layers), parameter-free option-A shortcuts."""
    n, total, cin = (depth - 2) // 6, conv(3, 3, 16) + bn(16), 16
    for f in (16, 32, 64):
        for _ in range(n):
            total += conv(3, cin, f) + bn(f) + conv(3, f, f) + bn(f)
            cin = f
    return total + fc(64, classes)


def highway_cnn_count(classes=10, widths=(32, 64, 128), layers=5):
    """3x3 stem conv (bias); per stage: [1x1 widening conv (bias)] + HighwayConv2D layers of
    two 3x3 CxC kernels (H and T) and two biases each; GAP; FC."""
    total, cin = conv(3, 3, widths[0], bias=True), widths[0]
    for s, w in enumerate(widths):
        total += conv(1, cin, w, bias=True) if s else 0
        total += layers * 2 * conv(3, w, w, bias=True)
        cin = w
    return total + fc(cin, classes)


def tiled_cnn_count(classes=10, filters=(32, 64, 128), k=2):
    """TiledConv2D: k*k untied 3x3 banks + k*k*f biases per layer; L2 pooling has no weights."""
    total, cin = 0, 3
    for f in filters:
        total += k * k * conv(3, cin, f, bias=True)
        cin = f
    return total + fc(cin, classes)


# --------------------------------------------------------------------------- parameter counts
# (name, classes, expected exact count, published figure, tolerance, source). Trainable
# counts are compared with figures that exclude BN moving statistics (torchvision, papers).
TRAINABLE_COUNTS = [
    ("resnet34", 1000, 21_797_672, 21_797_672, 0.0, "torchvision resnet34 (He et al. 2016)"),
    ("resnext50_32x4d", 1000, 25_028_904, 25_028_904, 0.0, "torchvision resnext50_32x4d"),
    ("squeezenet1_1", 1000, 1_235_496, 1_235_496, 0.0, "torchvision squeezenet1_1"),
    ("shufflenet_v2", 1000, 2_278_604, 2_278_604, 0.0, "torchvision shufflenet_v2_x1_0"),
    ("wide_resnet28_10", 10, wide_resnet_count(28, 10), 36_479_194, 0.0,
     "WRN paper, CIFAR-10: 36.5M (36,479,194)"),
    ("wide_resnet16_8", 10, wide_resnet_count(16, 8), 11.0e6, 0.01, "WRN paper: 11.0M"),
    # He et al. Table 6: ResNet-110 "1.7M" (rounded to 0.1M: 1,727,962 by the arithmetic).
    ("resnet_stochastic_depth", 10, cifar_resnet_option_a(110), 1.7e6, 0.03,
     "He et al. 2016 Table 6 / Huang et al. 2016 (ResNet-110)"),
    # No published figure for ResNet-18/34 v2 on ImageNet: the spec arithmetic is the figure.
    ("preact_resnet18", 1000, preact_basic_resnet((2, 2, 2, 2)), 11_689_512, 0.01,
     "He et al. 2016 v2 spec; within 1% of ResNet-18 (torchvision 11,689,512)"),
    ("preact_resnet34", 1000, preact_basic_resnet((3, 4, 6, 3)), 21_797_672, 0.01,
     "He et al. 2016 v2 spec; within 1% of ResNet-34 (torchvision 21,797,672)"),
    ("highway_cnn", 10, highway_cnn_count(), 2.3e6, 0.2,
     "layout arithmetic; Srivastava et al. 19-layer CIFAR-10 highway net: 2.3M"),
    ("tiled_cnn", 10, tiled_cnn_count(), tiled_cnn_count(), 0.0, "layout arithmetic (Le et al.)"),
]


@pytest.mark.parametrize("name, classes, exact, published, tolerance, source", TRAINABLE_COUNTS,
                         ids=[row[0] for row in TRAINABLE_COUNTS])
def test_trainable_parameter_counts(name, classes, exact, published, tolerance, source):
    count = trainable_params(backbones.create(name, num_classes=classes))
    assert count == exact, source
    assert abs(count - published) <= tolerance * published, source


def test_preact_resnet50_count_matches_keras_resnet50v2_minus_its_conv_biases():
    # keras.applications ResNet50V2 docs figure (count_params, incl. BN statistics):
    # 25,613,800. Keras gives conv1 (64), every block's last 1x1 conv (3·256 + 4·512 + 6·1024
    # + 3·2048 = 15,104) and the 4 projection convs (256 + 512 + 1024 + 2048 = 3,840) biases;
    # ours are bias-free (BN follows): 25,613,800 − 19,008. Same BN layout (pre-act BN on each
    # block input, BN after conv1/conv2, final post-BN; none in the stem).
    model = backbones.create("preact_resnet50", num_classes=1000)
    assert model.count_params() == 25_613_800 - (64 + 15_104 + 3_840)
    assert abs(model.count_params() - 25_613_800) <= 0.01 * 25_613_800


# --------------------------------------------------------------------------- smoke tests
SMOKE = [("resnet34", 64), ("preact_resnet18", 64), ("preact_resnet34", 64),
         ("preact_resnet50", 64), ("resnext50_32x4d", 64), ("wide_resnet28_10", 16),
         ("wide_resnet16_8", 16), ("resnet_stochastic_depth", 16), ("highway_cnn", 16),
         ("tiled_cnn", 16), ("squeezenet1_1", 64), ("shufflenet_v2", 64)]


@pytest.mark.parametrize("name, size", SMOKE, ids=[s[0] for s in SMOKE])
def test_forward_backward_is_finite(name, size):
    model = backbones.create(name, input_shape=(size, size, 3), num_classes=3)
    x = tf.random.stateless_uniform((1, size, size, 3), seed=(1, 2))
    with tf.GradientTape() as tape:
        probs = model(x, training=True)
        loss = -tf.math.log(probs[:, 0] + 1e-7)
    grads = tape.gradient(loss, model.trainable_weights)
    assert probs.shape == (1, 3)
    np.testing.assert_allclose(np.sum(probs.numpy()), 1.0, rtol=1e-5)
    assert all(g is not None for g in grads)
    assert all(np.all(np.isfinite(g.numpy())) for g in grads)
    assert any(np.any(g.numpy() != 0) for g in grads)


FEATURES = [
    ("resnet34", {}, 64, {"P2": 16, "P3": 8, "P4": 4, "P5": 2}),
    ("shufflenet_v2", {}, 64, {"P2": 16, "P3": 8, "P4": 4, "P5": 2}),
    # conv 3x3/2 valid: 31; ceil pools: 15, 7, 3 -> strides ~4, 8, 16 (floor(64/2^k) - 1)
    ("squeezenet1_1", {}, 64, {"P2": 15, "P3": 7, "P4": 3}),
    ("wide_resnet16_8", {}, 32, {"P0": 32, "P1": 16, "P2": 8}),
    ("resnet_stochastic_depth", {"depth": 20}, 32, {"P0": 32, "P1": 16, "P2": 8}),
    ("highway_cnn", {}, 32, {"P0": 32, "P1": 16, "P2": 8}),
    ("tiled_cnn", {}, 32, {"P1": 16, "P2": 8, "P3": 4}),
]


@pytest.mark.parametrize("name, options, size, expected", FEATURES, ids=[f[0] for f in FEATURES])
def test_feature_levels_are_named_by_stride(name, options, size, expected):
    model = backbones.create(name, input_shape=(size, size, 3), features_only=True, **options)
    assert {k: v.shape[1] for k, v in model.output.items()} == expected


def test_squeezenet_pools_round_up_like_ceil_mode():
    # torchvision: MaxPool2d(3, 2, ceil_mode=True): out = ceil((n - 3) / 2) + 1.
    model = backbones.create("squeezenet1_1", features_only=True)       # 224 input
    n = (224 - 3) // 2 + 1                                               # conv1: 111
    sizes = []
    for _ in range(3):
        n = -(-(n - 3) // 2) + 1
        sizes.append(n)
    assert sizes == [55, 27, 13]
    assert {k: v.shape[1] for k, v in model.output.items()} == {"P2": 55, "P3": 27, "P4": 13}


# --------------------------------------------------------------------------- architecture facts
def test_stochastic_depth_survival_decays_linearly_from_1_to_final():
    from cnn_apps.layers import StochasticDepth

    model = backbones.create("resnet_stochastic_depth", final_survival=0.5)
    survivals = []
    for layer in model.layers:          # in block order (functional graph order)
        if isinstance(layer, StochasticDepth):
            survivals.append(layer.survival_probability)
        elif hasattr(layer, "survival_probability"):          # ResidualBlock
            survivals.append(layer.survival_probability)
    expected = [1 - l / 54 * 0.5 for l in range(1, 55)]     # Huang et al.: p_l = 1 - l/L (1-p_L)
    np.testing.assert_allclose(survivals, expected, rtol=1e-12)


def test_stochastic_depth_inference_is_deterministic_and_training_samples():
    model = backbones.create("resnet_stochastic_depth", input_shape=(16, 16, 3), depth=20,
                             num_classes=4, final_survival=0.2, seed=3)
    x = tf.random.stateless_uniform((8, 16, 16, 3), seed=(3, 4))
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    draws = [model(x, training=True).numpy() for _ in range(3)]
    assert not np.allclose(draws[0], draws[1]) or not np.allclose(draws[1], draws[2])


def test_resnext_blocks_use_32_groups_of_width_4():
    import keras

    model = backbones.create("resnext50_32x4d", input_shape=(64, 64, 3))
    block = model.get_layer("stage1_block1")
    grouped = [c for c in block.convs if c.groups > 1]
    assert [(c.groups, c.filters) for c in grouped] == [(32, 128)]
    assert isinstance(grouped[0], keras.layers.Conv2D)
    assert model.output.shape[-1] == 2048


def test_subsampled_zero_pad_shortcut_matches_numpy():
    from cnn_apps.backbones.resnet_variants import SubsampledZeroPadShortcut

    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    y = SubsampledZeroPadShortcut(7, strides=2)(x)
    expected = np.zeros((2, 3, 3, 7), "float32")
    for i in range(3):
        for j in range(3):
            expected[:, i, j, :3] = x[:, 2 * i, 2 * j, :]
    np.testing.assert_array_equal(np.asarray(y), expected)


def test_channel_shuffle_and_split_match_numpy():
    from cnn_apps.backbones.mobile import ChannelShuffle, ChannelSplit

    x = np.random.default_rng(1).normal(size=(2, 3, 3, 6)).astype("float32")
    y = np.asarray(ChannelShuffle(2)(x))
    # ShuffleNet: output channel j*g + i is input channel i*(C/g) + j.
    for i in range(2):
        for j in range(3):
            np.testing.assert_array_equal(y[..., j * 2 + i], x[..., i * 3 + j])
    a, b = ChannelSplit()(x)
    np.testing.assert_array_equal(np.asarray(a), x[..., :3])
    np.testing.assert_array_equal(np.asarray(b), x[..., 3:])


def test_highway_cnn_starts_close_to_carrying_its_input():
    model = backbones.create("highway_cnn", input_shape=(16, 16, 3))
    layer = model.get_layer("stage1_highway1")
    np.testing.assert_allclose(layer.gate_bias.numpy(), -2.0)


def test_tiled_cnn_uses_tile_size_2_and_l2_pooling():
    from cnn_apps.layers import LpPooling2D, TiledConv2D

    model = backbones.create("tiled_cnn")
    tiled = [l for l in model.layers if isinstance(l, TiledConv2D)]
    pools = [l for l in model.layers if isinstance(l, LpPooling2D)]
    assert [l.tile_size for l in tiled] == [2, 2, 2]
    assert [l.p for l in pools] == [2.0, 2.0, 2.0]


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("name, options, match", [
    ("wide_resnet28_10", {"dropout_rate": 1.5}, "dropout_rate"),
    ("resnet_stochastic_depth", {"final_survival": 0.0}, "final_survival"),
    ("resnet_stochastic_depth", {"depth": 21}, "depth must be 6"),
    ("highway_cnn", {"transform_bias": 1.0}, "transform_bias"),
    ("highway_cnn", {"widths": []}, "widths"),
    ("tiled_cnn", {"tile_size": 0}, "tile_size"),
    ("resnext50_32x4d", {"cardinality": 3}, "cardinality"),
    ("preact_resnet18", {"width": "wide"}, "width"),
])
def test_bad_builder_options_raise_value_error(name, options, match):
    with pytest.raises(ValueError, match=match):
        backbones.create(name, input_shape=(32, 32, 3), **options)


def test_bad_layer_arguments_raise_value_error():
    from cnn_apps.backbones.mobile import ChannelShuffle
    from cnn_apps.backbones.resnet_variants import SubsampledZeroPadShortcut

    with pytest.raises(ValueError, match="groups"):
        ChannelShuffle(0)
    with pytest.raises(ValueError, match="divisible"):
        ChannelShuffle(4)(np.zeros((1, 2, 2, 6), "float32"))
    with pytest.raises(ValueError, match="channels"):
        SubsampledZeroPadShortcut(2)(np.zeros((1, 2, 2, 6), "float32"))


@pytest.mark.parametrize("name, options", [("shufflenet_v2", {}),
                                           ("resnet_stochastic_depth", {"depth": 8})])
def test_models_with_custom_layers_save_and_load(name, options, tmp_path):
    import keras

    model = backbones.create(name, input_shape=(32, 32, 3), num_classes=4, **options)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    x = np.random.default_rng(4).uniform(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-5,
                               atol=1e-6)
