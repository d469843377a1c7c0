"""`edge pack`: one offline-installable bundle for a device: the artifact with its labels and preprocessing,
the runtime and engine wheels for the device's platform, install.sh, a smoke test and every file's sha256."""
from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import resources
from pathlib import Path
from typing import List, Optional, Tuple

import numpy as np

from edgekit import __version__, platforms
from edgekit.atomic import write_with
from edgekit.deploy import bundle, sign
from edgekit.deploy.config import PackConfig
from edgekit.deploy.runtime_wheel import runtime_wheel
from edgekit.deploy.staging import child_env, temp_staging
from edgekit.deploy.templates import INSTALL_SH, README, SIGNED, UNSIGNED
from edgekit.errors import EdgeError
from edgekit.resources import constraints_file
from edgekit_runtime.engines import ENGINES, engines_for
from edgekit_runtime.artifacts import LABELS_FILE, MANIFEST_FILE, PREPROCESS_FILE
from edgekit.layout import RunLayout
from edgekit.convert.formats import FORMATS
from edgekit.helpers import balanced_indices
from edgekit_runtime.native import quiet_native_stderr

MIN_MARGIN = 0.2   # sample images the artifact answers by at least this much: a device's kernels won't flip them


@dataclass
class Packed:
    path: Path
    folder: str                     # the bundle's one top-level folder
    artifact: str
    engine: str
    wheels: List[str]
    samples: int
    size_bytes: int
    why: str = ""                   # how the artifact was chosen
    seconds: float = 0.0
    notes: List[str] = field(default_factory=list)
    signer: Optional[str] = None    # who signed pack.json (None: unsigned)
    trust_line: Optional[str] = None  # the allowed_signers line a device needs to trust it (when KEY.pub was there)


def pack(cfg: PackConfig) -> Packed:
    t0 = time.perf_counter()
    cfg.check()
    run_dir = Path(cfg.run_dir)  # a run directory, or an export directory of a model brought to edge convert
    from edgekit.convert.manifest import locate_export
    export, export_manifest = locate_export(run_dir)
    entry, why = choose_artifact(run_dir, export, export_manifest, cfg.format, cfg.device)
    # every file is checked before anything is written: a manifest is data, and may point anywhere
    model = {f: inside(export, f, what, run_dir) for f, what in (
        (entry["file"], f"the {entry['format']} artifact's file {entry['file']!r}"),
        (LABELS_FILE, LABELS_FILE), (PREPROCESS_FILE, PREPROCESS_FILE))}
    engine = choose_engine(entry["file"], cfg.engine)
    signing = sign.prepare(cfg.sign, cfg.signer) if cfg.sign is not None else None
    if cfg.signer is not None and signing is None:
        raise EdgeError("--signer names who signed the bundle: pass --sign KEY as well.")
    # entry["format"] is a name of the formats table and the target and Python are checked: one path component
    name = f"{run_dir.resolve().name}-{entry['format']}-{cfg.target}-py{cfg.device_python}"
    out = Path(cfg.out) if cfg.out else RunLayout(run_dir).pack / f"{name}.tar.gz"
    if out.exists() and not cfg.force:
        raise EdgeError(f"{out} exists; pass --force to replace it, or --out another file.")
    with temp_staging("edge-pack-") as tmp:
        root = tmp / name
        (root / "model").mkdir(parents=True)
        for f, src in model.items():
            shutil.copy2(src, root / "model" / f)
        wheels = download_wheels(root / "wheels", engine, cfg.target, cfg.device_python, cfg.wheels, tmp / "dl",
                                 cfg.release.glibc)
        wheels.append(runtime_wheel(root / "wheels"))
        samples = write_samples(run_dir, export, export_manifest, root, entry["file"], cfg.samples, cfg.data)
        (root / "bundle.py").write_bytes(resources.files("edgekit.deploy").joinpath("bundle.py").read_bytes())
        _write_text(root / "install.sh", INSTALL_SH.format(extra=ENGINES[engine].extra, python=cfg.device_python,
                                                           signer=signing.signer if signing else "",
                                                           namespace=sign.NAMESPACE), 0o755)
        signed = UNSIGNED if signing is None else SIGNED.format(
            signer=signing.signer, namespace=sign.NAMESPACE,
            line=sign.allowed_signers_line(signing) or f'{signing.signer} namespaces="{sign.NAMESPACE}" <public key>')
        _write_text(root / "README.txt", README.format(name=name, artifact=entry["format"], target=cfg.target,
                                                       python=cfg.device_python, engine=engine, signed=signed))
        files = {p.relative_to(root).as_posix(): bundle.sha256(str(p)) for p in sorted(root.rglob("*")) if p.is_file()}
        manifest = {"schema_version": 1, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "edgekit": __version__, "run_dir": str(run_dir), "chosen_because": why,
                    "artifact": {"name": entry["format"], "file": entry["file"], "sha256": files[f"model/{entry['file']}"],
                                 "size_bytes": (root / "model" / entry["file"]).stat().st_size,
                                 "status": entry.get("status"), "summary": entry.get("summary")},
                    "engine": engine, "extra": ENGINES[engine].extra,
                    "target": {"arch": cfg.target, "python": cfg.device_python,
                               "os": cfg.os, "glibc": ".".join(map(str, cfg.release.glibc)),
                               "platforms": platforms.manylinux_platforms(cfg.target, cfg.release.glibc)},
                    "wheels": sorted(wheels), "samples": samples, "files": files,
                    "signature": {"signer": signing.signer, "namespace": sign.NAMESPACE, "file": sign.SIGNATURE}
                    if signing else None}
        _write_text(root / bundle.MANIFEST, json.dumps(manifest, indent=2) + "\n")
        if signing:
            sign.sign(root / bundle.MANIFEST, signing)
        _write_tar(root, out)
    return Packed(out, name, entry["format"], engine, sorted(wheels), len(samples), out.stat().st_size, why,
                  time.perf_counter() - t0, signer=signing.signer if signing else None,
                  trust_line=sign.allowed_signers_line(signing) if signing else None)


