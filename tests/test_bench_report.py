"""report.html and its plots, from a synthetic but realistic report.json dict (no models, no benchmark)."""
from __future__ import annotations

import base64
import copy
import io
import os
import shutil
import subprocess
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from edgekit.benchmarks import plots
from edgekit.benchmarks.html import render_html, write_html

LABELS = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
CLASS_SPREAD = np.random.default_rng(1).normal(0, 0.06, len(LABELS))
EVIL = '<script>alert("x")</script> & "quotes"'


def _accuracy(rng: np.random.Generator, top1: float, agreement: float) -> dict:
    k, n = len(LABELS), 1000
    cm = np.zeros((k, k), np.int64)
    spread = CLASS_SPREAD + rng.normal(0, 0.012, k)  # classes differ alike in every model, plus a little noise
    recall = np.clip(top1 + spread - spread.mean(), 0.5, 0.99)  # per-class recall averaging to top1
    for i in range(k):
        right = int(round(recall[i] * n))
        wrong = rng.multinomial(n - right, rng.dirichlet(np.ones(k - 1) * 0.6))
        cm[i, i] = right
        cm[i, [j for j in range(k) if j != i]] = wrong
    tp = np.diag(cm)
    precision, recall = tp / np.maximum(cm.sum(0), 1), tp / cm.sum(1)
    f1 = 2 * precision * recall / np.maximum(precision + recall, 1e-9)
    return {"images": int(cm.sum()), "top1": float(tp.sum() / cm.sum()), "top5": min(0.999, top1 + 0.12),
            "agreement": agreement, "macro_f1": float(f1.mean()),
            "per_class": {lab: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                                "support": int(cm[i].sum())} for i, lab in enumerate(LABELS)},
            "confusion_matrix": cm.tolist()}


def _stats(samples: np.ndarray) -> dict:
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    return {"n": len(samples), "p50_ms": float(p50), "p90_ms": float(p90), "p99_ms": float(p99),
            "mean_ms": float(samples.mean()), "std_ms": float(samples.std(ddof=1)), "min_ms": float(samples.min()),
            "max_ms": float(samples.max()), "samples_ms": [round(float(s), 4) for s in samples]}


def _latency(rng: np.random.Generator, base_ms: float, macs: int, skip_batch8: bool = False) -> list:
    out = []
    for threads in (1, 2):
        for batch in (1, 8):
            if skip_batch8 and batch == 8:
                out.append({"threads": threads, "batch": batch, "skipped": "the model takes a fixed batch of 1"})
                continue
            bare_ms = base_ms * batch ** 0.85 / threads ** 0.7
            entry = {"threads": threads, "batch": batch}
            for kind, factor in (("bare", 1.0), ("run", 1.04), ("e2e", 1.6)):
                entry[kind] = _stats(bare_ms * factor * rng.lognormal(0, 0.12, 120))
            entry["overhead_pct"] = round(100 * (entry["run"]["p50_ms"] / entry["bare"]["p50_ms"] - 1), 2)
            entry["throughput_ips"] = round(1000 * batch / entry["run"]["mean_ms"], 2)
            entry["gmacs_per_s"] = round(macs * batch / (entry["run"]["mean_ms"] / 1000) / 1e9, 3)
            out.append(entry)
    return out


def _artifact(rng, name, engine, status, size, base_ms, top1, agreement, reason=None, skip_batch8=False):
    macs = 41_000_000
    load = round(size / 2e7 + 0.002, 4)
    return {"name": name, "kind": "artifact", "device": "local", "status": status,
            "symbol": {"passed": "✅", "outside_tolerance": "❎", "failed": "❌"}[status], "reason": reason,
            "file": f"model_{name}.{'onnx' if engine == 'onnx' else 'tflite'}", "engine": engine,
            "summary": f"{name} export", "size_bytes": size, "macs": macs,
            "accuracy": _accuracy(rng, top1, agreement),
            "cold": {"interpreter_s": 0.021, "import_s": 0.18, "engine_import_s": 0.09 if engine == "litert" else 0.21,
                     "load_s": load, "first_inference_s": base_ms / 400, "cold_start_s": None},
            "memory": {"peak_rss_after_load_mb": 55 + size / 1e5, "peak_rss_mb": 62 + size / 5e4},
            "latency": _latency(rng, base_ms, macs, skip_batch8), "headline": {"threads": 1, "batch": 1}}


