"""The fast tier runs without TensorFlow: `pytest -m 'not tf'` in a fresh process passes and never imports it."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.tf  # not part of the fast tier itself: it runs the fast tier
def test_fast_tier_passes_without_importing_tensorflow():
    done = subprocess.run([sys.executable, "-m", "pytest", "-m", "not tf", "-q", "-p", "no:cacheprovider",
                           "-W", "ignore::DeprecationWarning"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    tail = (done.stdout + done.stderr)[-3000:]
    assert done.returncode == 0, tail
    assert "imported TensorFlow" not in tail and " passed" in tail
