"""Backbone zoo part 1: classic nets (AlexNet, ZFNet, VGG, NIN, Inception family) and the
keras.applications wraps (DenseNet, ResNet-101/152, MobileNetV1/V3, Xception).

Parameter counts are compared with published figures or with the paper's layer table turned
into a formula here (independent of the builders); every backbone gets a forward/backward smoke
test at a small input, which also checks the stride-2 progression of its P2..P5 levels.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from cnn_apps import backbones
from cnn_apps.backbones.registry import global_pool_head
from cnn_apps.errors import CnnAppsError, WeightsError


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def conv(kernel, c_in, c_out, bias=True, bn=False):
    """Parameters of a conv layer (+ BN gamma/beta when ``bn``, the trainable part)."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    return kh * kw * c_in * c_out + (c_out if bias else 0) + (2 * c_out if bn else 0)


def fc(n_in, n_out):
    return n_in * n_out + n_out


# ------------------------------------------------------------------ paper tables as formulas
ALEXNET = (conv(11, 3, 96) + conv(5, 96, 256) + conv(3, 256, 384) + conv(3, 384, 384)
           + conv(3, 384, 256) + fc(6 * 6 * 256, 4096) + fc(4096, 4096) + fc(4096, 1000))
# ZFNet: seed S2 (AR-03) = AlexNet with conv1 7x7/2 and conv3/4/5 = 512/1024/512; strides of
# Zeiler & Fergus Fig. 3 (conv2 stride 2) leave a 6x6x512 map before FC6. S0's "75 M" fits no
# consistent variant (the paper's 384/384/256 widths give 62.4M), so the formula is the reference.
ZFNET = (conv(7, 3, 96) + conv(5, 96, 256) + conv(3, 256, 512) + conv(3, 512, 1024)
         + conv(3, 1024, 512) + fc(6 * 6 * 512, 4096) + fc(4096, 4096) + fc(4096, 1000))
# NIN ImageNet model (Lin et al. Caffe release): four mlpconv stacks, the last ends in 1000 maps.
NIN = (conv(11, 3, 96) + 2 * conv(1, 96, 96) + conv(5, 96, 256) + 2 * conv(1, 256, 256)
       + conv(3, 256, 384) + 2 * conv(1, 384, 384) + conv(3, 384, 1024) + conv(1, 1024, 1024)
       + conv(1, 1024, 1000))

# Szegedy et al. 2015 Table 1: (in, 1x1, 3x3 reduce, 3x3, 5x5 reduce, 5x5, pool proj).
GOOGLENET_TABLE = [(192, 64, 96, 128, 16, 32, 32), (256, 128, 128, 192, 32, 96, 64),
                   (480, 192, 96, 208, 16, 48, 64), (512, 160, 112, 224, 24, 64, 64),
                   (512, 128, 128, 256, 24, 64, 64), (512, 112, 144, 288, 32, 64, 64),
                   (528, 256, 160, 320, 32, 128, 128), (832, 256, 160, 320, 32, 128, 128),
                   (832, 384, 192, 384, 48, 128, 128)]


def googlenet_formula(k5=5, bias=True, bn=False):
    total = conv(7, 3, 64, bias, bn) + conv(1, 64, 64, bias, bn) + conv(3, 64, 192, bias, bn)
    for c_in, f1, r3, f3, r5, f5, fp in GOOGLENET_TABLE:
        total += (conv(1, c_in, f1, bias, bn) + conv(1, c_in, r3, bias, bn)
                  + conv(3, r3, f3, bias, bn) + conv(1, c_in, r5, bias, bn)
                  + conv(k5, r5, f5, bias, bn) + conv(1, c_in, fp, bias, bn))
    return total + fc(1024, 1000)


def test_googlenet_formula_reproduces_torchvision_figure():
    # torchvision's GoogLeNet (6,624,904) uses conv+BN without bias and a 3x3 in the "5x5"
    # branch; the same formula with those choices must give its figure exactly, which is the
    # check that the table transcription is right.
    assert googlenet_formula(k5=3, bias=False, bn=True) == 6_624_904


