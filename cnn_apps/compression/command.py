"""``cnn-apps compress RUN_DIR method=... [options] [finetune_epochs=N]``.

Loads a trained run (``best.keras``, ``config.yaml``, its task), compresses the model, optionally
fine-tunes it on the task's training split, evaluates before/after on the test split and writes
``compressed_<method>.keras`` (``.tflite`` for int8) plus ``compress_report.json`` into the run
folder (or ``out_dir``), atomically. Methods and their options (defaults in brackets):

* ``svd``: factorize Dense layers (and Conv2D with ``conv=channel|spatial``) [param_ratio=0.4,
  conv=none]; ``rank=R`` or ``energy=E`` choose the rank instead.
* ``prune``: magnitude pruning [sparsity=0.9, schedule=polynomial, regrowth=false,
  scope=global (one threshold over all kernels) | layer]; with
  fine-tuning the sparsity ramps up over the first ``ramp`` [1/3] of the steps, else one-shot.
* ``filter_prune``: remove Conv2D filters with APoZ above ``threshold`` on the validation
  split [threshold=0.9].
* ``hash``: Dense layers → HashedDense with ``params / factor`` buckets [factor=8].
* ``pq``: k-means quantization of Dense kernels [quant=pq (scalar|vq|pq), clusters=16,
  subvectors=row length/4]; fine-tuning keeps the quantized layers frozen.
* ``binary``: XNOR-Net LeNet-5 trained from scratch on the run's data [epochs=20, mode=xnor,
  lr=0.01 with a cosine decay; binary nets want a larger step than the float run's].

Fine-tuning uses the task's optimizer at ``lr`` [0.1 × the run's learning rate] with a cosine
decay to zero over ``finetune_epochs`` (the last epochs settle the weights).
* ``int8``: full integer TFLite, calibrated on the validation split.
"""

from __future__ import annotations

import gzip
import json
import math
import time
from pathlib import Path

import numpy as np

from cnn_apps.errors import CnnAppsError

METHODS = ("svd", "prune", "filter_prune", "hash", "pq", "binary", "int8")
_OPTIONS = {"svd": {"rank", "energy", "param_ratio", "conv"},
            "prune": {"sparsity", "schedule", "regrowth", "frequency", "scope", "ramp"},
            "filter_prune": {"threshold", "min_filters"},
            "hash": {"factor"}, "pq": {"quant", "clusters", "subvectors", "bits", "conv"},
            "binary": {"epochs", "mode"}, "int8": {"calibration"}}
_COMMON = {"finetune_epochs", "lr", "latency_repeats"}


def parse_options(items) -> dict:
    """``["method=svd", "rank=8"]`` → ``{"method": "svd", "rank": 8}`` (YAML scalars)."""
    import yaml

    options = {}
    for item in items:
        if "=" not in item or item.startswith("="):
            raise CnnAppsError(f"compress options must be key=value, got '{item}'")
        key, value = item.split("=", 1)
        options[key.strip()] = yaml.safe_load(value) if value else None
    return options


def _bytes(path: Path) -> dict:
    data = path.read_bytes()
    return {"bytes": len(data), "gzip_bytes": len(gzip.compress(data, 9))}


def _model_bytes(model) -> dict:
    """Bytes of ``model`` saved as .keras without optimizer state (a fresh copy), plain and
    gzip-compressed (the size Han et al. report for pruned models)."""
    import tempfile

    import keras

    # A new, never-compiled Functional wrapper over the same layers: no optimizer slots.
    plain = keras.Model(model.input, model.output, name=model.name)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.keras"
        plain.save(path)
        return _bytes(path)


def _stats(model) -> dict:
    from cnn_apps.compression._graph import count_nonzero, count_params

    return {"params": count_params(model), "nonzero_params": count_nonzero(model)}


def _latency(model, images, repeats) -> float:
    """Median seconds of one pass over ``images`` (after a warm-up pass)."""
    model.predict(images[:64], batch_size=64, verbose=0)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.predict(images, batch_size=64, verbose=0)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and k != "k"}


def _finetune(task, model, config, epochs, lr, callbacks=(), cosine=True):
    import keras

    task.compile_model(model, config, lr)
    if cosine:  # lr·½(1 + cos(π·epoch/epochs))
        callbacks = list(callbacks) + [keras.callbacks.LearningRateScheduler(
            lambda epoch: lr * 0.5 * (1.0 + math.cos(math.pi * epoch / epochs)))]
    model.fit(task.train_dataset(config), epochs=int(epochs), callbacks=list(callbacks),
              verbose=0)


def _check_options(method, options):
    unknown = set(options) - _OPTIONS[method] - _COMMON
    if unknown:
        raise CnnAppsError(f"unknown option(s) for method={method}: {', '.join(sorted(unknown))}"
                           f"; valid: {', '.join(sorted(_OPTIONS[method] | _COMMON))}")


