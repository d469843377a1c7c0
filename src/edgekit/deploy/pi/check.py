"""`make pi-check`: prove edgekit-runtime on a Raspberry Pi OS userland (Debian bookworm or trixie, arm64) under emulation.

    edge pi-check --export DIR --images 200 --out DIR [--rootfs DIR]

Downloads aarch64 wheels on this machine as an offline Pi user does, installs the runtime with pip
alone into one venv per engine extra inside a cached arm64 chroot, runs `edge-run predict` there and
on the host over the same CIFAR-10 test images, and compares the probabilities. Exit code 0 when
every comparison of a required engine passes, 1 when one fails, 2 for a missing prerequisite or bad
input. qemu emulates the CPU, so no timing of inference is measured or reported here.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from edgekit.atomic import write_json, write_text, write_with
from edgekit.deploy.runtime_wheel import runtime_wheel
from edgekit.deploy.staging import temp_staging
from edgekit.convert.formats import parse_names
from edgekit.errors import EdgeError
from edgekit.layout import REPORT_JSON, REPORT_MD
from edgekit.resources import constraints_file
from edgekit_runtime.artifacts import LABELS_FILE, read_labels

from . import rootfs as rf
from .report import ENGINE_PACKAGE, exactness, render_markdown, render_table
from .userland import IMAGE_EXTS, WORKDIR, guarded, prepared_rootfs, run, tail, target_info

# the formats pi-check runs on the emulated Pi (and what it takes by default): the ones its engines run there
PI_FORMATS = ("tflite-int8", "tflite-fp32", "onnx-fp32")
FLOAT_TOLERANCE = 1e-5                           # float kernels differ in summation order between x86 and ARM


@dataclass(frozen=True)
class EngineSpec:
    extra: str                 # edgekit-runtime[extra]; also the engine edge-run reports
    formats: Tuple[str, ...]   # the artifacts it runs
    required: bool             # False: problems are reported, the check still passes


ENGINES = (EngineSpec("litert", ("tflite-int8", "tflite-fp32"), True),
           EngineSpec("onnx", ("onnx-fp32",), True),
           EngineSpec("tflite", ("tflite-int8", "tflite-fp32"), False))


# ------------------------------------------------------------------ pure parts
def select_images(names_by_class: Dict[str, Sequence[str]], n: int, seed: int) -> List[Tuple[str, str]]:
    """n (class, name) pairs balanced across classes (the first n % C classes get one more), seeded."""
    classes = sorted(c for c in names_by_class if names_by_class[c])
    if not classes:
        raise rf.PiCheckError("no test images found")
    rng = random.Random(seed)
    picked = []
    for i, cls in enumerate(classes):
        quota = n // len(classes) + (1 if i < n % len(classes) else 0)
        names = sorted(names_by_class[cls])
        if quota > len(names):
            raise rf.PiCheckError(f"class {cls} has only {len(names)} test images, {quota} wanted")
        picked += [(cls, name) for name in sorted(rng.sample(names, quota))]
    return picked


def parse_predictions(text: str, num_classes: int) -> Tuple[List[str], np.ndarray, str]:
    """edge-run predict --json --top-k K output -> (images, float32 (N, K) probabilities, engine)."""
    doc = json.loads(text)
    probs = np.full((len(doc["predictions"]), num_classes), np.nan, np.float32)
    for row, pred in zip(probs, doc["predictions"]):
        for item in pred["top_k"]:
            row[item["index"]] = item["probability"]   # float32 -> JSON double -> float32 is exact
    if np.isnan(probs).any():
        raise rf.PiCheckError(f"edge-run returned fewer than {num_classes} probabilities per image")
    return [p["image"] for p in doc["predictions"]], probs, doc["engine"]


def tolerance_for(entry: dict) -> Tuple[float, str]:
    """Max |Δp| allowed across architectures: one output quantization step for a quantized output, else 1e-5."""
    quant = ((entry.get("outputs") or [{}])[0] or {}).get("quantization") or {}
    scale = quant.get("scale")
    if scale:
        step = float(scale[0] if isinstance(scale, list) else scale)
        return step, f"one output step ({step:.6g})"
    return FLOAT_TOLERANCE, f"{FLOAT_TOLERANCE:g} (float)"


def compare(reference: np.ndarray, device: np.ndarray, tol: float, truth: Optional[Sequence[int]] = None) -> dict:
    """Top-1 must agree on every image and max |Δp| <= tol."""
    if reference.shape != device.shape:
        return {"passed": False, "error": f"shapes differ: {reference.shape} vs {device.shape}"}
    top_ref, top_dev = reference.argmax(axis=1), device.argmax(axis=1)   # ties: lowest index, as edge-run
    diff = np.abs(reference.astype(np.float64) - device.astype(np.float64))
    agree = top_ref == top_dev
    result = {"images": int(len(agree)), "top1_agree": int(agree.sum()), "top1_agreement": float(agree.mean()),
              "disagreements": [int(i) for i in np.flatnonzero(~agree)], "max_abs_diff": float(diff.max()),
              "mean_abs_diff": float(diff.mean()), "tolerance": tol,
              "bit_exact": bool(np.array_equal(reference, device))}
    if truth is not None:
        truth = np.asarray(truth)
        result["accuracy_host"] = float((top_ref == truth).mean())
        result["accuracy_aarch64"] = float((top_dev == truth).mean())
    result["passed"] = bool(agree.all()) and result["max_abs_diff"] <= tol
    return result


def overall_passed(engines: Dict[str, dict]) -> bool:
    """Every required engine installed, ran every artifact and passed every comparison."""
    for name, eng in engines.items():
        if not eng["required"]:
            continue
        if not eng.get("installed") or not eng["artifacts"]:
            return False
        if not all(a.get("comparison", {}).get("passed") for a in eng["artifacts"].values()):
            return False
    return True


# ----------------------------------------------------------- data and commands
def read_test_images(tar_path: Path) -> Dict[str, Dict[str, bytes]]:
    """{class: {file name: bytes}} of the test/<class>/<file> members, in one pass over the archive."""
    out: Dict[str, Dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            parts = Path(member.name).parts
            if member.isfile() and len(parts) >= 3 and parts[-3] == "test" and parts[-1].lower().endswith(IMAGE_EXTS):
                out.setdefault(parts[-2], {})[parts[-1]] = tar.extractfile(member).read()
    return out


def artifact_entries(export: Path, formats: Sequence[str]) -> Dict[str, dict]:
    if not export.is_dir():
        raise rf.PiCheckError(f"{export}: no such export directory (make one with edge convert)")
    from edgekit.convert.manifest import read_manifest
    try:
        manifest = read_manifest(export)
    except EdgeError as exc:
        raise rf.PiCheckError(str(exc)) from None
    entries = {a.get("format"): a for a in manifest.get("artifacts", [])}
    missing = [f for f in formats if f not in entries or not (export / entries[f].get("file", "")).is_file()]
    if missing:
        raise rf.PiCheckError(f"{export} has no {', '.join(missing)} artifact: edge convert --formats {','.join(formats)}")
    return {f: entries[f] for f in formats}


def build_wheels(dest: Path, log, release: rf.platforms.OsRelease = rf.BOOKWORM) -> dict:
    """The offline Pi user's downloads, on this machine: aarch64 wheels for the release's CPython (cp311 on
    bookworm, cp313 on trixie) plus the edgekit-runtime wheel."""
    pip, plats, info = [sys.executable, "-m", "pip"], rf.platform_args(rf.manylinux_platforms(release.glibc)), {}
    res = run(rf.download_cmd(pip, str(dest), rf.MAIN_PACKAGES, str(constraints_file()), plats, release.python), log)
    if res.returncode != 0:
        raise rf.PiCheckError(f"pip download of the aarch64 wheels failed: {tail(res)}")
    res = run(rf.download_cmd(pip, str(dest), rf.TFLITE_PACKAGES, None, plats, release.python), log)
    info["tflite_download"] = "ok" if res.returncode == 0 else tail(res)
    try:
        runtime_wheel(dest)
    except EdgeError as exc:
        raise rf.PiCheckError(str(exc)) from None
    info["wheels"] = sorted(p.name for p in dest.glob("*.whl"))
    return info


def installed_versions(python: Sequence[str], env=None) -> Dict[str, str]:
    """{distribution: version} of an environment's python (a host venv, or ["chroot", root, venv python])."""
    code = ("import importlib.metadata as m, json; print(json.dumps({d.metadata['Name']: d.version "
            "for d in m.distributions() if d.metadata['Name'] not in ('pip', 'setuptools')}))")
    res = rf.run_group([*python, "-c", code], capture_output=True, text=True, env=env)
    return dict(sorted(json.loads(res.stdout).items(), key=lambda kv: kv[0].lower())) if res.returncode == 0 else {}


