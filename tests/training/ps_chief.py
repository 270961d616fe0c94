"""Subprocess entry for the parameter-server test: the chief (coordinator) of a
``ParameterServerStrategy`` cluster described by ``TF_CONFIG``. It trains the tiny
classification config (random augmentation off) and writes ``OUT_JSON`` with the devices of
the model's and optimizer's variables (seen when training begins) and the run's metrics —
run as ``python ps_chief.py RUNS_ROOT OUT_JSON [key=value ...]``. With
``INTERRUPT_AT_EPOCH=e`` in the environment the chief exits (status 3) when epoch ``e``
begins, like a preempted coordinator.
"""

import json
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # for tests.conftest

INTERRUPTED = 3
NO_AUGMENT = {"shift": 0.0, "rotation": 0.0, "zoom": 0.0, "brightness": 0.0, "contrast": 0.0}


def main(argv):
    import keras
    import yaml

    from cnn_apps.training import train
    from cnn_apps.training.parameter_server import variable_devices
    from tests.conftest import tiny_classification_config

    runs_root, out_json = argv[1], argv[2]
    extra = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in argv[3:])}
    interrupt_epoch = int(os.environ.get("INTERRUPT_AT_EPOCH", "-1"))
    seen = {}

    class Record(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            seen["devices"] = variable_devices(self.model)

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == interrupt_epoch:
                print(f"interrupted at epoch {epoch}", flush=True)
                os._exit(INTERRUPTED)

    config = tiny_classification_config("ps", strategy="parameter_server", augment=NO_AUGMENT,
                                        **extra)
    result = train("classification", config, runs_root=runs_root, verbose=0, export=False,
                   extra_callbacks=[Record()])
    with open(out_json, "w") as handle:
        json.dump({"devices": seen["devices"], "metrics": result.metrics}, handle)


if __name__ == "__main__":
    main(sys.argv)
