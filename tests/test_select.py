"""`edge select` on synthetic bench reports (no TensorFlow, no models): budgets, ranking, reasons, exit codes."""
import copy
import json

import pytest
from typer.testing import CliRunner

from edgekit.benchmarks.report.html import render_html
from edgekit.benchmarks.select import Budget, recommendations, select
from edgekit.cli import app
from edgekit.errors import EdgeError
from testdata import make_report


@pytest.fixture()
def reports(tmp_path):
    one = tmp_path / "run-a" / "bench"
    one.mkdir(parents=True)
    (one / "report.json").write_text(json.dumps(make_report()))
    other = copy.deepcopy(make_report())
    other["run_dir"] = "runs/b"
    for row in other["rows"]:
        row["device"] = "pi5" if row.get("kind") != "reference" else "local"
    (tmp_path / "b.json").write_text(json.dumps(other))
    return tmp_path / "run-a", tmp_path / "b.json"


def test_fastest_passing_within_budget_wins_and_every_other_says_why(reports):
    run, _ = reports
    sel = select([run], Budget())
    names = [c.artifact for c in sel.candidates]
    assert sel.best.artifact == "tflite-int8" and names[:4] == ["tflite-int8", "tflite-fp32", "tflite-fp16", "onnx-fp32"]
    assert [c.rank for c in sel.candidates[:4]] == [1, 2, 3, 4]
    why = {c.artifact: c.why for c in sel.candidates}
    assert why["tflite-fp32"].startswith("too slow: ") and "× the p50 of tflite-int8" in why["tflite-fp32"]
    assert why["tflite-dynamic"].startswith("❎ did not pass: convert: top-1 agreement")
    assert why["onnx-int8"].startswith("❌ did not pass: benchmark: the engine refused")
    int8 = sel.best
    assert 0 < int8.drop_pp < 1 and int8.value_ms == pytest.approx(
        next(e for e in make_report()["rows"][3]["latency"] if e["threads"] == 1 and e["batch"] == 1)["run"]["p50_ms"])

    strict = select([run], Budget(max_accuracy_drop_pp=int8.drop_pp - 0.01))
    assert strict.best.artifact == "tflite-fp32"
    assert next(c for c in strict.candidates if c.artifact == "tflite-int8").why.startswith("too inaccurate: top-1 ")
    floor = select([run], Budget(min_accuracy_pct=round(int8.top1 * 100 + 0.01, 2)))
    assert floor.best.artifact == "tflite-fp32"
    assert next(c for c in floor.candidates if c.artifact == "tflite-int8").why.startswith("not accurate enough: top-1 ")
    small = select([run], Budget(max_size_mb=0.2))
    assert small.best.artifact == "tflite-int8"
    assert next(c for c in small.candidates if c.artifact == "tflite-fp32").why == "too big: 0.33 MB (limit 0.2 MB)"
    by_cold = select([run], Budget(metric="cold"))
    colds = [c.value_ms for c in by_cold.candidates if c.fits]
    assert colds == sorted(colds)


def test_devices_must_be_named_when_several_and_exist(reports):
    run, other = reports
    with pytest.raises(EdgeError, match=r"several devices \(local, pi5\); choose one with --device"):
        select([run, other], Budget())
    with pytest.raises(EdgeError, match="no device 'pi4' in the reports; they cover: local, pi5"):
        select([run, other], Budget(), device="pi4")
    assert {c.run_dir for c in select([run, other], Budget(), device="pi5").candidates} == {"runs/b"}
    with pytest.raises(EdgeError, match="unknown metric 'p95'"):
        Budget(metric="p95")


