"""Generative task: VAE/CVAE ELBO terms against numpy / Monte Carlo, tiny trained runs of all
four models on the real digits (16×16), samples.png, save/load and the serving endpoints."""

import json

import cv2
import keras
import numpy as np
import pytest
from scipy.stats import norm

from cnn_apps.applications.generative import (GAN, TASK, VAE, bernoulli_log_likelihood,
                                              discriminator_loss, estimate_elbo, gaussian_kl,
                                              generator_loss)
from tests.conftest import _yaml

pytestmark = pytest.mark.tf_only


def tiny_generative_config(model, name=None, **overrides):
    from cnn_apps.config import load_config

    values = {"name": name or model, "model": model, "epochs": 2, "width": 8, "latent_dim": 4,
              "batch_size": 64, "learning_rate": 0.002, "samples_per_class": 10,
              "elbo_samples": 2, "data": {"image_size": [16, 16]},
              "export": {"formats": []}, **overrides}
    return load_config("generative", overrides=[f"{k}={_yaml(v)}" for k, v in values.items()])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One tiny trained run per model: {model: (RunResult, config)}."""
    from cnn_apps.training import train

    root = tmp_path_factory.mktemp("gen_runs")
    out = {}
    for kind in ("vae", "cvae", "dcgan", "cgan"):
        config = tiny_generative_config(kind)
        out[kind] = (train("generative", config, runs_root=root, verbose=0, export=False),
                     config)
    return out


# -- formulas -----------------------------------------------------------------------------
def test_gaussian_kl_matches_numpy_and_monte_carlo():
    rng = np.random.default_rng(0)
    mean = rng.normal(size=(3, 4)).astype("float32")
    log_var = rng.normal(scale=0.5, size=(3, 4)).astype("float32")
    ours = keras.ops.convert_to_numpy(gaussian_kl(mean, log_var))
    var = np.exp(log_var.astype(np.float64))
    closed = np.array([-0.5 * sum(1 + log_var[n, j] - mean[n, j] ** 2 - var[n, j]
                                  for j in range(4)) for n in range(3)])
    np.testing.assert_allclose(ours, closed, rtol=1e-5)
    # Monte Carlo: E_q[log q(z) − log p(z)] with scipy's normal log-densities.
    z = mean[None] + np.sqrt(var)[None] * rng.standard_normal((200_000, 3, 4))
    mc = (norm.logpdf(z, mean[None], np.sqrt(var)[None]) - norm.logpdf(z)).sum(-1).mean(0)
    np.testing.assert_allclose(ours, mc, atol=0.03)


def test_bernoulli_log_likelihood_matches_scipy_free_formula():
    rng = np.random.default_rng(1)
    targets = rng.uniform(size=(2, 4, 4, 1)).astype("float32")
    logits = rng.normal(scale=3.0, size=(2, 4, 4, 1)).astype("float32")
    ours = keras.ops.convert_to_numpy(bernoulli_log_likelihood(targets, logits))
    p = 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))
    expected = (targets * np.log(p) + (1 - targets) * np.log(1 - p)).reshape(2, -1).sum(1)
    np.testing.assert_allclose(ours, expected, rtol=1e-5)
    # Keras' own binary cross-entropy on logits, summed over pixels, is its negative.
    keras_bce = keras.ops.convert_to_numpy(keras.losses.binary_crossentropy(
        targets.reshape(2, -1, 1), logits.reshape(2, -1, 1), from_logits=True)).sum(1)
    np.testing.assert_allclose(-ours, keras_bce, rtol=1e-4)


def test_gan_losses_match_the_min_max_value_function():
    real = np.array([2.0, -1.0, 0.5], dtype="float32")
    fake = np.array([-3.0, 0.2, 1.0], dtype="float32")
    sig = lambda v: 1.0 / (1.0 + np.exp(-v.astype(np.float64)))  # noqa: E731
    d_expected = -(np.log(sig(real)) + np.log(1.0 - sig(fake)))   # −V(D, G) per sample
    g_expected = -np.log(sig(fake))                               # non-saturating
    np.testing.assert_allclose(keras.ops.convert_to_numpy(discriminator_loss(real, fake)),
                               d_expected, rtol=1e-5)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(generator_loss(fake)), g_expected,
                               rtol=1e-5)


def test_vae_shapes_and_reconstruction_range():
    vae = VAE((16, 16, 1), latent_dim=3, width=4)
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 1)).astype("float32")
    out = vae(x)
    assert out["reconstruction"].shape == (2, 16, 16, 1)
    assert out["mean"].shape == (2, 3) and out["log_var"].shape == (2, 3)
    rec = keras.ops.convert_to_numpy(out["reconstruction"])
    assert rec.min() >= 0.0 and rec.max() <= 255.0
    cvae = VAE((16, 16, 1), latent_dim=3, width=4, num_classes=10)
    assert cvae([x, np.array([1, 7], "int32")])["reconstruction"].shape == (2, 16, 16, 1)


def test_elbo_estimate_matches_a_numpy_monte_carlo():
    """ELBO(x) = E_{z~q}[log p(x|z)] − KL: average our estimate over many draws and compare
    with a numpy Monte Carlo that samples z itself and decodes it through the decoder."""
    keras.utils.set_random_seed(3)
    vae = VAE((8, 8, 1), latent_dim=2, width=2)
    x = np.random.default_rng(2).uniform(0, 255, (2, 8, 8, 1)).astype("float32")
    mean, log_var = (keras.ops.convert_to_numpy(t).astype(np.float64) for t in vae.encode(x))
    rng = np.random.default_rng(5)
    draws = 2000
    z = mean[None] + np.exp(0.5 * log_var)[None] * rng.standard_normal((draws, 2, 2))
    logits = keras.ops.convert_to_numpy(vae.decode_logits(z.reshape(-1, 2).astype("float32")))
    p = 1 / (1 + np.exp(-logits.reshape(draws, 2, -1).astype(np.float64)))
    t = (x.reshape(2, -1) / 255.0)[None]
    log_lik = (t * np.log(p) + (1 - t) * np.log(1 - p)).sum(-1).mean(0)
    kl = -0.5 * (1 + log_var - mean ** 2 - np.exp(log_var)).sum(1)
    reference = log_lik - kl
    # Our estimator, one draw per copy of each image, averaged over the copies.
    ours = estimate_elbo(vae, np.repeat(x, draws, axis=0), samples=1, batch_size=1024)
    np.testing.assert_allclose(ours["kl"][::draws], kl, rtol=1e-4)
    np.testing.assert_allclose(ours["elbo"].reshape(2, draws).mean(1), reference, rtol=5e-3)


def test_one_hot_labels_layer_matches_numpy_and_round_trips():
    from cnn_apps.applications.generative.vae import OneHotLabels

    labels = np.array([2, 0, 3], "int32")
    vectors = keras.ops.convert_to_numpy(OneHotLabels(4)(labels))
    np.testing.assert_array_equal(vectors, np.eye(4)[labels])
    layer = OneHotLabels(4, 2, 3)
    maps = keras.ops.convert_to_numpy(layer(labels))
    assert maps.shape == (3, 2, 3, 4) == layer.compute_output_shape((3,))
    for n in range(3):
        for i in range(2):
            for j in range(3):
                np.testing.assert_array_equal(maps[n, i, j], np.eye(4)[labels[n]])
    clone = OneHotLabels.from_config(layer.get_config())
    assert (clone.num_classes, clone.height, clone.width) == (4, 2, 3)
    with pytest.raises(ValueError, match="num_classes"):
        OneHotLabels(1)
    with pytest.raises(ValueError, match="height and width"):
        OneHotLabels(3, height=4)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="image_shape"):
        VAE((15, 16, 1))
    with pytest.raises(ValueError, match="latent_dim"):
        GAN((16, 16, 1), latent_dim=0)
    with pytest.raises(ValueError, match="num_classes"):
        GAN((16, 16, 1), num_classes=1)
    with pytest.raises(ValueError, match="labels"):
        VAE((16, 16, 1), num_classes=3).encode(np.zeros((1, 16, 16, 1), "float32"))
    with pytest.raises(ValueError, match="model must be one of"):
        TASK.build_model({**tiny_generative_config("vae"), "model": "pixelcnn"})


# -- trained runs -------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["vae", "cvae", "dcgan", "cgan"])
def test_run_writes_samples_metrics_and_finite_losses(runs, kind):
    import csv

    result, config = runs[kind]
    run = result.run_dir
    for name in ("best.keras", "metrics.json", "samples.png", "history.csv", "model_info.json"):
        assert (run / name).is_file(), name
    grid = cv2.imread(str(run / "samples.png"), cv2.IMREAD_GRAYSCALE)
    rows = 10  # ten digit classes (conditional) or 10 rows of 10 samples
    assert grid.shape == (2 * (rows * 18 + 2), 2 * (10 * 18 + 2))
    history = list(csv.DictReader(open(run / "history.csv")))
    assert len(history) == 2
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["num_examples"] == 359 and metrics["num_samples"] == 100
    assert 0.0 <= metrics["sample_confidence"] <= 1.0
    if kind in ("vae", "cvae"):
        losses = [float(r["loss"]) for r in history]
        assert all(np.isfinite(losses)) and losses[1] < losses[0]
        assert metrics["elbo"] < 0 and metrics["kl"] >= 0
        assert metrics["elbo"] == pytest.approx(
            metrics["reconstruction_log_likelihood"] - metrics["kl"], rel=1e-5)
        # −ELBO per image can never beat 0 nats and the untrained start (≈ 256·log 2 ≈ 177).
        assert -metrics["elbo"] < 16 * 16 * np.log(2)
    else:
        for key in ("d_loss", "g_loss"):
            assert all(np.isfinite(float(r[key])) for r in history)
        assert 0.0 <= metrics["d_accuracy"] <= 1.0
        assert float(history[-1]["val_steps_trained"]) == 2 * (1259 // 64)
    if kind in ("cvae", "cgan"):
        assert 0.0 <= metrics["sample_class_accuracy"] <= 1.0


def test_trained_vae_has_higher_elbo_than_untrained(runs):
    result, config = runs["vae"]
    data = TASK.data(config)
    keras.utils.set_random_seed(0)
    untrained = TASK.build_model(config)
    keras.utils.set_random_seed(0)
    before = estimate_elbo(untrained, data.x_test, samples=2)["elbo"].mean()
    after = estimate_elbo(result.model, data.x_test, samples=2)["elbo"].mean()
    assert after > before + 1.0


def test_models_save_and_load(runs, tmp_path):
    for kind in ("cvae", "cgan"):
        result, _ = runs[kind]
        loaded = keras.saving.load_model(result.run_dir / "best.keras", safe_mode=True)
        assert type(loaded) is type(result.model) and loaded.num_classes == 10
        z = np.random.default_rng(0).standard_normal((3, 4)).astype("float32")
        labels = np.array([0, 4, 9], "int32")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(loaded.generate(z, labels)),
                                   keras.ops.convert_to_numpy(result.model.generate(z, labels)),
                                   atol=1e-3)
    assert loaded.d_optimizer is not None  # the GAN's two optimizers survive the round trip


def test_gan_train_step_updates_both_networks():
    keras.utils.set_random_seed(0)
    gan = GAN((8, 8, 1), latent_dim=2, width=2)
    gan.compile(optimizer=keras.optimizers.Adam(1e-2))
    g0 = [w.copy() for w in gan.generator.get_weights()]
    d0 = [w.copy() for w in gan.discriminator.get_weights()]
    x = np.random.default_rng(0).uniform(0, 255, (4, 8, 8, 1)).astype("float32")
    logs = gan.train_on_batch(x, np.zeros(4, "int32"), return_dict=True)
    assert {"d_loss", "g_loss"} <= set(logs)
    assert any(not np.allclose(a, b) for a, b in zip(gan.generator.get_weights(), g0))
    assert any(not np.allclose(a, b) for a, b in zip(gan.discriminator.get_weights(), d0))


def test_sample_quality_proxy_on_real_and_collapsed_images(runs):
    """Real test digits as "samples": the proxy classifier recognizes their labels and its
    class-histogram entropy matches scipy's; identical images (a collapse) have entropy 0."""
    from scipy.stats import entropy
    from sklearn.linear_model import LogisticRegression

    from cnn_apps.applications.generative import sample_quality
    from cnn_apps.applications.generative.task import proxy_features

    _, config = runs["cgan"]
    data = TASK.data(config)
    real = sample_quality(data.x_test, data.y_test, data)
    assert real["sample_class_accuracy"] == pytest.approx(real["proxy_classifier_accuracy"])
    assert real["sample_class_accuracy"] > 0.85
    reference = LogisticRegression(max_iter=2000).fit(proxy_features(data.x_train),
                                                      data.y_train)
    predicted = reference.predict(proxy_features(data.x_test))
    expected = entropy(np.bincount(predicted, minlength=10)) / np.log(10)
    assert real["sample_class_entropy"] == pytest.approx(expected, abs=1e-6)
    collapsed = sample_quality(np.repeat(data.x_test[:1], 50, axis=0),
                               np.full(50, -1, "int32"), data)
    assert collapsed["sample_class_entropy"] == 0.0
    assert "sample_class_accuracy" not in collapsed


