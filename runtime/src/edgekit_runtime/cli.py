"""`edge-run`: classify images on the device. argparse, not typer, so the device needs nothing extra.

Bad input (a missing, corrupt, special or oversized file, a tampered export, an invalid preprocess.json)
ends with one line on stderr and exit code 2; an unexpected failure with one line and exit code 1
(EDGE_DEBUG=1 shows its traceback).
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from typing import List, Optional

from . import __version__
from .engines import ENGINES
from .exits import Exit
from .errors import ImageError, RuntimeErrorBase
from .native import quiet_native_stderr

PROG = "edge-run"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _megabytes(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of MB, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of MB, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Run an edgekit image classifier (.tflite or .onnx) "
                                     "on images, without TensorFlow.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("model", metavar="MODEL", help="a .tflite or .onnx file, or an export directory "
                       "(model files + labels.txt + preprocess.json)")
        p.add_argument("--engine", choices=list(ENGINES),
                       help="inference engine (default: the first installed that runs the file)")
        p.add_argument("--format", metavar="NAME", help="which model of an export directory holding several "
                       "(a manifest name, file name, or suffix such as int8)")
        p.add_argument("--threads", type=_positive_int, metavar="N", help="CPU threads (default: all available)")
        p.add_argument("--json", action="store_true", help="print JSON instead of text")
        p.add_argument("--no-verify", dest="verify", action="store_false",
                       help="load a model even if its sha256 differs from the one manifest.json records "
                       "(for a model edited by hand)")

    predict = sub.add_parser("predict", help="classify images", description="Print the most probable classes "
                             "of each image.")
    model_options(predict)
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="image files (JPEG, PNG, BMP, WebP, TIFF, ...)")
    predict.add_argument("--top-k", type=_positive_int, default=3, metavar="K", help="classes shown per image "
                         "(default: 3)")
    predict.add_argument("--batch-size", type=_positive_int, default=32, metavar="N",
                         help="images decoded and run together (default: 32)")
    predict.add_argument("--max-memory", type=_megabytes, metavar="MB",
                         help="keep this process under MB while decoding: large JPEGs decode at a reduced "
                         "scale and PNGs in strips to fit, other images that cannot are refused (default: "
                         "256 MB for one image's decode, beside the model)")

    info = sub.add_parser("info", help="describe a model", description="Show the engine, input, labels and "
                          "preprocessing a model would be run with.")
    model_options(info)

    bench = sub.add_parser("bench", help="benchmark the artifacts a plan lists (run by `edge bench`)",
                           description="Measure cold start, accuracy predictions and latency of each artifact "
                           "in a plan.json written by `edge bench`, each in a fresh process; write the JSON result.")
    bench.add_argument("plan", metavar="PLAN", help="plan.json (paths in it are relative to its directory)")
    bench.add_argument("--out", required=True, metavar="FILE", help="where to write the result JSON")
    bench.add_argument("--timeout", type=float, default=3600.0, metavar="S",
                       help="seconds one artifact may take before it is stopped (default: 3600)")
    return parser


def _load(args):
    from .classifier import Classifier
    return Classifier.load(args.model, threads=args.threads, engine=args.engine, format=args.format,
                           verify=args.verify, max_memory_mb=getattr(args, "max_memory", None))


def cmd_predict(args) -> int:
    """Classify every readable image; each unreadable one is a line on stderr, and the exit code says so."""
    from .classifier import top_indices
    with quiet_native_stderr(replay=True):
        clf = _load(args)
    labels, results, failed = clf.labels, [], []

    def classified(image: str, row) -> dict:
        top = [{"label": labels[j], "index": j, "probability": float(row[j])} for j in top_indices(row, args.top_k)]
        return {"image": image, "top_k": top}

    for start in range(0, len(args.images), args.batch_size):
        chunk, done = args.images[start:start + args.batch_size], []
        try:
            with quiet_native_stderr(replay=True):
                done = [classified(i, row) for i, row in zip(chunk, clf.predict(chunk, batch_size=args.batch_size))]
        except ImageError:
            # a bad file in this batch: one image at a time, so every good one is still classified
            for image in chunk:
                try:
                    with quiet_native_stderr(replay=True):
                        done.append(classified(image, clf.predict([image])[0]))
                except ImageError as exc:
                    failed.append({"image": image, "error": str(exc)})
                    _say(f"error: {_text(exc)}")
        results += done
        if not args.json:
            for r in done:
                print(f"{r['image']}: " + ", ".join(f"{t['label']} {t['probability']:.1%}" for t in r["top_k"]))
            sys.stdout.flush()
    if args.json:
        print(json.dumps({"model": str(clf.path), "engine": clf.engine_name, "predictions": results,
                          "failed": failed}, indent=2))
    if failed:
        if len(args.images) > 1:
            print(f"{PROG}: {len(failed)} of {len(args.images)} images could not be read; the other "
                  f"{len(results)} were classified.", file=sys.stderr)
        return Exit.BAD_INPUT
    return 0


def cmd_info(args) -> int:
    with quiet_native_stderr(replay=True):
        clf = _load(args)
    eng, info = clf.engine, clf.info
    details = {
        "model": str(clf.path), "engine": clf.engine_name, "threads": eng.threads,
        "input": {"shape": list(eng.input.shape), "dtype": str(eng.input.dtype), "scale": eng.input.scale,
                  "zero_point": eng.input.zero_point, "dynamic_batch": eng.dynamic_batch, "layout": eng.layout},
        "output": {"shape": list(eng.output.shape), "dtype": str(eng.output.dtype), "scale": eng.output.scale,
                   "zero_point": eng.output.zero_point},
        "labels": clf.labels, "labels_from": info.labels_source,
        "preprocess": clf.spec.to_dict(), "preprocess_from": info.spec_source, "integrity": info.integrity,
    }
    if args.json:
        print(json.dumps(details, indent=2))
        return 0
    q = lambda t: f" (scale {t['scale']:.6g}, zero point {t['zero_point']})" if t["scale"] else ""
    shape = lambda s: "(" + ", ".join("?" if d is None else str(d) for d in s) + ")"
    spec = clf.spec
    print(f"model       {details['model']}\nengine      {clf.engine_name}, {eng.threads} thread(s)")
    print(f"input       {shape(eng.input.shape)} {eng.input.dtype}{q(details['input'])}"
          + ("  (the model is channels-first NCHW: each batch is transposed once before the call)"
             if eng.layout == "NCHW" else ""))
    print(f"output      {shape(eng.output.shape)} {eng.output.dtype}{q(details['output'])}")
    print(f"labels      {len(clf.labels)}: {', '.join(clf.labels[:10])}{' ...' if len(clf.labels) > 10 else ''}"
          f"  [{info.labels_source}]")
    nums = lambda vs: "[" + ", ".join(f"{v:.6g}" for v in vs) + "]"
    print(f"preprocess  {spec.height}x{spec.width} {spec.channel_order}, scale {nums(spec.scale)}, "
          f"offset {nums(spec.offset)}  [{info.spec_source}]")
    print(f"integrity   {info.integrity}")
    return 0


def cmd_bench(args) -> int:
    from .bench import run_plan, write_json
    result = run_plan(args.plan, timeout=args.timeout)
    write_json(args.out, result)
    failed = [a["name"] for a in result["artifacts"] if a.get("status") != "ok"]
    print(f"{len(result['artifacts']) - len(failed)} of {len(result['artifacts'])} artifacts measured"
          + (f"; failed: {', '.join(failed)}" if failed else "") + f"; result in {args.out}", file=sys.stderr)
    return 0


def _one_line(text: str) -> str:
    # a file name may hold a newline or a terminal escape: the message stays one line of plain text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _say(text: str) -> None:
    """`edge-run: TEXT` as one line on stderr; never raises (a closed or unencodable stderr loses the line)."""
    try:
        line = f"{PROG}: {_one_line(text)}\n"
        sys.stderr.write(line.encode(getattr(sys.stderr, "encoding", None) or "utf-8", "backslashreplace")
                         .decode(getattr(sys.stderr, "encoding", None) or "utf-8", "replace"))
        sys.stderr.flush()
    except Exception:
        pass


def _text(exc: BaseException) -> str:
    try:
        return str(exc)
    except Exception:  # an exception whose __str__ fails must not fail the handler too
        return "(no message)"


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    with contextlib.suppress(AttributeError, ValueError):
        # image names are printed as given: an undecodable file name must not stop the output
        sys.stdout.reconfigure(errors="backslashreplace")
    try:
        return {"predict": cmd_predict, "info": cmd_info, "bench": cmd_bench}[args.command](args)
    except RuntimeErrorBase as exc:
        _say(f"error: {_text(exc)}")
        return Exit.BAD_INPUT
    except KeyboardInterrupt:
        _say("interrupted")
        return Exit.INTERRUPTED
    except BrokenPipeError:
        # `edge-run predict ... | head`: the reader left; nothing more to say.
        with contextlib.suppress(OSError):
            sys.stdout = open(os.devnull, "w")
        return 0
    except Exception as exc:  # anything else is a bug: still one line, unless debugging
        if os.environ.get("EDGE_DEBUG"):
            raise
        _say(f"internal error: {type(exc).__name__}: {_text(exc)} (EDGE_DEBUG=1 shows the traceback)")
        return Exit.INTERNAL


if __name__ == "__main__":
    raise SystemExit(main())
