"""The pi-check report: an aligned console table and report.md (report.json is the check's dict itself)."""
from __future__ import annotations

from typing import List

from edgekit_runtime.engines import ENGINES

ENGINE_PACKAGE = {name: e.package for name, e in ENGINES.items()}
COLUMNS = ("engine", "artifact", "on aarch64", "vs host", "top-1 agree", "max |Δp|", "mean |Δp|", "tolerance",
           "bit-exact", "result")


def _installed(eng: dict) -> str:
    if not eng["installed"]:
        return "does not install"
    v = eng.get("versions", {})
    pkg = ENGINE_PACKAGE.get(eng["extra"], eng["extra"])
    return f"{pkg} {v.get(pkg, '?')}, numpy {v.get('numpy', '?')}"


def table_rows(report: dict) -> List[List[str]]:
    rows = []
    for name, eng in report["engines"].items():
        fail = "FAIL" if eng["required"] else "n/a (optional)"
        if not eng["installed"] or not eng["artifacts"]:
            rows.append([name, "-", _installed(eng), "-", eng.get("error", "-")[:40], "-", "-", "-", "-", fail])
        for fmt, art in eng["artifacts"].items():
            c = art.get("comparison")
            if not c or "images" not in c:
                why = art.get("error", (c or {}).get("error", "did not run")).replace("edge-run failed: ", "")
                rows.append([name, fmt, _installed(eng), art.get("host_engine", "-"), why[:40], "-", "-", "-", "-",
                             fail])
                continue
            ok = "pass" if c["passed"] else ("FAIL" if eng["required"] else "fail (optional)")
            rows.append([name, fmt, _installed(eng), art["host_engine"],
                         f"{c['top1_agree']}/{c['images']} ({c['top1_agreement']:.1%})",
                         f"{c['max_abs_diff']:.3g}", f"{c['mean_abs_diff']:.3g}", f"{c['tolerance']:.3g}",
                         "yes" if c["bit_exact"] else "no", ok])
    return rows


def exactness(report: dict) -> str:
    """One line: which engine/artifact pairs are bit-exact across the architectures, which within tolerance."""
    groups = {"bit-exact": [], "within tolerance": [], "outside tolerance": []}
    for name, eng in report["engines"].items():
        for fmt, art in eng["artifacts"].items():
            c = art.get("comparison", {})
            if "images" in c:
                key = "bit-exact" if c["bit_exact"] else "within tolerance" if c["passed"] else "outside tolerance"
                groups[key].append(f"{name} {fmt}" + ("" if c["bit_exact"] else f" (max {c['max_abs_diff']:.2g})"))
    return "; ".join(f"{k}: {', '.join(v)}" for k, v in groups.items() if v)


def render_table(report: dict) -> str:
    rows = [list(COLUMNS)] + table_rows(report)
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([lines[0], "  ".join("-" * w for w in widths)] + lines[1:])


def _md_row(cells) -> str:
    return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"


def render_markdown(report: dict) -> str:
    t, h, im, wall = report["target"], report["host"], report["images"], report.get("wall_clock_s", {})
    per_class = ", ".join(f"{k} {v}" for k, v in im["per_class"].items())
    md = [f"# pi-check: edgekit-runtime on Debian {t['suite']} arm64 (emulated): "
          f"{'PASS' if report['passed'] else 'FAIL'}", "",
          f"- created {report['created']}; export `{report['export']}`",
          f"- {im['count']} CIFAR-10 test images ({per_class}), seed {im['seed']}",
          f"- host: {h['machine']}, Python {h['python']}, {h['libc']}",
          f"- target: {t['machine']} under qemu-user (`QEMU_CPU={t['qemu_cpu']}`; {t.get('cpuinfo', '')}), "
          f"Python {t['python']}, {t['libc']}",
          "", "## Host vs aarch64", "",
          "Top-1 must agree on every image and max |Δp| stay within the tolerance (one output quantization "
          "step for a quantized output, 1e-5 for a float one). Bit-exact: identical float32 probabilities.", "",
          _md_row(COLUMNS), "|" + "---|" * len(COLUMNS)]
    md += [_md_row(r) for r in table_rows(report)]
    md += ["", f"Across {report['host']['machine']} and {t['machine']}: {exactness(report)}."]
    md += ["", f"## Which engines install on aarch64 for CPython {t['python']} (pip alone, wheels only)", ""]
    for name, eng in report["engines"].items():
        versions = ", ".join(f"{k} {v}" for k, v in eng.get("versions", {}).items())
        md.append(f"- `edgekit-runtime[{name}]`" + ("" if eng["required"] else " (optional)") + ": "
                  + (f"installs ({versions})" if eng["installed"] else eng.get("error", "")))
        for fmt, art in eng["artifacts"].items():
            c = art.get("comparison", {})
            if "error" in art:
                md.append(f"  - {fmt}: {art['error']}")
            elif "accuracy_aarch64" in c:
                md.append(f"  - {fmt}: runs; top-1 accuracy on these images {c['accuracy_aarch64']:.1%} "
                          f"(host {c['accuracy_host']:.1%})")
    md += ["", "## Commands (README, \"Running on a Raspberry Pi\")", "", "```bash", "# on a PC with internet"]
    md += report["commands"]["pc"] + ["# on the Pi"] + report["commands"]["pi"] + ["```", ""]
    md += ["qemu emulates the CPU: nothing here is a latency figure. Wall-clock of the check's steps, for "
           f"planning only: rootfs build {wall.get('rootfs_build')} s (reused this time: {t.get('rootfs_reused')}), "
           f"this check {wall.get('this_check')} s.", ""]
    return "\n".join(md)
