"""Convolution variants vs numpy loops, scipy and Keras built-ins (SEED_CHECKLIST §3, C-07)."""

import keras
import numpy as np
import pytest
from scipy import signal

from cnn_apps.layers import (BlurPool2D, DeformableConv2D, LocallyConnected2D, MLPConv2D,
                             ReceptiveField, SpaceToDepthConv2D, TiledConv2D, receptive_field,
                             space_to_depth)
from tests.layers.harness import check_layer

RNG = np.random.default_rng(7)


def _rand(*shape, scale=1.0):
    return (RNG.uniform(-1, 1, size=shape) * scale).astype("float32")


def _np(y):
    return keras.ops.convert_to_numpy(y).astype("float64")


def _pads(size, k, s, padding):
    """(out, before) of one axis; TF's documented 'same' rule, written out for the reference."""
    if padding == "valid":
        return (size - k) // s + 1, 0
    out = -(-size // s)
    return out, max((out - 1) * s + k - size, 0) // 2


def _np_conv2d(x, kernel_at, kh, kw, stride, padding, bias_at=None):
    """Direct loop: y[n,i,j,f] = sum_{u,v,c} kernel_at(i,j)[u,v,c,f] x[n, i*s+u-top, j*s+v-left, c]."""
    n, h, w, _ = x.shape
    out_h, top = _pads(h, kh, stride, padding)
    out_w, left = _pads(w, kw, stride, padding)
    filters = kernel_at(0, 0).shape[-1]
    y = np.zeros((n, out_h, out_w, filters))
    for i in range(out_h):
        for j in range(out_w):
            kern = kernel_at(i, j)
            for u in range(kh):
                for v in range(kw):
                    r, c = i * stride + u - top, j * stride + v - left
                    if 0 <= r < h and 0 <= c < w:
                        y[:, i, j] += x[:, r, c, :] @ kern[u, v]
            if bias_at is not None:
                y[:, i, j] += bias_at(i, j)
    return y


# ----------------------------------------------------------------------------- TiledConv2D
def test_tiled_conv_contract():
    check_layer(lambda: TiledConv2D(4, 3, tile_size=2, padding="same"), [(2, 6, 6, 3)])


@pytest.mark.parametrize("strides,padding", [(1, "valid"), (2, "same")])
def test_tiled_conv_tile1_equals_conv2d(strides, padding):
    x = _rand(2, 7, 7, 3)
    layer = TiledConv2D(5, 3, tile_size=1, strides=strides, padding=padding)
    layer.build(x.shape)
    kernel, bias = _rand(1, 1, 3, 3, 3, 5), _rand(1, 1, 5)
    layer.set_weights([kernel, bias])
    conv = keras.layers.Conv2D(5, 3, strides=strides, padding=padding)
    conv.build(x.shape)
    conv.set_weights([kernel[0, 0], bias[0, 0]])
    np.testing.assert_allclose(_np(layer(x)), _np(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("strides,padding", [(1, "same"), (2, "valid")])
def test_tiled_conv_tile2_matches_numpy_loop(strides, padding):
    x = _rand(2, 8, 7, 2)
    layer = TiledConv2D(3, (3, 2), tile_size=2, strides=strides, padding=padding,
                        activation="tanh")
    layer.build(x.shape)
    kernel, bias = _rand(2, 2, 3, 2, 2, 3), _rand(2, 2, 3)
    layer.set_weights([kernel, bias])
    ref = _np_conv2d(x.astype("float64"), lambda i, j: kernel[i % 2, j % 2], 3, 2, strides,
                     padding, bias_at=lambda i, j: bias[i % 2, j % 2])
    np.testing.assert_allclose(_np(layer(x)), np.tanh(ref), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- LocallyConnected2D
def test_locally_connected_contract():
    check_layer(lambda: LocallyConnected2D(3, 3, activation="relu"), [(2, 6, 6, 2)])


@pytest.mark.parametrize("strides,padding", [(1, "valid"), (2, "same")])
def test_locally_connected_matches_numpy_loop(strides, padding):
    x = _rand(2, 7, 6, 3)
    layer = LocallyConnected2D(4, (3, 2), strides=strides, padding=padding)
    layer.build(x.shape)
    out_h, out_w = layer.kernel.shape[:2]
    kernel, bias = _rand(out_h, out_w, 3, 2, 3, 4), _rand(out_h, out_w, 4)
    layer.set_weights([kernel, bias])
    ref = _np_conv2d(x.astype("float64"), lambda i, j: kernel[i, j], 3, 2, strides, padding,
                     bias_at=lambda i, j: bias[i, j])
    assert ref.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(_np(layer(x)), ref, rtol=1e-5, atol=1e-5)


def test_locally_connected_needs_static_size():
    with pytest.raises(ValueError, match="static spatial"):
        LocallyConnected2D(2, 3).build((None, None, None, 3))


# ----------------------------------------------------------------------------- MLPConv2D
def test_mlpconv_contract():
    check_layer(lambda: MLPConv2D([6, 5, 4], kernel_size=3), [(2, 6, 6, 3)])


def test_mlpconv_equals_keras_conv_composition():
    x = _rand(2, 8, 8, 3)
    layer = MLPConv2D([6, 5, 4], kernel_size=3, strides=2, padding="same")
    layer.build(x.shape)
    weights = [_rand(3, 3, 3, 6), _rand(6), _rand(6, 5), _rand(5), _rand(5, 4), _rand(4)]
    layer.set_weights(weights)
    ref = keras.Sequential([
        keras.Input((8, 8, 3)),
        keras.layers.Conv2D(6, 3, strides=2, padding="same", activation="relu"),
        keras.layers.Conv2D(5, 1, activation="relu"),
        keras.layers.Conv2D(4, 1, activation="relu")])
    ref.set_weights([weights[0], weights[1], weights[2][None, None], weights[3],
                     weights[4][None, None], weights[5]])
    np.testing.assert_allclose(_np(layer(x)), _np(ref(x)), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- DeformableConv2D
def test_deformable_conv_contract():
    check_layer(lambda: DeformableConv2D(
        3, 3, offset_initializer=keras.initializers.RandomNormal(stddev=0.5, seed=1)),
        [(2, 6, 6, 2)], tol=1e-4)


@pytest.mark.parametrize("strides,padding,dilation", [(1, "same", 1), (2, "same", 1),
                                                      (1, "valid", 2)])
def test_deformable_conv_zero_offsets_equal_conv2d(strides, padding, dilation):
    x = _rand(2, 7, 8, 3)
    layer = DeformableConv2D(4, 3, strides=strides, padding=padding, dilation_rate=dilation)
    conv = keras.layers.Conv2D(4, 3, strides=strides, padding=padding, dilation_rate=dilation)
    conv.build(x.shape)
    layer.build(x.shape)
    kernel, bias = _rand(3, 3, 3, 4), _rand(4)
    conv.set_weights([kernel, bias])
    layer.kernel.assign(kernel)
    layer.bias.assign(bias)
    np.testing.assert_allclose(_np(layer(x)), _np(conv(x)), rtol=1e-5, atol=1e-5)


def _bilinear(img, y, x):
    """Bilinear sample of img (H, W, C) at (y, x), zero outside."""
    h, w, _ = img.shape
    y0, x0 = int(np.floor(y)), int(np.floor(x))
    out = np.zeros(img.shape[-1])
    for yy, wy in ((y0, 1 - (y - y0)), (y0 + 1, y - y0)):
        for xx, wx in ((x0, 1 - (x - x0)), (x0 + 1, x - x0)):
            if 0 <= yy < h and 0 <= xx < w:
                out += wy * wx * img[yy, xx]
    return out


@pytest.mark.parametrize("strides,padding,dilation", [(1, "same", 1), (2, "valid", 1),
                                                      (1, "same", 2)])
def test_deformable_conv_matches_numpy_bilinear_reference(strides, padding, dilation):
    x = _rand(2, 7, 6, 2).astype("float64")
    kh, kw, filters = 3, 2, 3
    layer = DeformableConv2D(filters, (kh, kw), strides=strides, padding=padding,
                             dilation_rate=dilation)
    layer.build(x.shape)
    kernel, bias = _rand(kh, kw, 2, filters), _rand(filters)
    off_kernel, off_bias = _rand(kh, kw, 2, 2 * kh * kw, scale=1.5), _rand(2 * kh * kw, scale=2)
    layer.set_weights([kernel, bias, off_kernel, off_bias])
    # Offsets: an ordinary (dilated) convolution, itself checked against keras Conv2D.
    off_conv = keras.layers.Conv2D(2 * kh * kw, (kh, kw), strides=strides, padding=padding,
                                   dilation_rate=dilation)
    off_conv.build(x.shape)
    off_conv.set_weights([off_kernel, off_bias])
    offsets = _np(off_conv(x.astype("float32")))
    n, h, w, _ = x.shape
    _, top = _pads(h, (kh - 1) * dilation + 1, strides, padding)
    _, left = _pads(w, (kw - 1) * dilation + 1, strides, padding)
    ref = np.zeros(offsets.shape[:3] + (filters,))
    for b in range(n):
        for i in range(offsets.shape[1]):
            for j in range(offsets.shape[2]):
                for u in range(kh):
                    for v in range(kw):
                        t = u * kw + v
                        py = i * strides - top + u * dilation + offsets[b, i, j, 2 * t]
                        px = j * strides - left + v * dilation + offsets[b, i, j, 2 * t + 1]
                        ref[b, i, j] += _bilinear(x[b], py, px) @ kernel[u, v]
    ref += bias
    assert np.abs(offsets).max() > 1.0  # the reference really samples off-grid and outside
    np.testing.assert_allclose(_np(layer(x.astype("float32"))), ref, rtol=1e-4, atol=1e-4)


# ----------------------------------------------------------------------------- SPD-Conv
def test_space_to_depth_conv_contract():
    check_layer(lambda: SpaceToDepthConv2D(4, block_size=2, kernel_size=3), [(2, 6, 6, 3)])


@pytest.mark.tf_only
def test_space_to_depth_matches_tf_nn():
    import tensorflow as tf

    x = _rand(2, 6, 12, 4)
    for block in (2, 3):
        np.testing.assert_array_equal(_np(space_to_depth(x, block)),
                                      tf.nn.space_to_depth(x, block).numpy())


def test_space_to_depth_conv_equals_numpy_rearrange_then_conv2d():
    x = _rand(2, 8, 4, 3)
    layer = SpaceToDepthConv2D(5, block_size=2, kernel_size=3)
    layer.build(x.shape)
    kernel, bias = _rand(3, 3, 12, 5), _rand(5)
    layer.set_weights([kernel, bias])
    # Channel (dy*b + dx)*C + c holds x[2i + dy, 2j + dx, c].
    spd = np.zeros((2, 4, 2, 12), "float32")
    for dy in range(2):
        for dx in range(2):
            spd[..., (dy * 2 + dx) * 3:(dy * 2 + dx + 1) * 3] = x[:, dy::2, dx::2, :]
    conv = keras.layers.Conv2D(5, 3, padding="same")
    conv.build(spd.shape)
    conv.set_weights([kernel, bias])
    np.testing.assert_allclose(_np(layer(x)), _np(conv(spd)), rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- BlurPool2D
def test_blurpool_contract():
    check_layer(lambda: BlurPool2D(pool_size=2, filter_size=3), [(2, 8, 8, 3)])


@pytest.mark.parametrize("filter_size,padding,stride", [(3, "same", 2), (4, "same", 2),
                                                        (5, "reflect", 2), (4, "reflect", 3),
                                                        (3, "valid", 2)])
def test_blurpool_matches_scipy(filter_size, padding, stride):
    x = _rand(2, 9, 8, 2).astype("float64")
    row = {3: [1, 2, 1], 4: [1, 3, 3, 1], 5: [1, 4, 6, 4, 1]}[filter_size]
    blur = np.outer(row, row) / np.sum(row) ** 2
    ref = []
    for b in range(2):
        chans = []
        for c in range(2):
            img = x[b, :, :, c]
            if padding == "reflect":
                pad = ((filter_size - 1) // 2, filter_size // 2)
                img = np.pad(img, (pad, pad), mode="reflect")
            elif padding == "same":
                (_, top), (_, left) = (_pads(s, filter_size, stride, "same") for s in img.shape)
                total = [max((-(-s // stride) - 1) * stride + filter_size - s, 0)
                         for s in img.shape]
                img = np.pad(img, ((top, total[0] - top), (left, total[1] - left)))
            chans.append(signal.correlate2d(img, blur, mode="valid")[::stride, ::stride])
        ref.append(np.stack(chans, -1))
    layer = BlurPool2D(pool_size=stride, filter_size=filter_size, padding=padding)
    y = _np(layer(x.astype("float32")))
    assert y.shape == tuple(layer.compute_output_shape(x.shape))
    np.testing.assert_allclose(y, np.stack(ref), rtol=1e-5, atol=1e-5)


def test_blurpool_reduces_aliasing_of_a_shifted_checkerboard():
    # A Nyquist-frequency pattern: plain stride-2 subsampling flips sign under a 1-px shift,
    # the blurred version (f=3 kills the Nyquist frequency) gives the same (zero) output.
    pattern = np.indices((8, 8)).sum(0) % 2 * 2.0 - 1.0
    x = np.stack([pattern, np.roll(pattern, 1, axis=1)])[..., None].astype("float32")
    blurred = _np(BlurPool2D(2, 3, padding="reflect")(x))
    assert not np.allclose(x[0, ::2, ::2], x[1, ::2, ::2])
    np.testing.assert_allclose(blurred[0], blurred[1], atol=1e-6)


# ----------------------------------------------------------------------------- receptive field
def test_receptive_field_stacked_dilations_give_3_7_15():
    stack = [keras.layers.Conv2D(2, 3, dilation_rate=d) for d in (1, 2, 4)]
    sizes = [receptive_field(stack[:n]).size for n in (1, 2, 3)]
    assert sizes == [(3, 3), (7, 7), (15, 15)]  # S0 §3.1.3: (2^{i+2} - 1)


def test_receptive_field_single_dilated_kernel_errata():
    # Errata §19.2: one 2-dilated 3x3 spans 5x5 (not 7x7); one 4-dilated spans 9x9 (not 15x15).
    assert receptive_field([keras.layers.Conv2D(2, 3, dilation_rate=2)]).size == (5, 5)
    assert receptive_field([keras.layers.Conv2D(2, 3, dilation_rate=4)]).size == (9, 9)


def test_receptive_field_matches_gradient_support():
    # Independent reference: the input rows with non-zero gradient of one output unit (average
    # pooling, not max, so that every input in the field gets gradient).
    model = keras.Sequential([
        keras.Input((40, 40, 1)),
        keras.layers.Conv2D(1, 3, kernel_initializer="ones"),
        keras.layers.AveragePooling2D(2),
        keras.layers.Conv2D(1, 3, dilation_rate=2, kernel_initializer="ones"),
        keras.layers.AveragePooling2D(3, strides=2),
        BlurPool2D(2, filter_size=3, padding="valid")])
    rf = receptive_field(model)
    assert rf == ReceptiveField((24, 24), (8, 8))
    x = np.random.default_rng(0).uniform(1, 2, (1, 40, 40, 1)).astype("float32")

    def support(unit):
        if keras.backend.backend() == "jax":
            import jax
            grad = jax.grad(lambda t: model(t)[0, unit, unit, 0])(x)
        else:
            import tensorflow as tf
            xt = tf.convert_to_tensor(x)
            with tf.GradientTape() as tape:
                tape.watch(xt)
                out = model(xt)[0, unit, unit, 0]
            grad = tape.gradient(out, xt)
        rows = np.nonzero(np.abs(np.asarray(grad))[0, :, :, 0].sum(1))[0]
        return rows.max() - rows.min() + 1, rows.min()

    (size0, start0), (size1, start1) = support(0), support(1)
    assert size0 == size1 == rf.size[0] and start1 - start0 == rf.jump[0]


def test_receptive_field_custom_layers_and_conv1d():
    assert receptive_field([keras.layers.Conv1D(2, 3, dilation_rate=d) for d in (1, 2)]) == \
        ReceptiveField((7,), (1,))
    # SPD (block 2) then 3x3 at stride 1 on the half grid: 2 + 2*2 = 6, jump 2.
    assert receptive_field([SpaceToDepthConv2D(2, block_size=2, kernel_size=3)]) == \
        ReceptiveField((6, 6), (2, 2))
    assert receptive_field([TiledConv2D(2, 5, strides=2), MLPConv2D([2, 2], 3)]).size == (9, 9)
    assert receptive_field([keras.layers.ReLU(), DeformableConv2D(2, 3, dilation_rate=3)]) == \
        ReceptiveField((7, 7), (1, 1))


def test_receptive_field_rejects_unsupported_stacks():
    with pytest.raises(ValueError, match="no fixed receptive"):
        receptive_field([keras.layers.Conv2D(2, 3), keras.layers.GlobalAveragePooling2D()])
    with pytest.raises(ValueError, match="no convolution"):
        receptive_field([keras.layers.ReLU()])
    with pytest.raises(ValueError, match="1-D"):
        receptive_field([keras.layers.Conv2D(2, 3), keras.layers.Conv1D(2, 3)])
    inp = keras.Input((8, 8, 2))
    out = keras.layers.Add()([keras.layers.Conv2D(2, 3, padding="same")(inp), inp])
    with pytest.raises(ValueError, match="linear stacks"):
        receptive_field(keras.Model(inp, out))


# ----------------------------------------------------------------------------- errors, shapes
@pytest.mark.parametrize("make,match", [
    (lambda: TiledConv2D(4, 3, tile_size=0), "tile_size"),
    (lambda: TiledConv2D(4, (3, 0)), "kernel_size"),
    (lambda: LocallyConnected2D(4, 3, padding="full"), "padding"),
    (lambda: MLPConv2D([], 3), "filters"),
    (lambda: MLPConv2D(8, 3), "filters"),
    (lambda: DeformableConv2D(4, 3, strides=2, dilation_rate=2), "dilation_rate"),
    (lambda: BlurPool2D(filter_size=9), "filter_size"),
    (lambda: BlurPool2D(padding="circular"), "padding"),
    (lambda: SpaceToDepthConv2D(4, block_size=0), "block_size"),
])
def test_bad_arguments_raise_value_error(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_space_to_depth_conv_rejects_indivisible_size():
    with pytest.raises(ValueError, match="block_size"):
        SpaceToDepthConv2D(4, block_size=2)(np.zeros((1, 5, 4, 3), "float32"))


@pytest.mark.tf_only
@pytest.mark.parametrize("make", [
    lambda: TiledConv2D(3, 3, tile_size=2, strides=2, padding="same"),
    lambda: MLPConv2D([3, 2], 3),
    lambda: DeformableConv2D(2, 3, strides=2, offset_initializer="random_normal"),
    lambda: SpaceToDepthConv2D(2, block_size=2),
    lambda: BlurPool2D(2, 4, padding="reflect"),
])
def test_dynamic_spatial_size_in_graph_mode(make):
    import tensorflow as tf

    layer = make()
    layer.build((None, None, None, 2))
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 2), "float32")])
    for shape in ((1, 6, 8, 2), (2, 10, 4, 2)):
        x = _rand(*shape)
        y = fn(x)
        assert tuple(y.shape) == tuple(layer.compute_output_shape(shape))
        np.testing.assert_allclose(_np(y), _np(layer(x)), rtol=1e-5, atol=1e-5)
