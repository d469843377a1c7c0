"""Issue 26, the runtime's rows: tampered copies of a real export (conftest.tiny_export) and hostile images. Each
case ends with one line on stderr naming the problem and exit code 2 (`edge-run`), or the matching exception
(Python), and edge-run writes nothing anywhere."""
import hashlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, EXPORT_FORMATS, write_manifest
from edgekit_runtime import Classifier, ImageError, InputError, ModelError, SpecError
from edgekit_runtime import image as image_module
from edgekit_runtime.cli import main
from images import CLASSES, images


def listing(root: Path):
    return sorted((str(p.relative_to(root)), p.is_file() and not p.is_symlink() and p.stat().st_size)
                  for p in root.rglob("*"))


def one_line(argv, capsys, code=2):
    """Run edge-run in this process: the exit code must be `code`, stderr one line; returns that line."""
    got = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert got == code, (argv, captured.err)
    if code == 2:
        assert len(lines) == 1 and lines[0].startswith("edge-run: error: "), lines
        return lines[0]
    return captured.out


@pytest.fixture
def png(tmp_path):
    path = tmp_path / "red.png"
    Image.fromarray(images(1, seed=3)[0][0]).save(path)
    return path


# ------------------------------------------------------------------------ containment (row 3)
def _outside_model(tmp_path: Path) -> Path:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(exist_ok=True)
    evil = elsewhere / "evil.tflite"
    evil.write_bytes((DATA / "model_tflite-int8.tflite").read_bytes())
    return evil


@pytest.mark.parametrize("case", ["absolute", "dotdot", "dotdot-inside", "link", "link-dir", "directory", "fifo",
                                  "nul", "number", "backslash-absolute"])
def test_a_manifest_file_outside_the_export_or_not_a_file_is_refused(tiny_export, tmp_path, png, capsys, case):
    evil = _outside_model(tmp_path)
    file, fragment = {
        "absolute": (str(evil), "is an absolute path"),
        "dotdot": ("../elsewhere/evil.tflite", "climbs out with '..'"),
        "dotdot-inside": ("sub/../model_tflite-int8.tflite", "climbs out with '..'"),
        "link": ("link.tflite", "outside"),
        "link-dir": ("linked/evil.tflite", "outside"),
        "directory": ("adir.tflite", "is a directory, not a regular model file"),
        "fifo": ("pipe.tflite", "is a FIFO (named pipe), not a regular model file"),
        "nul": ("evil\x00.tflite", "holds a NUL byte"),
        "number": (7, "a file name must be a non-empty string, not 7"),
        "backslash-absolute": ("\\\\server\\share\\evil.tflite", "is an absolute path"),
    }[case]
    if case == "link":
        (tiny_export / "link.tflite").symlink_to(evil)
    elif case == "link-dir":
        (tiny_export / "linked").symlink_to(evil.parent, target_is_directory=True)
    elif case == "directory":
        (tiny_export / "adir.tflite").mkdir()
    elif case == "fifo":
        os.mkfifo(tiny_export / "pipe.tflite")
    write_manifest(tiny_export, [{"format": "evil", "file": file, "sha256": "0" * 64},
                                 {"format": "tflite-int8", "file": "model_tflite-int8.tflite"}])
    before = listing(tmp_path)
    for argv in (["predict", tiny_export, png, "--format", "evil"], ["info", tiny_export, "--format", "tflite-int8"]):
        line = one_line(argv, capsys)
        assert fragment in line and "manifest.json" in line, line
    with pytest.raises(ModelError, match="manifest.json"):
        Classifier.load(tiny_export, format="tflite-int8")
    assert listing(tmp_path) == before


