"""report.html and its plots, from a synthetic but realistic report.json dict (no models, no benchmark)."""
from __future__ import annotations

import base64
import copy
import io
import os
import shutil
import subprocess
import re
import time
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from edgekit.benchmarks.report import plots
from edgekit.benchmarks.report.html import render_html, write_html
from testdata import EVIL, make_report

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


def test_layer_errors_chart_worst_first_with_kept_layers_tagged(rendered):
    section = rendered.split("<h2>Where int8 hurts</h2>", 1)[1].split("</section>", 1)[0]
    assert section.count('<div class="fill') == 12                   # the 12 worst of 15
    widths = [float(w) for w in re.findall(r'class="fill[^"]*" style="width: ([0-9.]+)%"', section)]
    assert widths[0] == 100.0 and widths == sorted(widths, reverse=True)
    assert section.count("fill kept") == 1 and "kept in float" in section
    assert "<script>" not in section and "&lt;script&gt;" in section  # a layer name is data, escaped


@pytest.mark.skipif(CHROMIUM is None, reason="headless Chromium not installed (apt-get install chromium; .ci/run does)")
def test_layer_errors_chart_draws_its_bars_in_headless_chromium(report, tmp_path):
    """Only the chart's section on the page: its red and blue bars must be drawn, in proportion."""
    html = render_html({**report, "rows": [r for r in report["rows"] if r.get("layers")], "comparison": None})
    page = tmp_path / "layers.html"
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "layers.png"
    subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run",
                    "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", f"--screenshot={shot}",
                    "--window-size=1200,8000", page.as_uri()], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    arr = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    red = (abs(arr[..., 0] - 0xcf) < 12) & (abs(arr[..., 1] - 0x22) < 12) & (abs(arr[..., 2] - 0x2e) < 12)
    blue = (abs(arr[..., 0] - 0x09) < 12) & (abs(arr[..., 1] - 0x69) < 12) & (abs(arr[..., 2] - 0xda) < 12)
    rows_red = np.flatnonzero(red.any(axis=1))
    assert red.sum() > 2000 and blue.sum() > 500, (red.sum(), blue.sum())
    # the blue bar (the worst layer, kept in float) is the longest; the red ones below it get shorter
    assert blue.sum(axis=1).max() > red.sum(axis=1).max() > 0 and len(rows_red) > 11 * 8