def host_runners(engines: Sequence[EngineSpec], wheels: Path, tmp: Path, log) -> Dict[str, Path]:
    """The host edge-run of each engine: this venv's (LiteRT, ONNX Runtime); tflite-runtime in a throwaway venv,
    so that it is compared with itself across architectures (falls back to LiteRT if it cannot be installed)."""
    own = Path(sys.executable).with_name("edge-run")
    runners = {e.extra: own for e in engines}
    if "tflite" in runners:
        venv, wheel = tmp / "venv-tflite", next(wheels.glob("edgekit_runtime-*.whl"))
        pins = [line.strip() for line in constraints_file().read_text().splitlines()
                if line.lower().startswith("pillow==")]   # the same JPEG decoder as on the Pi
        res = run([sys.executable, "-m", "venv", str(venv)], log)
        if res.returncode == 0:
            res = run([str(venv / "bin/pip"), "install", "--quiet", f"{wheel}[tflite]", *pins], log)
        if res.returncode == 0:
            runners["tflite"] = venv / "bin/edge-run"
        else:
            log(f"  host tflite-runtime did not install ({tail(res)}): tflite is compared with the host's LiteRT")
    return runners


# --------------------------------------------------------------------- the run
def check(args, log) -> dict:
    start = time.monotonic()
    export, data = Path(args.export).resolve(), Path(args.data).resolve()
    engines = [e for e in ENGINES if e.extra in args.engines and set(e.formats) & set(args.formats)]
    if not engines:
        raise rf.PiCheckError(f"no engine among {', '.join(args.engines)} runs {', '.join(args.formats)}")
    formats = list(dict.fromkeys(f for e in engines for f in e.formats if f in args.formats))
    entries = artifact_entries(export, formats)
    labels = read_labels(export / LABELS_FILE)
    if not data.is_file():
        raise rf.PiCheckError(f"{data}: no CIFAR-10 archive (pass --data or set EDGE_CIFAR10)")
    problem = rf.missing_prerequisite(os.geteuid())
    if problem:
        raise rf.PiCheckError(problem)
    rootfs = Path(args.rootfs).absolute()
    with contextlib.ExitStack() as stack:
        stamp, work = prepared_rootfs(stack, rootfs, log, args.mirror, args.rebuild, args.keep, args.release)
        report = _run(args, log, stack, rootfs, work, export, data, engines, formats, entries, labels)
    report["target"]["rootfs_reused"] = stamp["reused"]
    report["wall_clock_s"] = {"rootfs_build": stamp.get("build_seconds"), "this_check": round(time.monotonic() - start, 1),
                              "note": "emulated (qemu) wall-clock of whole steps: not inference latency"}
    return report


