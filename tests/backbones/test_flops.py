"""count_flops by hand arithmetic and against TensorFlow's profiler; the zoo table cache and
the `cnn-apps list backbones` output."""

import json

import keras
import numpy as np
import pytest

from cnn_apps import backbones
from cnn_apps.backbones import flops as flops_module
from cnn_apps.backbones.flops import backbone_summary, count_flops, flops_by_layer, zoo_rows


def tiny_model():
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="conv")(x)                               # 6x6x4
    x = keras.layers.DepthwiseConv2D(3, padding="same", name="dw")(x)            # 6x6x4
    x = keras.layers.Conv2D(6, 1, groups=2, name="grouped")(x)                   # 6x6x6
    x = keras.layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2,
                                     name="sep")(x)                              # 6x6x5
    x = keras.layers.Conv2DTranspose(3, 2, strides=2, name="up")(x)              # 12x12x3
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(7, name="fc")(x))


def test_tiny_model_by_hand_arithmetic():
    macs = {
        "conv": 6 * 6 * 4 * (3 * 3 * 3),         # out elements x (k*k*C_in)
        "dw": 6 * 6 * 4 * (3 * 3),                # out elements x k*k
        "grouped": 6 * 6 * 6 * (4 // 2),          # out elements x C_in/groups
        "sep": 6 * 6 * 12 * 9 + 6 * 6 * 12 * 5,   # depthwise (C·m = 6·2) + pointwise 12 -> 5
        "up": 6 * 6 * 5 * (2 * 2 * 3),            # in elements x k*k*filters
        "fc": 3 * 7,
    }
    model = tiny_model()
    per_layer = {name: f for name, _, f in flops_by_layer(model, (8, 8, 3))}
    assert per_layer == {name: 2 * m for name, m in macs.items()}
    assert count_flops(model) == 2 * sum(macs.values()) == 27_690


def test_matches_tensorflow_profiler_on_conv_dense_depthwise():
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2)

    # No biases or activations: the profiler's float ops are then exactly 2·MACs of
    # Conv2D / DepthwiseConv2dNative / MatMul.
    x = inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(x)
    x = keras.layers.DepthwiseConv2D(3, use_bias=False)(x)
    x = keras.layers.Conv2D(16, 1, use_bias=False)(x)
    x = keras.layers.Flatten()(x)
    model = keras.Model(inputs, keras.layers.Dense(10, use_bias=False)(x))
    concrete = tf.function(lambda t: model(t), autograph=False).get_concrete_function(
        tf.TensorSpec((1, 12, 12, 3)))
    graph = convert_variables_to_constants_v2(concrete).graph
    options = tf.compat.v1.profiler.ProfileOptionBuilder.float_operation()
    options["output"] = "none"
    profiled = tf.compat.v1.profiler.profile(graph=graph, options=options).total_float_ops
    assert count_flops(model) == profiled


def test_composite_and_package_layers_are_counted_through_their_parts():
    from cnn_apps.layers import HighwayConv2D, ResidualBlock, TiledConv2D

    x = inputs = keras.Input((8, 8, 4))
    x = ResidualBlock(4, name="res")(x)                      # two 3x3 4->4 convs
    x = HighwayConv2D(3, name="highway")(x)                  # H and T: two 3x3 4->4 convs
    x = TiledConv2D(2, 3, tile_size=2, padding="same", name="tiled")(x)
    model = keras.Model(inputs, x)
    conv3x3 = 8 * 8 * 4 * (3 * 3 * 4)
    records = flops_by_layer(model)
    assert sorted(f for _, _, f in records) == sorted(
        [2 * conv3x3, 2 * conv3x3, 2 * 2 * conv3x3, 2 * (8 * 8 * 2 * 3 * 3 * 4)])
    # the recording hook is removed again and the model still runs
    assert all("call" not in layer.__dict__ for layer in model._flatten_layers())
    assert model(np.zeros((1, 8, 8, 4), "float32")).shape == (1, 8, 8, 2)


