"""Generative models (survey S0 §3.4.5): convolutional VAE / CVAE and DCGAN / CGAN."""

from cnn_apps.applications.generative.gan import (GAN, build_discriminator, build_generator,
                                                  discriminator_loss, generator_loss)
from cnn_apps.applications.generative.task import (GenerativeTask, discriminator_accuracy,
                                                   sample_quality, write_sample_grid)
from cnn_apps.applications.generative.vae import (VAE, bernoulli_log_likelihood, estimate_elbo,
                                                  gaussian_kl, negative_elbo)

TASK = GenerativeTask()

__all__ = ["TASK", "GenerativeTask", "VAE", "GAN", "gaussian_kl", "bernoulli_log_likelihood",
           "negative_elbo", "estimate_elbo", "discriminator_loss", "generator_loss",
           "build_generator", "build_discriminator", "discriminator_accuracy", "sample_quality",
           "write_sample_grid"]
