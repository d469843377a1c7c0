"""`edge bench --host user@host`: run a benchmark plan on a device over SSH and bring its result back.

    result = run_remote(plan_dir, RemoteOptions(host="pi@raspberrypi.local"), extras=["litert"])

Steps, each one ssh command over one shared connection (see benchmarks/ssh.py):
1. probe: is the device reachable, is its Python 3.9+, which architecture; make a private temp dir;
2. upload: the plan directory and the runtime package's source, as one tar stream (no scp, no
   remote path parsing);
3. environment: a virtual environment kept between runs (default ~/.cache/edgekit/bench-venv) with
   numpy, Pillow and the engines, pinned as in constraints.txt when the device has those wheels and
   otherwise the runtime's own ranges; a marker file skips pip when nothing changed. `device_python`
   skips all of this and uses an interpreter that already has them;
4. bench: `python -m edgekit_runtime.cli bench` with the uploaded source on PYTHONPATH and TMPDIR
   inside the temp dir, its progress lines relayed as they come; a small watchdog on the device stops
   the run (its whole process group) when the SSH channel closes: Ctrl-C here or a dropped link;
5. fetch result.json, then remove the temp dir (unless keep), also after a failure or Ctrl-C.

pip runs with --only-binary=:all:, so a device without a wheel fails in seconds with one sentence
instead of compiling numpy for an hour; the pinned version is tried first, then the runtime's range.

The runtime goes over as source on PYTHONPATH rather than as an installed wheel: the device then runs
exactly the host's runtime, the venv holds only third-party packages and never needs reinstalling
when edgekit changes, and nothing has to be built here first. It is byte-compiled on the device before
the run so every artifact's cold start sees the same warm .pyc files an installed package would have.
"""
from __future__ import annotations

import json
import re
import sys
import tarfile
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import IO, Callable, Dict, List, Optional, Sequence, Tuple

from edgekit.benchmarks.remote.ssh import RemoteError, SshClient, Target, parse_target
from edgekit.resources import constraints_file
from edgekit_runtime.engines import ENGINES, engines_for

__all__ = ["RemoteError", "RemoteOptions", "run_remote", "extras_for_plan", "device_requirements"]

MIN_PYTHON = (3, 9)
MARKER = ".edgekit-requirements"  # in the venv: what the last successful install was asked for
IMPORT_NAMES = {"numpy": "numpy", "pillow": "PIL", "ai-edge-litert": "ai_edge_litert",
                "tflite-runtime": "tflite_runtime", "onnxruntime": "onnxruntime"}


@dataclass
class RemoteOptions:
    host: str                                   # "host", "user@host", "user@host:port", "user@[::1]:22"
    port: Optional[int] = None
    identity: Optional[Path] = None             # ssh -i (and IdentitiesOnly)
    known_hosts: Optional[Path] = None          # default ~/.ssh/known_hosts
    accept_new_host_key: bool = False           # trust a first-seen key (accept-new); never a changed one
    python: str = "python3"                     # device interpreter that creates the venv
    device_python: Optional[str] = None         # a ready interpreter (numpy, Pillow, engine): no venv, no pip
    venv: str = "~/.cache/edgekit/bench-venv"   # kept between runs
    pip_args: Sequence[str] = ()                # e.g. ("--no-index", "--find-links", "/home/pi/wheels")
    keep: bool = False                          # leave the device's temp dir (its path is reported)
    timeout: float = 3600                       # seconds one artifact may take on the device (--timeout)
    total_timeout: Optional[float] = None       # the whole device run; default artifacts × timeout + 10 min
    install_timeout: float = 1800               # venv creation + pip
    connect_timeout: float = 15
    ssh_config: Optional[Path] = None           # ssh -F (default: the user's usual ssh config)
    constraints: Optional[Path] = field(default_factory=lambda: constraints_file() if constraints_file().is_file()
                                        else None)