def test_a_model_or_side_file_linked_from_outside_is_refused(tiny_export, tmp_path, png, capsys):
    evil = _outside_model(tmp_path)
    (tiny_export / "manifest.json").unlink()
    (tiny_export / "planted.tflite").symlink_to(evil)  # not in any manifest: found by listing the folder
    assert "outside" in one_line(["predict", tiny_export, png, "--format", "int8"], capsys)
    (tiny_export / "planted.tflite").unlink()
    (tmp_path / "elsewhere" / "labels.txt").write_text("a\nb\nc\n")
    (tiny_export / "labels.txt").unlink()
    (tiny_export / "labels.txt").symlink_to(tmp_path / "elsewhere" / "labels.txt")
    assert "labels.txt: links to" in one_line(["info", tiny_export, "--format", "int8"], capsys)
    (tiny_export / "labels.txt").unlink()
    os.mkfifo(tiny_export / "labels.txt")  # would block read_text() forever
    assert "is a FIFO" in one_line(["info", tiny_export, "--format", "int8"], capsys)


def test_a_manifest_that_is_not_a_manifest_is_one_sentence(tiny_export, capsys):
    cases = [(b"\xff\xfe{}", "not UTF-8"), (b"[" * 100000, "nested too deeply"), (b"[1, 2]", "JSON object"),
             (b'{"artifacts": 5}', "'artifacts' must be a list"), (b'{"artifacts": [5]}', "must be an object"),
             (b'{"artifacts": [{"file": "model_tflite-int8.tflite", "sha256": "xyz"}]}', "64 hexadecimal"),
             (b'{"artifacts": [{"file": "model_tflite-int8.tflite", "format": ["x"]}]}', "must be text")]
    for raw, fragment in cases:
        (tiny_export / "manifest.json").write_bytes(raw)
        line = one_line(["info", tiny_export, "--format", "int8"], capsys)
        assert fragment in line and "manifest.json" in line, (raw[:40], line)
    (tiny_export / "manifest.json").unlink()
    os.mkfifo(tiny_export / "manifest.json")
    assert "is a FIFO" in one_line(["info", tiny_export, "--format", "int8"], capsys)


# --------------------------------------------------------------------------------- integrity
def _tamper(model: Path) -> None:
    """Change a byte of the embedded notes: still a loadable model, with another sha256."""
    blob = model.read_bytes()
    at = blob.index(b"given on the command line")
    model.write_bytes(blob[:at] + b"G" + blob[at + 1:])


def test_a_model_that_differs_from_its_manifest_sha256_is_refused_unless_told(tiny_export, png, capsys):
    model = tiny_export / "model_tflite-int8.tflite"
    recorded = hashlib.sha256(model.read_bytes()).hexdigest()
    _tamper(model)
    actual = hashlib.sha256(model.read_bytes()).hexdigest()
    for target in (tiny_export, model):  # the directory, or the file itself: the manifest beside it counts
        line = one_line(["predict", target, png, "--format", "tflite-int8"], capsys)
        assert actual in line and recorded in line and "--no-verify" in line, line
        with pytest.raises(ModelError, match=recorded):
            Classifier.load(target, format="tflite-int8")
    out = one_line(["predict", tiny_export, png, "--format", "tflite-int8", "--no-verify"], capsys, code=0)
    assert out.startswith(f"{png}: ")
    assert Classifier.load(model, verify=False).labels == CLASSES
    # an entry without a digest, a model the manifest does not name: nothing to check against
    write_manifest(tiny_export, [{"format": "tflite-int8", "file": "model_tflite-int8.tflite"}])
    assert Classifier.load(tiny_export, format="tflite-int8").labels == CLASSES
    (tiny_export / "manifest.json").unlink()
    assert Classifier.load(model).labels == CLASSES


def test_an_untouched_export_verifies(tiny_export, png, capsys):
    for fmt in EXPORT_FORMATS:
        out = one_line(["predict", tiny_export, png, "--format", fmt], capsys, code=0)
        assert out.startswith(f"{png}: red ")


