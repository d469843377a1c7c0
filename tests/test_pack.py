"""edge pack on a tiny converted and benchmarked run: a real bundle, unpacked and installed with pip alone into a
fresh venv from the wheels it carries, whose smoke test runs the real runtime; damaged bundles and bad input."""
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgekit.benchmarks.config import BenchConfig
from edgekit.benchmarks.run import bench
from edgekit.cli import app
from edgekit.convert import ConvertConfig, convert
from edgekit.deploy import bundle
from testdata import ARCH, PY, WHEELHOUSE, install, unpack

pytestmark = pytest.mark.tf  # trains, converts or loads models with TensorFlow



@pytest.fixture(scope="module")
def wheels():
    if not any(WHEELHOUSE.glob("numpy-*.whl")):
        pytest.fail(f"no wheels in {WHEELHOUSE}: run `make venv` (it downloads them), or set EDGE_TEST_WHEELHOUSE")
    return WHEELHOUSE


@pytest.fixture(scope="module")
def run(tiny_run, tmp_path_factory):
    run = Path(shutil.copytree(tiny_run, tmp_path_factory.mktemp("pack") / "run"))
    assert convert(ConvertConfig(run, formats="tflite-fp32,tflite-int8", val_samples=12, calib_samples=24)).all_passed
    bench(BenchConfig(run, runs=3, warmup=1, threads=(1,), batch=(1,), latency_images=4))
    return run


def edge(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_best_bundle_installs_offline_and_passes_its_smoke_test(run, wheels, tmp_path):
    from edgekit.benchmarks.select import Budget, select
    code, out = edge("pack", run, "--target", ARCH, "--python", PY, "--wheels", wheels, "--samples", 6)
    assert code == 0, out
    path = run / "pack" / f"run-{select([run], Budget()).best.artifact}-{ARCH}-py{PY}.tar.gz"
    assert path.is_file() and "packed" in out and f"{path.name[:-7]}/install.sh" in out
    root = unpack(path, tmp_path)
    manifest = json.loads((root / "pack.json").read_text())
    assert manifest["chosen_because"].startswith("edge select: the fastest that passed")
    assert set(manifest["files"]) == {p.relative_to(root).as_posix() for p in root.rglob("*")
                                      if p.is_file() and p.name != "pack.json"}
    assert any(w.startswith("edgekit_runtime-") for w in manifest["wheels"])
    assert len(manifest["samples"]) == 6 and manifest["engine"] == "litert"
    done = install(root)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "smoke test passed: 6 of 6" in done.stdout and "files verified" in done.stdout
    assert done.stderr == ("install.sh: warning: the bundle is not signed: its sha256 list catches damage, not "
                           "deliberate changes\n")
    # the venv holds what the bundle brought and nothing else: no TensorFlow, no edgekit
    freeze = subprocess.run([str(root / "venv/bin/python"), "-m", "pip", "list", "--format=freeze"],
                            capture_output=True, text=True).stdout.lower()
    assert "edgekit-runtime==" in freeze and "ai-edge-litert==" in freeze and "tensorflow" not in freeze
    sample = root / manifest["samples"][0]["file"]
    pred = subprocess.run([str(root / "venv/bin/edge-run"), "predict", str(root / "model"), str(sample)],
                          capture_output=True, text=True)
    assert pred.returncode == 0 and pred.stdout.startswith(f"{sample}: {manifest['samples'][0]['expected']} ")

    code, out = edge("pack", run, "--target", ARCH, "--python", PY, "--wheels", wheels)
    assert code == 2 and "exists; pass --force" in out
    assert edge("pack", run, "--target", ARCH, "--python", PY, "--wheels", wheels, "--force")[0] == 0


def test_damaged_or_foreign_bundle_is_refused_before_installing(run, wheels, tmp_path):
    out = tmp_path / "b.tar.gz"
    code, text = edge("pack", run, "--format", "tflite-fp32", "--target", ARCH, "--python", PY, "--wheels", wheels,
                      "--out", out, "--samples", 2)
    assert code == 0, text
    root = unpack(out, tmp_path / "x")
    manifest = json.loads((root / "pack.json").read_text())
    sample = root / manifest["samples"][0]["file"]
    sample.write_bytes(sample.read_bytes()[:-1] + b"\0")
    done = install(root)
    assert done.returncode == 2 and "refusing to install" in done.stderr and f"{manifest['samples'][0]['file']}: sha256 differs" in done.stderr
    assert not (root / "venv").exists()
    root = unpack(out, tmp_path / "y")
    manifest["target"]["arch"] = "aarch64" if ARCH != "aarch64" else "x86_64"
    (root / "pack.json").write_text(json.dumps(manifest))
    done = install(root)
    assert done.returncode == 2 and f"this bundle is for {manifest['target']['arch']}, this machine is {ARCH}" in done.stderr
    assert bundle.misfit({"target": {"arch": "aarch64", "python": "3.11"}}, "aarch64", "3.12").startswith(
        "this bundle's wheels are for Python 3.11, this Python is 3.12")


@pytest.mark.parametrize("args, message", [
    (["--engine", "tflite"], "engine tflite (tflite-runtime) has no wheel for {arch} / Python {py} in {wheels}; "
                             "engine litert has one: --engine litert."),
    (["--target", "armv7l"], "numpy, pillow and engine litert (ai-edge-litert) have no wheel for armv7l / Python "
                             "{py} in {wheels}; no other engine runs .tflite files there; piwheels.org builds"),
    (["--format", "onnx-fp32"], "no exported format 'onnx-fp32' in"),
    (["--engine", "onnx", "--format", "tflite-int8"], "engine 'onnx' cannot run .tflite files; use litert or tflite."),
    (["--target", "sparc"], "unknown target 'sparc'; choose one of aarch64, armv7l, x86_64."),
    (["--python", "three"], "--python takes a version such as 3.11, got 'three'."),
])
def test_bad_pack_options_are_one_line(run, wheels, tmp_path, args, message):
    base = ["pack", run, "--target", ARCH, "--python", PY, "--wheels", wheels, "--out", tmp_path / "z.tar.gz"]
    code, out = edge(*base, *args)
    assert code == 2 and message.format(arch=ARCH, py=PY, wheels=wheels) in " ".join(out.split()), out
    assert list(tmp_path.iterdir()) == []  # no bundle, no partial file of one


def test_best_needs_a_bench_report(tiny_run, wheels, tmp_path):
    run = Path(shutil.copytree(tiny_run, tmp_path / "run"))
    assert edge("pack", run, "--wheels", wheels)[1].count("has no readable manifest.json") == 1
    assert convert(ConvertConfig(run, formats="tflite-fp32", val_samples=6, calib_samples=6)).all_passed
    code, out = edge("pack", run, "--wheels", wheels)
    assert code == 2 and "--format best asks edge select:" in out and f"edge bench {run}" in " ".join(out.split())
