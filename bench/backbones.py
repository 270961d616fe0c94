"""Backbone throughput and hardware efficiency (survey S0 §4, fast processing of CNNs).

One run measures:

1. the practical peak: the best sustained rate of a large square matmul (float32 and
   bfloat16) in TensorFlow, ``2·n³ / time``;
2. for each backbone at a fixed batch and input size, inference and training images/s with
   and without ``jit_compile`` (XLA) and under the ``mixed_bfloat16`` policy, and the achieved
   FLOP/s = FLOPs per image (``count_flops``: 2 × multiply-adds of conv/dense layers; training
   counted as 3× the forward pass: forward + input gradients + weight gradients) × images/s,
   as a fraction of the peak of the same dtype (a fraction above 100% means the peak was
   measured in a busier moment than the model: the machine was shared).

The table is printed and written into ``bench/RESULTS.md`` between the ``backbones`` markers
(other sections of the file are kept), with the machine described (``lscpu`` model name,
cores, load average at the start).

Usage:
    python bench/backbones.py                       # resnet18/50, vgg16, googlenet,
                                                    # mobilenet_v2, densenet121 at 224, batch 16
    python bench/backbones.py --quick               # 64×64, batch 8, 2 steps: proves it works
    python bench/backbones.py --models resnet18,shufflenet_v2 --batch 32 --steps 10
    python bench/backbones.py --models all --size 0 # every backbone at its own default input
    cnn-apps bench backbones --quick
"""

import argparse
import os
import shlex
import sys
import time
from datetime import datetime, timezone

from _results import RESULTS, machine_description, write_marked_section

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

DEFAULT_MODELS = "resnet18,resnet50,vgg16,googlenet,mobilenet_v2,densenet121"
CONFIGS = {"fp32": ("float32", False), "fp32+xla": ("float32", True),
           "bf16": ("mixed_bfloat16", False), "bf16+xla": ("mixed_bfloat16", True)}

