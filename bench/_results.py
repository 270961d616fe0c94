"""Shared by the benchmark scripts: the machine line printed above every table, and writing
one marked section of ``bench/RESULTS.md`` while keeping every other section."""

from __future__ import annotations

import os
import platform
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_description():
    """CPU model and count, GPUs, TensorFlow version and the load average at start (a
    benchmark on a busy machine says so)."""
    model, cpus = platform.processor() or "unknown", os.cpu_count()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            names = [line.split(":", 1)[1].strip() for line in handle
                     if line.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    import tensorflow as tf

    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    return (f"{model}, {cpus} CPU(s); GPUs: {', '.join(gpus) or 'none'}; TensorFlow "
            f"{tf.__version__}; load average at start {load}")


def write_marked_section(name, section, path=RESULTS):
    """Put ``section`` between the ``<!-- name:begin -->`` / ``<!-- name:end -->`` markers of
    ``path`` (appended with new markers when they are missing)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    block = f"{begin}\n{section}\n{end}"
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        text = before + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(text)
