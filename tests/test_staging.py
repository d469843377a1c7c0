"""Staging directories a killed process left behind are cleared by the next run, and only those (no TensorFlow)."""
import json
import os
import subprocess
import sys

from edgekit.atomic import OWNER, clear_dead_staging, make_staging


def test_only_provably_dead_staging_is_cleared(tmp_path):
    prefix = ".export-staging-"
    code = f"from edgekit.atomic import make_staging; print(make_staging({str(tmp_path)!r}, {prefix!r}))"
    dead = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    (tmp_path / dead / "model.tflite").write_bytes(b"half")   # what a SIGKILL-ed convert leaves behind
    live = make_staging(tmp_path, prefix)
    unmarked = tmp_path / (prefix + "old")
    unmarked.mkdir()
    elsewhere = make_staging(tmp_path, prefix)
    owner = json.loads((elsewhere / OWNER).read_text())
    (elsewhere / OWNER).write_text(json.dumps({**owner, "host": "another-machine"}))
    reused = make_staging(tmp_path, prefix)  # this pid, but a start time of another process: the pid was reused
    owner = json.loads((reused / OWNER).read_text())
    (reused / OWNER).write_text(json.dumps({**owner, "start": "1"}))
    assert clear_dead_staging(tmp_path, prefix) == sorted([tmp_path / dead, reused])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, unmarked.name, elsewhere.name])
    assert clear_dead_staging(tmp_path / "missing", prefix) == [] and os.path.isdir(live)
