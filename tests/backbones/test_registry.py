"""Backbone registry contract; parameter counts against published figures."""

import numpy as np
import pytest

from cnn_apps import backbones
from cnn_apps.errors import CnnAppsError, WeightsError


def trainable_params(model):
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


@pytest.mark.parametrize("name, classes, expected, source", [
    # LeNet-5, S2 spec, 1 input channel: 156 + 2,416 + 48,120 + 10,164 + 850 ("about 60,000").
    ("lenet5", 10, 61_706, "seed S2 LeNet-5 spec"),
    # torchvision resnet18 (same architecture): 11,689,512 trainable parameters.
    ("resnet18", 1000, 11_689_512, "He et al. 2016 / torchvision"),
])
def test_parameter_counts_own_backbones(name, classes, expected, source):
    model = backbones.create(name, num_classes=classes)
    assert trainable_params(model) == expected, source


@pytest.mark.parametrize("name, expected", [
    ("resnet50", 25_636_712),        # keras.applications docs: 25.6M
    ("mobilenet_v2", 3_538_984),     # keras.applications docs: 3.5M
    ("efficientnet_b0", 5_330_571),  # keras.applications docs: 5.3M
])
def test_parameter_counts_keras_applications(name, expected):
    assert backbones.create(name, num_classes=1000).count_params() == expected


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0"])
def test_features_only_gives_strides_4_to_32(name):
    model = backbones.create(name, input_shape=(64, 64, 3), features_only=True)
    shapes = {k: tuple(v.shape[1:3]) for k, v in model.output.items()}
    assert shapes == {"P2": (16, 16), "P3": (8, 8), "P4": (4, 4), "P5": (2, 2)}


def test_lenet_features_only_has_two_levels():
    model = backbones.create("lenet5", features_only=True)
    assert {k: tuple(v.shape[1:]) for k, v in model.output.items()} == {
        "P1": (14, 14, 6), "P2": (5, 5, 16)}


def test_list_and_unknown_name_suggests_close_match():
    assert {"lenet5", "resnet18", "resnet50", "mobilenet_v2", "efficientnet_b0"} <= set(
        backbones.list_backbones())
    with pytest.raises(CnnAppsError, match="Did you mean: resnet18"):
        backbones.create("resnet81")


def test_register_backbone_adds_a_new_backbone():
    import keras

    @backbones.register_backbone("tiny_test_net", default_input_shape=(16, 16, 3),
                                 description="test", min_input_size=8)
    def tiny(inputs, imagenet=False):
        x = keras.layers.Conv2D(4, 3, strides=4, padding="same")(inputs)
        return backbones.BackboneGraph(output=x, features={"P2": x})

    assert "tiny_test_net" in backbones.list_backbones()
    assert backbones.create("tiny_test_net").output.shape[1:] == (4, 4, 4)
    assert backbones.create("tiny_test_net", num_classes=3).output.shape[-1] == 3


def test_local_weights_file_round_trip_and_mismatch(tmp_path):
    source = backbones.create("lenet5", input_shape=(32, 32, 3))
    path = tmp_path / "lenet.weights.h5"
    source.save_weights(path)
    loaded = backbones.create("lenet5", input_shape=(32, 32, 3), weights=str(path))
    for a, b in zip(source.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(WeightsError, match="lenet.weights.h5"):
        backbones.create("resnet18", input_shape=(32, 32, 3), weights=str(path))
    with pytest.raises(WeightsError, match="does not exist"):
        backbones.create("lenet5", weights=str(tmp_path / "missing.weights.h5"))


def test_imagenet_weights_refused_where_none_exist():
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        backbones.create("lenet5", weights="imagenet")


def test_input_too_small_is_a_clear_error():
    with pytest.raises(CnnAppsError, match="at least 32"):
        backbones.create("resnet18", input_shape=(16, 16, 3))