# -- device scripts: constants; user strings arrive only as quoted positional parameters -----------
PROBE_SH = 'py=$1; shift\ncommand -v "$py" >/dev/null 2>&1 || { echo edgekit-nopython; exit 0; }\nexec "$py" "$@"'
PROBE_PY = """import sys, platform
v = sys.version_info
print("edgekit-python %d.%d.%d %s" % (v[0], v[1], v[2], platform.machine() or "unknown"))
if v >= (3, 9):
    import importlib.util, tempfile
    print("edgekit-missing " + " ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))
    print("edgekit-tmp " + tempfile.mkdtemp(prefix="edgekit-remote-"))
"""
UPLOAD_SH = 'cd "$1" && exec tar -xf -'
VENV_SH = """case $1 in "~") v=$HOME ;; "~/"*) v=$HOME/${1#"~/"} ;; *) v=$1 ;; esac
py=$2
if "$v/bin/python" -m pip --version >/dev/null 2>&1; then :
elif [ -e "$v" ] && [ ! -f "$v/pyvenv.cfg" ] && [ -n "$(ls -A "$v" 2>/dev/null)" ]; then
  echo "edgekit-notvenv $v"; exit 0
else
  "$py" -m venv --clear "$v" >&2 || { echo edgekit-novenv; exit 0; }
fi
echo "edgekit-venv $v $("$v/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
cat "$v/MARKER" 2>/dev/null
exit 0""".replace("MARKER", MARKER)
PIP_SH = """v=$1; key=$2; shift 2
"$v/bin/python" -m pip install --disable-pip-version-check --no-input --progress-bar off "$@" 2>&1 || exit 3
printf '%s\\n' "$key" > "$v/MARKER"
""".replace("MARKER", MARKER)
BENCH_SH = """d=$1; py=$2; shift 2
PYTHONPATH=$d/lib${PYTHONPATH:+:$PYTHONPATH}; PYTHONUNBUFFERED=1; TMPDIR=$d/tmp
export PYTHONPATH PYTHONUNBUFFERED TMPDIR
mkdir -p "$TMPDIR"
"$py" -m compileall -q "$d/lib" >/dev/null 2>&1
cd "$d" && exec "$py" "$@"
"""
# Runs the bench in its own process group and stops that group when stdin (the SSH channel) closes:
# a dropped connection or a Ctrl-C here must not leave a benchmark running on the device.
WATCHDOG_PY = """import os, signal, subprocess, sys, threading
child = subprocess.Popen([sys.executable] + sys.argv[1:], stdin=subprocess.DEVNULL, start_new_session=True)
def watch():
    try:
        while os.read(0, 65536):
            pass
    except OSError:
        pass
    try:
        os.killpg(child.pid, signal.SIGTERM)
    except OSError:
        pass
threading.Thread(target=watch, daemon=True).start()
sys.exit(child.wait())
"""
FETCH_SH = 'exec cat "$1/result.json"'
CLEANUP_SH = 'case $1 in /*/edgekit-remote-*) rm -rf -- "$1" ;; *) exit 3 ;; esac'


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def extras_for_plan(plan: dict) -> List[str]:
    """The runtime extras (engines) a plan's artifacts need: an artifact's `engine`, else its file suffix."""
    extras: List[str] = []
    for art in plan.get("artifacts", []):
        engine = ENGINES.get(art.get("engine") or "")
        candidates = [engine] if engine else engines_for(PurePosixPath(str(art.get("file", ""))).suffix)
        if candidates and candidates[0].extra not in extras:
            extras.append(candidates[0].extra)
    return extras