def test_cli_table_json_and_exit_when_nothing_fits(reports, tmp_path):
    run, other = reports
    ok = CliRunner().invoke(app, ["select", str(run)])
    assert ok.exit_code == 0, ok.output
    assert "recommended: tflite-int8" in ok.output and "too slow" in ok.output
    assert ok.stdout == "tflite-int8\n"   # $(edge select RUN) gets the pick alone
    js = CliRunner().invoke(app, ["select", str(run), str(other), "--device", "local", "--json"])
    assert js.exit_code == 0
    assert json.loads(js.output)["recommended"]["artifact"] == "tflite-int8"
    none = CliRunner().invoke(app, ["select", str(run), "--max-size", "0.01"])
    assert none.exit_code == 5 and "nothing fits the budget" in none.output
    for args, message in ((["select", str(tmp_path / "nope")], "no such run directory or report.json"),
                          (["select", str(tmp_path)], "no bench/report.json here"),
                          (["select", str(run), "--device", "pi9"], "no device 'pi9'")):
        bad = CliRunner().invoke(app, args)
        assert bad.exit_code == 2 and message in bad.output and "Traceback" not in bad.output


def test_bench_report_html_marks_the_recommendation():
    report = make_report()
    report["recommendation"] = recommendations(report)
    assert report["recommendation"] == [{"device": "local", "artifact": "tflite-int8", "metric": "p50",
                                         "max_accuracy_drop_pp": 1.0,
                                         "value_ms": report["recommendation"][0]["value_ms"]}]
    html = render_html(report)
    assert "★ Recommended: tflite-int8</b>" in html
    assert html.count('class="name recommended"') == 1 and "★ tflite-int8" in html
    assert "Recommended" not in render_html(make_report())


def test_unlabelled_reports_budget_by_disagreement(tmp_path):
    """Without labels, 1 - agreement (which bounds the accuracy change) stands in for the accuracy drop."""
    report = make_report()
    for row in report["rows"]:
        acc = row.get("accuracy")
        if acc:
            row["accuracy"] = {"images": acc.get("images", 100), "top1": None, "top5": None, "labelled": False,
                               "agreement": acc.get("agreement", 1.0)}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(report))
    strict = select([path], Budget(max_accuracy_drop_pp=0.0))
    loose = select([path], Budget(max_accuracy_drop_pp=100.0))
    assert loose.best is not None and loose.best.top1 is None
    assert loose.best.drop_pp == pytest.approx((1 - next(
        r for r in report["rows"] if r["name"] == loose.best.artifact)["accuracy"]["agreement"]) * 100, abs=1e-3)
    why = {c.artifact: c.why for c in strict.candidates}
    disagreeing = [c for c in strict.candidates if c.drop_pp and c.drop_pp > 0 and c.symbol == "✅"]
    assert disagreeing and all(why[c.artifact].startswith("too far from the reference: disagrees on")
                               for c in disagreeing)
    floor = select([path], Budget(max_accuracy_drop_pp=100.0, min_accuracy_pct=50))
    assert floor.best is None and "needs labelled images" in floor.candidates[0].why


def test_a_mixed_artifact_is_chosen_when_plain_int8_misses_and_it_is_the_fastest_within_budget(tmp_path):
    report = make_report()
    int8 = next(r for r in report["rows"] if r["name"] == "tflite-int8")
    mixed = copy.deepcopy(int8)
    mixed.update(name="tflite-int8-mixed", file="model_tflite-int8-mixed.tflite")
    for entry in mixed["latency"]:
        for kind in ("bare", "run", "e2e"):
            if isinstance(entry.get(kind), dict) and "p50_ms" in entry[kind]:
                entry[kind]["p50_ms"] *= 1.2            # a few layers in float cost some speed
    int8.update(status="outside_tolerance", symbol="❎", reason="convert: top-1 agreement 93.0 % < limit 95 %")
    report["rows"].append(mixed)
    (tmp_path / "report.json").write_text(json.dumps(report))
    sel = select([tmp_path / "report.json"], Budget())
    assert sel.best.artifact == "tflite-int8-mixed"
    assert next(c for c in sel.candidates if c.artifact == "tflite-int8").why.startswith("❎ did not pass")
