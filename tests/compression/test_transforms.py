"""Compression transforms against numpy formulas: SVD factorization (Eckart–Young), conv
factorizations at full rank, the pruning schedule and masks, APoZ filter pruning, k-means
quantization decode and storage, HashedNets conversion."""

import keras
import numpy as np
import pytest

from cnn_apps.compression import (factorize, filter_prune, hash_dense_layers, magnitude_prune,
                                  polynomial_sparsity, prune, quantize_weights, strip_pruning)
from cnn_apps.compression.quantization import kmeans, quantize_matrix


def _model(seed=0):
    """images (12×12×3) → nested backbone (conv-BN-ReLU-pool, conv) → flatten → 2 Dense."""
    keras.utils.set_random_seed(seed)
    inner = keras.Input((12, 12, 3))
    y = keras.layers.Conv2D(4, 3, padding="same", name="c1")(inner)
    y = keras.layers.BatchNormalization(name="bn1")(y)
    y = keras.layers.ReLU(name="r1")(y)
    y = keras.layers.MaxPooling2D(name="p1")(y)
    y = keras.layers.Conv2D(5, 3, strides=2, padding="same", activation="relu", name="c2")(y)
    backbone = keras.Model(inner, y, name="backbone")
    images = keras.Input((12, 12, 3), name="images")
    x = keras.layers.Flatten(name="flatten")(backbone(images))
    x = keras.layers.Dense(16, activation="relu", name="d1")(x)
    out = keras.layers.Dense(5, activation="softmax", name="probabilities")(x)
    return keras.Model(images, {"probabilities": out})


def _x(n=2, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 12, 12, 3)).astype("float32")


def _predict(model, x):
    return model.predict(x, verbose=0)["probabilities"]


@pytest.mark.parametrize("conv", ["channel", "spatial"])
def test_full_rank_factorization_reproduces_outputs(conv):
    model = _model()
    x = _x()
    full = factorize(model, rank=1000, conv=conv)
    np.testing.assert_allclose(_predict(full, x), _predict(model, x), rtol=1e-4, atol=1e-6)
    names = {layer.name for layer in full.get_layer("backbone").layers}
    assert {"c1_basis" if conv == "channel" else "c1_vertical", "c1"} <= names
    assert type(full.get_layer("d1")).__name__ == "LowRankDense"


def test_dense_svd_error_is_sum_of_discarded_singular_values():
    model = _model()
    low = factorize(model, rank=3, conv=None, layers=["d1"])
    w = model.get_layer("d1").kernel.numpy().astype(np.float64)
    a, b = (v.numpy() for v in (low.get_layer("d1").kernel_a, low.get_layer("d1").kernel_b))
    s = np.linalg.svd(w, compute_uv=False)
    np.testing.assert_allclose(np.sum((w - a @ b) ** 2), np.sum(s[3:] ** 2), rtol=1e-4)
    # other layers are copies: same weights, original untouched
    np.testing.assert_array_equal(low.get_layer("probabilities").kernel.numpy(),
                                  model.get_layer("probabilities").kernel.numpy())
    assert type(model.get_layer("d1")) is keras.layers.Dense


def test_rank_from_energy_and_param_budget():
    model = _model()
    w = model.get_layer("d1").kernel.numpy().astype(np.float64)
    s2 = np.linalg.svd(w, compute_uv=False) ** 2
    expected = int(np.argmax(np.cumsum(s2) / s2.sum() >= 0.5) + 1)
    low = factorize(model, energy=0.5, conv=None, layers=["d1"])
    assert low.get_layer("d1").rank == expected
    budget = factorize(model, param_ratio=0.4, conv=None)
    dense = lambda m: sum(m.get_layer(n).count_params()
                          for n in ("d1", "probabilities"))
    assert dense(budget) <= 0.4 * dense(model)


def test_factorize_rejects_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="rank must be a positive integer"):
        factorize(model, rank=0)
    with pytest.raises(ValueError, match="energy must be in"):
        factorize(model, energy=1.5)
    with pytest.raises(ValueError, match="conv must be one of"):
        factorize(model, conv="depthwise")
    with pytest.raises(ValueError, match="model must be a keras.Model"):
        factorize("model.keras")


