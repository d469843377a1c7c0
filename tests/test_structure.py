"""The package's shape, read from its code: no import circles, one-way layers, and no module that finds files
through its own location (an installed wheel has no checkout around it)."""
import re
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "src", ROOT / "runtime" / "src"]
# runtime ← train ← convert ← benchmarks ← deploy ← cli: each may import only what is to its right
LAYERS = ["edgekit.cli", "edgekit.deploy", "edgekit.benchmarks", "edgekit.convert", "edgekit.train"]
# bundle.py travels inside every `edge pack` bundle and runs there as a script: its folder is the bundle's
STANDALONE = {Path("src/edgekit/deploy/bundle.py")}


@pytest.fixture(scope="module")
def graph():
    return grimp.build_graph("edgekit", "edgekit_runtime", include_external_packages=False)


def _circles(graph):
    """Strongly connected groups of two or more modules (Tarjan), each sorted."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_import_circles(graph):
    assert _circles(graph) == []


def test_layers_import_one_way(graph):
    illegal = graph.find_illegal_dependencies_for_layers(layers=LAYERS)
    assert not illegal, [f"{d.importer} -> {d.imported}" for d in illegal]


def test_the_runtime_imports_nothing_of_edgekit(graph):
    assert not graph.chain_exists(importer="edgekit_runtime", imported="edgekit", as_packages=True)


def test_the_circle_finder_finds_a_circle():
    g = grimp.ImportGraph()
    for m in ("p.a", "p.b", "p.c"):
        g.add_module(m)
    g.add_import(importer="p.a", imported="p.b")
    g.add_import(importer="p.b", imported="p.a")
    g.add_import(importer="p.c", imported="p.a")
    assert _circles(g) == [["p.a", "p.b"]]


def test_no_module_finds_files_through_its_own_location():
    """Shipped files are package data, read with importlib.resources; __file__ would find a checkout's."""
    offenders = []
    for base in SOURCES:
        for path in sorted(base.rglob("*.py")):
            rel = path.relative_to(ROOT)
            if rel not in STANDALONE and re.search(r"\b__file__\b", path.read_text(encoding="utf-8")):
                offenders.append(str(rel))
    assert offenders == []


def test_import_paths_are_file_paths():
    """src layout: edgekit.train.run is src/edgekit/train/run.py, with no package-dir mapping in between."""
    from importlib.util import find_spec   # found, not imported: the fast tier stays free of TensorFlow
    assert Path(find_spec("edgekit.train.run").origin).resolve() == ROOT / "src/edgekit/train/run.py"
    assert Path(find_spec("edgekit_runtime.classifier").origin).resolve() == ROOT / "runtime/src/edgekit_runtime/classifier.py"
    assert "package-dir" not in (ROOT / "pyproject.toml").read_text()


def test_the_readme_lists_every_exit_code_and_no_other():
    from edgekit_runtime.exits import Exit
    section = (ROOT / "README.md").read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    listed = {int(m) for m in re.findall(r"^\| (\d+) \|", section, flags=re.M)}
    assert listed == {int(e) for e in Exit}


def test_one_parser_reads_format_names_for_every_command():
    from edgekit.convert.formats import DEFAULT_FORMATS, FORMATS, parse_names
    from edgekit.errors import EdgeError
    assert parse_names(None, FORMATS, DEFAULT_FORMATS) == list(DEFAULT_FORMATS)
    assert parse_names(" ONNX-fp32 ,tflite-int8,onnx-fp32,", FORMATS, DEFAULT_FORMATS) == ["onnx-fp32", "tflite-int8"]
    held = ["tflite-int8", "onnx-fp32"]   # e.g. what a manifest holds
    assert parse_names("all", held, held) == held and parse_names("default", held, DEFAULT_FORMATS) == held
    with pytest.raises(EdgeError, match="unknown format 'onnx-int9'. Did you mean 'onnx-int8'"):
        parse_names("onnx-int9", FORMATS, DEFAULT_FORMATS)
    with pytest.raises(EdgeError, match="no format given"):
        parse_names(" , ", FORMATS, DEFAULT_FORMATS)
    # the commands call it, none splits names itself
    for module in ("convert/formats.py", "benchmarks/run.py", "deploy/pi/check.py"):
        assert "parse_names(" in (ROOT / "src/edgekit" / module).read_text()


# what an import inside a function may be keeping out of a light path (`edge --help`, the fast tier, a device)
HEAVY = ("tensorflow", "tf_keras", "tensorflow_hub", "tensorflow_model_optimization", "tf2onnx", "onnx", "onnxruntime",
         "onnx2tf", "onnx_graphsurgeon", "ai_edge_litert", "tflite_runtime", "PIL", "matplotlib", "keras", "torch")


def test_edgekit_modules_are_imported_inside_functions_only_to_keep_heavy_libraries_out():
    """An edgekit module imported inside a function instead of at the top must lead to a heavy library (TensorFlow,
    ONNX, Pillow, matplotlib, ...): anything else belongs at the top, where circles show."""
    import ast
    full = grimp.build_graph("edgekit", "edgekit_runtime", include_external_packages=True)
    heavy = [h for h in HEAVY if h in full.modules]

    def heavy_behind(module):
        return module in full.modules and any(full.chain_exists(importer=module, imported=h) for h in heavy)

    light = []
    for path in sorted((ROOT / "src" / "edgekit").rglob("*.py")):
        if path.relative_to(ROOT) in STANDALONE:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            for node in ast.walk(fn):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("edgekit", "edgekit_runtime"):
                    modules = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
                    if not any(heavy_behind(m) for m in modules):
                        light.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}")
    assert light == []
