"""Detection throughput: images/s of every detector's forward pass, in-graph post-processing
(decode + class-aware NMS) and end to end, and the share of time spent post-processing
(survey S0 §5.2; issue 6 benchmark).

For each name in ``cnn_apps.applications.detection.detectors.detector_names()`` the default
``detection`` config with ``model=<name>`` is built at ``--size`` × ``--size`` (320 by default)
and timed on a batch of the built-in ``shapes`` validation images resized to that size:

* ``forward``: ``model(images, training=False)`` in a ``tf.function``;
* ``post``: ``Detector.postprocess(raw, info)`` in a ``tf.function`` on the forward pass's raw
  output (decode, score threshold, ``combined_non_max_suppression``);
* ``end-to-end``: both in one ``tf.function`` (what the exported ``predict_tensor`` runs);
* ``post share`` = post time / end-to-end time;
* detectors with ``needs_proposals`` (R-CNN, SPP-net, Fast R-CNN) take external region
  proposals (selective search, run outside the graph as in the papers): their generation
  time per image is measured separately (``proposals ms/img``) and is *not* part of the three
  rates above, which are timed on the proposals computed once beforehand.

Every time is the best of ``--repeats`` windows of ``--steps`` calls after a trace and a
warm-up call (wall clock; on a shared machine the best window is the least disturbed one).
The weights are untrained (random), so the post-processing sees many candidate boxes above
the score threshold: its time is an upper bound of what a trained model costs. A detector that
cannot be built (for example not implemented yet) gets an error row; the others still run.

The table is printed and written into ``bench/RESULTS.md`` between the ``detection`` markers
(appended at the end when the markers are missing; other sections are kept).

Usage:
    python bench/detection.py                          # 320×320, batch 8, 5 steps, best of 3
    python bench/detection.py --quick                  # 64×64, batch 2, 1 step: proves it runs
    python bench/detection.py --models ssd,yolo --set backbone=mobilenet_v2
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _results import RESULTS, machine_description, write_marked_section  # noqa: E402
HEADER = ("| detector | backbone | input | batch | forward img/s | post img/s | end-to-end img/s "
          "| post share | proposals ms/img |")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="all",
                   help="comma-separated detector names, or 'all' (every registered one)")
    p.add_argument("--size", type=int, default=None, help="input side (320; quick: 64)")
    p.add_argument("--batch", type=int, default=None, help="images per call (8; quick: 2)")
    p.add_argument("--steps", type=int, default=None, help="timed calls per window (5; quick: 1)")
    p.add_argument("--repeats", type=int, default=None, help="timing windows, best kept "
                                                            "(3; quick: 1)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override for every detector, e.g. backbone=mobilenet_v2")
    p.add_argument("--quick", action="store_true", help="64×64 inputs, batch 2, 1 step")
    p.add_argument("--note", default="", help="free text recorded with the results")
    p.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md")
    args = p.parse_args(argv)
    args.size = args.size or (64 if args.quick else 320)
    args.batch = args.batch or (2 if args.quick else 8)
    args.steps = args.steps or (1 if args.quick else 5)
    args.repeats = args.repeats or (1 if args.quick else 3)
    for name in ("size", "batch", "steps", "repeats"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be a positive integer")
    if args.size < 32:
        p.error("--size must be >= 32 (the detection data pipeline's minimum)")
    from cnn_apps.applications.detection.detectors import detector_names

    known = detector_names()
    args.models = known if args.models == "all" else [
        m.strip() for m in args.models.split(",") if m.strip()]
    return args


def best_seconds(fn, steps, repeats):
    """Least wall time of ``repeats`` windows of ``steps`` calls (after trace + warm-up)."""
    fn()
    fn()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            fn()
        best = min(best, time.perf_counter() - start)
    return best


def detector_config(name, args, data_root):
    """The default detection config for ``name`` at the benchmark size; the data section points
    at a tiny shapes dataset (``batch`` validation images) in a scratch folder."""
    from cnn_apps.config import load_config

    overrides = [f"model={name}", f"image_size={args.size}", f"data.root={data_root}",
                 "data.num_train=2", f"data.num_val={args.batch}",
                 f"data.shapes_image_size={max(args.size, 64)}", "export.formats=[]",
                 f"batch_size={args.batch}", *args.set]
    return load_config("detection", overrides=overrides)


def proposal_function(config):
    """``fn(images uint8 (N, S, S, 3)) -> (N, R, 4)``: the configured external proposals
    (``cnn_apps.applications.detection.proposals``, uncached)."""
    from cnn_apps.applications.detection.proposals import compute_proposals, proposal_settings

    settings = proposal_settings(config)
    return lambda images: compute_proposals(images, settings)


def measure(name, args, data_root):
    """One row: rates (images/s) and the proposal time per image (or None)."""
    import numpy as np
    import tensorflow as tf

    from cnn_apps.applications.detection import TASK, get_detector

    det = get_detector(name)
    config = detector_config(name, args, data_root)
    info = TASK.model_info(config)
    model = TASK.build_model(config)
    images = np.asarray(TASK.data(config).x_val[:args.batch])
    batch = tf.constant(images.astype(np.float32))
    proposal_ms = None
    if det.needs_proposals:
        make = proposal_function(config)
        start = time.perf_counter()  # numpy / scikit-image: no trace, one timed call
        proposals = np.asarray(make(images), np.float32)
        proposal_ms = 1e3 * (time.perf_counter() - start) / len(images)
        inputs = {"images": batch, "proposals": tf.constant(proposals)}
    else:
        inputs = batch

    forward = tf.function(lambda x: model(x, training=False)["raw"])
    raw = forward(inputs)
    post = tf.function(lambda r: det.postprocess(r, info))
    end_to_end = tf.function(lambda x: det.postprocess(model(x, training=False)["raw"], info))
    n = args.batch * args.steps
    t_forward = best_seconds(lambda: forward(inputs).numpy(), args.steps, args.repeats)
    t_post = best_seconds(lambda: post(raw)["num_detections"].numpy(), args.steps, args.repeats)
    t_e2e = best_seconds(lambda: end_to_end(inputs)["num_detections"].numpy(), args.steps,
                         args.repeats)
    return {"model": name, "backbone": config["backbone"], "side": args.size,
            "batch": args.batch, "forward": n / t_forward, "post": n / t_post,
            "e2e": n / t_e2e, "share": t_post / t_e2e, "proposals": proposal_ms}


def format_row(row):
    if "error" in row:
        return f"| {row['model']} | - | - | - | - | - | - | - | {row['error']} |"
    proposals = "-" if row["proposals"] is None else f"{row['proposals']:.1f}"
    return (f"| {row['model']} | {row['backbone']} | {row['side']} | {row['batch']} | "
            f"{row['forward']:.1f} | {row['post']:.1f} | {row['e2e']:.1f} | "
            f"{100 * row['share']:.1f}% | {proposals} |")


def format_table(rows):
    return "\n".join([HEADER, "|---|---|---:|---:|---:|---:|---:|---:|---:|",
                      *(format_row(r) for r in rows)])



def main(argv=None):
    args = parse_args(argv)
    machine = machine_description()
    print(machine, flush=True)
    print(HEADER, flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_detection_") as tmp:
        for name in args.models:
            start = time.perf_counter()
            try:
                rows.append(measure(name, args, Path(tmp) / "shapes"))
            except Exception as exc:  # a missing or failing detector must not lose the others
                first = (str(exc).strip().splitlines() or [""])[0][:100]
                rows.append({"model": name, "error": f"{type(exc).__name__}: {first}"})
            print(format_row(rows[-1]), f"({time.perf_counter() - start:.0f}s)", flush=True)
    if args.no_write:
        return rows
    command = "python bench/detection.py " + " ".join(shlex.quote(a) for a in (argv or
                                                                               sys.argv[1:]))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    section = "\n".join([
        "## Detection: forward, post-processing and end-to-end throughput",
        "",
        f"Run {stamp}: `{command.strip()}`",
        f"- machine: {machine}",
        f"- default `detection` config per detector at {args.size}×{args.size}, batch "
        f"{args.batch}, best of {args.repeats} × {args.steps} calls (wall clock), untrained "
        f"weights (many boxes pass the score threshold: post-processing time is an upper "
        f"bound); post share = post / end-to-end; proposals = external region proposals per "
        f"image (selective search, outside the graph, not in the rates)",
        *([f"- note: {args.note}"] if args.note else []),
        "",
        format_table(rows)])
    write_marked_section("detection", section)
    return rows


if __name__ == "__main__":
    main()