def inside(folder: Path, rel: str, what: str, run_dir: Path) -> Path:
    """folder/rel with every link resolved, when that is a regular file inside folder; one sentence otherwise.
    rel comes from a manifest: '..', an absolute path or a link must not make pack read another folder."""
    try:
        base = Path(folder).resolve(strict=True)
        path = (base / rel).resolve()
    except (OSError, RuntimeError) as exc:  # RuntimeError: a symlink loop (Python < 3.13)
        raise EdgeError(f"{what} in {folder} cannot be resolved ({exc}).") from None
    if not path.is_relative_to(base) or path == base:
        raise EdgeError(f"{what} leads outside {folder} (to {path}): refusing to pack it.")
    try:
        mode = path.stat().st_mode
    except OSError:
        raise EdgeError(f"{Path(folder) / rel} is missing: convert {run_dir} again with edge convert.") from None
    if not stat.S_ISREG(mode):  # reading a FIFO would block pack forever
        raise EdgeError(f"{what} in {folder} is not a regular file: refusing to pack it.")
    return path


# ------------------------------------------------------------------------------------------- choosing
def choose_artifact(run_dir: Path, export: Path, manifest: dict, fmt: str, device: Optional[str]):
    """(manifest entry, why): a named format of the export, or the one `edge select` recommends."""
    from edgekit.convert.manifest import PASSED
    path = export / MANIFEST_FILE
    entries = manifest["artifacts"]
    by_name = {e["format"]: e for e in entries if isinstance(e.get("format"), str) and e.get("file")}
    if fmt == "best":
        from edgekit.benchmarks.select import Budget, select
        try:
            sel = select([run_dir], Budget(), device)
        except EdgeError as exc:
            raise EdgeError(f"--format best asks edge select: {exc}") from None
        if sel.best is None:
            raise EdgeError("--format best: no benchmarked artifact passed within 1 pp of the reference; "
                            "name one with --format (edge select shows why each lost).")
        fmt, why = sel.best.artifact, f"edge select: {sel.best.why} on {sel.device} (p50 {sel.best.value_ms:.3f} ms)"
    else:
        why = "named with --format"
    entry = by_name.get(fmt)
    if entry is None:
        raise EdgeError(f"no exported format '{fmt}' in {path}; exported: {', '.join(by_name) or 'none'}.")
    # the format's name goes into the bundle's folder name and the file into paths: both must be what convert writes
    if fmt not in FORMATS:
        raise EdgeError(f"{path} names an artifact format {fmt!r} that edge convert does not make "
                        f"({', '.join(FORMATS)}): refusing to pack it.")
    file = entry["file"]
    if not isinstance(file, str) or file in (".", "..") or "/" in file or "\\" in file or "\0" in file \
            or Path(file).suffix.lower() != FORMATS[fmt].suffix:
        raise EdgeError(f"{path}: the {fmt} artifact's file {file!r} is not a {FORMATS[fmt].suffix} file name in "
                        f"the export folder: refusing to pack it.")
    if entry.get("status") != PASSED:
        raise EdgeError(f"{fmt} did not pass convert's validation ({entry.get('status')}): "
                        f"{entry.get('reason') or 'see the manifest'}; pack a ✅ format.")
    return entry, why