def test_samples_have_the_requested_classes(runs):
    result, _ = runs["cgan"]
    images, labels = TASK.sample(result.model, 20, 10, seed=1)
    assert images.shape == (200, 16, 16, 1) and images.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(labels), np.full(10, 20))


def test_predict_and_serving_endpoints(runs, tmp_path):
    import tensorflow as tf

    from cnn_apps.export import export_run

    result, config = runs["cvae"]
    info = json.loads((result.run_dir / "model_info.json").read_text())
    data = TASK.data(config)
    out = TASK.predict(result.model, data.x_test[:2], info, top_k=3)
    assert len(out) == 2 and len(out[0]["top_k"]) == 3
    scores = [item["score"] for item in out[0]["top_k"]]
    assert scores == sorted(scores, reverse=True)
    path = export_run(result.run_dir, "saved_model", tmp_path / "sm")
    loaded = tf.saved_model.load(str(path))
    z = np.zeros((2, 4), "float32")
    labels = np.array([3, 5], "int32")
    images = loaded.signatures["serving_default"](z=tf.constant(z),
                                                  labels=tf.constant(labels))["images"]
    np.testing.assert_allclose(images.numpy(), keras.ops.convert_to_numpy(
        result.model.generate(z, labels)), atol=1e-3)
    enc = loaded.signatures["encode"](images=tf.constant(data.x_test[:2].astype("float32")),
                                      labels=tf.constant(labels))
    assert enc["mean"].shape == (2, 4) and enc["log_var"].shape == (2, 4)
    gan_result, _ = runs["dcgan"]
    gan_path = export_run(gan_result.run_dir, "saved_model", tmp_path / "gan")
    gan_loaded = tf.saved_model.load(str(gan_path))
    gen = gan_loaded.signatures["serving_default"](z=tf.constant(z))["images"].numpy()
    assert gen.shape == (2, 16, 16, 1) and gen.min() >= 0 and gen.max() <= 255
    prob = gan_loaded.signatures["discriminate"](images=tf.constant(gen))["real_probability"]
    assert prob.shape == (2, 1)