def _cold_total(row: dict) -> dict:
    cold = row.get("cold")
    if cold:
        cold["cold_start_s"] = round(sum(v for v in cold.values() if v), 4)
    return row


def make_report() -> dict:
    rng = np.random.default_rng(0)
    fingerprint = {"hostname": "bench-box", "board": None, "cpu": "AMD EPYC 7B13", "architecture": "x86_64",
                   "cores": 2, "usable_cores": 2,
                   "cpu_freq": {"governor": "performance", "cur_mhz": 2450.0, "max_mhz": 3500.0, "min_mhz": 1500.0},
                   "os": "Debian GNU/Linux 12 (bookworm)", "kernel": "6.1.0-18-amd64", "python": "3.11.2",
                   "packages": {"ai-edge-litert": "2.3.0", "onnxruntime": "1.22.0", "numpy": "2.1.3"},
                   "memory_mb": 7940}
    rows = [
        {"name": "keras", "kind": "reference", "device": "local", "status": "passed", "symbol": "✅", "reason": None,
         "engine": "tensorflow", "size_bytes": 1_020_000, "macs": 41_000_000,
         "accuracy": _accuracy(rng, 0.86, 1.0)},
        _artifact(rng, "tflite-fp32", "litert", "passed", 330_000, 0.62, 0.86, 1.0),
        _artifact(rng, "tflite-fp16", "litert", "passed", 170_000, 0.65, 0.86, 0.999, skip_batch8=True),
        _artifact(rng, "tflite-int8", "litert", "passed", 105_000, 0.29, 0.853, 0.985),
        _artifact(rng, "tflite-dynamic", "litert", "outside_tolerance", 108_000, 0.44, 0.84, 0.97,
                  reason="convert: top-1 agreement 97.0 % < 98 % " + EVIL),
        _artifact(rng, "onnx-fp32", "onnx", "passed", 320_000, 0.95, 0.86, 1.0),
        {"name": "onnx-int8", "kind": "artifact", "device": "local", "status": "failed", "symbol": "❌",
         "reason": "benchmark: the engine refused the model " + EVIL},
    ]
    return {"schema_version": 1, "created": "2026-11-23T12:00:00+00:00", "command": "edge bench runs/x <b>",
            "run_dir": "runs/resnet8-<i>x", "export_dir": "runs/x/export", "labels": LABELS,
            "settings": {"threads": [1, 2], "batch": [1, 8], "runs": 120, "warmup": 5, "min_time": 0.0,
                         "samples": 10000},
            "test_set": {"images": 10000, "split": "test", "per_class": {lab: 1000 for lab in LABELS}},
            "devices": [{"id": "local", "host": None, "fingerprint": fingerprint,
                         "health_before": {"temperature_c": 45.2, "throttled": None},
                         "health_after": {"temperature_c": 51.0, "throttled": None}}],
            "rows": [_cold_total(r) for r in rows],
            "comparison": {"baseline": "old/report.json", "max_accuracy_drop_pp": 0.5, "max_latency_growth_pct": 10,
                           "passed": False,
                           "checks": [{"name": "tflite-int8", "metric": "top1", "old": 0.86, "new": 0.853,
                                       "change": "-0.7 pp", "limit": "0.5 pp", "ok": False},
                                      {"name": "tflite-int8", "metric": "p50_ms", "old": 0.3, "new": 0.29,
                                       "change": "-3.3 %", "limit": "10 %", "ok": True}]}}


@pytest.fixture(scope="module")
def report() -> dict:
    return make_report()