def choose_engine(file: str, engine: Optional[str]) -> str:
    suffix = Path(file).suffix.lower()
    able = [e.name for e in engines_for(suffix)]
    if engine is None:
        return able[0]
    if engine not in ENGINES:
        raise EdgeError(f"unknown engine '{engine}'; choose one of {', '.join(ENGINES)}.")
    if engine not in able:
        raise EdgeError(f"engine '{engine}' cannot run {suffix} files; use {' or '.join(able)}.")
    return engine


# --------------------------------------------------------------------------------------------- wheels
def _pip_download(packages: List[str], dest: Path, target: str, python: str, local: Optional[Path],
                  constraints: Optional[Path], work: Path, deps: bool = True,
                  glibc: Tuple[int, int] = platforms.BOOKWORM_GLIBC) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--only-binary=:all:",
           *platforms.platform_args(platforms.manylinux_platforms(target, glibc)), "--python-version", python,
           "--implementation", "cp", "--abi", f"cp{python.replace('.', '')}", "--abi", "abi3", "--abi", "none",
           "--dest", str(dest)]
    if local is not None:
        cmd += ["--no-index", "--find-links", str(Path(local).resolve())]
    if constraints is not None:
        cmd += ["-c", str(constraints)]
    if not deps:
        cmd.append("--no-deps")
    work.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd + packages, capture_output=True, text=True, env=child_env(work))


