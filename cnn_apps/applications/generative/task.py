"""The generative ``Task``: VAE / CVAE / DCGAN / CGAN on digits (or an image folder).

``cnn-apps train generative model=vae|cvae|dcgan|cgan``. Every run writes ``samples.png`` (a
grid of generated images: one row per class for the conditional models) and ``metrics.json``:

* VAE / CVAE: the ELBO per test image in nats (Monte-Carlo over ``elbo_samples`` draws of
  z ~ q(z|x)), split into its reconstruction log-likelihood and KL terms (see ``vae.py`` for
  what the Bernoulli "nats" mean on grey pixels).
* DCGAN / CGAN: the discriminator's accuracy on the test images against as many samples,
  in inference mode. D's batch-norm moving statistics were accumulated over separate real
  and fake batches, so this number is rough (a D that calls everything fake scores 0.5);
  it says whether D still separates the two, not how good the samples are.
* All models: a cheap *sample-quality proxy*: a logistic-regression digit classifier fit on
  the real training images (8×8 area-downsampled) is applied to ``samples_per_class ×
  classes`` generated images. ``sample_confidence`` is its mean top probability (high when the
  samples look like some class to it), ``sample_class_entropy`` the normalized entropy of its
  predicted-class histogram (1 = every class equally often, 0 = one class only: a collapse
  sign) and, for the conditional models, ``sample_class_accuracy`` the fraction classified as
  the class they were conditioned on. It is no FID: a blurry but class-typical image scores
  well, and the classifier's own test accuracy (``proxy_classifier_accuracy``) bounds it.
"""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from cnn_apps.applications.base import Task
from cnn_apps.applications.generative.gan import GAN, discriminator_loss, generator_loss
from cnn_apps.applications.generative.vae import VAE, estimate_elbo, negative_elbo
from cnn_apps.data.images import load_classification_data
from cnn_apps.errors import ConfigError

MODELS = ("vae", "cvae", "dcgan", "cgan")


def model_kind(config) -> str:
    kind = config.get("model")
    if kind not in MODELS:
        raise ConfigError(f"model must be one of {', '.join(MODELS)}, got '{kind}'")
    return kind