@pytest.fixture(scope="module")
def rendered(report) -> str:
    return render_html(report)


def _assert_png(data: bytes, min_w: int = 400, min_h: int = 200) -> Image.Image:
    assert isinstance(data, bytes) and data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    img.load()
    assert img.format == "PNG"
    w, h = img.size
    assert min_w <= w <= 3000 and min_h <= h <= 3000, img.size
    extrema = img.convert("L").getextrema()
    assert extrema[0] < extrema[1], "a blank image"
    return img


def _embedded_pngs(html: str) -> list:
    """The plots of a rendered page, decoded from their data: URIs and checked."""
    p = _parse(html)
    out = []
    for img in p.imgs:
        assert img["src"].startswith("data:image/png;base64,"), img["src"][:40]
        out.append(_assert_png(base64.b64decode(img["src"].split(",", 1)[1], validate=True)))
    return out


def test_plots_are_png(report, rendered, tmp_path):
    png = plots.pareto(report)
    _assert_png(png)
    path = plots.save(png, tmp_path / "sub" / "pareto.png")
    assert path.read_bytes() == png
    assert plots.save(None, tmp_path / "none.png") is None and not (tmp_path / "none.png").exists()
    # the page embeds the other three: pareto, distributions, thread scaling, throughput
    images = _embedded_pngs(rendered)
    assert len(images) == 4
    assert all(img.width >= 800 for img in images)


def test_pareto_front():
    # (latency, accuracy): 0 fastest, 2 most accurate, 1 beaten by 0 on both, 3 ties 2 on accuracy but slower
    assert plots.pareto_front([(1.0, 80.0), (2.0, 79.0), (3.0, 86.0), (4.0, 86.0), (2.5, 83.0)]) == [0, 4, 2]


def test_single_thread_count_has_no_scaling_plot(report):
    r = copy.deepcopy(report)
    for row in r["rows"]:
        if row.get("latency"):
            row["latency"] = [x for x in row["latency"] if x["threads"] == 1]
    assert plots.thread_scaling(r) is None
    _assert_png(plots.throughput(r))  # batch 1 and 8 still measured
    for row in r["rows"]:
        if row.get("latency"):
            row["latency"] = [x for x in row["latency"] if x["batch"] == 1]
    assert plots.throughput(r) is None