# Ioffe & Szegedy 2015 Fig. 5: (1x1, 3x3 reduce, 3x3, double reduce, double 3x3, pool proj);
# a 1x1 width of 0 marks the stride-2 modules (3c, 4e), whose pool branch passes through.
BN_INCEPTION_TABLE = [(64, 64, 64, 64, 96, 32), (64, 64, 96, 64, 96, 64), (0, 128, 160, 64, 96, 0),
                      (224, 64, 96, 96, 128, 128), (192, 96, 128, 96, 128, 128),
                      (160, 128, 160, 128, 160, 128), (96, 128, 192, 160, 192, 128),
                      (0, 128, 192, 192, 256, 0), (352, 192, 320, 160, 224, 128),
                      (352, 192, 320, 192, 224, 128)]


def bn_inception_formula():
    def cbn(k, c_in, c_out):
        return conv(k, c_in, c_out, bias=False, bn=True)

    total, c_in = cbn(7, 3, 64) + cbn(1, 64, 64) + cbn(3, 64, 192), 192
    for f1, r3, f3, rd, fd, fp in BN_INCEPTION_TABLE:
        total += (cbn(1, c_in, r3) + cbn(3, r3, f3) + cbn(1, c_in, rd) + cbn(3, rd, fd)
                  + cbn(3, fd, fd))
        if f1:
            total += cbn(1, c_in, f1) + cbn(1, c_in, fp)
            c_in = f1 + f3 + fd + fp
        else:
            c_in = f3 + fd + c_in
    assert c_in == 1024
    return total + fc(1024, 1000)


def test_alexnet_formula_matches_the_published_single_tower_figure():
    assert ALEXNET == 62_378_344


# Own implementations: TRAINABLE parameters (BN moving statistics excluded, as in the papers'
# and torchvision's figures) at the default input and 1000 classes.
@pytest.mark.parametrize("name, expected, source", [
    ("alexnet", ALEXNET, "seed S2 AlexNet spec; 62,378,344 single tower"),
    ("zfnet", ZFNET, "seed S2 ZFNet spec, formula above (107,627,624)"),
    ("vgg11", 132_863_336, "torchvision vgg11 (VGG paper Table 2: 133M)"),
    ("vgg11_lrn", 132_863_336, "LRN has no weights: same as VGG-11"),
    ("vgg13", 133_047_848, "torchvision vgg13 (VGG paper Table 2: 133M)"),
    ("nin", NIN, "NIN Caffe ImageNet model, formula above (7,595,176 ~ 7.6M)"),
    ("googlenet", googlenet_formula(), "Szegedy et al. 2015 Table 1 with biases: 6,998,552"),
    ("inception_v2", bn_inception_formula(), "Ioffe & Szegedy 2015 Fig. 5: 11,285,224"),
])
def test_parameter_counts_own_backbones(name, expected, source):
    model = backbones.create(name, num_classes=1000)
    assert trainable_params(model) == expected, source


def test_inception_v4_parameter_count_is_42_7m():
    # The paper prints no count; 42.68M (timm / pretrainedmodels port of the TF-slim weights,
    # BN with gamma and beta) is the published figure. Ours: 42,679,816 trainable.
    model = backbones.create("inception_v4", num_classes=1000)
    assert model.output.shape[1:] == (1000,)
    assert trainable_params(model) == pytest.approx(42.68e6, rel=0.01)


# keras.applications wraps: count_params() (BN moving statistics included), compared with
# keras.applications.<App>(weights=None, include_top=True).count_params(); the rounded figures
# are those of the keras.applications table.
@pytest.mark.parametrize("name, expected", [
    ("vgg16", 138_357_544),                # 138.4M
    ("vgg19", 143_667_240),                # 143.7M
    ("inception_v3", 23_851_784),          # 23.9M
    ("inception_resnet_v2", 55_873_736),   # 55.9M
    ("densenet121", 8_062_504),            # 8.1M
    ("densenet169", 14_307_880),           # 14.3M
    ("densenet201", 20_242_984),           # 20.2M
    ("resnet101", 44_707_176),             # 44.7M
    ("resnet152", 60_419_944),             # 60.4M
    ("mobilenet_v1", 4_253_864),           # 4.3M
    ("mobilenet_v3_small", 2_554_968),     # 2.5M (keras docs; head 1024 + dropout + FC)
    ("mobilenet_v3_large", 5_507_432),     # 5.4M
    ("xception", 22_910_480),              # 22.9M
])
def test_parameter_counts_keras_applications(name, expected):
    model = backbones.create(name, num_classes=1000)
    assert model.count_params() == expected
    if name.startswith("densenet"):
        # Trainable part against torchvision's DenseNet figures (same architecture).
        torchvision = {"densenet121": 7_978_856, "densenet169": 14_149_480,
                       "densenet201": 20_013_928}
        assert trainable_params(model) == torchvision[name]


