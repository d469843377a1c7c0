"""edge bench on a tiny converted run: real artifacts through the real runtime in child processes, the three
reports, statuses per row, agreement with what convert validated, failing artifacts as rows, the
baseline gate, and bad input as one line. Figures are not asserted: speed belongs in `make bench`."""
import json
import shutil
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.benchmarks.config import BenchConfig
from edgekit.benchmarks.run import bench
from edgekit.cli import app
from edgekit.convert import ConvertConfig, convert

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow

runner = CliRunner()
FORMATS = "tflite-fp32,tflite-int8,onnx-fp32"
FAST = dict(runs=3, warmup=1, threads=(1,), batch=(1, 4), latency_images=4)


def cli(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


@pytest.fixture(scope="module")
def run_dir(tiny_run, tmp_path_factory) -> Path:
    run = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("bench") / "run"))
    # 12 validation images all from the test split, so bench can check convert's figures on them.
    report = convert(ConvertConfig(run, formats=FORMATS, val_samples=12, calib_samples=24))
    assert report.all_passed, [e.get("mismatches") or e.get("error") for e in report.entries]
    return run


@pytest.fixture(scope="module")
def result(run_dir):
    return bench(BenchConfig(run_dir, **FAST))


def test_report_rows_statuses_and_figures(result, run_dir):
    report = result.report
    assert result.exit_code == 0 and result.out_dir == run_dir / "bench"
    names = [r["name"] for r in report["rows"]]
    assert names == ["keras", "tflite-fp32", "tflite-int8", "onnx-fp32"]
    assert {r["symbol"] for r in report["rows"]} == {"✅"}
    assert report["test_set"]["images"] == 18 and report["schema_version"] == 1
    rows = {r["name"]: r for r in report["rows"]}
    keras = rows["keras"]["accuracy"]
    for name in FORMATS.split(","):
        row = rows[name]
        acc = row["accuracy"]
        # The same images through the same runtime: exactly convert's accuracy on its validation images.
        assert acc["convert_check"]["equal"] and acc["convert_check"]["images"] == 12
        assert acc["images"] == 18 and sum(map(sum, acc["confusion_matrix"])) == 18
        if name.endswith("fp32"):
            assert acc["agreement"] == 1.0 and acc["top1"] == keras["top1"]
        cold = row["cold"]
        assert 0 < cold["load_s"] < cold["cold_start_s"] and cold["interpreter_s"] > 0
        settings = [(r["threads"], r["batch"]) for r in row["latency"]]
        assert settings == [(1, 1), (1, 4)] and row["headline"] == {"threads": 1, "batch": 1}
        for r in row["latency"]:
            for kind in ("bare", "run", "e2e"):
                s = r[kind]
                assert s["n"] >= 3 and s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
                assert len(s["samples_ms"]) == s["n"]
            assert r["throughput_ips"] > 0 and r["gmacs_per_s"] > 0
        assert row["memory"]["peak_rss_mb"] >= row["memory"]["peak_rss_after_load_mb"] > 0
    # MACs are counted from each file's own graph: the TFLite and ONNX float models agree, the int8 one too.
    assert rows["tflite-fp32"]["macs"] == rows["onnx-fp32"]["macs"] == rows["tflite-int8"]["macs"] > 1_000_000
    device = report["devices"][0]
    assert device["id"] == "local" and device["fingerprint"]["architecture"] and device["fingerprint"]["python"]


def _width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in "WF" else 1 for ch in text)


def test_three_reports_written_and_markdown_tables_line_up(result):
    out = result.out_dir
    assert {p.name for p in out.iterdir()} == {"report.json", "report.md", "report.html"}
    assert json.loads((out / "report.json").read_text()) == json.loads(json.dumps(result.report))
    md = (out / "report.md").read_text()
    assert "tflite-int8" in md and "## Latency, every setting" in md
    blocks, block = [], []
    for line in md.splitlines() + [""]:
        if line.startswith("|"):
            block.append(line)
        elif block:
            blocks.append(block)
            block = []
    assert len(blocks) >= 4
    for block in blocks:
        assert len({_width(line) for line in block}) == 1, block
    assert (out / "report.html").read_text().count("data:image/png;base64,") >= 2


# The schemas, pinned: a key added, dropped or renamed here is a schema change. Bump SCHEMA_VERSION (and
# the readers' checks) in benchmarks/report/schema.py or convert/manifest.py, and change these lists with it.
REPORT_KEYS = ["command", "comparison", "created", "devices", "export_dir", "labels", "recommendation", "rows",
               "run_dir", "schema_version", "settings", "test_set"]
