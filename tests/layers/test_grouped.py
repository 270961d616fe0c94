"""GroupedConv2D equals keras Conv2D(groups) and an independent numpy grouped convolution,
forward and backward, without Keras' forced XLA path on TensorFlow."""

import keras
import numpy as np
import pytest

from cnn_apps.layers import GroupedConv2D
from tests.layers.harness import check_layer, random_inputs


def _numpy_grouped_conv(x, kernel, groups, stride, padding, dilation):
    """Direct loop over output pixels: each output group sees only its input group."""
    n, h, w, c_in = x.shape
    kh, kw, c_group, c_out = kernel.shape
    ekh, ekw = (kh - 1) * dilation + 1, (kw - 1) * dilation + 1
    if padding == "same":
        oh, ow = -(-h // stride), -(-w // stride)
        ph = max((oh - 1) * stride + ekh - h, 0)
        pw = max((ow - 1) * stride + ekw - w, 0)
        x = np.pad(x, ((0, 0), (ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)))
    else:
        oh, ow = (h - ekh) // stride + 1, (w - ekw) // stride + 1
    out_per_group = c_out // groups
    y = np.zeros((n, oh, ow, c_out))
    for o in range(c_out):
        g = o // out_per_group
        xs = x[..., g * c_group:(g + 1) * c_group]
        for i in range(oh):
            for j in range(ow):
                patch = xs[:, i * stride:i * stride + ekh:dilation,
                           j * stride:j * stride + ekw:dilation, :]
                y[:, i, j, o] = np.einsum("nuvc,uvc->n", patch, kernel[..., o])
    return y


@pytest.mark.parametrize("strides,padding,dilation", [(1, "same", 1), (2, "same", 1),
                                                     (2, "valid", 1), (1, "same", 2)])
def test_matches_numpy_and_keras_grouped_conv(strides, padding, dilation):
    x = random_inputs([(2, 9, 9, 12)], seed=3)[0]
    layer = GroupedConv2D(8, 3, groups=4, strides=strides, padding=padding,
                          dilation_rate=dilation, use_bias=False)
    y = keras.ops.convert_to_numpy(layer(x))
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype("float64")
    expected = _numpy_grouped_conv(x.astype("float64"), kernel, 4, strides, padding, dilation)
    np.testing.assert_allclose(y, expected, atol=1e-4)
    reference = keras.layers.Conv2D(8, 3, groups=4, strides=strides, padding=padding,
                                    dilation_rate=dilation, use_bias=False)
    reference.build(x.shape)
    reference.set_weights(layer.get_weights())   # the same kernel layout
    np.testing.assert_allclose(y, keras.ops.convert_to_numpy(reference(x)), atol=1e-5)


@pytest.mark.tf_only
def test_gradients_equal_keras_grouped_conv():
    import tensorflow as tf

    x = tf.constant(random_inputs([(2, 8, 8, 16)], seed=1)[0])
    ours = GroupedConv2D(16, 3, groups=8, strides=2, padding="same")
    ref = keras.layers.Conv2D(16, 3, groups=8, strides=2, padding="same")
    ours.build(x.shape)
    ref.build(x.shape)
    ref.set_weights(ours.get_weights())
    grads = []
    for layer in (ours, ref):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.sin(layer(x)))
        grads.append([np.asarray(g) for g in tape.gradient(loss, [x, *layer.trainable_weights])])
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, atol=1e-4)


def test_layer_contract():
    check_layer(lambda: GroupedConv2D(8, 3, groups=2, padding="same"), [(2, 6, 6, 4)])


def test_groups_one_is_plain_conv2d():
    x = random_inputs([(1, 5, 5, 3)], seed=2)[0]
    layer = GroupedConv2D(4, 3, padding="same")
    ref = keras.layers.Conv2D(4, 3, padding="same")
    ref.build(x.shape)
    layer.build(x.shape)
    ref.set_weights(layer.get_weights())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)),
                               keras.ops.convert_to_numpy(ref(x)), atol=1e-6)


def test_channels_not_divisible_by_groups_is_an_error():
    with pytest.raises(ValueError, match="groups"):
        GroupedConv2D(6, 3, groups=4)
    with pytest.raises(ValueError, match="groups"):
        GroupedConv2D(8, 3, groups=4).build((1, 5, 5, 6))
