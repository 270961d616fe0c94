"""bench/serving.py stays runnable and prints a row per (task, batch) with a positive ratio."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_serving_benchmark_runs_and_prints_ratios():
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "serving.py"), "--repeats", "1",
         "--tasks", "classification,no_such_task", "--batches", "1,2",
         "--set", "classification:backbone_args={width: 8}"],
        capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    rows = [line.split() for line in out.stdout.splitlines()
            if line.startswith("classification")]
    assert [int(r[1]) for r in rows] == [1, 2]
    for row in rows:
        values = [float(v) for v in row[2:]]
        assert len(values) == 7 and all(v > 0 for v in values)
        # ratio column = SavedModel p50 / onnxruntime p50; all three printed to 2 decimals,
        # so the ratio must lie within the range the rounded p50s allow.
        sm, ort, ratio = values[0], values[3], values[6]
        low = (sm - 0.005) / (ort + 0.005) - 0.005
        high = (sm + 0.005) / max(ort - 0.005, 1e-9) + 0.005
        assert low <= ratio <= high, (sm, ort, ratio)
    assert any(line.startswith("no_such_task") and "not benchmarked" in line
               for line in out.stdout.splitlines())