def _pins(constraints: Optional[Path]) -> Dict[str, str]:
    from packaging.utils import canonicalize_name
    pins: Dict[str, str] = {}
    if constraints and Path(constraints).is_file():
        for line in Path(constraints).read_text().splitlines():
            m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*==\s*([^\s;#]+)\s*(?:#.*)?", line)
            if m:
                pins[canonicalize_name(m.group(1))] = m.group(2)
    return pins


def device_requirements(extras: Sequence[str], python: str, machine: str,
                        constraints: Optional[Path]) -> List[Tuple[str, str, str]]:
    """(name, pinned, fallback) for numpy, Pillow and the extras' engines, as the device would resolve them.

    The ranges come from edgekit-runtime's metadata, evaluated for the device's Python and machine;
    `pinned` is the constraints.txt version when it fits those ranges, `fallback` the range itself
    (used when the pinned version has no wheel for that device, e.g. numpy 2.4 on Python 3.9).
    """
    from packaging.requirements import Requirement
    from packaging.specifiers import SpecifierSet
    from packaging.utils import canonicalize_name
    try:
        reqs = [Requirement(r) for r in metadata.requires("edgekit-runtime") or []]
        known = set(metadata.metadata("edgekit-runtime").get_all("Provides-Extra") or [])
    except metadata.PackageNotFoundError:
        raise RemoteError("edgekit-runtime is not installed here (pip install edgekit-runtime, or pip install -e ./runtime in a clone).") from None
    unknown = [e for e in extras if e not in known]
    if unknown:
        raise RemoteError(f"unknown runtime extra(s) {', '.join(unknown)}; choose from {', '.join(sorted(known))}.")
    env = {"python_version": ".".join(python.split(".")[:2]), "python_full_version": python,
           "platform_machine": machine, "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix"}
    specs: Dict[str, Tuple[str, SpecifierSet]] = {}
    for req in reqs:
        if req.marker is None or any(req.marker.evaluate(dict(env, extra=e)) for e in extras):
            name, spec = specs.get(canonicalize_name(req.name), (req.name, SpecifierSet()))
            specs[canonicalize_name(req.name)] = (name, spec & req.specifier)
    pins = _pins(constraints)
    out = []
    for key, (name, spec) in specs.items():
        fallback = f"{name}{spec}"
        pin = pins.get(key)
        out.append((name, f"{name}=={pin}" if pin and spec.contains(pin, prereleases=True) else fallback, fallback))
    return out


def _runtime_source() -> Path:
    import importlib.util
    spec = importlib.util.find_spec("edgekit_runtime")
    if spec is None or not spec.submodule_search_locations:
        raise RemoteError("the edgekit_runtime package is not importable here (pip install edgekit-runtime, or pip install -e ./runtime in a clone).")
    return Path(list(spec.submodule_search_locations)[0])


def _tar_filter(info: tarfile.TarInfo) -> Optional[tarfile.TarInfo]:
    parts = PurePosixPath(info.name).parts
    if "__pycache__" in parts or info.name.endswith((".pyc", ".pyo")) or not (info.isfile() or info.isdir()):
        return None
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o755 if info.isdir() else 0o644
    return info


def _lines(out: bytes) -> Dict[str, str]:
    found: Dict[str, str] = {}
    for line in out.decode("utf-8", "replace").splitlines():
        word, _, rest = line.partition(" ")
        if word.startswith("edgekit-") and word not in found:
            found[word] = rest.strip()
    return found


def _last(text: str) -> str:
    """The telling line of a device's output: the last error-looking line, else the last line."""
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("  ")
             and not ln.startswith(("Could not chdir to home directory", "edgekit-"))]
    errors = [ln for ln in lines if re.search(r"[Ee]rror|denied|not found|No such|cannot|[Uu]nable", ln)]
    return ((errors or lines or ["no message"])[-1]).rstrip(".")


class _Session:
    def __init__(self, ssh: SshClient, opts: RemoteOptions, progress: Callable[[str], None]):
        self.ssh, self.opts, self.say = ssh, opts, progress
        self.t: Target = ssh.target

    def probe(self, python: str, modules: Sequence[str]) -> List[str]:
        """Reachability, Python version and architecture, a private temp dir: one round trip.

        Returns which of `modules` that Python cannot import.
        """
        r = self.ssh.run(PROBE_SH, [python, "-c", PROBE_PY, *modules], timeout=60 + self.opts.connect_timeout,
                         what="the Python check")
        found = _lines(r.stdout)
        if "edgekit-nopython" in found:
            raise RemoteError(f"{self.t}: no {python!r} on the device (command not found); install Python 3.9+ "
                              f"there (sudo apt install python3 python3-venv), or name one with --device-python.")
        if "edgekit-python" not in found:
            why = _last(r.stderr + "\n" + r.stdout.decode("utf-8", "replace"))
            raise RemoteError(f"{self.t}: could not run {python!r} on the device (exit code {r.returncode}): {why}.")
        version, _, machine = found["edgekit-python"].partition(" ")
        m = re.match(r"(\d+)\.(\d+)", version)
        if not m or (int(m.group(1)), int(m.group(2))) < MIN_PYTHON:
            raise RemoteError(f"{self.t}: {python!r} on the device is Python {version}; the runtime needs Python "
                              f"3.9 or newer (install one, or name it with --device-python).")
        tmp = found.get("edgekit-tmp", "")
        if not re.fullmatch(r"/[^\n]*/edgekit-remote-[^/\n]+", tmp):
            raise RemoteError(f"{self.t}: could not create a temporary directory on the device: {_last(r.stderr)}.")
        self.version, self.machine, self.tmp = version, machine, tmp
        return found.get("edgekit-missing", "").split()

    def upload(self, plan_dir: Path, runtime: Path) -> None:
        def send(stream: IO[bytes]) -> None:
            with tarfile.open(fileobj=stream, mode="w|", format=tarfile.GNU_FORMAT, dereference=True) as tar:
                tar.add(str(plan_dir), arcname="plan", filter=_tar_filter)
                tar.add(str(runtime), arcname="lib/edgekit_runtime", filter=_tar_filter)
        r = self.ssh.run(UPLOAD_SH, [self.tmp], send=send, timeout=max(600.0, self.opts.install_timeout),
                         what="the upload")
        if r.returncode:
            raise RemoteError(f"{self.t}: copying the plan to {self.tmp} failed: {_last(r.stderr)}.")

    def environment(self, python: str, extras: Sequence[str]) -> str:
        o = self.opts
        r = self.ssh.run(VENV_SH, [o.venv, python], timeout=o.install_timeout, what="the virtual environment")
        found = _lines(r.stdout)
        if "edgekit-notvenv" in found:
            raise RemoteError(f"{self.t}: {found['edgekit-notvenv']} exists on the device and is not a virtual "
                              f"environment; choose another --venv.")
        if "edgekit-novenv" in found or "edgekit-venv" not in found:
            hint = ("install python3-venv there (sudo apt install python3-venv)"
                    if re.search(r"ensurepip|No module named venv", r.stderr) else "choose another --venv")
            raise RemoteError(f"{self.t}: `{python} -m venv {o.venv}` failed on the device ({_last(r.stderr)}); "
                              f"{hint}, or pass --device-python.")
        venv, _, version = found["edgekit-venv"].rpartition(" ")
        machine = self.machine
        reqs = device_requirements(extras, version, machine, o.constraints)
        key = " ".join([f"py{version}", *[p for _, p, _ in reqs], *o.pip_args])
        lines_after = [ln for ln in r.stdout.decode("utf-8", "replace").splitlines() if not ln.startswith("edgekit-")]
        installed = "\n".join(lines_after).strip()
        if installed != key:
            self._pip(venv, version, machine, reqs, key)
        return f"{venv}/bin/python"

    def _pip(self, venv: str, version: str, machine: str, reqs: List[Tuple[str, str, str]], key: str) -> None:
        from packaging.utils import canonicalize_name
        o = self.opts
        attempt = {name: pinned for name, pinned, _ in reqs}
        fallback = {canonicalize_name(name): (name, fb) for name, _, fb in reqs}
        self.say(f"{self.t.host}: installing {', '.join(attempt.values())} into {o.venv} on the device "
                 f"(once; later runs reuse it)")
        for _ in range(len(reqs) + 1):
            args = [venv, key, "--only-binary=:all:", *o.pip_args, *attempt.values()]
            r = self.ssh.run(PIP_SH, args, timeout=o.install_timeout, what="pip install")
            if r.returncode == 0:
                return
            text = r.stdout.decode("utf-8", "replace") + r.stderr
            if re.search(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
                         r"resolution|Network is unreachable", text) and "from versions: none" in text:
                raise RemoteError(f"{self.t}: pip on the device cannot reach the package index; copy wheels there "
                                  f"and pass pip args --no-index --find-links DIR, or use --device-python.")
            m = re.search(r"No matching distribution found for ([A-Za-z0-9_.\-]+)", text)
            if not m:
                raise RemoteError(f"{self.t}: pip install failed on the device: {_last(text)}.")
            name = re.split(r"[<>=!~ ;\[]", m.group(1), maxsplit=1)[0]
            real, fb = fallback.get(canonicalize_name(name), (name, None))
            if fb is not None and attempt.get(real) != fb:
                self.say(f"{self.t.host}: no wheel of {attempt[real]} for {machine} / Python {version}; "
                         f"trying {fb}")
                attempt[real] = fb
                continue
            raise RemoteError(f"{self.t}: no wheel for {real} on {machine} / Python {version}: pip found no "
                              f"matching distribution ({fb or name}); try another engine's artifacts, provide "
                              f"a wheel with pip args --find-links, or use --device-python.")
        raise RemoteError(f"{self.t}: pip install failed on the device: {_last(r.stderr)}.")

    def bench(self, python: str, n_artifacts: int) -> None:
        o = self.opts
        total = o.total_timeout or n_artifacts * o.timeout + 600
        cli = ["-m", "edgekit_runtime.cli", "bench", f"{self.tmp}/plan/plan.json", "--out",
               f"{self.tmp}/result.json", "--timeout", f"{o.timeout:g}"]
        r = self.ssh.run(BENCH_SH, [self.tmp, python, "-c", WATCHDOG_PY, *cli], timeout=total,
                         what="the benchmark", on_line=lambda line: self.say(f"{self.t.host}: {line}"))
        if r.returncode == 2:
            raise RemoteError(f"{self.t}: the device rejected the plan: {_last(r.stderr)}.")
        if r.returncode:
            raise RemoteError(f"{self.t}: the benchmark failed on the device (exit code {r.returncode}): "
                              f"{_last(r.stderr)}.")

    def fetch(self) -> dict:
        r = self.ssh.run(FETCH_SH, [self.tmp], timeout=300, what="fetching the result")
        try:
            if r.returncode:
                raise ValueError(_last(r.stderr))
            return json.loads(r.stdout)
        except ValueError as exc:
            raise RemoteError(f"{self.t}: could not read the result from the device ({exc}).") from None

    def cleanup(self) -> None:
        tmp, self.tmp = getattr(self, "tmp", None), None
        if tmp:
            self.ssh.run(CLEANUP_SH, [tmp], timeout=60, what="the clean-up")


def run_remote(plan_dir: "str | Path", opts: RemoteOptions, extras: Sequence[str] = (),
               progress: Optional[Callable[[str], None]] = None) -> dict:
    """Run the plan in `plan_dir` (plan.json + the files it names) on `opts.host`; return its result dict.

    `extras` name the runtime engines to install ("litert", "onnx", "tflite"); empty: derived from the
    plan's artifacts. `progress` receives one line at a time (default: stderr). The result gains a
    "remote" entry: host, Python, and the device directory when kept. Failures raise RemoteError.
    """
    say = progress or _say
    plan_dir = Path(plan_dir)
    try:
        plan = json.loads((plan_dir / "plan.json").read_text())
    except (OSError, ValueError) as exc:
        raise RemoteError(f"{plan_dir / 'plan.json'}: cannot read the plan ({exc}).") from None
    if Path(str(plan.get("base") or ".")).is_absolute():
        raise RemoteError(f"{plan_dir / 'plan.json'}: 'base' must be relative to go to a device.")
    extras = list(extras) or extras_for_plan(plan)
    target = parse_target(opts.host, opts.port)
    runtime = _runtime_source()
    with SshClient(target, identity=opts.identity, known_hosts=opts.known_hosts,
                   accept_new_host_key=opts.accept_new_host_key, ssh_config=opts.ssh_config,
                   connect_timeout=opts.connect_timeout) as ssh:
        s = _Session(ssh, opts, say)
        python = opts.device_python or opts.python
        engines = [IMPORT_NAMES[n.lower()] for n, _, _ in device_requirements(extras, "3.9", "", None)
                   if n.lower() in IMPORT_NAMES and n.lower() not in ("numpy", "pillow")]
        missing = s.probe(python, ["numpy", "PIL", *engines] if opts.device_python else [])
        say(f"{target.host}: Python {s.version} on {s.machine}; working in {s.tmp}")
        tmp, failed = s.tmp, True
        try:
            if {"numpy", "PIL"} & set(missing):
                raise RemoteError(f"{target}: {python} on the device cannot import {', '.join(missing)}; install "
                                  f"them there, or leave --device-python unset to use a virtual environment.")
            if missing:
                say(f"{target.host}: warning: {python} cannot import {', '.join(missing)}; artifacts needing it "
                    f"will be error rows")
            s.upload(plan_dir, runtime)
            if not opts.device_python:
                python = s.environment(opts.python, extras)
            s.bench(python, len(plan.get("artifacts", [])))
            result = s.fetch()
            failed = False
        finally:
            if opts.keep:
                say(f"{target.host}: kept {tmp} on the device")
            else:
                try:
                    s.cleanup()
                except RemoteError as exc:
                    if not failed:  # the result is here: a leftover temp dir is worth a warning, not a failure
                        say(f"warning: {exc}")
    result["remote"] = {"host": str(target), "python": python, "python_version": s.version,
                        "machine": s.machine, "dir": tmp if opts.keep else None, "extras": extras}
    return result
