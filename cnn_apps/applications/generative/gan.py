"""DCGAN and its conditional variant (CGAN) with a custom min–max ``train_step``.

Survey S0 §3.4.5 (SEED_CHECKLIST LS-11, LS-13, AR-39). The discriminator D and the generator
G play

    min_G max_D  V(D, G) = E_x[log D(x)] + E_z[log(1 − D(G(z)))].

Each training step makes one D update on −V (binary cross-entropy of real → 1 and fake → 0)
and then one G update with the *non-saturating* generator loss −E_z[log D(G(z))] (Goodfellow
et al.: same fixed point as minimizing log(1 − D(G(z))), but strong gradients while D still
rejects the samples). D outputs a logit l, D = sigmoid(l), so

    d_loss = softplus(−l_real) + softplus(l_fake),     g_loss = softplus(−l_fake).

DCGAN architecture (Radford et al.): G = Dense → (H/4, W/4, 2w) → Conv2DTranspose stride 2
with batch norm + ReLU → Conv2DTranspose stride 2 → tanh; D = strided convs with LeakyReLU(0.2)
(batch norm on the second) → Dense logit. Real pixels 0..255 are mapped to [−1, 1] (x/127.5 − 1)
inside D's input path; G's output is tanh in [−1, 1] and ``generate`` maps it back to 0..255.
The CGAN (Mirza & Osindero) feeds the one-hot label to G (concatenated to z) and to D (label
maps concatenated to the image channels).
"""

from __future__ import annotations

import keras
import tensorflow as tf
from keras import ops

from cnn_apps.applications.generative.vae import (OneHotLabels, _images_and_labels, _single,
                                                  check_generator_args, check_image_shape)

__all__ = ["GAN", "build_generator", "build_discriminator", "discriminator_loss",
           "generator_loss"]


def discriminator_loss(real_logits, fake_logits):
    """−V(D, G) per sample: −log D(x) − log(1 − D(G(z))) with D = sigmoid(logit)."""
    return ops.softplus(-real_logits) + ops.softplus(fake_logits)


def generator_loss(fake_logits):
    """Non-saturating generator loss per sample: −log D(G(z)) = softplus(−logit)."""
    return ops.softplus(-fake_logits)


