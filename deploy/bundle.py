#!/usr/bin/env python3
"""The script inside every `edge pack` bundle (copied there as bundle.py; standard library only).

    python3 bundle.py verify          # this machine and Python are the bundle's target; every file's sha256
    venv/bin/python bundle.py smoke   # the installed runtime classifies samples/ as it did at pack time

install.sh runs both. Exit codes: 0 good, 1 a check failed, 2 the bundle does not fit this machine.
"""
import hashlib
import json
import os
import platform
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "pack.json"


def sha256(path: str) -> str:
    # edgekit.helpers.file_digest's twin: this script checks the files before anything is installed, so it
    # imports nothing but the standard library
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_manifest(root: str = HERE) -> dict:
    with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
        return json.load(f)


def damaged(root: str, manifest: dict) -> list:
    """'file: why' for every file that is missing or whose sha256 differs from the manifest."""
    bad = []
    for rel, digest in sorted(manifest["files"].items()):
        path = os.path.join(root, rel)
        if not os.path.isfile(path):
            bad.append(rel + ": missing")
        elif sha256(path) != digest:
            bad.append(rel + ": sha256 differs")
    return bad


def misfit(manifest: dict, machine: str = "", python: str = "") -> str:
    """Why this bundle cannot install here ('' when it can): another CPU architecture or Python version."""
    target = manifest["target"]
    machine = machine or platform.machine()
    python = python or "%d.%d" % sys.version_info[:2]
    if machine != target["arch"]:
        return ("this bundle is for %s, this machine is %s: pack one with `edge pack ... --target %s`"
                % (target["arch"], machine, machine))
    if python != target["python"]:
        return ("this bundle's wheels are for Python %s, this Python is %s: pack with `--python %s`, or run "
                "install.sh with PYTHON=python%s" % (target["python"], python, python, target["python"]))
    return ""


def verify(root: str = HERE) -> int:
    manifest = load_manifest(root)
    why = misfit(manifest)
    if why:
        print("bundle: " + why, file=sys.stderr)
        return 2
    bad = damaged(root, manifest)
    if bad:
        more = " (and %d more)" % (len(bad) - 5) if len(bad) > 5 else ""
        print("bundle: refusing to install, the bundle was damaged or changed after packing: "
              + "; ".join(bad[:5]) + more, file=sys.stderr)
        return 1
    print("bundle: %d files verified (sha256)" % len(manifest["files"]))
    return 0


def smoke(root: str = HERE) -> int:
    from edgekit_runtime import Classifier
    from edgekit_runtime.native import quiet_native_stderr  # the bundle's runtime is installed by now
    manifest = load_manifest(root)
    art = manifest["artifact"]
    samples = manifest["samples"]
    with quiet_native_stderr(replay=True):  # the engines' "INFO: Created … delegate" notices
        clf = Classifier.load(os.path.join(root, "model", art["file"]), engine=manifest["engine"])
        probs = clf.predict([os.path.join(root, s["file"]) for s in samples])
    agree = 0
    width = max(len(s["file"]) for s in samples)
    for s, row in zip(samples, probs):
        got = clf.labels[int(row.argmax())]
        ok = got == s["expected"]
        agree += ok
        print("  %s  %-*s  expected %-12s got %-12s %5.1f%%" % ("ok " if ok else "BAD", width, s["file"],
                                                               s["expected"], got, 100 * float(row.max())))
    passed = agree == len(samples)
    print("smoke test %s: %d of %d sample images give the top-1 recorded at pack time (%s, engine %s)"
          % ("passed" if passed else "FAILED", agree, len(samples), art["name"], clf.engine_name))
    return 0 if passed else 1


def main(argv=None) -> int:
    args = sys.argv[1:] if argv is None else argv
    commands = {"verify": verify, "smoke": smoke}
    if len(args) != 1 or args[0] not in commands:
        print("usage: bundle.py verify|smoke", file=sys.stderr)
        return 2
    return commands[args[0]]()


if __name__ == "__main__":
    sys.exit(main())
