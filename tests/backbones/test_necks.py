"""FeaturePyramid (FPN) against a numpy loop of its formula; feature_pyramid_model;
attach_classification_head against numpy; bad-input errors."""

import keras
import numpy as np
import pytest

from cnn_apps import backbones
from cnn_apps.backbones import FeaturePyramid, attach_classification_head, feature_pyramid_model


def conv_same_numpy(x, kernel, bias, stride=1):
    """Direct loop of a 'same'-padded convolution with TF's padding rule (extra pad after)."""
    n, h, w, c = x.shape
    kh, kw, _, f = kernel.shape
    out_h, out_w = -(-h // stride), -(-w // stride)
    pad_h = max((out_h - 1) * stride + kh - h, 0)
    pad_w = max((out_w - 1) * stride + kw - w, 0)
    xp = np.pad(x, ((0, 0), (pad_h // 2, pad_h - pad_h // 2), (pad_w // 2, pad_w - pad_w // 2),
                    (0, 0)))
    y = np.zeros((n, out_h, out_w, f))
    for i in range(out_h):
        for j in range(out_w):
            patch = xp[:, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
            y[:, i, j, :] = np.tensordot(patch, kernel, axes=([1, 2, 3], [0, 1, 2]))
    return y + bias


def fpn_numpy(features, layer):
    """Lin et al. 2017: M_top = L(C_top); M_l = L(C_l) + up2(M_{l+1}) cropped; P_l = S(M_l)."""
    def weights(name):
        sub = [w.numpy() for w in layer.weights if w.path.split("/")[-2] == name]
        return sub[0], sub[1]

    names = sorted(features, key=lambda k: int(k[1:]))
    outputs, merged = {}, None
    for name in reversed(names):
        lateral = conv_same_numpy(features[name], *weights(f"lateral_{name}"))
        if merged is not None:
            up = np.repeat(np.repeat(merged, 2, axis=1), 2, axis=2)
            lateral = lateral + up[:, :lateral.shape[1], :lateral.shape[2], :]
        merged = lateral
        outputs[name] = conv_same_numpy(merged, *weights(f"smooth_{name}"))
    if layer.extra_level:
        top = names[-1]
        extra = f"P{int(top[1:]) + 1}"
        outputs[extra] = conv_same_numpy(outputs[top], *weights(f"extra_{extra}"), stride=2)
    return outputs


@pytest.mark.parametrize("sizes, extra", [
    ({"P3": 4, "P4": 2, "P5": 1}, True),
    ({"P2": 7, "P3": 4, "P4": 2}, False),       # odd size: the upsampled map is cropped
    ({"P4": 5, "P5": 3}, True),
])
def test_feature_pyramid_matches_numpy_formula(sizes, extra):
    rng = np.random.default_rng(0)
    features = {name: rng.normal(size=(2, s, s + 1, 3 + i)).astype("float32")
                for i, (name, s) in enumerate(sizes.items())}
    layer = FeaturePyramid(channels=4, extra_level=extra,
                           kernel_initializer=keras.initializers.RandomNormal(seed=1))
    got = layer(features)
    expected = fpn_numpy(features, layer)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_allclose(np.asarray(got[name]), expected[name], rtol=1e-4, atol=1e-4)
    shapes = layer.compute_output_shape({k: v.shape for k, v in features.items()})
    assert {k: tuple(v) for k, v in shapes.items()} == {k: v.shape for k, v in expected.items()}


def test_feature_pyramid_config_round_trip_and_weight_names():
    layer = FeaturePyramid(channels=8, extra_level=True, name="fpn")
    layer({"P3": np.zeros((1, 4, 4, 3), "float32"), "P4": np.zeros((1, 2, 2, 5), "float32")})
    clone = FeaturePyramid.from_config(layer.get_config())
    assert (clone.channels, clone.extra_level) == (8, True)
    names = {w.path.split("/")[-2] for w in layer.weights}
    assert names == {"lateral_P3", "lateral_P4", "smooth_P3", "smooth_P4", "extra_P5"}
    # 1x1 laterals (3·8+8, 5·8+8), 3x3 smooths (2·(9·8·8+8)), 3x3 extra (9·8·8+8)
    assert layer.count_params() == 32 + 48 + 2 * 584 + 584


def test_feature_pyramid_model_on_a_registered_backbone():
    model = feature_pyramid_model("resnet18", channels=16, extra_level=True,
                                  input_shape=(64, 64, 3), width=8)
    shapes = {k: tuple(v.shape[1:]) for k, v in model.output.items()}
    assert shapes == {"P2": (16, 16, 16), "P3": (8, 8, 16), "P4": (4, 4, 16),
                      "P5": (2, 2, 16), "P6": (1, 1, 16)}
    out = model(np.random.default_rng(2).uniform(size=(1, 64, 64, 3)).astype("float32"))
    assert all(np.all(np.isfinite(np.asarray(v))) for v in out.values())
    subset = feature_pyramid_model("tiled_cnn", channels=4, levels=["P2", "P3"])
    assert sorted(subset.output) == ["P2", "P3"]


def test_attach_classification_head_matches_numpy():
    backbone = backbones.create("tiled_cnn", input_shape=(16, 16, 3))
    model = attach_classification_head(backbone, num_classes=5)
    x = np.random.default_rng(3).uniform(size=(2, 16, 16, 3)).astype("float32")
    feature_map = np.asarray(backbone(x))
    kernel, bias = (w.numpy() for w in model.get_layer("head_predictions").weights)
    logits = feature_map.mean(axis=(1, 2)) @ kernel + bias
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(np.asarray(model(x)), expected, rtol=1e-5, atol=1e-6)


def test_attach_classification_head_on_features_uses_the_coarsest_level():
    features = backbones.create("tiled_cnn", input_shape=(16, 16, 3), features_only=True)
    model = attach_classification_head(features, num_classes=3, dropout_rate=0.2)
    pool = model.get_layer("head_avg_pool")
    assert tuple(pool.input.shape[1:]) == (2, 2, 128)           # P3: stride 8
    model = attach_classification_head(features, num_classes=3, level="P1")
    assert tuple(model.get_layer("head_avg_pool").input.shape[1:]) == (8, 8, 32)


def test_bad_input_raises_value_error():
    with pytest.raises(ValueError, match="channels must be a positive integer"):
        FeaturePyramid(channels=0)
    with pytest.raises(ValueError, match="dict"):
        FeaturePyramid(4)(np.zeros((1, 4, 4, 3), "float32"))
    with pytest.raises(ValueError, match="'P<stride exponent>'"):
        FeaturePyramid(4)({"C3": np.zeros((1, 4, 4, 3), "float32")})
    backbone = backbones.create("tiled_cnn")
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        attach_classification_head(backbone, num_classes=1)
    with pytest.raises(ValueError, match="backbone_model must be a keras.Model"):
        attach_classification_head("tiled_cnn", num_classes=3)
    with pytest.raises(ValueError, match="dropout_rate"):
        attach_classification_head(backbone, num_classes=3, dropout_rate=1.0)
    with pytest.raises(ValueError, match="levels"):
        feature_pyramid_model("tiled_cnn", levels=["P7"])
