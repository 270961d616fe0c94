"""Every registered task's SavedModel export carries TF Serving warm-up requests (one per
signature, from ``Task.warmup_inputs``) that its own loaded signatures accept, and every
signature answers an empty batch with empty outputs."""

import numpy as np
import pytest

from cnn_apps.applications import TASKS

pytestmark = pytest.mark.tf_only


@pytest.mark.parametrize("task_name", sorted(TASKS))
def test_task_export_warmup_requests_replay(task_name, tmp_path):
    import tensorflow as tf

    from cnn_apps.applications import get_task
    from cnn_apps.config import load_config
    from cnn_apps.export import export_saved_model
    from cnn_apps.export.warmup import read_warmup_file, request_arrays, signature_inputs

    task = get_task(task_name)
    config = load_config(task_name)
    model = task.build_model(config)           # untrained: the contract, not the accuracy
    info = task.model_info(config)
    model(task.example_inputs(info, 1), training=False)
    path = export_saved_model(model, tmp_path / task_name,
                              task.serving_endpoints(model, info),
                              warmup_inputs=task.warmup_inputs(info))
    signatures = signature_inputs(path)
    logs = read_warmup_file(path)
    requests = {log.predict_log.request.model_spec.signature_name: log.predict_log.request
                for log in logs}
    assert len(logs) == len(signatures) and set(requests) == set(signatures)
    assert "serving_default" in requests
    loaded = tf.saved_model.load(str(path))
    for name, request in requests.items():
        arrays = request_arrays(request)
        assert set(arrays) == set(signatures[name])
        out = loaded.signatures[name](**{k: tf.constant(v) for k, v in arrays.items()})
        for value in out.values():
            value = value.numpy()
            assert value.shape[0] == 2
            if value.dtype.kind == "f":
                assert np.all(np.isfinite(value))
        empty = {k: tf.constant(np.zeros((0, *v.shape[1:]), v.dtype)) for k, v in arrays.items()}
        for key, value in loaded.signatures[name](**empty).items():
            assert value.shape[0] == 0 and value.shape[1:] == out[key].shape[1:], (name, key)
