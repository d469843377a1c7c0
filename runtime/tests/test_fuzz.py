"""200 mutated preprocess.json / manifest.json files (seeded) thrown at `edge-run info` and at Classifier.load:
every one ends with exit 0 or 2 (one line on stderr) and a loaded Classifier or a RuntimeErrorBase, never a
traceback, another exception or exit 1."""
import json
import random
import time

import pytest

from edgekit_runtime import Classifier, RuntimeErrorBase
from edgekit_runtime.cli import main

ROUNDS = 200
ODD_NUMBERS = ["NaN", "Infinity", "-Infinity", "1e308", "1e999", "-1e999", "-0.0", "0", "1e-320", "1" + "0" * 400,
               "-1", "4097", "3.5", "1e30", "true", "null"]
ODD_VALUES = ['"abc"', '""', "[]", "{}", "[1, 2]", "[1, 2, 3, 4]", '[\"a\", \"b\", \"c\"]', "[[1], [2], [3]]",
              '{"a": 1}', "false", "null", '"' + "x" * 5000 + '"', '"\\u0000"', '"\\ud800"']
ODD_FILES = ["../model_tflite-int8.tflite", "/etc/passwd", "", "a\u0000b.tflite", "x" * 5000 + ".tflite", ".",
             "./model_tflite-int8.tflite", "sub/../model_tflite-int8.tflite", "labels.txt", "C:\\\\evil.tflite",
             "model_tflite-int8.tflite/", "\\\\server\\\\share\\\\m.onnx", "missing.tflite", "é.tflite"]


def _text_of_values(doc) -> list:
    """Every number and string of the JSON text, as (start, end) spans, to splice odd values into."""
    out, text = [], json.dumps(doc)
    i = 0
    while i < len(text):
        c = text[i]
        if c == '"':
            j = i + 1
            while text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            if text[j + 1:j + 2] != ":":  # a value, not a key
                out.append((i, j + 1))
            i = j + 1
        elif c in "-0123456789tfn":
            j = i
            while j < len(text) and text[j] not in ",]} ":
                j += 1
            out.append((i, j))
            i = j
        else:
            i += 1
    return out


def mutate(doc: dict, rng: random.Random, is_manifest: bool) -> bytes:
    text = json.dumps(doc)
    kind = rng.choice(["flip", "truncate", "swap", "number", "nest", "encoding", "keys", "file", "sha256"]
                      if is_manifest else ["flip", "truncate", "swap", "number", "number", "nest", "encoding", "keys"])
    spans = _text_of_values(doc)
    if kind == "flip":
        raw = bytearray(text.encode())
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] ^= rng.randrange(1, 256)
        return bytes(raw)
    if kind == "truncate":
        return text.encode()[:rng.randrange(len(text))]
    if kind in ("swap", "number", "file", "sha256") and spans:
        if kind == "file" or kind == "sha256":
            key = '"file": ' if kind == "file" else '"sha256": '
            starts = [s for s in spans if text[max(0, s[0] - len(key)):s[0]] == key] or spans
            value = json.dumps(rng.choice(ODD_FILES)) if kind == "file" else rng.choice(
                ['"' + "0" * 64 + '"', '"' + "g" * 64 + '"', '"abc"', "12", "[]", '"' + "A" * 64 + '"'])
        else:
            starts, value = spans, rng.choice(ODD_NUMBERS if kind == "number" else ODD_VALUES)
        a, b = rng.choice(starts)
        return (text[:a] + value + text[b:]).encode()
    if kind == "nest" and spans:
        depth = rng.choice([5, 100, 900, 5000, 100000])
        a, b = rng.choice(spans)
        return (text[:a] + "[" * depth + text[a:b] + "]" * depth + text[b:]).encode()
    if kind == "encoding":
        return rng.choice([text.encode("utf-16"), text.encode() + b"\xff\xfe", b"\xef\xbb\xbf" + text.encode(),
                           text.replace('"', '"\u00e9', 1).encode("latin-1"),
                           bytes(rng.randrange(256) for _ in range(64))])
    # keys: drop one, or add an unknown or duplicated one
    data = json.loads(text)
    target = data if not is_manifest else rng.choice([data] + [e for e in data["artifacts"] if isinstance(e, dict)])
    if target and rng.random() < 0.5:
        del target[rng.choice(sorted(target))]
    else:
        key = rng.choice(["extra", "height", "file", "format", "artifacts", "models"])
        target[key] = json.loads(rng.choice(ODD_VALUES))
    return json.dumps(data).encode()


def test_mutated_side_files_end_in_exit_0_or_2(tiny_export, capsys, monkeypatch):
    monkeypatch.delenv("EDGE_DEBUG", raising=False)
    rng = random.Random(26)
    originals = {name: (tiny_export / name).read_bytes() for name in ("preprocess.json", "manifest.json")}
    docs = {name: json.loads(raw) for name, raw in originals.items()}
    codes, started = {0: 0, 2: 0}, time.perf_counter()
    for i in range(ROUNDS):
        name = "manifest.json" if i % 2 else "preprocess.json"
        for other, raw in originals.items():
            (tiny_export / other).write_bytes(raw)
        blob = mutate(docs[name], rng, name == "manifest.json")
        (tiny_export / name).write_bytes(blob)
        where = f"round {i}, {name}: {blob[:160]!r}"
        code = main(["info", str(tiny_export), "--format", "tflite-int8"])
        captured = capsys.readouterr()
        assert code in (0, 2), f"{where}\n{captured.err}"
        codes[code] += 1
        if code == 2:
            lines = captured.err.splitlines()
            assert len(lines) == 1 and lines[0].startswith("edge-run: error: "), f"{where}\n{captured.err}"
        try:
            Classifier.load(tiny_export, format="tflite-int8")
            loaded = True
        except RuntimeErrorBase:
            loaded = False
        except Exception as exc:  # noqa: BLE001 - the point of the test
            pytest.fail(f"{where}: Classifier.load raised {type(exc).__name__}: {exc}")
        assert loaded == (code == 0), where
    assert codes[0] >= 20 and codes[2] >= 60, codes   # both outcomes are exercised
    assert time.perf_counter() - started < 120
