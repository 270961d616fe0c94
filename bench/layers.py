"""Layer benchmark: forward+backward time of every cnn_apps layer vs its closest Keras built-in.

Collects ``CASES`` from ``bench/layer_cases_*.py``; each case is timed on the same input in the
same run, and the ratio (ours / built-in) is printed. Ratios above 3 are flagged: the layer's
docstring says why it costs more (or it was made faster).

    python bench/layers.py [--repeats 20] [--filter Pool] [--jit]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT.parent))


def load_cases():
    cases = []
    for path in sorted(ROOT.glob("layer_cases_*.py")):
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        cases += [dict(case, group=path.stem.removeprefix("layer_cases_"))
                  for case in module.CASES]
    return cases


def _inputs(shape_or_shapes, rng):
    import numpy as np

    shapes = shape_or_shapes if isinstance(shape_or_shapes[0], (tuple, list)) else [shape_or_shapes]
    return [rng.uniform(0.0, 1.0, size=s).astype("float32") for s in shapes]


def time_layer(make_layer, inputs, repeats, jit):
    """Median seconds of one forward+backward step (gradient w.r.t. inputs and weights)."""
    import numpy as np
    import tensorflow as tf

    layer = make_layer()
    xs = [tf.constant(x) for x in inputs]
    feed = xs if len(xs) > 1 else xs[0]
    layer(feed)  # build

    @tf.function(jit_compile=jit)
    def step(feed):
        with tf.GradientTape() as tape:
            tape.watch(feed)
            out = layer(feed, training=True)
            outs = out if isinstance(out, (list, tuple)) else [out]
            loss = tf.add_n([tf.reduce_sum(tf.cast(o, tf.float32)) for o in outs])
        return tape.gradient(loss, [feed, layer.trainable_variables])

    step(feed)  # trace
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step(feed)
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def main(argv=None):
    import numpy as np

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--filter", default="", help="only cases whose name contains this")
    parser.add_argument("--jit", action="store_true", help="compile both sides with XLA")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    rows = []
    print(f"{'layer':44s} {'baseline':24s} {'ours ms':>9s} {'base ms':>9s} {'ratio':>7s}")
    for case in load_cases():
        if args.filter and args.filter not in case["name"]:
            continue
        inputs = _inputs(case["input_shape"], rng)
        base_inputs = inputs[:1] if len(inputs) > 1 else inputs
        try:
            ours = time_layer(case["layer"], inputs, args.repeats, args.jit)
            base = time_layer(case["baseline"], base_inputs, args.repeats, args.jit)
        except Exception as exc:  # report and continue: one broken case must not hide the rest
            print(f"{case['name']:44s} failed: {type(exc).__name__}: {exc}")
            continue
        ratio = ours / base
        flag = "  > 3 (see docstring)" if ratio > 3 else ""
        print(f"{case['name']:44s} {case['baseline_name']:24s} {ours * 1e3:9.2f} "
              f"{base * 1e3:9.2f} {ratio:7.2f}{flag}")
        rows.append((case["name"], case["baseline_name"], ours, base, ratio))
    return rows


if __name__ == "__main__":
    main()
