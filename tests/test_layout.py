"""The run directory's layout (edgekit.layout): one object names every file, and nothing else spells them."""
import os
import re
import subprocess
import sys
from pathlib import Path

from edgekit.layout import RunLayout, latest

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("model.keras", "config.yaml", "run.json", "metrics.json", "history.json", "report.json", "report.md",
         "report.html", "training_curves.png", "confusion_matrix.png")


def test_the_layout_names_each_stage_s_files():
    run = RunLayout("runs/x")
    assert run.model == Path("runs/x/model.keras") and run.manifest == Path("runs/x/export/manifest.json")
    assert run.report == Path("runs/x/bench/report.json") and run.checkpoint("train") == Path("runs/x/checkpoints/train")
    assert run.labels.name == "labels.txt" and run.preprocess.name == "preprocess.json"


def test_no_module_but_the_layout_spells_a_run_file_name():
    pattern = re.compile("|".join(re.escape(f'"{n}"') for n in NAMES))
    spelled = [f"{p.relative_to(ROOT)}:{i}" for p in sorted((ROOT / "src").rglob("*.py")) if p.name != "layout.py"
               for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if pattern.search(line)]
    assert spelled == []


def test_latest_picks_the_newest_run_that_finished_the_stage(tmp_path):
    runs = tmp_path / "runs"
    for name, age in (("old", 300), ("new", 100), ("newest_untrained", 0)):
        (runs / name).mkdir(parents=True)
    for name, age in (("old", 300), ("new", 100)):
        RunLayout(runs / name).model.write_text("m")
        os.utime(RunLayout(runs / name).model, (1e9 - age, 1e9 - age))
    RunLayout(runs / "old").manifest.parent.mkdir()
    RunLayout(runs / "old").manifest.write_text("{}")
    assert latest("trained", runs) == runs / "new"
    assert latest("converted", runs) == runs / "old"
    assert latest("benchmarked", runs) is None and latest("trained", tmp_path / "none") is None
    out = subprocess.run([sys.executable, "-m", "edgekit.layout", "latest", "trained", str(runs)], capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == str(runs / "new")