DEPTHWISE_NOTE = """\
Why depthwise nets reach a lower fraction of peak: a depthwise 3×3 convolution does 9
multiply-adds per output element and reads one input channel per output channel, so its
arithmetic intensity (FLOPs per byte moved) is one to two orders of magnitude below a dense
3×3 convolution (9·C_in multiply-adds per output) or a matmul; it is limited by memory
bandwidth, not by the multiply units, and libraries (oneDNN, cuDNN) have far less tuned code
for it. The 1×1 convolutions around it are small matmuls with few channels (MobileNetV2
expands 16-160 channels; ShuffleNet processes half the channels per unit), and channel
split/shuffle, concatenation, BN and activations add element-wise passes whose FLOPs are not
counted at all. So MobileNet/ShuffleNet/EfficientNet-style nets need 10-50× fewer FLOPs than
VGG/ResNet but run only a few times faster; their "fraction of peak" is low by design, and
images/s, not FLOP/s, is the number to compare. On GPUs XLA helps them most (it fuses the
element-wise tails into the convolutions). On TensorFlow's CPU backend XLA compiles
convolutions to its own Eigen kernels instead of oneDNN's, so the "+xla" rows there are
expected to be slower than the plain ones."""


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help="comma-separated backbone names, or 'all'")
    p.add_argument("--batch", type=int, default=None, help="batch size (16; quick: 8)")
    p.add_argument("--steps", type=int, default=None, help="timed steps per measurement "
                                                          "(5; quick: 2)")
    p.add_argument("--size", type=int, default=None,
                   help="input side (224; quick: 64); 0 = each backbone's own default input "
                        "(224/299 for ImageNet nets, 32 for the CIFAR-style and LeNet nets)")
    p.add_argument("--configs", default=",".join(CONFIGS),
                   help=f"comma-separated subset of {','.join(CONFIGS)}")
    p.add_argument("--matmul", type=int, default=None, help="peak matmul size n (4096; "
                                                            "quick: 2048)")
    p.add_argument("--quick", action="store_true", help="64×64 inputs, batch 8, 2 steps")
    p.add_argument("--note", default="", help="free text recorded with the results "
                                               "(e.g. 'machine shared with other jobs')")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = p.parse_args(argv)
    args.batch = args.batch or (8 if args.quick else 16)
    args.steps = args.steps or (2 if args.quick else 5)
    if args.size is None:
        args.size = 64 if args.quick else 224
    args.matmul = args.matmul or (2048 if args.quick else 4096)
    if args.size < 0:
        p.error("--size must be >= 0 (0: each backbone's default input)")
    for name in ("batch", "steps", "matmul"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer")
    args.configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    unknown = [c for c in args.configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown --configs {unknown}; choose from {list(CONFIGS)}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if args.models == ["all"]:
        from cnn_apps.backbones import list_backbones

        args.models = list_backbones()
    return args


def input_side(name, args):
    """``--size``, or (``--size 0``) the backbone's registered default input side."""
    if args.size:
        return args.size
    from cnn_apps.backbones import get_spec

    return int(get_spec(name).default_input_shape[0])


def _best_time(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(n, dtype, repeats=5, inner=4):
    """Best sustained 2·n³ FLOP/s of an n×n matmul chain (``inner`` products per call)."""
    import tensorflow as tf

    a = tf.random.normal((n, n), dtype=tf.float32)
    a = tf.cast(a / tf.sqrt(float(n)), dtype)

    @tf.function
    def chain(x):
        for _ in range(inner):
            x = tf.linalg.matmul(x, a)
        return tf.reduce_sum(tf.cast(x[:1, :1], tf.float32))

    chain(a).numpy()
    seconds = _best_time(lambda: chain(a).numpy(), repeats)
    return 2.0 * n ** 3 * inner / seconds


def measure_peaks(n, previous):
    """``{dtype: best FLOP/s}``: the better of this measurement and ``previous``."""
    import tensorflow as tf

    peaks = {}
    for dtype in ("float32", "bfloat16"):
        peaks[dtype] = max(matmul_peak(n, getattr(tf, dtype)), previous.get(dtype, 0.0))
        print(f"peak {dtype} matmul {n}²: {peaks[dtype] / 1e9:.1f} GFLOP/s", flush=True)
    return peaks


def measure(name, config, args):
    """``(forward FLOPs per image, inference img/s, training img/s)`` for one backbone."""
    import keras
    import tensorflow as tf

    from cnn_apps.backbones import create
    from cnn_apps.backbones.flops import count_flops

    policy, jit = CONFIGS[config]
    side = input_side(name, args)
    keras.config.set_dtype_policy(policy)
    try:
        model = create(name, input_shape=(side, side, 3), num_classes=1000)
    finally:
        keras.config.set_dtype_policy("float32")
    flops = count_flops(model)
    x = tf.random.uniform((args.batch, side, side, 3))
    y = tf.random.uniform((args.batch,), maxval=1000, dtype=tf.int32)
    variables = model.trainable_variables

    @tf.function(jit_compile=jit)
    def infer(images):
        return model(images, training=False)

    @tf.function(jit_compile=jit)
    def train_step(images, labels):
        with tf.GradientTape() as tape:
            probs = model(images, training=True)
            loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(labels, probs))
        grads = tape.gradient(loss, variables)
        for v, g in zip(variables, grads):      # plain SGD: no optimizer state to time
            v.assign_sub(tf.cast(1e-4 * g, v.dtype))
        return loss

    def run(fn, *inputs):
        fn(*inputs)                              # trace / compile
        fn(*inputs)                              # warm up
        steps = lambda: [fn(*inputs) for _ in range(args.steps)][-1].numpy()  # noqa: E731
        return args.batch * args.steps / _best_time(steps, 2)

    return flops, run(infer, x), run(train_step, x, y)


def format_table(rows, peaks):
    header = ("| model | config | input | GFLOPs/img | infer img/s | infer % peak | "
              "train img/s | train % peak |")
    lines = [header, "|---|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if "error" in row:
            lines.append(f"| {row['model']} | {row['config']} | - | - | - | - | - | "
                         f"{row['error']} |")
            continue
        peak = peaks["bfloat16" if row["config"].startswith("bf16") else "float32"]
        infer_pct = 100 * row["flops"] * row["infer"] / peak
        train_pct = 100 * 3 * row["flops"] * row["train"] / peak
        lines.append(f"| {row['model']} | {row['config']} | {row['side']} | "
                     f"{row['flops'] / 1e9:.3f} | "
                     f"{row['infer']:.1f} | {infer_pct:.1f} | {row['train']:.1f} | "
                     f"{train_pct:.1f} |")
    return "\n".join(lines)



def main(argv=None):
    args = parse_args(argv)
    from cnn_apps.backbones import list_backbones

    known = set(list_backbones())
    machine = machine_description()
    print(machine, flush=True)
    peaks = measure_peaks(args.matmul, {})
    rows = []
    for name in args.models:
        for config in args.configs:
            if name not in known:
                rows.append({"model": name, "config": config, "error": "not registered"})
                continue
            start = time.perf_counter()
            try:
                flops, infer, train = measure(name, config, args)
            except Exception as exc:  # one failing config must not lose the others
                rows.append({"model": name, "config": config,
                             "error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:80]}"})
            else:
                rows.append({"model": name, "config": config, "side": input_side(name, args),
                             "flops": flops, "infer": infer, "train": train})
            print(format_table(rows[-1:], peaks).splitlines()[-1],
                  f"({time.perf_counter() - start:.0f}s)", flush=True)
    # Measured again at the end and the best kept: on a shared machine a single short window
    # can catch a busy moment and understate the peak.
    peaks = measure_peaks(args.matmul, peaks)
    table = format_table(rows, peaks)
    print(table)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        "## Backbones: throughput and fraction of peak",
        "",
        f"Run {stamp}: `python bench/backbones.py {shlex.join(sys.argv[1:])}`".rstrip(),
        f"- machine: {machine}",
        f"- input {'each backbone default (column input)' if not args.size else f'{args.size}×{args.size}×3'}, batch {args.batch}, best of 2 × {args.steps} "
        f"steps; training = forward + backward + SGD update, counted as 3× forward FLOPs",
        f"- practical peak (best {args.matmul}² matmul chain, start and end of the run): "
        f"float32 "
        f"{peaks['float32'] / 1e9:.1f} GFLOP/s, bfloat16 {peaks['bfloat16'] / 1e9:.1f} "
        "GFLOP/s; bf16 rows are compared with the bfloat16 peak; a % peak above 100 means "
        "the peak was measured at a busier moment than the model (shared machine)",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        table,
        "",
        DEPTHWISE_NOTE,
    ])
    if not args.no_write:
        write_marked_section("backbones", section)
        print(f"wrote the backbones section of {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
