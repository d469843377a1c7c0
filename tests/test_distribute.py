"""`edge train --strategy`: two real worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy from their own
TF_CONFIG), a worker killed mid-run and resumed, a worker alone timing out, and mirrored on the CPU."""
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.cli import app

pytestmark = pytest.mark.tf

ROOT = Path(__file__).resolve().parents[1]
FINGERPRINT = re.compile(r"weights fingerprint ([0-9a-f]{12})")


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def start_workers(tmp_path, args, n=2, command=("-m", "edgekit", "train")):
    """n `edge train` processes, each with its own TF_CONFIG and its own temporary folder (to see what it left);
    `command(i)` (a function of the worker's index) replaces `-m edgekit train`."""
    addresses = [f"127.0.0.1:{p}" for p in free_ports(n)]
    procs = []
    for i in range(n):
        tmp = tmp_path / f"tmp{i}"
        tmp.mkdir(exist_ok=True)
        env = {**os.environ, "TMPDIR": str(tmp),
               "TF_CONFIG": json.dumps({"cluster": {"worker": addresses}, "task": {"type": "worker", "index": i}})}
        procs.append(subprocess.Popen([sys.executable, *(command(i) if callable(command) else command), *map(str, args)], env=env, cwd=ROOT,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    return procs


def finish(procs, timeout=300):
    return [p.communicate(timeout=timeout)[0] for p in procs]


def train_args(data, out, epochs, batch=8):
    return ["--data", data, "--out", out, "--preset", "resnet8", "--epochs", epochs, "--batch-size", batch,
            "--strategy", "multiworker", "--set", "early_stopping_patience=0", "--set", "ema=0.9"]


def test_a_killed_worker_stops_the_run_and_resume_finishes_one_model(tiny_folder, tmp_path):
    out = tmp_path / "run"
    procs = start_workers(tmp_path, train_args(tiny_folder, out, 8, batch=4))
    state = out / "checkpoints" / "train" / "state.json"
    deadline = time.time() + 240
    while time.time() < deadline and not state.exists() and procs[0].poll() is None:
        time.sleep(0.2)
    assert state.exists(), finish(procs)
    procs[1].send_signal(signal.SIGKILL)                  # a worker dies mid-epoch
    chief = procs[0].communicate(timeout=120)[0]
    procs[1].communicate()
    assert procs[0].returncode == 75, chief
    assert "lost contact with another worker" in chief and "--resume" in chief and "Traceback" not in chief
    done = json.loads(state.read_text())["epochs_done"]
    assert 1 <= done < 8 and not (out / "model.keras").exists()

    for tmp in tmp_path.glob("tmp*"):
        shutil.rmtree(tmp)
    procs = start_workers(tmp_path, ["--out", out, "--resume"])
    logs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], logs
    assert f"resuming phase 'train' after epoch {done}" in logs[1]   # the other worker starts from the chief's
    check_one_model(out, logs, tmp_path)


def check_one_model(out, logs, tmp_path):
    """Both workers end with the same weights; only the chief wrote the run, which converts and benchmarks."""
    prints = [FINGERPRINT.findall(log) for log in logs]
    assert prints[0] and prints[0] == prints[1], logs
    assert "global batch 8 = 4 per replica x 2" in logs[0] and "learning rate scaled linearly x2" in logs[0]
    assert "the chief wrote the run directory" in logs[1]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strategy"] == {"kind": "multiworker", "replicas": 2, "workers": 2, "per_replica_batch": 4,
                                   "global_batch": 8, "weights_fingerprint": prints[0][0]}
    # 42 training images in global batches of 8: 5 steps an epoch, the partial batch dropped
    assert [h["epoch"] for h in json.loads((out / "history.json").read_text())["train"]] == list(range(1, 9))
    assert list((tmp_path / "tmp1").iterdir()) == []      # the other worker's temporary run directory is gone

    runner = CliRunner()
    result = runner.invoke(app, ["convert", str(out), "--formats", "tflite-fp32,onnx-fp32"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["bench", str(out), "--formats", "tflite-fp32,onnx-fp32", "--runs", "3",
                                 "--warmup", "1", "--threads", "1", "--batch", "1"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "bench" / "report.json").read_text())
    accuracy = {r["name"]: r["accuracy"]["top1"] for r in report["rows"] if r.get("accuracy")}
    assert accuracy["tflite-fp32"] == accuracy["onnx-fp32"] == pytest.approx(metrics["test"]["top1"])


def test_each_worker_reads_only_its_share_of_every_global_batch(tiny_folder, tmp_path, monkeypatch):
    """A test double over the training reader (tests/fixtures/record_reads.py) logs the cache rows each worker
    reads: every epoch, the two workers read disjoint halves of the same global batches, nothing twice. The
    same run from in-memory arrays (the path before the cache was mapped) ends with the same weights."""
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))   # one cache both workers share
    epochs, batch, steps = 3, 4, 5                                   # 42 images: 5 global batches of 8 an epoch
    recorder = str(ROOT / "tests" / "fixtures" / "record_reads.py")
    fingerprints = {}
    for mode in ("mapped", "memory"):
        def command(i, mode=mode):
            return [recorder, str(tmp_path / f"{mode}{i}.log"), mode, "train"]
        out = tmp_path / mode
        logs = finish(start_workers(tmp_path, train_args(tiny_folder, out, epochs, batch=batch), command=command))
        assert "Traceback" not in "".join(logs), logs
        prints = [FINGERPRINT.findall(log) for log in logs]
        assert prints[0] and prints[0] == prints[1], logs
        fingerprints[mode] = prints[0][0]
        reads = [[list(map(int, line.split())) for line in (tmp_path / f"{mode}{i}.log").read_text().splitlines()]
                 for i in range(2)]
        for worker in reads:
            # the pipeline may read ahead into an epoch that never runs; the trained steps come first
            assert len(worker) >= epochs * steps and all(len(b) == batch for b in worker[:epochs * steps])
        for e in range(epochs):
            mine, theirs = (sum(w[e * steps:(e + 1) * steps], []) for w in reads)
            assert len(set(mine)) == len(mine) == len(theirs) == len(set(theirs)) == steps * batch
            assert not set(mine) & set(theirs)                      # each read only its own share
        if mode == "mapped":
            assert len({r for w in reads for b in w for r in b}) <= 42        # the training split alone
    assert fingerprints["mapped"] == fingerprints["memory"]