ROW_KEYS = ["accuracy", "cold", "convert", "device", "engine", "file", "headline", "input", "kind", "latency", "layers",
            "macs", "memory", "name", "reason", "size_bytes", "status", "summary", "symbol"]
ACCURACY_KEYS = ["agreement", "confusion_matrix", "convert_check", "images", "macro_f1", "per_class", "seconds",
                 "top1", "top5"]   # + "labelled" (False) for images without labels
DEVICE_KEYS = ["fingerprint", "health_after", "health_before", "host", "id", "images", "seconds"]
MANIFEST_KEYS = ["artifacts", "calibration", "created", "platform", "schema_version", "settings", "source", "validation"]
ENTRY_KEYS = ["convert_seconds", "embedded_metadata", "engine", "file", "format", "inputs", "mismatches", "ops",
              "options", "outputs", "parity", "sha256", "size_bytes", "status", "summary", "symbol", "tolerance",
              "tools", "validation_engine"]
# a failed export; inspection failed; notes; ONNX; int8 TFLite's per-layer errors; tflite-int8-mixed's search
ENTRY_SOMETIMES = ["error", "inspect_error", "notes", "opset", "layer_errors", "mixed", "activation_ranges"]


def test_report_and_manifest_schemas_are_pinned(result, run_dir):
    from edgekit.benchmarks.report import schema
    from edgekit.convert import manifest as mf
    report = json.loads((result.out_dir / "report.json").read_text())
    assert report["schema_version"] == schema.SCHEMA_VERSION == 1
    assert sorted(report) == REPORT_KEYS == sorted(schema.Report.__annotations__)
    assert sorted(set().union(*report["rows"])) == ROW_KEYS == sorted(schema.Row.__annotations__)
    assert sorted(set().union(*(r["accuracy"] for r in report["rows"]))) == ACCURACY_KEYS
    assert sorted(schema.Accuracy.__annotations__) == sorted(ACCURACY_KEYS + ["labelled"])
    assert sorted(report["devices"][0]) == DEVICE_KEYS == sorted(schema.Device.__annotations__)
    manifest = json.loads((run_dir / "export" / "manifest.json").read_text())
    assert manifest["schema_version"] == mf.SCHEMA_VERSION == 1
    assert sorted(manifest) == MANIFEST_KEYS == sorted(mf.Manifest.__annotations__)
    for entry in manifest["artifacts"]:
        assert set(ENTRY_KEYS) <= set(entry) <= set(ENTRY_KEYS + ENTRY_SOMETIMES), entry["format"]
    assert sorted(ENTRY_KEYS + ENTRY_SOMETIMES) == sorted(mf.ArtifactEntry.__annotations__)