def _run(args, log, stack, rootfs: Path, work: Path, export: Path, data: Path, engines: Sequence[EngineSpec],
         formats: List[str], entries: Dict[str, dict], labels: List[str]) -> dict:
    for sub in ("wheels", "images"):
        (work / sub).mkdir(parents=True)
    shutil.copytree(export, work / "export")
    wheels = build_wheels(work / "wheels", log, args.release)
    by_class = read_test_images(data)
    picked = select_images(by_class, args.images, args.seed)
    names = []
    for cls, name in picked:
        names.append(f"{cls}_{name}")
        (work / "images" / names[-1]).write_bytes(by_class[cls][name])
    truth = [labels.index(c) for c, _ in picked] if all(c in labels for c, _ in picked) else None
    log(f"{len(picked)} CIFAR-10 test images, {len(by_class)} classes, seed {args.seed}")

    host_dir = stack.enter_context(temp_staging("pi-check-host-"))
    runners = host_runners(engines, work / "wheels", host_dir, log)
    host: Dict[Tuple[Path, str], Tuple[np.ndarray, str]] = {}
    for eng in engines:
        for fmt in [f for f in eng.formats if f in formats and (runners[eng.extra], f) not in host]:
            res = run(rf.predict_cmd(str(runners[eng.extra]), str(work / "export"), fmt,
                                     [str(work / "images" / n) for n in names], len(labels)), log)
            if res.returncode != 0:
                raise rf.PiCheckError(f"host edge-run failed on {fmt}: {tail(res)}")
            _, probs, engine = parse_predictions(res.stdout, len(labels))
            host[runners[eng.extra], fmt] = probs, engine
    host_versions = {str(r): installed_versions([str(r.with_name("python"))]) for r in set(runners.values())}

    env = rf.chroot_env(args.qemu_cpu)
    results: Dict[str, dict] = {}
    if not rf.binfmt_fixes_binary():
        shutil.copy2(shutil.which("qemu-aarch64-static"), rootfs / "usr/bin/qemu-aarch64-static")
    with rf.chroot_mounts(rootfs, args.qemu_cpu):
        target = target_info(rootfs, env)
        for eng in engines:
            venv = f"{WORKDIR}/venv-{eng.extra}"
            r = results[eng.extra] = {"extra": eng.extra, "required": eng.required, "installed": False,
                                      "artifacts": {}}
            res = run(rf.venv_cmd(venv), log, env, rootfs)
            if res.returncode == 0:
                res = run(rf.install_cmd(venv, f"{WORKDIR}/wheels", eng.extra), log, env, rootfs)
            if res.returncode != 0:
                r["error"] = f"pip install failed: {tail(res)}"
                log(f"  {eng.extra}: {r['error']}")
                continue
            r["installed"] = True
            r["versions"] = installed_versions(["chroot", str(rootfs), f"{venv}/bin/python"], env)
            for fmt in [f for f in eng.formats if f in formats]:
                ref, ref_engine = host[runners[eng.extra], fmt]
                hv = host_versions[str(runners[eng.extra])]
                pkg = ENGINE_PACKAGE[ref_engine]
                a = r["artifacts"][fmt] = {"host_engine": f"{pkg} {hv.get(pkg, '?')}"}
                res = run(rf.predict_cmd(f"{venv}/bin/edge-run", f"{WORKDIR}/export", fmt,
                                         [f"{WORKDIR}/images/{n}" for n in names], len(labels)), log, env, rootfs)
                if res.returncode != 0:
                    a["error"] = f"edge-run failed: {tail(res)}"
                    log(f"  {eng.extra} {fmt}: {a['error']}")
                    continue
                _, probs, a["engine"] = parse_predictions(res.stdout, len(labels))
                tol, a["tolerance_rule"] = tolerance_for(entries[fmt])
                a["comparison"] = compare(ref, probs, tol, truth)
                out = Path(args.out) / "probabilities"
                write_with(out / f"aarch64_{eng.extra}_{fmt}.npy", lambda p, a=probs: np.save(p, a))
                write_with(out / f"host_{ref_engine}_{fmt}.npy", lambda p, a=ref: np.save(p, a))
    return {
        "passed": overall_passed(results),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "export": str(export), "formats": formats,
        "artifacts": {f: {"file": e.get("file"), "sha256": e.get("sha256"), "convert_status": e.get("status")}
                      for f, e in entries.items()},
        "images": {"count": len(picked), "seed": args.seed, "source": str(data), "per_class": {
            c: sum(1 for k, _ in picked if k == c) for c in sorted(by_class)}},
        "host": {"machine": platform.machine(), "python": platform.python_version(),
                 "libc": " ".join(platform.libc_ver()), "edge_run": {k: str(v) for k, v in runners.items()}},
        "target": {**target, "rootfs": str(rootfs), "suite": args.release.suite, "qemu_cpu": args.qemu_cpu,
                   "cpuinfo": f"{rf.PI_CPUS[args.qemu_cpu][0]}-style /proc/cpuinfo bound over the host's x86 one"},
        "wheels": wheels, "engines": results, "commands": rf.user_commands(release=args.release),
    }


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="edge pi-check", description=__doc__.split("\n")[0])
    p.add_argument("--export", help="export directory (edge convert)")
    p.add_argument("--bundle", help="instead: an `edge pack --target aarch64` bundle to install and smoke-test")
    p.add_argument("--images", type=int, default=200, help="CIFAR-10 test images, class-balanced (default 200)")
    p.add_argument("--out", help="directory for report.json, report.md and probabilities/ (with --bundle: "
                   "report.json only; default beside the bundle)")
    p.add_argument("--os", default=rf.platforms.DEFAULT_OS, choices=sorted(rf.platforms.RELEASES),
                   help="the Raspberry Pi OS release to stand in for: bookworm (Debian 12, Python 3.11) or trixie "
                        "(Debian 13, Python 3.13) (default %(default)s)")
    p.add_argument("--rootfs", help="cached arm64 rootfs (default: pi-rootfs[-OS] in the edgekit cache)")
    p.add_argument("--data", default=os.environ.get("EDGE_CIFAR10") or "../shared/datasets/cifar10-jpeg.tar.gz",
                   help="CIFAR-10 JPEG archive with test/<class>/*.jpg (default $EDGE_CIFAR10)")
    p.add_argument("--engines", default="litert,onnx,tflite", help="engine extras to install (default %(default)s)")
    p.add_argument("--formats", default=",".join(PI_FORMATS), help="artifacts to run (default %(default)s)")
    p.add_argument("--qemu-cpu", default="cortex-a72", choices=sorted(rf.PI_CPUS), help="emulated core and "
                   "/proc/cpuinfo: cortex-a72 Pi 4, cortex-a76 Pi 5, cortex-a53 Pi 3 (default %(default)s)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mirror", default=rf.MIRROR, help="Debian mirror for debootstrap")
    p.add_argument("--rebuild", action="store_true", help="rebuild the rootfs even if a cached one is complete")
    p.add_argument("--keep", action="store_true", help=f"keep {WORKDIR} (venvs, wheels) inside the rootfs")
    args = p.parse_args(argv)
    args.release = rf.platforms.RELEASES[args.os]
    args.rootfs = args.rootfs or str(rf.default_rootfs(args.os))
    if args.bundle:
        from edgekit.deploy.pi.bundle_check import main as bundle_main
        return bundle_main(args)
    if not args.export or not args.out:
        p.error("--export and --out are required (or --bundle FILE)")
    args.engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    try:
        args.formats = parse_names(args.formats, PI_FORMATS, PI_FORMATS)
    except EdgeError as exc:
        p.error(str(exc))
    unknown = sorted(set(args.engines) - {e.extra for e in ENGINES})
    if unknown or args.images < 1:
        p.error(f"unknown engine {', '.join(unknown)} (engines: litert, onnx, tflite)" if unknown
                else "--images must be at least 1")
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    report, code = guarded(lambda: check(args, log))
    if report is None:
        return code
    out = Path(args.out)
    write_json(out / REPORT_JSON, report)
    write_text(out / REPORT_MD, render_markdown(report))
    print("\n" + render_table(report) + "\n\n" + exactness(report))
    print(f"\n{'PASS' if report['passed'] else 'FAIL'}: host {report['host']['machine']} vs {report['target']['machine']} "
          f"(qemu {args.qemu_cpu}), {report['images']['count']} images · {out / 'report.md'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