def test_a_worker_alone_gives_up_with_the_addresses_it_tried(tiny_folder, tmp_path):
    addresses = [f"127.0.0.1:{p}" for p in free_ports(2)]
    env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": {"worker": addresses},
                                                  "task": {"type": "worker", "index": 0}})}
    out = tmp_path / "run"
    started = time.time()
    proc = subprocess.run([sys.executable, "-m", "edgekit", "train", "--data", str(tiny_folder), "--out", str(out),
                           "--strategy", "multiworker", "--set", "worker_timeout=5"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and time.time() - started < 60
    assert f"could not reach the other workers within 5 s; tried {addresses[1]}" in proc.stderr
    assert not out.exists()


def test_multiworker_without_tf_config_is_one_line(tiny_folder, tmp_path, monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    result = CliRunner().invoke(app, ["train", "--data", str(tiny_folder), "--out", str(tmp_path / "run"),
                                      "--strategy", "multiworker"])
    assert result.exit_code == 2 and "needs the TF_CONFIG environment variable" in result.output


def test_mirrored_on_the_cpu_writes_what_a_plain_run_writes(tiny_folder, tmp_path):
    def run(out, *extra):
        result = CliRunner().invoke(app, ["train", "--data", str(tiny_folder), "--out", str(out), "--preset", "resnet8",
                                          "--epochs", "2", "--batch-size", "8", *extra])
        assert result.exit_code == 0, result.output
        return json.loads((out / "metrics.json").read_text())

    plain, mirrored = run(tmp_path / "plain", "--strategy", "one"), run(tmp_path / "mirrored", "--strategy", "mirrored")
    assert set(plain) == set(mirrored) and set(plain["test"]) == set(mirrored["test"])
    assert mirrored["strategy"]["kind"] == "mirrored" and plain["strategy"]["kind"] == "one"
    assert mirrored["strategy"]["replicas"] == 1 and 0 <= mirrored["test"]["top1"] <= 1


@pytest.mark.parametrize("phases, cache", [
    (["--fine-tune-epochs", "1"], "feature cache"),
    (["--fine-tune-from", "block_12_add", "--set", "cache_views=2"], "activation cache"),
], ids=["features+fine-tune", "activations"])
def test_backbone_caches_are_built_by_the_chief_and_read_by_the_other(tiny_folder, tmp_path, monkeypatch, phases,
                                                                     cache):
    out = tmp_path / "run"
    monkeypatch.setenv("EDGE_CACHE_DIR", str(tmp_path / "cache"))   # a cache both workers share, empty at first
    procs = start_workers(tmp_path, ["--data", tiny_folder, "--out", out, "--preset", "mobilenet_v2",
                                     "--weights", "none", "--input-size", 32, "--set", "alpha=0.35",
                                     "--epochs", 2, "--batch-size", 8, "--strategy", "multiworker",
                                     "--set", "early_stopping_patience=0", *phases])
    logs = finish(procs)
    assert [p.returncode for p in procs] == [0, 0], logs
    assert f"{cache} miss" in logs[0] and f"{cache} hit" in logs[1]
    prints = [FINGERPRINT.findall(log) for log in logs]
    assert prints[0] and prints[0] == prints[1]
    assert (out / "model.keras").is_file()
