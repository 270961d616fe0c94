"""Serving benchmark: latency (p50/p95) and throughput of each task's export through the loaded
SavedModel signature and through onnxruntime, batch 1 and 32, in one run.

For every task (default: every registered task whose model exports to both formats) the
default config's model is built (untrained: the weights do not change the cost), exported
as a SavedModel (the ``predict_tensor`` float-pixel signature, in-graph input checks included)
and as ONNX (tf2onnx), and both are timed on the same random batch. ``ratio`` = SavedModel
p50 / onnxruntime p50 (above 1: onnxruntime is faster). Tasks that cannot be exported (no
``predict_tensor`` signature, ONNX conversion failure) get a row saying why.

    python bench/serving.py [--tasks classification,metric_learning] [--repeats 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _timings(call, batch, repeats):
    """Seconds per call (after 3 warm-up calls)."""
    for _ in range(3):
        call(batch)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call(batch)
        times.append(time.perf_counter() - start)
    return times


def build_exports(task_name, overrides, out_dir):
    """``(saved_model signature callable, onnxruntime callable, input shape)`` for a task."""
    import numpy as np
    import onnxruntime as ort
    import tensorflow as tf

    from cnn_apps.applications import get_task
    from cnn_apps.config import load_config
    from cnn_apps.export import export_onnx, export_saved_model

    task = get_task(task_name)
    config = load_config(task_name, overrides=overrides)
    model = task.build_model(config)
    info = task.model_info(config)
    endpoints = task.serving_endpoints(model, info)
    if "predict_tensor" not in endpoints:
        raise RuntimeError("no predict_tensor signature")
    example = np.asarray(task.example_inputs(info, 1))
    model(example, training=False)
    path = export_saved_model(model, out_dir / task_name, endpoints)
    signature = tf.saved_model.load(str(path)).signatures["predict_tensor"]
    onnx_path = export_onnx(model, out_dir / f"{task_name}.onnx")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name

    def run_saved_model(batch):
        return {k: v.numpy() for k, v in signature(images=tf.constant(batch)).items()}

    def run_onnx(batch):
        return session.run(None, {name: batch})

    return run_saved_model, run_onnx, tuple(example.shape[1:])


def main(argv=None):
    import numpy as np

    from cnn_apps.applications import TASKS

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(sorted(TASKS)),
                        help="comma-separated task names (default: all registered)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--set", action="append", default=[], metavar="TASK:key=value",
                        help="config override for one task, e.g. classification:backbone=lenet5")
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    print(f"# serving benchmark: {args.repeats} timed calls per cell, CPU threads: "
          f"{os.cpu_count()}")
    header = (f"{'task':16s} {'batch':>5s} {'SM p50 ms':>10s} {'SM p95 ms':>10s} "
              f"{'SM img/s':>9s} {'ORT p50 ms':>10s} {'ORT p95 ms':>10s} {'ORT img/s':>9s} "
              f"{'ratio':>6s}")
    print(header)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for task_name in [t for t in args.tasks.split(",") if t]:
            overrides = [s.split(":", 1)[1] for s in args.set if s.startswith(task_name + ":")]
            try:
                run_sm, run_ort, shape = build_exports(task_name, overrides, Path(tmp))
            except Exception as exc:      # a task that cannot be exported: say why, go on
                reason = str(exc).strip().splitlines()[0][:100] if str(exc).strip() else ""
                print(f"{task_name:16s} not benchmarked: {type(exc).__name__}: {reason}")
                continue
            for size in batches:
                batch = rng.uniform(0, 255, (size, *shape)).astype(np.float32)
                sm = np.array(_timings(run_sm, batch, args.repeats)) * 1e3
                ort = np.array(_timings(run_ort, batch, args.repeats)) * 1e3
                sm50, sm95 = np.percentile(sm, [50, 95])
                ort50, ort95 = np.percentile(ort, [50, 95])
                print(f"{task_name:16s} {size:5d} {sm50:10.2f} {sm95:10.2f} "
                      f"{size / sm50 * 1e3:9.1f} {ort50:10.2f} {ort95:10.2f} "
                      f"{size / ort50 * 1e3:9.1f} {sm50 / ort50:6.2f}", flush=True)


if __name__ == "__main__":
    main()