# --------------------------------------------------------------------------- smoke tests
OWN = ["alexnet", "zfnet", "vgg11", "vgg11_lrn", "vgg13", "nin", "googlenet", "inception_v2",
       "inception_v4"]
WRAPPED = ["vgg16", "vgg19", "inception_v3", "inception_resnet_v2", "densenet121",
           "densenet169", "densenet201", "resnet101", "resnet152", "mobilenet_v1",
           "mobilenet_v3_small", "mobilenet_v3_large", "xception"]
# Own nets whose min_input_size is derived from their valid-padded layers: at that size the
# stride-32 map is exactly 1x1.
TIGHT_MINIMUM = {"alexnet", "zfnet", "nin", "inception_v4"}


def test_all_names_registered_with_specs():
    registered = set(backbones.list_backbones())
    assert set(OWN + WRAPPED) <= registered
    for name in OWN:
        assert not backbones.get_spec(name).imagenet_weights, name
    for name in WRAPPED:
        spec = backbones.get_spec(name)
        assert spec.imagenet_weights, name
        assert spec.description, name


@pytest.mark.parametrize("name", OWN + WRAPPED)
def test_forward_backward_small_input(name):
    spec = backbones.get_spec(name)
    size = max(spec.min_input_size, 32)
    # Seeded: with an unseeded draw a ReLU-ended head (NiN's last mlpconv) can start with
    # every class unit dead on a 32 px image, which gives exactly zero gradients.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((size, size, 3))
    graph = spec.builder(inputs)            # what create() builds, with both heads attached
    probs = (spec.head or global_pool_head)(graph.output, 3)
    model = keras.Model(inputs, {"probs": probs, **graph.features})
    images = np.random.default_rng(0).uniform(0, 1, (1, size, size, 3)).astype("float32")
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(np.array([1]), out["probs"])
    grads = tape.gradient(loss, model.trainable_weights)
    p = np.asarray(out["probs"])
    assert p.shape == (1, 3) and np.isfinite(p).all()
    np.testing.assert_allclose(p.sum(), 1.0, rtol=1e-5)
    assert all(g is not None and np.isfinite(np.asarray(g)).all() for g in grads)
    assert sum(float(np.abs(np.asarray(g)).sum()) for g in grads) > 0
    # Levels: P2 near stride 4, then each level halves the previous one (floor/ceil, or one
    # less for valid-padded 3x3/5x5 stride-2 layers).
    sizes = {k: tuple(v.shape[1:3]) for k, v in graph.features.items()}
    assert set(sizes) == {"P2", "P3", "P4", "P5"}, sizes
    assert size / 4 - 5 <= sizes["P2"][0] <= -(-size // 4), sizes
    for finer, coarser in (("P2", "P3"), ("P3", "P4"), ("P4", "P5")):
        n = sizes[finer][0]
        assert (n - 3) // 2 <= sizes[coarser][0] <= (n + 1) // 2, sizes
        assert sizes[coarser][0] == sizes[coarser][1]
    if name in TIGHT_MINIMUM:
        assert sizes["P5"] == (1, 1)
    assert all(np.isfinite(np.asarray(out[k])).all() for k in sizes)


def test_create_features_only_at_default_input_gives_paper_grids():
    # AlexNet S2 spec: conv1 55x55x96, conv2 27x27x256, conv5 13x13x256, pool5 6x6x256.
    model = backbones.create("alexnet", features_only=True)
    assert {k: tuple(v.shape[1:]) for k, v in model.output.items()} == {
        "P2": (55, 55, 96), "P3": (27, 27, 256), "P4": (13, 13, 256), "P5": (6, 6, 256)}


# ------------------------------------------------------------------------- GoogLeNet aux heads
def aux_formula(c_in, classes=1000):
    """avgpool 5x5/3 on 14x14 -> 4x4; 1x1 conv 128; FC 1024; FC classes."""
    return conv(1, c_in, 128) + fc(4 * 4 * 128, 1024) + fc(1024, classes)


def test_googlenet_aux_heads_parameter_count():
    model = backbones.create("googlenet", num_classes=1000, aux_heads=True)
    assert set(model.output) == {"predictions", "aux1", "aux2"}
    # Aux heads on 4a (512 channels) and 4d (528 channels), Szegedy et al. 2015 §5.
    assert trainable_params(model) == googlenet_formula() + aux_formula(512) + aux_formula(528)


def test_googlenet_aux_heads_forward_backward_and_default_single_output():
    model = backbones.create("googlenet", input_shape=(80, 80, 3), num_classes=4, aux_heads=True)
    images = np.random.default_rng(1).uniform(0, 255, (1, 80, 80, 3)).astype("float32")
    with tf.GradientTape() as tape:
        out = model(images, training=True)
        loss = keras.losses.sparse_categorical_crossentropy(np.array([2]), out["aux1"])
    for key in ("predictions", "aux1", "aux2"):
        np.testing.assert_allclose(np.asarray(out[key]).sum(axis=-1), [1.0], rtol=1e-5)
    grads = dict(zip([w.path for w in model.trainable_weights],
                     tape.gradient(loss, model.trainable_weights)))
    aux1_fc = [g for path, g in grads.items() if path.startswith("aux1_fc")]
    assert aux1_fc and all(np.isfinite(np.asarray(g)).all() for g in aux1_fc)
    assert float(np.abs(np.asarray(aux1_fc[0])).sum()) > 0
    # The main classifier gets no gradient from the aux1 loss.
    assert all(g is None for path, g in grads.items() if path.startswith("predictions"))
    # Without num_classes the flag changes nothing: one feature map out.
    extractor = backbones.create("googlenet", input_shape=(80, 80, 3), aux_heads=True)
    assert tuple(extractor.output.shape[1:]) == (3, 3, 1024)
    plain = backbones.create("googlenet", input_shape=(80, 80, 3), num_classes=4)
    assert tuple(plain.output.shape[1:]) == (4,)


# ------------------------------------------------------------------------- errors and weights
def test_bad_inputs_raise_clear_errors():
    with pytest.raises(ValueError, match="aux_heads must be True or False"):
        backbones.create("googlenet", input_shape=(80, 80, 3), aux_heads="yes")
    with pytest.raises(ValueError, match="aux_heads=True needs inputs of at least 65"):
        backbones.create("googlenet", input_shape=(64, 64, 3), aux_heads=True)
    with pytest.raises(CnnAppsError, match="at least 67"):
        backbones.create("alexnet", input_shape=(66, 66, 3))
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        backbones.create("inception_v4", weights="imagenet")
    from cnn_apps.backbones.vgg import vgg_graph
    with pytest.raises(ValueError, match="config must be one of"):
        vgg_graph(keras.Input((32, 32, 3)), "C")


def test_vgg16_imagenet_is_delegated_to_keras_applications(monkeypatch):
    # No network here: stand in for the download and check what the wrap asks keras for.
    calls, real = [], keras.applications.VGG16

    def recording_vgg16(**kwargs):
        calls.append(kwargs["weights"])
        return real(**{**kwargs, "weights": None})

    monkeypatch.setattr(keras.applications, "VGG16", recording_vgg16)
    model = backbones.create("vgg16", input_shape=(32, 32, 3), weights="imagenet")
    assert calls == ["imagenet"]
    assert tuple(model.output.shape[1:]) == (1, 1, 512)


def test_local_weights_round_trip_for_own_backbone(tmp_path):
    source = backbones.create("nin", input_shape=(67, 67, 3))
    path = tmp_path / "nin.weights.h5"
    source.save_weights(path)
    loaded = backbones.create("nin", input_shape=(67, 67, 3), weights=str(path))
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(WeightsError):
        backbones.create("alexnet", input_shape=(67, 67, 3), weights=str(path))