def test_polynomial_schedule_matches_zhu_gupta_formula():
    for t in (0, 10, 55, 100, 150):
        frac = min(max((t - 10) / 90, 0), 1)
        expected = 0.9 + (0.1 - 0.9) * (1 - frac) ** 3
        assert polynomial_sparsity(t, 0.9, 0.1, begin_step=10, end_step=100) == \
            pytest.approx(expected)


def _fit(model, callback, epochs=2):
    model.compile("adam", {"probabilities": "sparse_categorical_crossentropy"})
    x = _x(16, 3)
    model.fit(x, {"probabilities": np.arange(16) % 5}, batch_size=4, epochs=epochs,
              callbacks=[callback], verbose=0)


def test_pruning_callback_reaches_target_sparsity_per_layer():
    model = _model()
    callback = prune(model, 0.75, schedule="polynomial", end_step=4, frequency=1)
    assert callback.sparsity_at(2) == pytest.approx(0.75 + (0 - 0.75) * (1 - 2 / 4) ** 3)
    _fit(model, callback)
    result = strip_pruning(callback)
    for layer in ("c1", "c2", "d1", "probabilities"):
        kernel = model.get_layer(layer).kernel.numpy() if layer in ("d1", "probabilities") \
            else model.get_layer("backbone").get_layer(layer).kernel.numpy()
        assert np.mean(kernel == 0) == pytest.approx(round(0.75 * kernel.size) / kernel.size)
    assert result["sparsity"] == pytest.approx(0.75, abs=0.02)


def test_one_shot_pruning_zeroes_smallest_magnitudes():
    model = _model()
    pruned = magnitude_prune(model, 0.5, layers=["d1"])
    w = model.get_layer("d1").kernel.numpy()
    threshold = np.sort(np.abs(w).ravel())[w.size // 2 - 1]
    expected = np.where(np.abs(w) > threshold, w, 0)
    np.testing.assert_array_equal(pruned.get_layer("d1").kernel.numpy(), expected)
    glob = magnitude_prune(model, 0.5, scope="global")
    kernels = [k.numpy() for k in (glob.get_layer("d1").kernel,
                                   glob.get_layer("probabilities").kernel)]
    assert 0.4 < np.mean(np.concatenate([k.ravel() for k in kernels]) == 0) < 0.6


def test_regrowth_restores_weights_from_shadow_copy():
    model = _model()
    kernel = model.get_layer("d1").kernel
    original = kernel.numpy().copy()
    callback = prune(model, 0.5, schedule="constant", allow_regrowth=True, layers=["d1"])
    callback.on_train_begin()
    pruned_at = np.flatnonzero(callback.masks[0].numpy().ravel() == 0)[0]
    # an optimizer step that pushes one pruned weight far out: the shadow keeps it, and the
    # next mask update brings it back
    update = np.zeros(kernel.shape, "float32")
    update.ravel()[pruned_at] = 10.0
    kernel.assign(kernel.numpy() + update)
    callback.on_train_batch_end(0)
    callback._update_masks(0.5)
    callback._apply_masks()
    # shadow = the dense weight before pruning + every update since
    assert kernel.numpy().ravel()[pruned_at] == pytest.approx(
        original.ravel()[pruned_at] + 10.0, abs=1e-5)
    assert np.mean(kernel.numpy() == 0) == pytest.approx(0.5, abs=1 / kernel.numpy().size)


def test_pruning_rejects_bad_arguments():
    model = _model()
    with pytest.raises(ValueError, match="target_sparsity must be a number in"):
        prune(model, 1.0)
    with pytest.raises(ValueError, match="schedule must be one of"):
        prune(model, 0.5, schedule="cubic")
    with pytest.raises(ValueError, match="end_step must be >= begin_step"):
        prune(model, 0.5, begin_step=10, end_step=5)
    with pytest.raises(ValueError, match="no Dense/Conv kernels"):
        prune(model, 0.5, layers=["nothing"])


def test_filter_pruning_removes_dead_filter_without_changing_outputs():
    model = _model()
    backbone = model.get_layer("backbone")
    c1, bn = backbone.get_layer("c1"), backbone.get_layer("bn1")
    kernel, bias = c1.get_weights()
    kernel[..., 2] = 0.0
    c1.set_weights([kernel, bias])
    gamma, beta, mean, var = bn.get_weights()
    beta[2] = -5.0                     # BN output of filter 2 is -5 → ReLU gives 0 everywhere
    bn.set_weights([gamma, beta, mean, var])
    x = _x(8)
    small, report = filter_prune(model, x, threshold=0.99)
    assert report["c1"]["removed"] == 1 and report["c1"]["apoz"][2] == 1.0
    # the independent APoZ of a live filter: fraction of zeros after BN + ReLU
    probe = keras.Model(model.get_layer("backbone").input,
                        model.get_layer("backbone").get_layer("r1").output)
    acts = probe.predict(x, verbose=0)
    assert report["c1"]["apoz"][0] == pytest.approx(np.mean(acts[..., 0] <= 0), abs=1e-4)
    inner = small.get_layer("backbone")
    assert inner.get_layer("c1").filters == 3
    assert inner.get_layer("c2").kernel.shape[2] == 3
    assert small.count_params() < model.count_params()
    np.testing.assert_allclose(_predict(small, x), _predict(model, x), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="threshold must be a number in"):
        filter_prune(model, x, threshold=2)


def test_kmeans_quantization_decodes_codebook_and_counts_storage():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(40, 12)).astype("float32")
    decoded, bits, codebooks, codes = quantize_matrix(w, "pq", 8, subvectors=3)
    for j in range(3):  # decode by hand: sub-vector j of row i is codebook_j[codes[i, j]]
        np.testing.assert_array_equal(decoded[:, 4 * j:4 * j + 4], codebooks[j][codes[:, j]])
        for c in range(len(codebooks[j])):  # Lloyd fixed point: centroid = mean of members
            members = w[codes[:, j] == c, 4 * j:4 * j + 4]
            if len(members):
                np.testing.assert_allclose(codebooks[j][c], members.mean(0), atol=1e-4)
    assert bits == 40 * 3 * 3 + 32 * 3 * 8 * 4
    decoded, bits, codebook, codes = quantize_matrix(w, "scalar", 4)
    assert len(np.unique(decoded)) <= 4 and bits == w.size * 2 + 32 * 4
    np.testing.assert_array_equal(decoded, codebook[codes].reshape(w.shape))
    decoded, bits, codebook, codes = quantize_matrix(w, "vq", 5)
    assert bits == 40 * 3 + 32 * 5 * 12 and len(np.unique(decoded, axis=0)) <= 5
    points = np.array([[0.0], [0.0], [1.0]])
    codebook, codes = kmeans(points, 8)  # fewer distinct points than clusters: exact
    np.testing.assert_array_equal(codebook[codes], points)