# ------------------------------------------------------------------------- no hangs (row 4)
def test_special_files_among_images_are_refused_and_the_others_classified(tmp_path, png):
    short = Path(tempfile.mkdtemp(prefix="ek-"))  # AF_UNIX paths must be short
    try:
        fifo, sock_path = short / "pipe.jpg", short / "sock.png"
        os.mkfifo(fifo)
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(sock_path))
        argv = [sys.executable, "-m", "edgekit_runtime", "predict", str(DATA / "model_onnx-fp32.onnx"), str(png),
                str(fifo), "/dev/null", str(sock_path), str(png), "--batch-size", "3"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=120)  # before: blocked in open()
        sock.close()
    finally:
        for p in short.iterdir():
            p.unlink()
        short.rmdir()
    assert done.returncode == 2, done.stderr
    assert [ln.split(":")[0] for ln in done.stdout.splitlines()] == [str(png), str(png)]
    err = done.stderr.strip().splitlines()
    assert err == [f"edge-run: error: {fifo}: is a FIFO (named pipe), not a regular file.",
                   "edge-run: error: /dev/null: is a character device, not a regular file.",
                   f"edge-run: error: {sock_path}: is a socket, not a regular file.",
                   "edge-run: 3 of 5 images could not be read; the other 2 were classified."], err


def test_an_image_file_over_the_size_cap_is_refused_unread(tmp_path, png, capsys, monkeypatch):
    monkeypatch.setattr(image_module, "IMAGE_FILE_LIMIT", 1000)
    big = tmp_path / "big.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(big)
    line = one_line(["predict", DATA / "model_tflite-fp32.tflite", big], capsys)
    assert line.endswith(f"{big}: file of {big.stat().st_size} bytes, over the 1000 bytes this runtime reads.")
    assert image_module.IMAGE_FILE_LIMIT == 1000 and big.stat().st_size > 1000


# ------------------------------------------------------------------ preprocessing (rows 5, 6)
BAD_SPECS = [
    ('"scale": NaN', {"scale": [float("nan")] * 3}, "'scale' holds nan"),
    ('"scale": Infinity', {"scale": [1, float("inf"), 1]}, "'scale' holds inf"),
    ("scale 1e30", {"scale": [1e30] * 3}, "'scale' holds 1e+30"),
    ("scale 0", {"scale": [0, 0, 0]}, "'scale' holds 0"),
    ("offset -1e300", {"offset": [-1e300, 0, 0]}, "'offset' holds -1e+300"),
    ('scale "abc"', {"scale": "abc"}, "'scale' must be a list of 3 numbers"),
    ("scale of 2", {"scale": [1, 1]}, "'scale' must be a list of 3 numbers"),
    ("scale of bools", {"scale": [True, True, True]}, "'scale' must be a list of 3 numbers"),
    ("height 0", {"height": 0}, "'height' must be a whole number of pixels from 1 to 4096"),
    ("height 10**6", {"height": 10 ** 6}, "'height' must be a whole number"),
    ('width "16"', {"width": "16"}, "'width' must be a whole number"),
    ("width 16.5", {"width": 16.5}, "'width' must be a whole number"),
    ("channel_order", {"channel_order": "XYZ"}, "'channel_order' must be 'RGB' or 'BGR'"),
    ("layout list", {"layout": ["NHWC"]}, "'layout' must be 'NHWC' or 'NCHW'"),
    ("keep_aspect_ratio", {"keep_aspect_ratio": "yes"}, "'keep_aspect_ratio' must be true or false"),
    ("schema_version", {"schema_version": 99}, "'schema_version' must be 1 to 1"),
    ("missing", {"height": None}, "'height' must be a whole number"),
]


