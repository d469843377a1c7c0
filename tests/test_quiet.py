"""`edge` commands keep TensorFlow's start-up noise off the terminal; --verbose and EDGE_DEBUG=1 bring it back."""
import os
import shutil
import subprocess
import sys

import pytest

from edgekit.quiet import NOISE


def _edge(args, tmp_path, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("EDGE_DEBUG", "TF_CPP_MIN_LOG_LEVEL")}
    return subprocess.run([sys.executable, "-m", "edgekit", *args], capture_output=True, text=True, timeout=300,
                          cwd=tmp_path, env={**environ, **env})


@pytest.mark.tf
def test_edge_commands_are_quiet_unless_verbose(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    quiet = _edge(["evaluate", str(run)], tmp_path)
    assert quiet.returncode == 0, quiet.stderr
    assert "test top-1" in quiet.stdout + quiet.stderr
    noisy = [line for line in (quiet.stdout + quiet.stderr).splitlines() if NOISE.search(line)]
    assert noisy == []
    loud = _edge(["--verbose", "evaluate", str(run)], tmp_path)
    assert loud.returncode == 0 and NOISE.search(loud.stderr)  # the noise is real, so the quiet run hid it
    debug = _edge(["evaluate", str(run)], tmp_path, EDGE_DEBUG="1")
    assert debug.returncode == 0 and NOISE.search(debug.stderr)


TF_PREFIXES = ("I0000", "W0000", "E0000", "WARNING: All log messages")


@pytest.mark.tf
def test_train_help_convert_and_bench_print_no_tensorflow_log_lines(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    steps = [["train", "--help"],
             ["convert", str(run), "--formats", "tflite-fp32,tflite-int8", "--calib-samples", "12", "--val-samples", "6"],
             ["bench", str(run), "--runs", "3", "--warmup", "1", "--threads", "1"]]
    results = []
    for args in steps:
        done = _edge(args, tmp_path)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-2000:])
        logged = [line for line in (done.stdout + done.stderr).splitlines() if line.lstrip().startswith(TF_PREFIXES)]
        assert logged == [], (args, logged)
        results.append(done.stdout)
    assert (run / "bench" / "report.json").is_file()
    # stdout holds each command's result alone, whatever the libraries print while it works
    assert results[1:] == [f"{run / 'export'}\n", f"{run / 'bench' / 'report.json'}\n"]


@pytest.mark.tf
def test_train_prints_its_run_directory_alone_on_stdout(tiny_folder, tmp_path):
    done = _edge(["train", "--data", str(tiny_folder), "--preset", "resnet8", "--epochs", "1", "--batch-size", "16",
                  "--out", str(tmp_path / "run")], tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout == f"{tmp_path / 'run'}\n"
    assert "test top-1" in done.stderr   # the story of the run stays on stderr


def test_quiet_import_replays_what_is_not_noise(tmp_path):
    code = ("import os, sys; from edgekit import quiet; quiet.install()\n"
            "class Noisy:\n"
            "    def exec_module(self, module):\n"
            "        os.write(2, b'I0000 x cpu_feature_guard.cc] y\\na real problem\\n')\n"
            "quiet._CapturingLoader(Noisy()).exec_module(None)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert out.stderr.strip() == "a real problem"
