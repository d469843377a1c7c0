#!/usr/bin/env python3
"""The script inside every `edge pack` bundle (copied there as bundle.py; standard library only).

    python3 -I bundle.py verify          # this machine and Python are the bundle's target; the bundle holds
                                         # exactly the files pack.json lists, each with its sha256
    venv/bin/python -I bundle.py smoke   # the installed runtime classifies samples/ as it did at pack time

install.sh runs both, with -I (isolated mode): the script's own folder is not put on sys.path, so a module
planted beside bundle.py (a json.py) is never imported, and PYTHON* variables are ignored.
Exit codes: 0 good, 2 the bundle is refused (damaged, changed, not for this machine, or pack.json unreadable),
1 the smoke test failed.
"""
import hashlib
import json
import os
import platform
import stat
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
MANIFEST = "pack.json"
SIGNATURE = "pack.json.sig"   # `edge pack --sign`: checked by install.sh --trust (ssh-keygen), not listed in pack.json
# What install itself makes beside the listed files. install.sh deletes venv/ and builds it afresh after
# verify, so a venv/ that came inside the bundle is never run; it is allowed only so that verify passes again
# after an install. Nothing else is: Python writes no __pycache__ here (bundle.py runs as a script, and -I
# keeps this folder off sys.path).
MADE_BY_INSTALL = ("venv",)
MAX_MANIFEST_BYTES = 16 << 20   # pack.json of a real bundle is a few kB; more is not one


class Refused(Exception):
    """The bundle cannot be used as it is; the message is one sentence."""


def sha256(path: str) -> str:
    # edgekit.helpers.file_digest's twin: this script checks the files before anything is installed, so it
    # imports nothing but the standard library
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ------------------------------------------------------------------------------------------- pack.json
def _relative(value) -> bool:
    """A path inside the bundle as pack.json writes it: 'a/b', never absolute, '..', '.', empty parts or '\\'."""
    return (isinstance(value, str) and 0 < len(value) < 4096 and "\\" not in value and "\0" not in value
            and all(part not in ("", ".", "..") for part in value.split("/")))


def _sha(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def check_manifest(m) -> dict:
    """m itself when it has the shape edge pack writes; otherwise Refused naming the first key that is wrong."""
    def need(ok, key, what):
        if not ok:
            raise Refused("%s is not an edge pack manifest: %s must be %s" % (MANIFEST, key, what))
    need(isinstance(m, dict), "the document", "an object")
    files = m.get("files")
    need(isinstance(files, dict), "files", "an object of path: sha256")
    need(len(files) > 0, "files", "a non-empty list (an empty one would verify nothing)")
    for rel, digest in files.items():
        need(_relative(rel) and rel not in (MANIFEST, SIGNATURE), "files key %r" % rel, "a relative path inside the bundle")
        need(_sha(digest), "files[%r]" % rel, "a sha256 (64 lowercase hex digits)")
    target = m.get("target")
    need(isinstance(target, dict) and isinstance(target.get("arch"), str) and isinstance(target.get("python"), str),
         "target", "an object with arch and python strings")
    art = m.get("artifact")
    need(isinstance(art, dict) and isinstance(art.get("name"), str) and _relative(art.get("file"))
         and "/" not in art["file"], "artifact", "an object with name and a plain file name")
    need("model/" + art["file"] in files, "artifact.file", "one of the files it lists (model/%s)" % art["file"])
    need(isinstance(m.get("engine"), str), "engine", "a string")
    samples = m.get("samples")
    need(isinstance(samples, list) and samples, "samples", "a non-empty list")
    for i, s in enumerate(samples):
        need(isinstance(s, dict) and _relative(s.get("file")) and s["file"] in files
             and isinstance(s.get("expected"), str), "samples[%d]" % i, "an object with a listed file and expected")
    return m


def load_manifest(root: str = HERE) -> dict:
    """pack.json, checked for shape (check_manifest); Refused when missing, not a regular file or not JSON."""
    path = os.path.join(root, MANIFEST)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise Refused("no %s in %s: not an edgekit bundle, or an incomplete one; unpack the .tar.gz again"
                      % (MANIFEST, root)) from None
    except OSError as exc:
        raise Refused("cannot read %s: %s" % (path, exc.strerror)) from None
    if not stat.S_ISREG(st.st_mode):  # a FIFO would block the read, a link could point anywhere
        raise Refused("%s is not a regular file" % path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_MANIFEST_BYTES + 1)
        if len(data) > MAX_MANIFEST_BYTES:
            raise Refused("%s is over %d MB: not an edge pack manifest" % (path, MAX_MANIFEST_BYTES >> 20))
        return check_manifest(json.loads(data.decode("utf-8")))
    except OSError as exc:
        raise Refused("cannot read %s: %s" % (path, exc.strerror)) from None
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise Refused("%s is not valid JSON (%s)" % (path, str(exc).splitlines()[0][:120])) from None


# ---------------------------------------------------------------------------------------------- verify
def strays(root: str, manifest: dict) -> list:
    """'path: why' for everything in the bundle folder that pack.json does not list (beyond pack.json, its
    signature and MADE_BY_INSTALL), for links and for special files. Unlisted folders are named, not entered."""
    listed = set(manifest["files"])
    folders = {rel.rsplit("/", 1)[0] for rel in listed if "/" in rel}
    folders |= {f.rsplit("/", i)[0] for f in list(folders) for i in range(1, f.count("/") + 1)}
    bad = []

    def walk(rel: str) -> None:
        with os.scandir(os.path.join(root, rel) if rel else root) as entries:
            for e in sorted(entries, key=lambda e: e.name):
                path = rel + "/" + e.name if rel else e.name
                if e.is_symlink():
                    bad.append(path + ": a symbolic link")
                elif e.is_dir(follow_symlinks=False):
                    if path in folders:
                        walk(path)
                    elif path not in MADE_BY_INSTALL:
                        bad.append(path + "/: not listed in " + MANIFEST)
                elif not e.is_file(follow_symlinks=False):
                    bad.append(path + ": not a regular file")
                elif path not in listed and path not in (MANIFEST, SIGNATURE):
                    bad.append(path + ": not listed in " + MANIFEST)
    walk("")
    return bad


def damaged(root: str, manifest: dict) -> list:
    """'file: why' for every listed file that is missing, not a regular file inside root, or whose sha256
    differs from the manifest."""
    bad = []
    base = os.path.realpath(root)
    for rel, digest in sorted(manifest["files"].items()):
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except OSError:
            bad.append(rel + ": missing")
            continue
        inside = os.path.realpath(path).startswith(base + os.sep)
        if not stat.S_ISREG(st.st_mode) or not inside:  # opening a FIFO would hang; a linked folder leads out
            bad.append(rel + ": not a regular file inside the bundle")
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
        raise Refused(why)
    bad = strays(root, manifest) + damaged(root, manifest)
    if bad:
        more = " (and %d more)" % (len(bad) - 5) if len(bad) > 5 else ""
        raise Refused("refusing to install, the bundle was damaged or changed after packing: "
                      + "; ".join(bad[:5]) + more)
    print("bundle: %d files verified (sha256), and nothing else in the bundle" % len(manifest["files"]))
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
    try:
        return commands[args[0]]()
    except Refused as exc:
        print("bundle: %s" % exc, file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