def compress_run(run_dir, method, options=None, finetune_epochs=0, out_dir=None,
                 verbose=True) -> dict:
    """Compress the trained run at ``run_dir`` with ``method``; returns the report dict (also
    written to ``compress_report.json``) and prints the table when ``verbose``."""
    import yaml

    from cnn_apps.applications import get_task
    from cnn_apps.export import load_run_model
    from cnn_apps.utils.io import atomic_path, atomic_write_json

    options = dict(options or {})
    if method not in METHODS:
        raise CnnAppsError(f"method must be one of {', '.join(METHODS)}, got '{method}'")
    _check_options(method, options)
    finetune_epochs = int(options.pop("finetune_epochs", finetune_epochs) or 0)
    if finetune_epochs < 0:
        raise CnnAppsError(f"finetune_epochs must be >= 0, got {finetune_epochs}")
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise CnnAppsError(f"'{run_dir}' is not a run folder (no config.yaml)")
    config = yaml.safe_load(config_path.read_text())
    model, info = load_run_model(run_dir)
    task = get_task(info["task"])
    out_dir = Path(out_dir) if out_dir else run_dir
    lr = float(options.pop("lr", 0.01 if method == "binary"
                           else float(config["learning_rate"]) * 0.1))
    repeats = int(options.pop("latency_repeats", 3))
    images = np.asarray(task.data(config).x_test, dtype=np.float32) \
        if hasattr(task, "data") else None

    before = _headline(task.evaluate(model, config))
    before.update(_stats(model), **_model_bytes(model))
    details, suffix = {}, ".keras"
    compressed = None
    if method == "svd":
        from cnn_apps.compression.factorize import factorize

        conv = options.get("conv", "none")
        explicit = {"rank", "energy"} & set(options)
        compressed = factorize(model, rank=options.get("rank"),
                               energy=float(options.get("energy", 0.9)),
                               param_ratio=None if explicit else
                               float(options.get("param_ratio", 0.4)),
                               conv=None if conv in (None, "none") else conv)
        details = _dense_ratio(model, compressed)
        if finetune_epochs:
            _finetune(task, compressed, config, finetune_epochs, lr)
    elif method == "prune":
        from cnn_apps.compression._graph import rebuild
        from cnn_apps.compression.pruning import magnitude_prune, prune, strip_pruning

        sparsity = float(options.get("sparsity", 0.9))
        if finetune_epochs:
            compressed = rebuild(model)
            per_epoch = int(task.train_dataset(config).cardinality())
            if per_epoch <= 0:  # unknown cardinality: count one epoch
                per_epoch = sum(1 for _ in task.train_dataset(config))
            steps = finetune_epochs * per_epoch
            ramp = float(options.get("ramp", 1 / 3))
            if not 0 < ramp <= 1:
                raise CnnAppsError(f"ramp must be in (0, 1], got {ramp}")
            end = max(1, int(steps * ramp))
            pruning = prune(compressed, sparsity, schedule=options.get("schedule", "polynomial"),
                            allow_regrowth=bool(options.get("regrowth", False)), end_step=end,
                            frequency=int(options.get("frequency", max(1, end // 20))),
                            scope=options.get("scope", "global"))
            _finetune(task, compressed, config, finetune_epochs, lr, [pruning])
            stripped = strip_pruning(pruning)
            details = {"sparsity": stripped["sparsity"], "layer_sparsity": stripped["layers"]}
        else:
            compressed = magnitude_prune(model, sparsity, scope=options.get("scope", "global"))
            details = {"sparsity": sparsity}
    elif method == "filter_prune":
        from cnn_apps.compression.filter_pruning import filter_prune

        compressed, pruned = filter_prune(model, task.eval_dataset(config, "val"),
                                          threshold=float(options.get("threshold", 0.9)),
                                          min_filters=int(options.get("min_filters", 1)))
        details = {"removed_filters": {k: v["removed"] for k, v in pruned.items()}}
        if finetune_epochs:
            _finetune(task, compressed, config, finetune_epochs, lr)
    elif method == "hash":
        compressed = hash_dense_layers(model, float(options.get("factor", 8)))
        details = _dense_ratio(model, compressed)
        if finetune_epochs:
            _finetune(task, compressed, config, finetune_epochs, lr)
    elif method == "pq":
        compressed, details = _quantize(task, model, config, options, finetune_epochs, lr)
    elif method == "binary":
        from cnn_apps.compression.binary import xnor_lenet5

        data = task.data(config)
        compressed = xnor_lenet5(data.x_train.shape[1:], data.num_classes,
                                 mode=options.get("mode", "xnor"))
        epochs = int(options.get("epochs", 20))
        _finetune(task, compressed, config, epochs, lr, cosine=True)
        details = {"trained_from_scratch_epochs": epochs}
    else:
        from cnn_apps.compression.int8 import TFLiteModel, quantize_int8
        from cnn_apps.export import representative_inputs

        target = out_dir / "compressed_int8.tflite"
        quantize_int8(model, target, representative_inputs(run_dir,
                                                           int(options.get("calibration", 200))))
        names = list(model.output.keys()) if isinstance(model.output, dict) else ["output"]
        dims = [int(t.shape[-1]) for t in (model.output.values() if isinstance(model.output, dict)
                                           else [model.output])]
        compressed = TFLiteModel(target, names, dims)
        suffix = ".tflite"

    if suffix == ".keras":
        target = out_dir / f"compressed_{method}.keras"
        with atomic_path(target) as tmp:
            compressed.save(tmp)
    after = _headline(task.evaluate(compressed, config))
    after.update(**(_model_bytes(compressed) if suffix == ".keras" else _bytes(target)))
    if suffix == ".keras":
        after.update(_stats(compressed))
    else:
        after.update({"params": before["params"], "nonzero_params": before["nonzero_params"]})
    report = {"run_dir": str(run_dir), "method": method, "options": options,
              "finetune_epochs": finetune_epochs, "model_path": str(target),
              "before": before, "after": after, "details": details}
    if "top1" in before and "top1" in after:
        report["top1_drop"] = before["top1"] - after["top1"]
    if images is not None and repeats > 0:
        report["latency_ratio"] = (_latency(compressed, images, repeats)
                                   / _latency(model, images, repeats))
    atomic_write_json(out_dir / "compress_report.json", report)
    if verbose:
        print(format_table(report))
    return report


def _dense_ratio(original, compressed) -> dict:
    """Weights of the original's Dense layers vs their replacements (same layer names)."""
    from cnn_apps.compression._graph import iter_layers
    import keras

    dense = {layer.name: layer.count_params() for layer in iter_layers(original)
             if type(layer) is keras.layers.Dense}
    new = {layer.name: layer.count_params() for layer in iter_layers(compressed)
           if layer.name in dense}
    return {"dense_params_before": sum(dense.values()), "dense_params_after": sum(new.values()),
            "dense_param_ratio": sum(new.values()) / max(1, sum(dense.values()))}


def _quantize(task, model, config, options, finetune_epochs, lr):
    from cnn_apps.compression._graph import iter_layers
    from cnn_apps.compression.quantization import quantize_weights

    compressed, report = quantize_weights(
        model, method=options.get("quant", "pq"), bits=options.get("bits"),
        clusters=options.get("clusters", 16 if options.get("bits") is None else None),
        subvectors=options.get("subvectors"), include_conv=bool(options.get("conv", False)))
    if finetune_epochs:
        # The quantized kernels stay on their codebooks: only the other weights adapt.
        for layer in iter_layers(compressed):
            if layer.name in report["layers"]:
                layer.trainable = False
        _finetune(task, compressed, config, finetune_epochs, lr)
    return compressed, {"quantization": {k: v for k, v in report.items() if k != "layers"},
                        "layer_ratio": {k: v["ratio"] for k, v in report["layers"].items()}}


def hash_dense_layers(model, factor=8.0):
    """A copy of ``model`` with every Dense layer replaced by a HashedDense layer with
    ``⌈n·m / factor⌉`` buckets, each bucket initialized to the least-squares fit of the trained
    weights it shares: ``w_k = mean of ξ_ij·W_ij over (i, j) with h(i, j) = k``."""
    import keras

    from cnn_apps.compression._graph import rebuild
    from cnn_apps.layers.structured import HashedDense, hashed_dense_index

    if not factor > 1:
        raise CnnAppsError(f"factor must be > 1, got {factor}")

    def replace(layer, x, **kwargs):
        if type(layer) is not keras.layers.Dense:
            return None
        kernel = layer.kernel.numpy()
        n, m = kernel.shape
        buckets = max(1, math.ceil(n * m / factor))
        new = HashedDense(m, buckets, seed=0, activation=layer.activation,
                          use_bias=layer.use_bias, name=layer.name, dtype=layer.dtype_policy)
        out = new(x)
        index, sign = hashed_dense_index(n, m, buckets, 0)
        sums = np.bincount(index.ravel(), weights=(sign * kernel).ravel(), minlength=buckets)
        counts = np.maximum(np.bincount(index.ravel(), minlength=buckets), 1)
        new.set_weights([(sums / counts).astype("float32")]
                        + ([layer.bias.numpy()] if layer.use_bias else []))
        return out

    return rebuild(model, replace)


def format_table(report: dict) -> str:
    before, after = report["before"], report["after"]
    rows = [("parameters", "params"), ("non-zero parameters", "nonzero_params"),
            ("bytes on disk", "bytes"), ("bytes gzip", "gzip_bytes"), ("top-1", "top1")]
    lines = [f"compress {report['method']} (fine-tune epochs: {report['finetune_epochs']})",
             f"{'':22s} {'before':>12s} {'after':>12s} {'ratio':>8s}"]
    for label, key in rows:
        if key in before and key in after:
            b, a = before[key], after[key]
            fmt = (lambda v: f"{v:.4f}") if key == "top1" else (lambda v: f"{int(v):d}")
            ratio = f"{a / b:.3f}" if b else "-"
            lines.append(f"{label:22s} {fmt(b):>12s} {fmt(a):>12s} {ratio:>8s}")
    if "latency_ratio" in report:
        lines.append(f"{'latency (after/before)':22s} {'':>12s} {'':>12s} "
                     f"{report['latency_ratio']:8.3f}")
    lines.append(json.dumps(report["details"], default=float)[:400])
    return "\n".join(lines)