def test_quantize_weights_model_and_ratio():
    model = _model()
    small, report = quantize_weights(model, "pq", clusters=4, subvectors=4)
    w = model.get_layer("d1").kernel.numpy()
    q = small.get_layer("d1").kernel.numpy()
    assert len(np.unique(q[:, :4], axis=0)) <= 4
    storage = w.shape[0] * 4 * 2 + 32 * 4 * 4 * 4
    assert report["layers"]["d1"]["storage_bits"] == storage
    assert report["layers"]["d1"]["ratio"] == pytest.approx(32 * w.size / storage)
    assert report["layers"]["d1"]["mse"] == pytest.approx(np.mean((w - q) ** 2), rel=1e-5)
    np.testing.assert_array_equal(small.get_layer("backbone").get_layer("c1").kernel.numpy(),
                                  model.get_layer("backbone").get_layer("c1").kernel.numpy())
    with pytest.raises(ValueError, match="method must be one of"):
        quantize_weights(model, "lattice")
    with pytest.raises(ValueError, match="clusters must be an integer >= 2"):
        quantize_weights(model, "vq", clusters=1)


def test_hashed_conversion_uses_bucket_means():
    from cnn_apps.layers.structured import hashed_dense_index

    model = _model()
    hashed = hash_dense_layers(model, factor=4)
    layer = hashed.get_layer("d1")
    w = model.get_layer("d1").kernel.numpy()
    index, sign = hashed_dense_index(*w.shape, layer.num_buckets, 0)
    assert layer.num_buckets == int(np.ceil(w.size / 4))
    for k in (0, 7, layer.num_buckets - 1):   # least-squares value of a shared weight
        members = index == k
        expected = np.mean((sign * w)[members]) if members.any() else 0.0
        assert layer.kernel.numpy()[k] == pytest.approx(expected, abs=1e-6)
    assert hashed.count_params() < model.count_params()
