"""Subprocess entry for the distribution tests: train the tiny LeNet-5 classifier under each
strategy and save the final weights (``OUT_DIR/<strategy>[_<task>].npz``) — run as
``python distributed_worker.py OUT_DIR RUNS_ROOT STRATEGY[,STRATEGY] [logical_cpus]
[key=value ...]``. With ``INTERRUPT_AT_EPOCH=e`` in the environment the process exits
(status 3) when epoch ``e`` begins, like a preempted machine.

Logical CPU devices and ``TF_CONFIG`` must be set before TensorFlow initializes, which is why
each configuration runs in its own process.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")


def small_config(name, strategy, **overrides):
    """LeNet-5 (ReLU, max pooling, no BatchNorm, no dropout) on 32x32 digits, SGD with
    momentum, cosine schedule, no augmentation: 179 training images in ONE global batch of
    180 per epoch, so every run (whatever its shuffle order) takes the same global steps."""
    from cnn_apps.config import load_config

    values = {"name": name, "strategy": strategy, "backbone": "lenet5",
              "backbone_args": {"activation": "relu", "pooling": "max"}, "dropout": 0.0,
              "epochs": 3, "batch_size": 180, "optimizer": "sgd", "learning_rate": 0.1,
              "weight_decay": 0.0, "lr_schedule": "cosine", "export": {"formats": []},
              "data": {"image_size": [32, 32], "channels": 1, "val_fraction": 0.05,
                       "test_fraction": 0.85},
              "augment": {"shift": 0.0, "rotation": 0.0, "zoom": 0.0, "brightness": 0.0,
                          "contrast": 0.0}}
    values.update(overrides)
    overrides_text = []
    for key, value in values.items():
        import yaml

        text = yaml.safe_dump(value, default_flow_style=True).strip()
        overrides_text.append(f"{key}={text.removesuffix('...').strip()}")
    return load_config("classification", overrides=overrides_text)


INTERRUPTED = 3  # exit status of a run stopped by INTERRUPT_AT_EPOCH


def main(argv):
    out_dir, runs_root, strategies = argv[1], argv[2], argv[3].split(",")
    logical_cpus = int(argv[4]) if len(argv) > 4 else 0
    extra = dict(item.split("=", 1) for item in argv[5:])
    if logical_cpus:
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * logical_cpus)
    import json

    import keras
    import numpy as np
    import yaml

    from cnn_apps.training import train

    interrupt_epoch = int(os.environ.get("INTERRUPT_AT_EPOCH", "-1"))
    for strategy in strategies:
        final = {}

        class KeepFinalWeights(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                if epoch == interrupt_epoch:  # a simulated preemption (every worker)
                    print(f"interrupted at epoch {epoch}", flush=True)
                    os._exit(INTERRUPTED)

            def on_train_end(self, logs=None):
                final["weights"] = [np.asarray(w) for w in self.model.get_weights()]

        config = small_config(f"run_{strategy}", strategy,
                              **{k: yaml.safe_load(v) for k, v in extra.items()})
        result = train("classification", config, runs_root=runs_root, verbose=0,
                       export=False, extra_callbacks=[KeepFinalWeights()])
        task = os.environ.get("TF_CONFIG") and json.loads(os.environ["TF_CONFIG"])["task"]
        suffix = f"_{task['type']}{task['index']}" if task else ""
        np.savez(os.path.join(out_dir, f"{strategy}{suffix}.npz"), *final["weights"])


if __name__ == "__main__":
    main(sys.argv)
