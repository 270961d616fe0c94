"""The ``Task`` contract every application family implements (keras-hub's Task, simplified).

The training core (``cnn_apps.training.fit.train``), the CLI and the exporter talk to tasks
only through these methods, so a new family plugs in by subclassing and registering.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Task(ABC):
    """One application family: data, model, loss, evaluation, prediction and serving."""

    name: str = ""
    description: str = ""
    #: metric the best checkpoint and early stopping follow, and its direction.
    monitor: tuple = ("val_loss", "min")

    @abstractmethod
    def train_dataset(self, config):
        """Batched training ``tf.data.Dataset`` of ``(inputs, targets)``."""

    @abstractmethod
    def eval_dataset(self, config, split: str = "val"):
        """Batched evaluation dataset for ``split`` (``val`` or ``test``)."""

    @abstractmethod
    def build_model(self, config):
        """A compiled-ready ``keras.Model`` (raw inputs in, dict of named outputs out)."""

    @abstractmethod
    def loss(self, config):
        """The Keras loss (or dict of losses keyed by output name)."""

    def metrics(self, config):
        return None

    def compile_model(self, model, config, learning_rate: float) -> None:
        """Compile ``model`` for training at ``learning_rate``. The default uses
        ``loss``/``metrics`` with the configured optimizer; a task with a custom
        ``train_step`` (e.g. a GAN with two optimizers) overrides this."""
        from cnn_apps.training.fit import make_optimizer

        model.compile(optimizer=make_optimizer({**config, "learning_rate": learning_rate}),
                      loss=self.loss(config), metrics=self.metrics(config),
                      jit_compile=bool(config.get("jit_compile", False)))

    def resolve_config(self, config: dict) -> dict:
        """Fill the task's config values that depend on other values (e.g. detection's
        ``epochs: null`` = the chosen model's own schedule); ``train`` calls it first and
        saves the result as the run's ``config.yaml``. The default returns ``config``."""
        return config

    def prepare_loading(self, info: dict) -> None:
        """Make the Keras classes of a saved model of this task importable before it is
        deserialized (``info`` = the run's ``model_info.json``); e.g. detection imports the
        lazily loaded detector module. The default does nothing."""

    def finalize_model(self, model, config, run_dir):
        """Stages that follow gradient training (e.g. R-CNN's per-class SVMs and box
        regressors, fitted on features of the trained network). Called by ``train`` on the
        best checkpoint, before evaluation and export; returns the final model. A task that
        changes the model here must also save it over ``run_dir / "best.keras"`` (atomically)
        so ``evaluate``/``predict``/``export`` of the run see the same model. The default
        returns ``model`` unchanged."""
        return model

    def backbone_layer_name(self) -> str | None:
        """Name of the nested backbone model (frozen during fine-tuning), if any."""
        return "backbone"

    @abstractmethod
    def evaluate(self, model, config, split: str = "test", run_dir=None) -> dict:
        """The field's metric on ``split``; may write plots into ``run_dir``."""

    @abstractmethod
    def predict(self, model, inputs, config) -> list:
        """Structured predictions (JSON-serializable dicts) for raw inputs."""

    def model_info(self, config) -> dict:
        """Metadata saved next to the model (class names, input size) for predict/export."""
        return {"task": self.name}

    @abstractmethod
    def serving_endpoints(self, model, info: dict) -> dict:
        """``{signature name: tf.function with an input_signature}`` for the SavedModel."""

    @abstractmethod
    def example_inputs(self, info: dict, batch_size: int = 2):
        """A numpy batch the model accepts (used for export parity checks)."""

    def warmup_inputs(self, info: dict, batch_size: int = 2) -> dict:
        """``{signature input name: numpy batch}`` for the TF Serving warm-up requests written
        next to every SavedModel export (``cnn_apps.export.warmup``).

        The default takes ``example_inputs``: a rank-4 float batch of the model's image size
        becomes ``images`` (float pixels) and ``image_bytes`` (the same pixels as PNG bytes);
        any other array is offered as ``example_<i>`` and matched to a signature input by dtype
        and shape. A task whose signatures take something else overrides this.
        """
        import numpy as np

        from cnn_apps.export.warmup import encode_png_batch

        example = self.example_inputs(info, batch_size)
        arrays = list(example) if isinstance(example, (list, tuple)) else [example]
        image_shape = tuple(int(v) for v in info.get("input_shape") or ())
        result = {}
        for i, array in enumerate(arrays):
            array = np.asarray(array)
            if (array.ndim == 4 and array.dtype.kind == "f" and "images" not in result
                    and tuple(array.shape[1:]) == image_shape):
                result["images"] = array.astype(np.float32)
                result["image_bytes"] = encode_png_batch(array)
            else:
                result[f"example_{i}"] = array
        return result