def test_failing_artifact_is_a_row_not_the_end(run_dir, tmp_path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    onnx = run / "export" / "model_onnx-fp32.onnx"
    onnx.write_bytes(onnx.read_bytes()[:200])  # truncated after convert validated it
    res = bench(BenchConfig(run, formats="onnx-fp32,tflite-int8", out=tmp_path / "out", **FAST))
    rows = {r["name"]: r for r in res.report["rows"]}
    assert rows["onnx-fp32"]["symbol"] == "❌" and "not a loadable ONNX model" in rows["onnx-fp32"]["reason"]
    assert rows["tflite-int8"]["symbol"] == "✅" and rows["tflite-int8"]["latency"]
    assert res.exit_code == 3
    assert (tmp_path / "out" / "report.html").is_file()


def test_baseline_gate(result, run_dir, tmp_path):
    old = json.loads((result.out_dir / "report.json").read_text())
    for row in old["rows"]:
        if row["name"] == "tflite-int8":
            # the baseline was 1000x faster (its top-1 is at 100 % on these few images already: a better one
            # would be refused as impossible)
            for entry in row["latency"]:
                entry["run"]["p50_ms"] /= 1000
    baseline = tmp_path / "old.json"
    baseline.write_text(json.dumps(old))
    code, out = cli("bench", run_dir, "--formats", "tflite-int8", "--runs", 3, "--warmup", 1, "--threads", 1,
                    "--out", tmp_path / "new", "--baseline", baseline)
    assert code == 4, out
    assert "regression" in out and "tflite-int8 p50_ms@1x1" in out
    cmp = json.loads((tmp_path / "new" / "report.json").read_text())["comparison"]
    assert not cmp["passed"] and [c["ok"] for c in cmp["checks"]
                                  if c["metric"].startswith("p50_ms") and c["name"] == "tflite-int8"] == [False]
    code, out = cli("bench", run_dir, "--formats", "tflite-int8", "--runs", 3, "--warmup", 1, "--threads", 1,
                    "--out", tmp_path / "again", "--baseline", result.out_dir / "report.json", "--max-latency-growth", 1e6)
    assert code == 0, out
    assert "no regression" in out


@pytest.mark.parametrize("args, message", [
    (["--formats", "tflite-int9"], "Did you mean 'tflite-int8'"),
    (["--threads", "1,two"], "--threads takes comma-separated whole numbers"),
    (["--runs", "0"], "--runs must be at least 1"),
    (["--baseline", "/nonexistent/report.json"], "baseline /nonexistent/report.json does not exist"),
])
def test_bad_options_are_one_line(run_dir, args, message):
    code, out = cli("bench", run_dir, *args)
    assert code == 2 and message in out and "Traceback" not in out, out


def test_run_without_export_is_refused(tiny_run):
    code, out = cli("bench", tiny_run)
    assert code == 2 and "convert it first" in out and "Traceback" not in out


def test_runner_kills_a_hung_artifact_and_refuses_a_bad_plan(run_dir, tmp_path):
    from edgekit.benchmarks.plan import write_plan
    import numpy as np
    export = run_dir / "export"
    x = np.zeros((2, 32, 32, 3), np.uint8)
    plan = write_plan(tmp_path / "plan", [("tflite-fp32", export / "model_tflite-fp32.tflite")], export, x,
                      np.array([0, 1]), BenchConfig(run_dir, runs=1000000, min_time=60, max_time=0), [0])
    out = tmp_path / "r.json"
    proc = subprocess.run([sys.executable, "-m", "edgekit_runtime.cli", "bench", str(plan), "--out", str(out),
                           "--timeout", "3"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    row = json.loads(out.read_text())["artifacts"][0]
    assert row["status"] == "error" and "did not finish within 3 s" in row["error"]
    (tmp_path / "plan" / "artifacts" / "model_tflite-fp32.tflite").unlink()
    proc = subprocess.run([sys.executable, "-m", "edgekit_runtime.cli", "bench", str(plan), "--out", str(out)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1 and "artifact file(s) not found" in proc.stderr


def test_bench_on_a_device_over_ssh(run_dir, sshd, tmp_path):
    """`edge bench --host` through a real sshd: the device's rows and fingerprint join the report."""
    out = tmp_path / "remote"
    code, text = cli("bench", run_dir, "--formats", "tflite-int8,onnx-fp32", "--runs", 3, "--warmup", 1,
                     "--threads", 1, "--no-local", "--out", out, "--host", f"{sshd.user}@127.0.0.1",
                     "--port", sshd.port, "--identity", sshd.user_key, "--known-hosts", sshd.known_hosts,
                     "--device-python", sys.executable, "--device-samples", 9)
    assert code == 0, text
    report = json.loads((out / "report.json").read_text())
    device = f"{sshd.user}@127.0.0.1"
    assert [d["id"] for d in report["devices"]] == [device]
    rows = [r for r in report["rows"] if r["kind"] == "artifact"]
    assert [(r["name"], r["device"], r["symbol"]) for r in rows] == [("tflite-int8", device, "✅"),
                                                                      ("onnx-fp32", device, "✅")]
    assert all(r["accuracy"]["images"] == 9 and r["latency"] for r in rows)


def test_unreachable_device_still_writes_local_results(run_dir, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once the socket is closed
    out = tmp_path / "out"
    code, text = cli("bench", run_dir, "--formats", "tflite-int8", "--runs", 3, "--warmup", 1, "--threads", 1,
                     "--out", out, "--host", "nobody@127.0.0.1", "--port", port)
    assert code == 2, text
    assert "refused" in text and "Traceback" not in text
    report = json.loads((out / "report.json").read_text())
    assert [(r["name"], r["device"], r["status"]) for r in report["rows"]] == [
        ("keras", "local", "passed"), ("tflite-int8", "local", "passed"), ("tflite-int8", "nobody@127.0.0.1", "failed")]
    assert "refused" in report["rows"][2]["reason"] and [d["id"] for d in report["devices"]] == ["local"]


@pytest.fixture(scope="module")
def second_sshd(sshd, tmp_path_factory):
    """Another real sshd on another port that lets the first one's user key in."""
    from sshd_server import start_sshd
    gen = start_sshd(tmp_path_factory)
    other = next(gen)
    with open(other.root / "authorized_keys", "a") as f:
        f.write(sshd.user_key.with_suffix(".pub").read_text())
    yield other
    for _ in gen:
        pass


def test_a_fleet_is_benchmarked_at_once_and_a_dead_device_is_a_row(run_dir, sshd, second_sshd, tmp_path):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    known = tmp_path / "known_hosts"
    known.write_text(sshd.known_hosts.read_text() + second_sshd.known_hosts.read_text())
    hosts = tmp_path / "hosts"
    hosts.write_text(f"# the lab\n{sshd.user}@127.0.0.1:{sshd.port} pi4\n{sshd.user}@127.0.0.1:{second_sshd.port} pi5"
                     f"  # the new one\nnobody@127.0.0.1:{dead} jetson\n")
    out = tmp_path / "fleet"
    code, text = cli("bench", run_dir, "--formats", "tflite-int8", "--runs", 3, "--warmup", 1, "--threads", 1,
                     "--out", out, "--hosts", hosts, "--identity", sshd.user_key, "--known-hosts", known,
                     "--device-python", sys.executable, "--device-samples", 1000)
    assert code == 2 and "Traceback" not in text, text
    report = json.loads((out / "report.json").read_text())
    assert [d["id"] for d in report["devices"] if d["id"] != "local"] == ["pi4", "pi5"]
    rows = [(r["name"], r["device"], r["status"]) for r in report["rows"]]
    assert rows[0] == ("keras", "local", "passed") and rows[-3:] == [
        ("tflite-int8", "pi4", "passed"), ("tflite-int8", "pi5", "passed"), ("tflite-int8", "jetson", "failed")]
    assert "refused" in report["rows"][-1]["reason"]
    # every test image went to the devices: each answers exactly as the local run of the same artifact
    local = next(r for r in report["rows"] if r["name"] == "tflite-int8" and r["device"] == "local")
    for device in report["rows"][-3:-1]:
        assert device["accuracy"]["top1"] == local["accuracy"]["top1"]
        assert device["accuracy"]["images"] == local["accuracy"]["images"]
    assert {r["device"] for r in report["recommendation"]} == {"local", "pi4", "pi5"}
    html = (out / "report.html").read_text()
    assert all(name in html for name in ("pi4", "pi5", "jetson"))


@pytest.mark.parametrize("lines, message", [
    ("pi@host1 a\npi@host2 a\n", "two hosts are named 'a' (pi@host1 and pi@host2)"),
    ("pi@host1 a b\n", "line 1: 'pi@host1 a b' is not `user@host[:port] [name]`"),
    ("# nothing\n", "lists no hosts"),
    ("pi@-oProxyCommand=x\n", "line 1: 'pi@-oProxyCommand=x' is not a valid SSH destination"),
])
def test_bad_hosts_files_are_one_line(run_dir, tmp_path, lines, message):
    hosts = tmp_path / "hosts"
    hosts.write_text(lines)
    code, text = cli("bench", run_dir, "--hosts", hosts, "--out", tmp_path / "o")
    assert code == 2 and message in " ".join(text.split()) and "Traceback" not in text, text
    assert not (tmp_path / "o").exists()


def test_convert_check_is_exact_and_allows_one_image_only_for_enlarged_images(tmp_path):
    """Same pixels must give convert's accuracy exactly; images both sides enlarge in float may move one near-tie."""
    import numpy as np
    from edgekit.benchmarks.report.rows import Context, _check_against_convert
    y = np.array([0, 1, 2, 0])
    one_off = np.array([[0], [1], [0], [0]])   # 3 of 4 right here; convert recorded 4 of 4
    two_off = np.array([[0], [1], [0], [1]])   # 2 of 4
    entry = {"parity": {"accuracy": 1.0}}
    for resized, ranked, status, note in ((False, one_off, "outside_tolerance", False), (True, one_off, "passed", True),
                                          (True, two_off, "outside_tolerance", False)):
        ctx = Context(labels=["a", "b", "c"], y=y, keras_ranked=ranked, manifest={}, entries=[],
                      validated=np.arange(4), export=tmp_path, resized=resized)
        row = {"status": "passed", "accuracy": {}}
        _check_against_convert(ctx, row, ranked, np.arange(4), entry)
        assert row["status"] == status and row["accuracy"]["convert_check"]["equal"] is False
        assert ("note" in row["accuracy"]["convert_check"]) == note