class GenerativeTask(Task):
    name = "generative"
    description = "convolutional VAE/CVAE and DCGAN/CGAN; ELBO, sample grids"

    def __init__(self):
        self._cache = {}
        self._kind = "vae"

    @property
    def monitor(self):
        """VAEs keep the checkpoint with the best validation −ELBO; GANs the latest one
        (their losses are no quality measure), via the ``steps_trained`` counter."""
        if self._kind in ("dcgan", "cgan"):
            return ("val_steps_trained", "max")
        return ("val_loss", "min")

    def backbone_layer_name(self):
        return None

    # -- data -------------------------------------------------------------------------------
    def data(self, config):
        self._kind = model_kind(config)
        key = repr(sorted(config["data"].items()))
        if key not in self._cache:
            self._cache = {key: load_classification_data(config["data"])}
        return self._cache[key]

    def _dataset(self, images, labels, config, training):
        import tensorflow as tf

        ds = tf.data.Dataset.from_tensor_slices((images, labels.astype(np.int32))).cache()
        if training:
            ds = ds.shuffle(len(images), seed=int(config.get("seed", 0)),
                            reshuffle_each_iteration=True)
        # GAN batch norm and the min-max step want full batches; the VAE does not care.
        ds = ds.batch(int(config["batch_size"]), drop_remainder=training)
        ds = ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
        return ds.prefetch(tf.data.AUTOTUNE)

    def train_dataset(self, config):
        data = self.data(config)
        if len(data.x_train) < int(config["batch_size"]):
            raise ConfigError(f"batch_size ({config['batch_size']}) must not exceed the "
                              f"{len(data.x_train)} training images")
        return self._dataset(data.x_train, data.y_train, config, training=True)

    def eval_dataset(self, config, split="val"):
        data = self.data(config)
        x, y = (data.x_val, data.y_val) if split == "val" else (data.x_test, data.y_test)
        return self._dataset(x, y, config, training=False)

    # -- model ------------------------------------------------------------------------------
    def build_model(self, config):
        data = self.data(config)
        kind = self._kind
        classes = data.num_classes if kind in ("cvae", "cgan") else 0
        args = dict(image_shape=data.x_train.shape[1:], latent_dim=int(config["latent_dim"]),
                    width=int(config["width"]), num_classes=classes,
                    seed=int(config.get("seed", 0)))
        cls = VAE if kind in ("vae", "cvae") else GAN
        return cls(name=kind, **args)

    def loss(self, config):
        """The objectives the models' ``train_step`` minimize (per-sample functions):
        ``negative_elbo`` for the VAEs; ``{"discriminator", "generator"}`` for the GANs."""
        if model_kind(config) in ("vae", "cvae"):
            return negative_elbo
        return {"discriminator": discriminator_loss, "generator": generator_loss}

    def compile_model(self, model, config, learning_rate):
        from cnn_apps.training.fit import make_optimizer

        jit = bool(config.get("jit_compile", False))
        if isinstance(model, GAN) and config.get("optimizer", "adam") == "adam":
            # DCGAN's Adam with β1 = 0.5 (Radford et al.); one copy per network.
            beta_1 = float(config.get("gan_beta_1", 0.5))
            model.compile(optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1),
                          d_optimizer=keras.optimizers.Adam(learning_rate, beta_1=beta_1),
                          jit_compile=jit)
            return
        model.compile(optimizer=make_optimizer({**config, "learning_rate": learning_rate}),
                      jit_compile=jit)

    def model_info(self, config):
        data = self.data(config)
        return {"task": self.name, "model": self._kind, "class_names": data.class_names,
                "input_shape": list(data.x_train.shape[1:]),
                "latent_dim": int(config["latent_dim"]),
                "num_classes": data.num_classes if self._kind in ("cvae", "cgan") else 0}

    # -- sampling ---------------------------------------------------------------------------
    def sample(self, model, count_per_class: int, num_classes: int, seed: int = 0):
        """``(pixels 0..255 uint8 (N, H, W, C), conditioning labels (N,))``; unconditional
        models get ``count_per_class * num_classes`` samples with labels -1."""
        rng = np.random.default_rng(seed)
        total = int(count_per_class) * int(num_classes)
        z = rng.standard_normal((total, model.latent_dim)).astype(np.float32)
        if model.conditional:
            labels = np.repeat(np.arange(num_classes, dtype=np.int32), count_per_class)
            images = model.generate(z, labels)
        else:
            labels = np.full(total, -1, dtype=np.int32)
            images = model.generate(z)
        images = np.clip(np.round(keras.ops.convert_to_numpy(images)), 0, 255).astype(np.uint8)
        return images, labels

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self, model, config, split="test", run_dir=None):
        data = self.data(config)
        x, y = (data.x_test, data.y_test) if split == "test" else (data.x_val, data.y_val)
        keras.utils.set_random_seed(int(config.get("seed", 0)))
        metrics = {"split": split, "num_examples": int(len(y)), "model": self._kind}
        if isinstance(model, VAE):
            samples = int(config.get("elbo_samples", 1))
            terms = estimate_elbo(model, x, y, samples=samples)
            metrics.update({name: float(values.mean()) for name, values in terms.items()})
            metrics["elbo_samples"] = samples
        else:
            metrics["d_accuracy"] = discriminator_accuracy(model, x, y)
        per_class = int(config.get("samples_per_class", 50))
        images, labels = self.sample(model, per_class, data.num_classes,
                                     seed=int(config.get("seed", 0)))
        metrics.update(sample_quality(images, labels, data))
        if run_dir is not None:
            grid_labels = labels if model.conditional else None
            write_sample_grid(images, grid_labels, Path(run_dir) / "samples.png")
        return metrics

    # -- inference --------------------------------------------------------------------------
    def predict(self, model, images, info, top_k=None):
        """Per image: VAE → ``latent_mean`` and ``elbo``; CVAE → classes ranked by
        ELBO(x | y) (a generative classifier); DCGAN → D's ``real_probability``;
        CGAN → classes ranked by D(x | y)."""
        x = np.asarray(images, dtype=np.float32)
        names = info.get("class_names") or []
        k = min(int(top_k or 5), max(1, len(names)))
        if not model.conditional:
            if isinstance(model, VAE):
                mean, _ = model.encode(x)
                elbo = estimate_elbo(model, x)["elbo"]
                return [{"latent_mean": np.round(keras.ops.convert_to_numpy(m), 6).tolist(),
                         "elbo": round(float(e), 4)} for m, e in zip(mean, elbo)]
            prob = keras.ops.convert_to_numpy(keras.ops.sigmoid(model.discriminate(x)))[:, 0]
            return [{"real_probability": round(float(p), 6)} for p in prob]
        scores = np.stack([self._class_score(model, x, c) for c in range(model.num_classes)], 1)
        out = []
        for row in scores:
            order = np.argsort(-row)[:k]
            out.append({"top_k": [{"class": names[i] if i < len(names) else str(i),
                                   "index": int(i), "score": round(float(row[i]), 6)}
                                  for i in order]})
        return out

    @staticmethod
    def _class_score(model, x, label):
        labels = np.full(len(x), label, dtype=np.int32)
        if isinstance(model, VAE):
            return estimate_elbo(model, x, labels)["elbo"]
        return keras.ops.convert_to_numpy(
            keras.ops.sigmoid(model.discriminate(x, labels)))[:, 0]

    def serving_endpoints(self, model, info):
        import tensorflow as tf

        height, width, channels = (int(v) for v in info["input_shape"])
        latent = tf.TensorSpec([None, int(info["latent_dim"])], tf.float32, name="z")
        labels_spec = tf.TensorSpec([None], tf.int32, name="labels")
        images_spec = tf.TensorSpec([None, height, width, channels], tf.float32, name="images")
        endpoints = {}
        if model.conditional:
            endpoints["serving_default"] = tf.function(
                lambda z, labels: {"images": model.generate(z, labels)},
                input_signature=[latent, labels_spec])
        else:
            endpoints["serving_default"] = tf.function(
                lambda z: {"images": model.generate(z)}, input_signature=[latent])
        if isinstance(model, VAE):
            def encode(images, labels=None):
                mean, log_var = model.encode(images, labels)
                return {"mean": mean, "log_var": log_var}

            signature = [images_spec, labels_spec] if model.conditional else [images_spec]
            endpoints["encode"] = tf.function(encode, input_signature=signature)
        else:
            def realness(images, labels=None):
                return {"real_probability": tf.sigmoid(model.discriminate(images, labels))}

            signature = [images_spec, labels_spec] if model.conditional else [images_spec]
            endpoints["discriminate"] = tf.function(realness, input_signature=signature)
        return endpoints

    def example_inputs(self, info, batch_size=2):
        """What the model's ``call`` takes: images (VAE) or z (GAN), plus labels if
        conditional."""
        rng = np.random.default_rng(0)
        if info.get("model") in ("vae", "cvae"):
            first = rng.uniform(0, 255, size=(batch_size, *info["input_shape"]))
        else:
            first = rng.standard_normal((batch_size, int(info["latent_dim"])))
        first = first.astype(np.float32)
        if int(info.get("num_classes", 0)):
            return [first, (np.arange(batch_size) % int(info["num_classes"])).astype(np.int32)]
        return first


    def warmup_inputs(self, info, batch_size=2):
        """Named inputs of the serving signatures: ``z``, ``labels``, ``images``."""
        rng = np.random.default_rng(0)
        classes = max(1, int(info.get("num_classes", 0)))
        return {"z": rng.standard_normal((batch_size, int(info["latent_dim"]))).astype(np.float32),
                "labels": (np.arange(batch_size) % classes).astype(np.int32),
                "images": rng.uniform(0, 255, (batch_size, *info["input_shape"])).astype(
                    np.float32)}


