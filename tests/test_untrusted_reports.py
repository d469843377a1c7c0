"""Hostile or hand-edited report.json files at `edge select` (issue 26, rows 6 and 9): one sentence and exit 2,
never a traceback, a Rich markup error, or a nonsense measurement ranked first. No TensorFlow."""
import copy
import json
import random

import pytest
from typer.testing import CliRunner

from edgekit import cli
from edgekit.cli import app
from testdata import make_report

runner = CliRunner()


def _select(tmp_path, report, *args):
    path = tmp_path / "report.json"
    path.write_text(report if isinstance(report, str) else json.dumps(report))
    return runner.invoke(app, ["select", str(path), *args])


def _artifact(report, name):
    return next(r for r in report["rows"] if r["name"] == name)


def _one_error_line(result):
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


def test_a_negative_latency_is_refused_not_ranked_first(tmp_path):
    report = make_report()
    entry = _artifact(report, "onnx-fp32")["latency"][0]
    entry["run"]["p50_ms"] = -5.0
    result = _select(tmp_path, report)
    assert result.exit_code == 2
    line = _one_error_line(result)
    assert "(onnx-fp32): latency run.p50_ms is -5; a measurement cannot be negative." in line


@pytest.mark.parametrize("field,value,words", [
    ("file", 7, "'file' must be a file name, got 7"),
    ("file", "../../../etc/passwd", "the artifact file '../../../etc/passwd' is outside the export folder"),
    ("file", "/etc/passwd", "the artifact file '/etc/passwd' is outside the export folder"),
    ("name", "x/../../q", "has the artifact name 'x/../../q': names are format names"),
    ("name", "[/x]", "has the artifact name '[/x]'"),
    ("status", "great", "has the status 'great'"),
    ("size_bytes", float("nan"), "size_bytes must be a finite number"),
    ("layers", {"errors": [{"layer": "a", "op": "ADD", "error": -1.0}]}, "the error of layer 'a' is -1"),
    ("layers", {"errors": [{"layer": 3, "op": "ADD", "error": 0.1}]}, "a layer error must name its layer and op"),
    ("layers", {"errors": [], "kept_in_float": [None]}, "a layer kept in float must be named"),
    ("layers", [1, 2], "'layers' must hold lists of errors"),
])
def test_impossible_values_are_one_sentence_and_exit_2(tmp_path, field, value, words):
    report = make_report()
    _artifact(report, "tflite-int8")[field] = value
    result = _select(tmp_path, json.dumps(report, allow_nan=True))
    assert result.exit_code == 2, result.output
    assert words in _one_error_line(result)


def test_markup_in_a_reason_or_device_is_printed_as_text(tmp_path):
    report = make_report()
    _artifact(report, "onnx-int8")["reason"] = "[/x] broke [bold]here"
    for row in report["rows"]:
        if row.get("kind") != "reference":
            row["device"] = "pi[/b]"
    result = _select(tmp_path, report)
    assert result.exit_code == 0, result.output
    assert "[/x] broke [bold]here" in result.output.replace("\n", " ") or "[/x] broke" in result.output
    assert "pi[/b]" in result.output


def test_internal_error_is_one_escaped_line(monkeypatch, capsys):
    def boom(*a, **k):
        raise RuntimeError("[/x] first line\nsecond line")
    monkeypatch.setattr(cli, "app", boom)
    monkeypatch.delenv("EDGE_DEBUG", raising=False)
    with pytest.raises(SystemExit) as stop:
        cli.main()
    assert stop.value.code == 1
    out = capsys.readouterr().err   # the console writes to stderr
    assert out.strip().splitlines() == ["internal error: RuntimeError: [/x] first line (set EDGE_DEBUG=1 for the traceback)"]


def _mutations(rng, base):
    """Seeded mutations of a good report: type swaps, huge/NaN/negative numbers, deletions, nesting, bytes."""
    text = json.dumps(base)
    odd = [None, -1, -1e30, 1e308, float("nan"), "abc", "[/x]", "../../e", [], {}, True, 10 ** 40, [[[[]]]]]
    for i in range(200):
        kind = i % 4
        if kind == 0:                                  # a byte flipped or truncated: often not JSON at all
            b = bytearray(text.encode())
            for _ in range(rng.randint(1, 5)):
                b[rng.randrange(len(b))] = rng.randrange(256)
            yield bytes(b[: rng.randrange(len(b) // 2, len(b) + 1)])
            continue
        report = copy.deepcopy(base)
        for _ in range(rng.randint(1, 4)):
            node, key = _random_slot(rng, report)
            if kind == 1:
                node[key] = rng.choice(odd)
            elif kind == 2 and isinstance(node, dict):
                node.pop(key, None)
            else:
                node[key] = json.loads("[" * 50 + "]" * 50) if rng.random() < 0.5 else {"deep": node.get(key) if isinstance(node, dict) else None}
        yield json.dumps(report, allow_nan=True).encode()


def _random_slot(rng, report):
    node = report
    for _ in range(rng.randint(1, 6)):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        if not keys:
            break
        key = rng.choice(keys)
        if not isinstance(node[key], (dict, list)) or not node[key] or rng.random() < 0.3:
            return node, key
        node = node[key]
    keys = list(node) if isinstance(node, dict) else list(range(len(node)))
    return (node, rng.choice(keys)) if keys else (report, "rows")


def test_fuzzed_reports_end_in_0_2_or_5(tmp_path):
    """200 seeded mutations: `edge select` answers each with 0 (one fits), 5 (none fits) or 2 (bad input)."""
    rng = random.Random(26)
    codes = {}
    for i, data in enumerate(_mutations(rng, make_report())):
        path = tmp_path / f"r{i}.json"
        path.write_bytes(data)
        result = runner.invoke(app, ["select", str(path)])
        assert result.exit_code in (0, 2, 5), (i, result.output, result.exception)
        assert "Traceback" not in result.output
        codes[result.exit_code] = codes.get(result.exit_code, 0) + 1
    assert codes.get(2, 0) >= 50 and codes.get(0, 0) >= 10, codes   # the mutations reach both sides
