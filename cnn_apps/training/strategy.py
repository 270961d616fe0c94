"""Choose a ``tf.distribute`` strategy from the ``strategy`` config key."""

from __future__ import annotations

from cnn_apps.errors import ConfigError

STRATEGIES = ("auto", "one_device", "mirrored")


def get_strategy(name: str = "auto"):
    """``auto``: Mirrored over all GPUs when there are several, else the default strategy;
    ``one_device``: the first GPU, else the CPU; ``mirrored``: all GPUs, or all logical CPU
    devices when there is no GPU (configure them before TensorFlow initializes)."""
    import tensorflow as tf

    if name not in STRATEGIES:
        raise ConfigError(f"strategy '{name}' is not one of {', '.join(STRATEGIES)}")
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        return tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    devices = [d.name for d in gpus] or [d.name for d in tf.config.list_logical_devices("CPU")]
    return tf.distribute.MirroredStrategy(devices)