def test_shared_layer_counts_every_call_and_dynamic_input_needs_a_shape():
    shared = keras.layers.Dense(5, name="shared")
    inputs = keras.Input((None, 5))
    model = keras.Model(inputs, keras.layers.Dense(3)(shared(shared(inputs))))
    assert count_flops(model, (4, 5)) == 2 * (4 * 5 * 5 + 4 * 5 * 5 + 4 * 5 * 3)
    with pytest.raises(ValueError, match="input_shape must be 2 positive integers"):
        count_flops(model)


def test_registered_backbone_flops_match_published_multiply_adds():
    # torchvision ResNet-18: 1.81 GFLOPs (multiply-adds) at 224x224.
    flops = count_flops(backbones.create("resnet18", num_classes=1000))
    assert abs(flops / 2 - 1.81e9) <= 0.01 * 1.81e9


@pytest.mark.parametrize("model, shape, match", [
    ("not a model", (8, 8, 3), "must be a keras.Model"),
    (None, (8, 8), "input_shape must be 3 positive integers"),
    (None, (9, 8, 3), "does not fit the model input"),
    (None, (8, 8, 0), "positive integers"),
])
def test_bad_input_raises_value_error(model, shape, match):
    with pytest.raises(ValueError, match=match):
        count_flops(tiny_model() if model is None else model, shape)


# --------------------------------------------------------------------------- zoo table
def tiled_row():
    # tiled_cnn at 32x32 (1000 classes): three 3x3 tiled convs on 32/16/8 maps + FC.
    macs = 32 * 32 * 32 * 27 + 16 * 16 * 64 * 288 + 8 * 8 * 128 * 576 + 128 * 1000
    params = 4 * (27 * 32 + 32) + 4 * (288 * 64 + 64) + 4 * (576 * 128 + 128) + 129_000
    return 2 * macs, params


def test_backbone_summary_row():
    flops, params = tiled_row()
    row = backbone_summary("tiled_cnn")
    assert (row["flops"], row["params"], row["trainable_params"]) == (flops, params, params)
    assert row["strides"] == [2, 4, 8] and row["input_shape"] == [32, 32, 3]
    assert row["imagenet_weights"] is False


def test_zoo_rows_use_the_cache_when_current_and_recompute_stale_rows(tmp_path):
    spec = backbones.get_spec("tiled_cnn")
    cached = {"name": "tiled_cnn", "input_shape": list(spec.default_input_shape),
              "params": 1, "trainable_params": 1, "flops": 2, "strides": [2],
              "imagenet_weights": False, "description": spec.description}
    path = tmp_path / "table.json"
    path.write_text(json.dumps([cached]))
    assert zoo_rows(["tiled_cnn"], path=path) == [cached]
    path.write_text(json.dumps([{**cached, "description": "an older description"}]))
    assert zoo_rows(["tiled_cnn"], path=path)[0]["flops"] == tiled_row()[0]


def test_committed_table_is_consistent_with_the_registry():
    table = flops_module.load_zoo_table()
    for name in ("resnet18", "resnet34", "tiled_cnn", "squeezenet1_1"):
        spec = backbones.get_spec(name)
        assert table[name]["description"] == spec.description
        assert tuple(table[name]["input_shape"]) == spec.default_input_shape
    assert table["tiled_cnn"]["flops"] == tiled_row()[0]
    assert table["resnet34"]["trainable_params"] == 21_797_672


def test_cli_list_backbones_prints_the_table(monkeypatch, capsys, tmp_path):
    from cnn_apps import cli
    from cnn_apps.backbones import registry

    flops, params = tiled_row()
    monkeypatch.setattr(registry, "list_backbones", lambda: ["tiled_cnn"])
    monkeypatch.setattr(flops_module, "TABLE_PATH", tmp_path / "absent.json")
    assert cli.main(["list", "backbones"]) in (0, None)
    out, err = capsys.readouterr()
    header, line = out.splitlines()
    assert header.split()[:6] == ["name", "input", "params", "GFLOPs", "strides", "imagenet"]
    fields = line.split()
    assert fields[:6] == ["tiled_cnn", "32x32x3", f"{params / 1e6:.2f}M", f"{flops / 1e9:.3f}",
                          "2,4,8", "no"]
    assert "computing 1 backbone" in err
