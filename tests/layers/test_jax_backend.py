"""Re-run the layer and loss tests on the JAX backend, in a subprocess.

Keras fixes its backend at import, so the JAX run needs its own interpreter. Tests that need
TensorFlow itself carry the ``tf_only`` marker and are deselected there. The run compiles every
eager JAX op once (about 7 CPU-minutes for the whole library), so it is part of the full suite
(``slow``) rather than the quick loop, and it spreads over two processes with pytest-xdist.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.cost(520)
@pytest.mark.skipif(os.environ.get("KERAS_BACKEND") == "jax",
                    reason="this is the launcher; it does not re-launch itself under JAX")
def test_layers_and_losses_pass_on_jax_backend():
    pytest.importorskip("jax", reason="jax comes with the test extra: pip install -e .[test]")
    env = dict(os.environ, KERAS_BACKEND="jax", JAX_PLATFORMS="cpu")
    targets = [str(p) for p in sorted((ROOT / "tests" / "layers").glob("test_*.py"))
               if p.name != Path(__file__).name]
    targets += [str(p) for p in sorted((ROOT / "tests" / "losses").glob("test_*.py"))]
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-n", "2",
           "-m", "not tf_only and not slow", *targets]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=2400)
    tail = (result.stdout + result.stderr)[-6000:]
    assert result.returncode == 0, f"JAX backend run failed:\n{tail}"