@pytest.mark.parametrize("name,change,fragment", BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
def test_preprocess_json_is_validated_as_a_whole(tiny_export, png, capsys, name, change, fragment):
    path = tiny_export / "preprocess.json"
    spec = json.loads(path.read_text())
    spec.update(change)
    path.write_text(json.dumps(spec))   # json writes NaN / Infinity as Python does, and the runtime parses them
    line = one_line(["predict", tiny_export, png, "--format", "int8"], capsys)
    assert f"{path}: {fragment}" in line, line
    with pytest.raises(SpecError, match="preprocess.json"):
        Classifier.load(tiny_export, format="onnx")


@pytest.mark.parametrize("raw,fragment", [(b"\x00\xff\xfe\x00binary", "not UTF-8"), (b"[" * 50000, "nested too deeply"),
                                          (b"[1, 2, 3]", "must hold a JSON object"), (b'{"height": 1', "not a valid"),
                                          (b"", "not a valid"), (b'{"height": 16}', "missing field(s) offset, scale")])
def test_preprocess_json_that_is_not_a_spec_is_one_sentence(tiny_export, capsys, raw, fragment):
    (tiny_export / "preprocess.json").write_bytes(raw)
    line = one_line(["info", tiny_export, "--format", "int8"], capsys)
    assert fragment in line and "preprocess.json" in line, line


def test_embedded_preprocess_metadata_is_validated_too(tmp_path, capsys):
    blob = (DATA / "model_tflite-fp32.tflite").read_bytes()
    old = b'"scale":[0.00392156862745098,'
    assert blob.count(old) == 1
    model = tmp_path / "lone.tflite"
    new = b'"scale":[1e999              ,'
    assert len(new) == len(old)   # the same length: still a valid flatbuffer
    model.write_bytes(blob.replace(old, new))
    line = one_line(["info", model], capsys)
    assert "(embedded preprocess metadata): 'scale' holds inf" in line, line
    model.write_bytes(blob.replace(b'"height":16', b'"height":""'))
    assert "'height' must be a whole number" in one_line(["info", model], capsys)


# ------------------------------------------------------------------------------ memory (row 8)
def _reference(path: Path, clf: Classifier) -> np.ndarray:
    """What the strip decoder must equal: the full decode, reduced by the same factor, then the usual resize."""
    from edgekit_runtime.image import _to_rgb, resize_rgb
    from edgekit_runtime.png_strips import reduce_factor
    with Image.open(path) as im:
        im.load()
        rgb = _to_rgb(im)
    return resize_rgb(rgb.reduce(reduce_factor(rgb.size, (16, 16))), (16, 16))


@pytest.mark.parametrize("mode", ["1", "L", "P", "P-transparent", "RGB", "RGBA", "LA", "I;16"])
def test_a_png_over_the_budget_decodes_in_strips_exactly_like_a_full_decode(tmp_path, mode, monkeypatch):
    from edgekit_runtime import png_strips
    monkeypatch.setattr(png_strips, "STRIP_PIXELS", 20_000)   # many strips, each primed by the one before
    rng = np.random.default_rng(7)
    h, w = 733, 641
    ramp = (np.add.outer(np.arange(h), 2 * np.arange(w)) // 9 % 256)[..., None] + rng.integers(0, 12, (h, w, 3))
    rgb = Image.fromarray(np.clip(ramp, 0, 255).astype(np.uint8))
    img = {"1": lambda: rgb.convert("1"), "L": lambda: rgb.convert("L"), "RGB": lambda: rgb,
           "P": lambda: rgb.convert("P", palette=Image.ADAPTIVE, colors=40),
           "P-transparent": lambda: rgb.convert("P", palette=Image.ADAPTIVE, colors=200),
           "RGBA": lambda: Image.merge("RGBA", (*rgb.split(), rgb.convert("L"))), "LA": lambda: rgb.convert("LA"),
           "I;16": lambda: Image.fromarray(np.asarray(rgb.convert("L"), np.uint16) * 257)}[mode]()
    path = tmp_path / "big.png"
    img.save(path, **({"transparency": 5} if mode == "P-transparent" else {}))
    clf = Classifier.load(DATA / "model_tflite-fp32.tflite")
    full = clf.preprocess(path)                    # the default budget decodes this one whole
    with Image.open(path) as opened:
        need = png_strips.strip_cost(opened, (16, 16))
    clf.decode_budget = need + path.stat().st_size + 1
    calls = []
    monkeypatch.setattr(png_strips, "decode", lambda *a, real=png_strips.decode: calls.append(1) or real(*a))
    stripped = clf.preprocess(path)
    assert calls == [1]
    np.testing.assert_array_equal(stripped, clf.preprocess(_reference(path, clf)))
    assert np.abs(stripped - full).max() < 0.12   # reduce-then-resize is close to the direct resize


def _bomb_png(path: Path, side: int) -> None:
    """A 1-bit side x side PNG, black with a white square, written row by row (no side^2 buffer in this process)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    stride = (side + 7) // 8
    quarter, half = stride // 4, stride // 2
    black, white = b"\0" + bytes(stride), b"\0" + bytes(quarter) + b"\xff" * half + bytes(stride - quarter - half)
    z = zlib.compressobj(9)
    body = b"".join(z.compress(white if side // 4 <= y < 3 * side // 4 else black) for y in range(side)) + z.flush()
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def test_a_13000_pixel_png_bomb_is_classified_in_bounded_memory(tmp_path):
    bomb = tmp_path / "bomb.png"
    _bomb_png(bomb, 13000)
    assert bomb.stat().st_size < 40_000
    code = ("import resource, sys\nfrom edgekit_runtime.cli import main\n"
            f"code = main(['predict', {str(DATA / 'model_tflite-int8.tflite')!r}, {str(bomb)!r}])\n"
            "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, file=sys.stderr)\nsys.exit(code)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.startswith(f"{bomb}: "), done.stderr
    peak_mb = int(done.stderr.strip().splitlines()[-1])
    assert peak_mb <= 300, peak_mb   # a whole decode took 872 MB


def test_images_that_cannot_fit_the_memory_limit_are_refused_in_one_line(tmp_path, png, capsys):
    tiff = tmp_path / "big.tif"
    Image.new("RGB", (3000, 3000), (200, 30, 30)).save(tiff, compression="tiff_deflate")
    model = DATA / "model_tflite-int8.tflite"
    from edgekit_runtime.files import current_rss
    limit = current_rss() // (1 << 20) + 16 + 64     # leaves this process about 64 MB for one decode
    line = one_line(["predict", model, tiff, "--max-memory", limit], capsys)
    assert f"{tiff}: a 3000x3000 TIFF image needs about 102 MB to decode, over the" in line, line
    assert one_line(["predict", model, tiff, png], capsys, code=0).startswith(f"{tiff}: red ")  # 256 MB default
    line = one_line(["predict", model, png, "--max-memory", "1"], capsys)
    assert "a memory limit of 1 MB is too small" in line, line
    with pytest.raises(InputError, match="positive number"):
        Classifier.load(model).set_memory_limit(float("nan"))
    with pytest.raises(SystemExit):
        main(["predict", str(model), str(png), "--max-memory", "-5"])
    assert "must be a positive number of MB" in capsys.readouterr().err


def test_a_large_jpeg_decodes_at_reduced_scale_within_a_small_limit(tmp_path, capsys):
    photo = tmp_path / "photo.jpg"
    y, x = np.mgrid[0:1800, 0:2400]
    Image.fromarray(np.stack([x % 256, y % 256, (x + y) % 256], -1).astype(np.uint8)).save(photo, quality=85)
    clf = Classifier.load(DATA / "model_tflite-int8.tflite")
    clf.decode_budget = 4 << 20   # the full decode needs 50 MB; at 1/8 scale (300x225) under 1 MB
    assert clf.predict(photo).shape == (1, 3)
    Image.open(photo).save(tmp_path / "progressive.jpg", quality=85, progressive=True)
    # a progressive JPEG keeps every DCT coefficient until its last scan, whatever the scale: 25 MB here
    with pytest.raises(ImageError, match=r"needs about 2\d MB to decode, over the \d MB allowed"):
        clf.predict(tmp_path / "progressive.jpg")


# --------------------------------------------------------------------- one exit-code contract
def test_an_internal_error_is_one_line_even_when_its_message_fails(monkeypatch, png, capsys):
    class Nasty(Exception):
        def __str__(self):
            raise RuntimeError("no message for you")

    def boom(*a, **k):
        raise Nasty()
    monkeypatch.delenv("EDGE_DEBUG", raising=False)
    monkeypatch.setattr(Classifier, "predict", boom)
    assert main(["predict", str(DATA / "model_tflite-int8.tflite"), str(png)]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err == ["edge-run: internal error: Nasty: (no message) (EDGE_DEBUG=1 shows the traceback)"]


def test_a_hostile_file_name_stays_one_line(tmp_path, capsys):
    odd = tmp_path / "a\nb\x1b[31m.png"
    odd.write_bytes(b"not a png")
    line = one_line(["predict", DATA / "model_tflite-int8.tflite", odd], capsys)
    assert "a\\nb\\x1b[31m.png" in line and "\x1b" not in line, line