class _Checker(HTMLParser):
    VOID = {"meta", "img", "br", "hr", "link", "input", "col", "source", "wbr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.imgs, self.tags, self.text = [], [], [], [], []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "img":
            self.imgs.append(dict(attrs))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes <{self.stack[-1] if self.stack else None}>")
        else:
            self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _parse(html: str) -> _Checker:
    p = _Checker()
    p.feed(html)
    p.close()
    assert not p.errors, p.errors[:5]
    assert not p.stack, p.stack
    return p


def test_html_is_self_contained_and_escaped(rendered):
    html = rendered
    p = _parse(html)
    assert p.tags.count("html") == 1 and "script" not in p.tags and "i" not in p.tags
    assert len(p.imgs) == 4
    for img in p.imgs:
        assert img["src"].startswith("data:image/png;base64,")
        assert img.get("alt")
    assert "http://" not in html and "https://" not in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    text = "".join(p.text)
    for expected in ("tflite-int8", "onnx-int8", "airplane", "bench-box", "AMD EPYC 7B13", "ai-edge-litert",
                     "skipped: the model takes a fixed batch of 1", "old/report.json", "Regression",
                     "edge bench runs/x <b>", "runs/resnet8-<i>x", EVIL, "schema v1"):
        assert expected in text, expected
    assert "✅" in text and "❎" in text and "❌" in text
    assert text.count("Confusion matrix") == 6  # every row with accuracy, not the failed one



def test_only_failed_rows_still_render(tmp_path):
    r = {"schema_version": 1, "run_dir": "runs/y", "devices": [],
         "rows": [{"name": "tflite-int8", "status": "failed", "symbol": "❌", "reason": "no wheel " + EVIL},
                  {"name": "onnx-fp32", "status": "failed", "symbol": "❌", "reason": None}]}
    for fn in (plots.pareto, plots.latency_distributions, plots.thread_scaling, plots.throughput):
        assert fn(r) is None
    html = render_html(r)
    p = _parse(html)
    assert not p.imgs and "&lt;script&gt;" in html and "<script>" not in html
    assert "tflite-int8" in html and "nothing to plot" in html
    assert "one thread count measured: pass <code>--threads 1,2,4</code>" in html
    for empty in ({}, {"rows": None, "devices": None, "settings": None, "comparison": {}}):
        _parse(render_html(empty))
    out = tmp_path / "bench" / "report.html"  # written atomically, parent created, no temporary left
    write_html(r, out)
    assert out.read_text(encoding="utf-8") == html and [f.name for f in out.parent.iterdir()] == ["report.html"]


def test_nulls_everywhere_do_not_break(report):
    r = copy.deepcopy(report)
    row = r["rows"][3]
    row["accuracy"]["top1"] = None
    row["accuracy"]["confusion_matrix"] = [[1, 2], [3]]  # ragged: the matrix is left out
    row["latency"][0]["run"] = None
    row["cold"] = None
    row["headline"] = {"threads": 9, "batch": 9}  # no such setting: first measured one
    r["devices"][0]["fingerprint"] = None
    r["rows"][1]["latency"][1]["bare"]["samples_ms"] = None
    r["created"] = "not a date"
    for x in r["rows"][2]["latency"]:
        x["threads"] = None  # the engine's default thread count
    assert len(_embedded_pngs(render_html(r))) == 4


def test_second_device_gets_its_own_markers(report):
    r = copy.deepcopy(report)
    pi = [copy.deepcopy(x) for x in r["rows"][1:4]]
    for row in pi:
        row["device"] = "pi@192.168.1.5"
        for x in row["latency"]:
            for k in ("bare", "run", "e2e"):
                if k in x:
                    x[k]["p50_ms"] *= 6
                    x[k]["samples_ms"] = [v * 6 for v in x[k]["samples_ms"]]
    r["rows"] += pi
    r["devices"].append({"id": "pi@192.168.1.5", "host": "192.168.1.5",
                         "fingerprint": {"board": "Raspberry Pi 4 Model B Rev 1.4", "architecture": "aarch64"},
                         "health_before": {"temperature_c": 48.0, "throttled": "0x0"},
                         "health_after": {"temperature_c": 61.5, "throttled": "0x20000"}})
    html = render_html(r)
    assert len(_embedded_pngs(html)) == 4
    assert "Raspberry Pi 4" in html and "throttling or under-voltage seen" in html and "@ pi@192.168.1.5" in html


CHROMIUM = next((c for c in ("/usr/bin/chromium", shutil.which("chromium") or "", shutil.which("chromium-browser") or "")
                 if c and os.path.exists(c)), None)


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium; .ci/run does)")
def test_screenshot_in_headless_chromium(rendered, tmp_path):
    page = tmp_path / "report.html"
    page.write_text(rendered, encoding="utf-8")
    shot = tmp_path / "out.png"
    start = time.monotonic()
    proc = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--no-first-run", "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                           f"--screenshot={shot}", "--window-size=1400,3000", page.as_uri()],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert shot.is_file(), f"no screenshot (exit {proc.returncode}): {proc.stderr[-2000:]}"
    img = Image.open(shot).convert("RGB")
    assert img.size == (1400, 3000)
    colours = img.getcolors(maxcolors=1 << 20)
    assert colours is None or len(colours) > 50, "the screenshot is (nearly) a single colour"
    # the plots were decoded and drawn: a good part of the page is neither white nor near-white
    arr = np.asarray(img)
    assert (arr.min(axis=2) < 200).mean() > 0.02
    print(f"screenshot in {time.monotonic() - start:.1f} s")