def _constraints(engine: str, folder: Path) -> Optional[Path]:
    """constraints.txt, less its numpy pin for tflite-runtime (which needs numpy < 2)."""
    pinned = constraints_file()
    if not pinned.is_file():
        return None
    lines = pinned.read_text().splitlines()
    if engine == "tflite":
        lines = [ln for ln in lines if not ln.lower().startswith("numpy==")] + ["numpy<2"]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "constraints.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def download_wheels(dest: Path, engine: str, target: str, python: str, local: Optional[Path], work: Path,
                    glibc: Tuple[int, int] = platforms.BOOKWORM_GLIBC) -> List[str]:
    """numpy, Pillow and the engine (with their dependencies) as wheels for the target; one sentence on failure."""
    dest.mkdir(parents=True, exist_ok=True)
    package = ENGINES[engine].package
    res = _pip_download(["numpy", "pillow", package], dest, target, python, local, _constraints(engine, work), work,
                        glibc=glibc)
    if res.returncode != 0:
        where = f"{target} / Python {python}" + (f" in {local}" if local else " on PyPI")
        # which of the three has no wheel at all (a conflict among dependencies is another failure)
        missing = [p for p in ("numpy", "pillow", package)
                   if _pip_download([p], work / "probe", target, python, local, None, work, deps=False,
                                    glibc=glibc).returncode]
        if missing:
            hint = ""
            if package in missing:
                others = [e.name for e in engines_for(ENGINES[engine].suffixes[0]) if e.name != engine]
                fits = [o for o in others if _pip_download([ENGINES[o].package], work / o, target, python, local,
                                                           None, work, deps=False, glibc=glibc).returncode == 0]
                hint = (f"; engine {fits[0]} has one: --engine {fits[0]}" if fits else
                        f"; no other engine runs {ENGINES[engine].suffixes[0]} files there")
            if target == "armv7l":
                hint += ("; piwheels.org builds wheels for 32-bit Raspberry Pi OS (download them into a folder and "
                         "pass --wheels), or install a 64-bit OS and pack --target aarch64")
            names = [f"engine {engine} ({p})" if p == package else p for p in missing]
            listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
            raise EdgeError(f"{listed} {'has' if len(names) == 1 else 'have'} no wheel for {where}{hint}.")
        errors = [ln for ln in res.stderr.splitlines() if ln.startswith("ERROR:") and "for help visit" not in ln]
        raise EdgeError(f"pip download of the wheels for {where} failed: {' '.join(errors[:2]) or 'see pip'}")
    return sorted(p.name for p in dest.glob("*.whl"))


# -------------------------------------------------------------------------------------------- samples
def write_samples(run_dir: Path, export: Path, manifest: dict, root: Path, model_file: str, n: int,
                  data: Optional[str] = None) -> List[dict]:
    """n class-balanced test images (of the run, or of the data the export was converted with; random ones when
    they have no labels) as PNG files, each with the artifact's answer on this machine.

    Only images the artifact answers with a margin of MIN_MARGIN or more are taken when there are enough:
    another CPU's kernels may round differently, and a near-tie must not fail a good install."""
    from PIL import Image

    from edgekit.convert.calibration import load_images
    from edgekit.convert.source import open_source
    from edgekit_runtime import Classifier
    source = open_source(run_dir, export, manifest, data, with_model=False)
    dataset = load_images(source, data)
    test, labels = dataset.test, source.labels
    if len(test.y) == 0:
        raise EdgeError(f"{source.data} has no test images to pick samples from; pass --data PATH.")
    count = min(len(test.y), 20 * n)
    order = balanced_indices(test.y, count, seed=0) if dataset.labeled else \
        np.sort(np.random.default_rng(0).permutation(len(test.y))[:count])
    with quiet_native_stderr():  # LiteRT announces its XNNPACK delegate on stderr
        clf = Classifier.load(root / "model" / model_file)
        probs = clf.predict(test.x[order])
    truth = [labels[test.y[i]] if dataset.labeled else None for i in order]
    top2 = np.sort(probs, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] >= MIN_MARGIN
    right = np.array([t is None or clf.labels[int(r.argmax())] == t for t, r in zip(truth, probs)])
    # clear and right first (a reader of samples/ sees the model work), then clear, then the rest; stable, so
    # each group keeps the class-balanced order
    pick = sorted(range(len(order)), key=lambda k: (not clear[k], not right[k]))[:n]
    (root / "samples").mkdir()
    out = []
    for k, j in enumerate(pick):
        i, row = order[j], probs[j]
        name = f"samples/{k:02d}_{truth[j] or 'unlabelled'}.png"
        Image.fromarray(test.x[i]).save(root / name)
        out.append({"file": name, "truth": truth[j], "expected": clf.labels[int(row.argmax())],
                    "probability": round(float(row.max()), 4)})
    return out


# ------------------------------------------------------------------------------------------- writing
def _write_text(path: Path, text: str, mode: int = 0o644) -> None:
    path.write_text(text)
    os.chmod(path, mode)


def _write_tar(root: Path, out: Path) -> None:
    """The bundle as out (a .tar.gz with one top-level folder), written whole or not at all."""
    def write(tmp: Path) -> None:
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(root, arcname=root.name)
    write_with(out, write)
