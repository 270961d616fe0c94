"""The benchmarks stay runnable (their numbers are read by people, not asserted here)."""

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_layer_benchmark_runs_and_prints_ratios():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "layers.py"), "--repeats", "1",
                          "--filter", "KMaxPooling1D"], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line for line in out.stdout.splitlines() if line.startswith("KMaxPooling1D")]
    assert rows and "failed" not in rows[0]
    # ours ms, base ms, ratio; a loaded machine may add the "> 3 (see docstring)" flag
    match = re.search(r"([\d.]+)\s+([\d.]+)\s+([\d.]+)(  > 3 \(see docstring\))?$", rows[0])
    assert match, rows[0]
    ours, base, ratio = (float(v) for v in match.groups()[:3])
    assert ratio > 0 and abs(ratio - ours / base) <= 0.02 + 0.02 * ratio  # printed rounded
    assert match.group(4) is None or ratio >= 2.995


def test_fast_convolution_benchmark_runs_quick_mode():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "fast.py"), "--quick",
                          "--repeats", "1"], capture_output=True, text=True, timeout=900,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FastfoodDense" in out.stdout and "p = " in out.stdout  # growth exponents printed


def test_detection_benchmark_runs_quick_mode_for_every_detector():
    from cnn_apps.applications.detection.detectors import DETECTORS, detector_names

    one_stage = [name for name in DETECTORS if not DETECTORS[name].needs_proposals]
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "detection.py"), "--quick",
                          "--no-write", "--set", "backbone_args={width: 8}"],
                         capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = {line.split("|")[1].strip(): line for line in out.stdout.splitlines()
            if line.startswith("| ") and not line.startswith("| detector")}
    assert set(rows) == set(detector_names())  # unavailable detectors are error rows
    for name in one_stage:  # built in: measured, with positive rates and post share
        cells = [c.strip() for c in rows[name].split("|")[1:-1]]
        assert cells[2] == "64" and all(float(v) > 0 for v in cells[4:7]), rows[name]
        assert float(cells[7].rstrip("%")) > 0, rows[name]
