"""Convolutional variational autoencoder (VAE) and its conditional variant (CVAE).

Survey S0 §3.4.5 (SEED_CHECKLIST LS-10, LS-12, AR-36). The VAE maximizes the evidence lower
bound of each image x,

    ELBO(x) = E_{q(z|x)}[log p(x|z)] − KL(q(z|x) ‖ N(0, I))  ≤  log p(x),

with a Gaussian encoder q(z|x) = N(μ(x), diag σ²(x)) and, in closed form,

    KL = −½ Σ_j (1 + log σ_j² − μ_j² − σ_j²)              (nats).

The decoder is a Bernoulli likelihood per pixel: p(x|z) = Π_i p_i^{x_i} (1 − p_i)^{1−x_i}
with p = sigmoid(logits), so log p(x|z) = −Σ_i BCE(x_i, logits_i), summed over pixels. Pixel
intensities x ∈ [0, 1] (raw 0..255 divided by 255 inside the model) are used as the Bernoulli
targets, as in the original VAE on MNIST; for grey values this is a cross-entropy, not the
log-density of a normalized distribution, so the reported ELBO is in "Bernoulli nats" and
comparable between models on the same data only. The CVAE (p(x|y, z)) conditions the encoder
(one-hot label maps concatenated to the image channels) and the decoder (one-hot label
concatenated to z) on the class y.

Training samples z = μ + σ·ε, ε ~ N(0, I) (reparameterization) once per image and minimizes
the batch mean of −ELBO. At inference ``call`` decodes μ (no sampling).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

__all__ = ["VAE", "gaussian_kl", "bernoulli_log_likelihood", "negative_elbo",
           "build_vae_encoder", "build_vae_decoder", "check_image_shape", "estimate_elbo", "OneHotLabels"]


def check_image_shape(image_shape):
    """(H, W, C) with H, W divisible by 4 (two stride-2 stages) and C ≥ 1."""
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or shape[0] % 4 or shape[1] % 4 or shape[0] < 8 or shape[1] < 8 \
            or shape[2] < 1:
        raise ValueError("image_shape must be (height, width, channels) with height and width "
                         f"multiples of 4 and at least 8, got {image_shape}")
    return shape


def check_generator_args(latent_dim, width, num_classes, plain, conditional):
    """Shared constructor checks of the VAE and GAN models; returns the three as ints.

    ``plain``/``conditional`` name the two variants in the message (e.g. "VAE", "CVAE").
    """
    if int(latent_dim) < 1:
        raise ValueError(f"latent_dim must be a positive integer, got {latent_dim}")
    if int(width) < 1:
        raise ValueError(f"width must be a positive integer, got {width}")
    if int(num_classes) < 0 or int(num_classes) == 1:
        raise ValueError(f"num_classes must be 0 ({plain}) or >= 2 ({conditional}), "
                         f"got {num_classes}")
    return int(latent_dim), int(width), int(num_classes)


def gaussian_kl(mean, log_var):
    """KL(N(μ, diag σ²) ‖ N(0, I)) per row, summed over the latent axis (nats):
    −½ Σ (1 + log σ² − μ² − σ²)."""
    return -0.5 * ops.sum(1.0 + log_var - ops.square(mean) - ops.exp(log_var), axis=-1)


def bernoulli_log_likelihood(targets, logits):
    """log p(x|z) = Σ_pixels [x log p + (1 − x) log(1 − p)], p = sigmoid(logits), per image.

    Written as −(max(l, 0) − l·x + log(1 + e^{−|l|})) for numerical stability."""
    per_pixel = ops.relu(logits) - logits * targets + ops.log1p(ops.exp(-ops.abs(logits)))
    return -ops.sum(ops.reshape(per_pixel, (ops.shape(per_pixel)[0], -1)), axis=-1)


def negative_elbo(targets, logits, mean, log_var):
    """−ELBO per image for one reparameterized sample: −log p(x|z) + KL(q(z|x) ‖ N(0, I))."""
    return -bernoulli_log_likelihood(targets, logits) + gaussian_kl(mean, log_var)


def _single(inputs):
    """A one-input functional model takes the tensor itself, not a one-element list."""
    return inputs[0] if len(inputs) == 1 else inputs


@keras.saving.register_keras_serializable(package="cnn_apps")
class OneHotLabels(keras.layers.Layer):
    """Integer class labels (N,) → one-hot float (N, K), or constant label maps (N, H, W, K)
    when ``height`` and ``width`` are given (how the CVAE / CGAN condition conv inputs).

    Args:
        num_classes: K ≥ 2. height, width: spatial size of the maps (both or neither).

    Example:
        maps = OneHotLabels(10, 16, 16)(labels)        # (N, 16, 16, 10)
        x = keras.layers.Concatenate()([images, maps])
    """

    def __init__(self, num_classes, height=None, width=None, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 2:
            raise ValueError(f"num_classes must be >= 2, got {num_classes}")
        if (height is None) != (width is None):
            raise ValueError("height and width must be given together (label maps) or not at "
                             f"all (one-hot vectors), got height={height}, width={width}")
        self.num_classes = int(num_classes)
        self.height = None if height is None else int(height)
        self.width = None if width is None else int(width)

    def call(self, labels):
        one_hot = ops.one_hot(ops.cast(ops.reshape(labels, (-1,)), "int32"), self.num_classes,
                              dtype=self.compute_dtype)
        if self.height is None:
            return one_hot
        return ops.broadcast_to(one_hot[:, None, None, :],
                                (ops.shape(one_hot)[0], self.height, self.width,
                                 self.num_classes))

    def compute_output_shape(self, input_shape):
        if self.height is None:
            return (input_shape[0], self.num_classes)
        return (input_shape[0], self.height, self.width, self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "height": self.height,
                "width": self.width}


def build_vae_encoder(image_shape, latent_dim, width=32, num_classes=0):
    """Conv encoder: x/255 (+ label maps) → 2 stride-2 convs → Dense → (μ, log σ²)."""
    height, wid, channels = check_image_shape(image_shape)
    images = keras.Input((height, wid, channels), name="images")
    inputs = [images]
    x = keras.layers.Rescaling(1.0 / 255.0, name="to_unit")(images)
    if num_classes:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels)
        maps = OneHotLabels(num_classes, height, wid, name="label_maps")(labels)
        x = keras.layers.Concatenate(name="with_labels")([x, maps])
    x = keras.layers.Conv2D(width, 4, strides=2, padding="same", activation="relu",
                            name="conv1")(x)
    x = keras.layers.Conv2D(2 * width, 4, strides=2, padding="same", activation="relu",
                            name="conv2")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(8 * width, activation="relu", name="fc")(x)
    mean = keras.layers.Dense(latent_dim, name="mean", dtype="float32")(x)
    log_var = keras.layers.Dense(latent_dim, name="log_var", dtype="float32")(x)
    return keras.Model(_single(inputs), {"mean": mean, "log_var": log_var}, name="encoder")


def build_vae_decoder(image_shape, latent_dim, width=32, num_classes=0):
    """Transposed-conv decoder: z (+ one-hot y) → Dense → (H/4, W/4, 2w) → two stride-2
    Conv2DTranspose → per-pixel Bernoulli logits (H, W, C)."""
    height, wid, channels = check_image_shape(image_shape)
    z = keras.Input((latent_dim,), name="z")
    inputs = [z]
    x = z
    if num_classes:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels)
        one_hot = OneHotLabels(num_classes, name="one_hot")(labels)
        x = keras.layers.Concatenate(name="with_labels")([z, one_hot])
    x = keras.layers.Dense(8 * width, activation="relu", name="fc")(x)
    x = keras.layers.Dense((height // 4) * (wid // 4) * 2 * width, activation="relu",
                           name="project")(x)
    x = keras.layers.Reshape((height // 4, wid // 4, 2 * width), name="to_map")(x)
    x = keras.layers.Conv2DTranspose(width, 4, strides=2, padding="same", activation="relu",
                                     name="deconv1")(x)
    logits = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                          name="logits", dtype="float32")(x)
    return keras.Model(_single(inputs), logits, name="decoder")


@keras.saving.register_keras_serializable(package="cnn_apps")
class VAE(keras.Model):
    """Convolutional VAE (``num_classes=0``) or CVAE (``num_classes=K``); see module doc.

    Args:
        image_shape: (H, W, C), H and W multiples of 4. Inputs are raw pixels in [0, 255].
        latent_dim: size of z. width: channels of the first conv (the second has 2·width).
        num_classes: 0 for the VAE; K > 0 makes it a CVAE taking ``[images, labels]``.
        seed: seed of the reparameterization noise.

    ``call`` returns ``{"reconstruction": 255·sigmoid(decoder(μ)), "mean", "log_var"}``;
    ``fit`` minimizes the mean −ELBO (a custom ``train_step``); the logged ``loss`` is the
    batch mean of −ELBO per image (nats), with ``reconstruction`` (−log p(x|z)) and ``kl``.

    Example:
        vae = VAE((32, 32, 1), latent_dim=8)
        vae.compile(optimizer="adam")
        vae.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(64), epochs=5)
    """

    def __init__(self, image_shape=(32, 32, 1), latent_dim=16, width=32, num_classes=0, seed=0,
                 **kwargs):
        super().__init__(**kwargs)
        self.image_shape = check_image_shape(image_shape)
        self.latent_dim, self.width, self.num_classes = check_generator_args(
            latent_dim, width, num_classes, "VAE", "CVAE")
        self.seed = int(seed)
        self.encoder = build_vae_encoder(self.image_shape, self.latent_dim, self.width,
                                         self.num_classes)
        self.decoder = build_vae_decoder(self.image_shape, self.latent_dim, self.width,
                                         self.num_classes)
        self.noise = keras.random.SeedGenerator(self.seed, name="noise")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")
        self.built = True

    @property
    def conditional(self):
        return self.num_classes > 0

    @property
    def metrics(self):
        return [self.loss_tracker, self.reconstruction_tracker, self.kl_tracker]

    def _split(self, inputs):
        if self.conditional:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                raise ValueError("a CVAE takes [images, labels]; got a single input")
            return inputs[0], inputs[1]
        if isinstance(inputs, (list, tuple)):
            inputs = inputs[0]
        return inputs, None

    def _condition(self, x, labels):
        if not self.conditional:
            return ops.convert_to_tensor(x)
        if labels is None:
            raise ValueError("a CVAE needs labels (int32, shape (N,)) with its inputs")
        return [ops.convert_to_tensor(x), ops.cast(ops.convert_to_tensor(labels), "int32")]

    def encode(self, images, labels=None):
        """(μ, log σ²) of q(z|x[, y]) for raw pixels 0..255."""
        out = self.encoder(self._condition(ops.cast(images, "float32"), labels))
        return out["mean"], out["log_var"]

    def decode_logits(self, z, labels=None):
        return self.decoder(self._condition(z, labels))

    def generate(self, z, labels=None):
        """Pixels 0..255 of p(x|z[, y]) means: 255·sigmoid(decoder logits)."""
        return 255.0 * ops.sigmoid(self.decode_logits(z, labels))

    def call(self, inputs, training=False):
        images, labels = self._split(inputs)
        mean, log_var = self.encode(images, labels)
        return {"reconstruction": self.generate(mean, labels), "mean": mean,
                "log_var": log_var}

    def elbo_terms(self, images, labels=None):
        """(log p(x|z), KL) per image for one reparameterized sample z ~ q(z|x)."""
        mean, log_var = self.encode(images, labels)
        eps = keras.random.normal(ops.shape(mean), seed=self.noise)
        z = mean + ops.exp(0.5 * log_var) * eps
        targets = ops.cast(images, "float32") / 255.0
        log_lik = bernoulli_log_likelihood(targets, self.decode_logits(z, labels))
        return log_lik, gaussian_kl(mean, log_var)

    def _update(self, log_lik, kl):
        self.loss_tracker.update_state(ops.mean(kl - log_lik))
        self.reconstruction_tracker.update_state(ops.mean(-log_lik))
        self.kl_tracker.update_state(ops.mean(kl))
        return {m.name: m.result() for m in self.metrics}

    def train_step(self, data):
        images, labels = _images_and_labels(data)
        with tf.GradientTape() as tape:
            log_lik, kl = self.elbo_terms(images, labels if self.conditional else None)
            loss = ops.mean(kl - log_lik)
        variables = self.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return self._update(log_lik, kl)

    def test_step(self, data):
        images, labels = _images_and_labels(data)
        log_lik, kl = self.elbo_terms(images, labels if self.conditional else None)
        return self._update(log_lik, kl)

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape),
                "latent_dim": self.latent_dim, "width": self.width,
                "num_classes": self.num_classes, "seed": self.seed}


def _images_and_labels(data):
    """Datasets yield ``(images, labels)``; unconditional models ignore the labels."""
    if isinstance(data, (list, tuple)):
        images = data[0]
        labels = data[1] if len(data) > 1 else None
    else:
        images, labels = data, None
    if isinstance(images, (list, tuple)):  # ([images, labels], ...) as the model's inputs
        images, labels = images[0], images[1] if len(images) > 1 else labels
    return images, labels


def estimate_elbo(model: VAE, images: np.ndarray, labels=None, samples: int = 1,
                  batch_size: int = 256) -> dict:
    """Monte-Carlo ELBO per image on numpy arrays: mean over ``samples`` draws of z ~ q(z|x).

    Returns ``{"elbo", "reconstruction_log_likelihood", "kl"}`` as per-image arrays (nats)."""
    if int(samples) < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    log_liks, kls = [], []
    for start in range(0, len(images), batch_size):
        x = ops.convert_to_tensor(np.asarray(images[start:start + batch_size], np.float32))
        y = None
        if model.conditional:
            y = ops.convert_to_tensor(np.asarray(labels[start:start + batch_size], np.int32))
        total = 0.0
        for _ in range(int(samples)):
            log_lik, kl = model.elbo_terms(x, y)
            total = total + ops.convert_to_numpy(log_lik)
        log_liks.append(total / int(samples))
        kls.append(ops.convert_to_numpy(kl))
    log_lik, kl = np.concatenate(log_liks), np.concatenate(kls)
    return {"elbo": log_lik - kl, "reconstruction_log_likelihood": log_lik, "kl": kl}