def build_generator(image_shape, latent_dim, width=32, num_classes=0):
    """z (+ one-hot y) → images in [−1, 1] (tanh), shape ``image_shape``."""
    height, wid, channels = check_image_shape(image_shape)
    z = keras.Input((latent_dim,), name="z")
    inputs, x = [z], z
    if num_classes:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels)
        one_hot = OneHotLabels(num_classes, name="one_hot")(labels)
        x = keras.layers.Concatenate(name="with_labels")([z, one_hot])
    x = keras.layers.Dense((height // 4) * (wid // 4) * 2 * width, use_bias=False,
                           name="project")(x)
    x = keras.layers.BatchNormalization(name="project_bn")(x)
    x = keras.layers.ReLU(name="project_relu")(x)
    x = keras.layers.Reshape((height // 4, wid // 4, 2 * width), name="to_map")(x)
    x = keras.layers.Conv2DTranspose(width, 4, strides=2, padding="same", use_bias=False,
                                     name="deconv1")(x)
    x = keras.layers.BatchNormalization(name="deconv1_bn")(x)
    x = keras.layers.ReLU(name="deconv1_relu")(x)
    images = keras.layers.Conv2DTranspose(channels, 4, strides=2, padding="same",
                                          activation="tanh", name="images",
                                          dtype="float32")(x)
    return keras.Model(_single(inputs), images, name="generator")


def build_discriminator(image_shape, width=32, num_classes=0):
    """Images in [−1, 1] (+ label maps) → one real/fake logit per image."""
    height, wid, channels = check_image_shape(image_shape)
    images = keras.Input((height, wid, channels), name="images")
    inputs, x = [images], images
    if num_classes:
        labels = keras.Input((), dtype="int32", name="labels")
        inputs.append(labels)
        maps = OneHotLabels(num_classes, height, wid, name="label_maps")(labels)
        x = keras.layers.Concatenate(name="with_labels")([images, maps])
    x = keras.layers.Conv2D(width, 4, strides=2, padding="same", name="conv1")(x)
    x = keras.layers.LeakyReLU(0.2, name="conv1_lrelu")(x)
    x = keras.layers.Conv2D(2 * width, 4, strides=2, padding="same", use_bias=False,
                            name="conv2")(x)
    x = keras.layers.BatchNormalization(name="conv2_bn")(x)
    x = keras.layers.LeakyReLU(0.2, name="conv2_lrelu")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    logit = keras.layers.Dense(1, name="logit", dtype="float32")(x)
    return keras.Model(_single(inputs), logit, name="discriminator")


@keras.saving.register_keras_serializable(package="cnn_apps")
class GAN(keras.Model):
    """DCGAN (``num_classes=0``) or CGAN (``num_classes=K``) trained by alternating updates.

    Args:
        image_shape: (H, W, C), H and W multiples of 4; real inputs are raw pixels 0..255.
        latent_dim: size of z ~ N(0, I). width: base channel count of G and D.
        num_classes: 0 for the DCGAN; K > 0 conditions G and D on the label (CGAN).
        seed: seed of the latent noise drawn in ``train_step``.

    ``compile(optimizer, d_optimizer=None)``: ``optimizer`` updates G (and is the one the
    training core's learning-rate schedule sets); ``d_optimizer`` updates D — by default a
    copy of ``optimizer`` whose learning rate follows G's at every step. ``fit`` logs
    ``d_loss``, ``g_loss`` and D's accuracy on real/fake images; validation additionally
    reports ``steps_trained`` (the number of D/G update pairs so far): a GAN's losses
    oscillate by design and are no quality measure, so the training core keeps the latest
    checkpoint by monitoring it.

    ``call(z | [z, labels])`` returns ``{"images": pixels 0..255}``.

    Example:
        gan = GAN((32, 32, 1), latent_dim=32)
        gan.compile(optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5))
        gan.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(64), epochs=10)
    """

    def __init__(self, image_shape=(32, 32, 1), latent_dim=32, width=32, num_classes=0,
                 seed=0, **kwargs):
        super().__init__(**kwargs)
        self.image_shape = check_image_shape(image_shape)
        self.latent_dim, self.width, self.num_classes = check_generator_args(
            latent_dim, width, num_classes, "DCGAN", "CGAN")
        self.seed = int(seed)
        self.generator = build_generator(self.image_shape, self.latent_dim, self.width,
                                         self.num_classes)
        self.discriminator = build_discriminator(self.image_shape, self.width,
                                                 self.num_classes)
        self.noise = keras.random.SeedGenerator(self.seed, name="noise")
        self.steps_trained = keras.Variable(0.0, trainable=False, name="steps_trained")
        self.trackers = {name: keras.metrics.Mean(name=name) for name in
                         ("d_loss", "g_loss", "d_real_accuracy", "d_fake_accuracy")}
        self.d_optimizer = None
        self.built = True

    @property
    def conditional(self):
        return self.num_classes > 0

    @property
    def metrics(self):
        return list(self.trackers.values())

    def compile(self, optimizer="adam", d_optimizer=None, jit_compile=False, **kwargs):
        if kwargs.get("loss") is not None:
            raise ValueError("GAN.compile: the min-max objective is built in; do not pass loss")
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, jit_compile=jit_compile, **kwargs)
        if d_optimizer is None:
            d_optimizer = self.optimizer.__class__.from_config(self.optimizer.get_config())
        self.d_optimizer = keras.optimizers.get(d_optimizer)
        # Built here so each optimizer holds exactly its network's slots (and loads back).
        self.optimizer.build(self.generator.trainable_variables)
        self.d_optimizer.build(self.discriminator.trainable_variables)

    def get_compile_config(self):
        if self.d_optimizer is None:
            return {}
        return {"optimizer": keras.optimizers.serialize(self.optimizer),
                "d_optimizer": keras.optimizers.serialize(self.d_optimizer)}

    def compile_from_config(self, config):
        if config:
            self.compile(optimizer=keras.optimizers.deserialize(config["optimizer"]),
                         d_optimizer=keras.optimizers.deserialize(config["d_optimizer"]))

    def _condition(self, x, labels):
        if not self.conditional:
            return ops.convert_to_tensor(x)
        if labels is None:
            raise ValueError("a CGAN needs labels (int32, shape (N,)) with its inputs")
        return [ops.convert_to_tensor(x), ops.cast(ops.convert_to_tensor(labels), "int32")]

    def generate(self, z, labels=None, training=False):
        """Pixels 0..255 (G's tanh output mapped back)."""
        images = self.generator(self._condition(z, labels), training=training)
        return (images + 1.0) * 127.5

    def discriminate(self, pixels, labels=None, training=False):
        """D's logit for images given as raw pixels 0..255."""
        scaled = ops.cast(pixels, "float32") / 127.5 - 1.0
        return self.discriminator(self._condition(scaled, labels), training=training)

    def call(self, inputs, training=False):
        if self.conditional:
            if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
                raise ValueError("a CGAN takes [z, labels]; got a single input")
            z, labels = inputs
        else:
            z, labels = (inputs[0] if isinstance(inputs, (list, tuple)) else inputs), None
        return {"images": self.generate(z, labels, training=training)}

    def _latent(self, batch):
        return keras.random.normal((batch, self.latent_dim), seed=self.noise)

    def _record(self, d_loss, g_loss, real_logits, fake_logits):
        self.trackers["d_loss"].update_state(ops.mean(d_loss))
        self.trackers["g_loss"].update_state(ops.mean(g_loss))
        self.trackers["d_real_accuracy"].update_state(
            ops.mean(ops.cast(real_logits > 0.0, "float32")))
        self.trackers["d_fake_accuracy"].update_state(
            ops.mean(ops.cast(fake_logits < 0.0, "float32")))
        return {name: m.result() for name, m in self.trackers.items()}

    def train_step(self, data):
        pixels, labels = _images_and_labels(data)
        labels = labels if self.conditional else None
        batch = ops.shape(pixels)[0]
        self.d_optimizer.learning_rate.assign(self.optimizer.learning_rate)
        # Discriminator step on −V(D, G): real → 1, G(z) → 0 (G fixed).
        fake = self.generate(self._latent(batch), labels, training=True)
        with tf.GradientTape() as tape:
            real_logits = self.discriminate(pixels, labels, training=True)
            fake_logits = self.discriminate(ops.stop_gradient(fake), labels, training=True)
            d_loss = discriminator_loss(real_logits, fake_logits)
            d_mean = ops.mean(d_loss)
        d_vars = self.discriminator.trainable_variables
        self.d_optimizer.apply_gradients(zip(tape.gradient(d_mean, d_vars), d_vars))
        # Generator step on the non-saturating loss −log D(G(z)) (D fixed).
        with tf.GradientTape() as tape:
            fake = self.generate(self._latent(batch), labels, training=True)
            fooled_logits = self.discriminate(fake, labels, training=True)
            g_loss = generator_loss(fooled_logits)
            g_mean = ops.mean(g_loss)
        g_vars = self.generator.trainable_variables
        self.optimizer.apply_gradients(zip(tape.gradient(g_mean, g_vars), g_vars))
        self.steps_trained.assign_add(1.0)
        return self._record(d_loss, g_loss, real_logits, fake_logits)

    def test_step(self, data):
        pixels, labels = _images_and_labels(data)
        labels = labels if self.conditional else None
        real_logits = self.discriminate(pixels, labels)
        fake_logits = self.discriminate(self.generate(self._latent(ops.shape(pixels)[0]), labels),
                                        labels)
        logs = self._record(discriminator_loss(real_logits, fake_logits),
                            generator_loss(fake_logits), real_logits, fake_logits)
        return {**logs, "steps_trained": ops.convert_to_tensor(self.steps_trained)}

    def get_config(self):
        return {**super().get_config(), "image_shape": list(self.image_shape),
                "latent_dim": self.latent_dim, "width": self.width,
                "num_classes": self.num_classes, "seed": self.seed}