def discriminator_accuracy(model: GAN, images, labels, seed: int = 0) -> float:
    """Accuracy of D on the real ``images`` (→ real) and as many generated ones (→ fake)."""
    rng = np.random.default_rng(seed)
    x = np.asarray(images, dtype=np.float32)
    y = np.asarray(labels, dtype=np.int32) if model.conditional else None
    z = rng.standard_normal((len(x), model.latent_dim)).astype(np.float32)
    real = keras.ops.convert_to_numpy(model.discriminate(x, y))[:, 0]
    fake = keras.ops.convert_to_numpy(model.discriminate(model.generate(z, y), y))[:, 0]
    return float((np.sum(real > 0) + np.sum(fake < 0)) / (2 * len(x)))


def proxy_features(images) -> np.ndarray:
    """8×8 area-downsampled grey pixels in [0, 1], flattened (the proxy classifier's input)."""
    import cv2

    out = []
    for image in np.asarray(images):
        grey = image.mean(-1) if image.ndim == 3 else image
        out.append(cv2.resize(grey.astype(np.float32), (8, 8), interpolation=cv2.INTER_AREA))
    return np.stack(out).reshape(len(out), -1) / 255.0


def sample_quality(images, labels, data) -> dict:
    """The sample-quality proxy of the module docstring."""
    from sklearn.linear_model import LogisticRegression

    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(proxy_features(data.x_train), data.y_train)
    probs = classifier.predict_proba(proxy_features(images))
    predicted = classifier.classes_[probs.argmax(1)]
    counts = np.bincount(predicted, minlength=data.num_classes).astype(np.float64)
    freq = counts / counts.sum()
    entropy = -np.sum(freq[freq > 0] * np.log(freq[freq > 0])) / np.log(data.num_classes)
    result = {"sample_confidence": float(probs.max(1).mean()),
              "sample_class_entropy": abs(float(entropy)),
              "proxy_classifier_accuracy": float(
                  classifier.score(proxy_features(data.x_test), data.y_test)),
              "num_samples": int(len(images))}
    if np.all(labels >= 0):
        result["sample_class_accuracy"] = float(np.mean(predicted == labels))
    return result


def write_sample_grid(images, labels, path, columns: int = 10, scale: int = 2) -> Path:
    """PNG grid of uint8 images (N, H, W, C): one row per class when ``labels`` is given
    (its first ``columns`` samples), else row-major; upscaled ``scale``× (nearest)."""
    import cv2

    from cnn_apps.utils.io import atomic_path

    images = np.asarray(images)
    if labels is not None:
        rows = [images[labels == c][:columns] for c in np.unique(labels)]
    else:
        rows = [images[i:i + columns] for i in range(0, min(len(images), columns * columns),
                                                       columns)]
    h, w, c = images.shape[1:]
    pad = 2
    grid = np.full((len(rows) * (h + pad) + pad, columns * (w + pad) + pad, c), 255, np.uint8)
    for r, row in enumerate(rows):
        for col, image in enumerate(row):
            top, left = pad + r * (h + pad), pad + col * (w + pad)
            grid[top:top + h, left:left + w] = image
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    if grid.ndim == 3 and grid.shape[-1] == 3:
        grid = grid[..., ::-1]  # RGB -> OpenCV's BGR
    path = Path(path)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), grid)
    return path
