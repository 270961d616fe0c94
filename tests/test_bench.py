"""The benchmarks stay runnable (their numbers are read by people, not asserted here)."""

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
    assert float(rows[0].split()[-1]) > 0


def test_fast_convolution_benchmark_runs_quick_mode():
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "fast.py"), "--quick",
                          "--repeats", "1"], capture_output=True, text=True, timeout=900,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "FastfoodDense" in out.stdout and "p = " in out.stdout  # growth exponents printed
