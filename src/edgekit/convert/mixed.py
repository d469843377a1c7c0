"""Selective precision: quantize everything, then keep the layers int8 hurts most in float, one at a time, worst
first, until the artifact agrees with the float model often enough.

The search is judged on up to 2,000 images of the val split (the source model's top-1 against the candidate's; the
calibration images when there is no val split to spare), never on the validation images: validation then judges
the chosen artifact on images the search did not see. Each step
keeps one more layer of the ranking (layer_error.py) out, so the layers kept out are always the worst few,
and the search stops at the first step that meets the target: no more layers than that ranking needs.
A second candidate keeps a float prefix instead (prefix): the first k layers in model order, the smallest k that
meets the target. Its float region has one way into int8 where the islands of the first have one each, which is
cheaper where the engine's float kernels are nearly as fast as its int8 ones (ONNX Runtime, MobileNetV2: the
first 43 of 52 layers in float for 99.77 % at 1.01x int8, where the islands needed 48 layers and 17 % more time);
islands_or_prefix says which is kept (export_int8.Judge.search_mixed).
Both aim a little above the target (goal): of many noisy steps, the first to reach it on 2,000 images is
optimistic (MobileNetV2, ONNX Runtime: 99.50 % in the search, 99.10 % and 99.48 % on the test set in two runs).
`--keep-float` names the layers instead (named, fixed): no search, that artifact judged the same way.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence

from edgekit.convert.context import ExportError
from edgekit.convert.layer_error import LayerError
from edgekit.helpers import did_you_mean

MAX_KEPT_OUT = 64   # a model that needs more than this in float is not an int8 model; the search says so
FIRST_TRIED = 32    # layers of the per-layer ranking whose benefit in float is measured one by one (by_benefit)
SEARCH_Z = 1.645       # the search aims above the target by this many standard errors of its own sample (goal)
PREFIX_FASTER = 0.95   # a float prefix replaces the searched islands only this much faster (5 % beyond timing noise)


@dataclass
class Step:
    kept_out: int
    agreement: float

    def to_dict(self) -> dict:
        return {"kept_out": self.kept_out, "agreement": round(self.agreement, 6)}


@dataclass
class Mixed:
    blob: bytes
    kept_out: List[LayerError]
    agreement: float                  # on the search images, of the artifact returned
    target: float                     # the agreement asked for (--min-agreement)
    steps: List[Step] = field(default_factory=list)
    where: str = "the calibration images"   # what the agreement was measured on
    benefits: List["Benefit"] = field(default_factory=list)   # the order the layers were tried in, and why
    ranges: dict = field(default_factory=dict)                  # which activation ranges the search started from
    asked: bool = False               # the layers were named (--keep-float), not searched for
    how: str = "islands"              # "islands": the worst layers one by one; "prefix": the first k in model order
    compared: dict = field(default_factory=dict)   # the other search's result and both latencies, when both ran
    goal: Optional[float] = None      # what the search aimed at on its images (goal()); None: the target itself
    budget: Optional[float] = None    # --max-slowdown: the most times the int8 artifact's latency a step may take
    over_budget: Optional[int] = None   # the step (layers in float) that would have passed it; the search ended there

    @property
    def met(self) -> bool:
        return self.agreement >= self.target

    def to_dict(self) -> dict:
        out = {"target_agreement": self.target, "met": self.met, "search_agreement": round(self.agreement, 6),
               "search_images": self.where, "order": [b.to_dict() for b in self.benefits],
               "activation_ranges": self.ranges,
               "kept_out": [e.to_dict() for e in self.kept_out], "steps": [s.to_dict() for s in self.steps],
               "how": self.how}
        if self.goal is not None:
            out["search_goal"] = round(self.goal, 6)
        if self.budget is not None:
            out["max_slowdown"] = self.budget
            out["over_budget_at"] = self.over_budget
        if self.compared:
            out["compared"] = self.compared
        return {**out, "asked": True} if self.asked else out

    def describe(self) -> str:
        names = ", ".join(f"{e.op} {e.name}" for e in self.kept_out) or "none"
        head = "target met" if self.met else f"target {self.target:.1%} not met; the best reached"
        if self.asked:
            head = "as --keep-float asked, target " + ("met" if self.met else f"{self.target:.1%} not met")
        elif self.how == "prefix":
            head += f", a float prefix (the first {len(self.kept_out)} layers in model order)"
            names = f"{self.kept_out[0].name} … {self.kept_out[-1].name}" if self.kept_out else "none"
        aim = f" (the search's goal {self.goal:.2%})" if self.goal is not None and not self.asked else ""
        if self.over_budget is not None:
            aim += (f"; {self.over_budget} layers in float would have passed the {self.budget:g}× latency budget "
                    "(--max-slowdown)")
        return (f"{head}: {len(self.kept_out)} layer(s) kept in float ({names}); top-1 agreement "
                f"{self.agreement:.2%} on {self.where}{aim}")


@dataclass
class Benefit:
    layer: LayerError
    gain: float      # how much the output error (mean squared probability difference) falls with it in float
    macs: int        # the multiply-adds keeping it (and the ops reading it) in float moves out of int8
    extra_ms: Optional[float] = None   # what that adds to one inference, measured (None: not measured)

    @property
    def cost(self) -> float:
        return self.extra_ms if self.extra_ms is not None else float(self.macs)

    def to_dict(self) -> dict:
        out = {"layer": self.layer.name, "op": self.layer.op, "gain": float(f"{self.gain:.6g}"), "macs": self.macs}
        if self.extra_ms is not None:
            out["extra_ms"] = float(f"{self.extra_ms:.4g}")
        return out


def goal(target: float, images: int) -> float:
    """What a search on `images` images aims at so that unseen images meet `target` too: the target plus
    SEARCH_Z of its binomial standard errors there (one-sided 95 %: 0.26 points at 99.5 % on 2,000 images), at
    most half the way to 100 % (a handful of images cannot ask for more than all of them agreeing)."""
    if images <= 0 or not 0 < target < 1:
        return target
    return target + min(SEARCH_Z * math.sqrt(target * (1 - target) / images), (1 - target) / 2)


def recent(quantize: Callable[[List[str]], bytes], size: int = 2) -> Callable[[List[str]], bytes]:
    """`quantize`, remembering its last `size` artifacts (a few MB each, so not all): by_benefit makes an artifact to
    measure its error and asks for it again to time it; the range choice scores one artifact twice."""
    remembered = functools.lru_cache(maxsize=size)(lambda names: quantize(list(names)))
    return lambda names: remembered(tuple(names))


def by_benefit(ranked: Sequence[LayerError], output_error: Callable[[List[str]], float], macs: Callable[[str], int],
               first: int = FIRST_TRIED, extra_ms: Optional[Callable[[str], float]] = None) -> List[Benefit]:
    """The `first` layers of the per-layer ranking, each tried alone in float: ordered by how much output error
    that removes per unit of cost, the latency it adds where `extra_ms` measures it (each artifact timed), else the
    multiply-adds it moves to float. The per-layer error says where int8 adds noise; whether that noise reaches the
    answer, and what keeping it out costs, is measured here (ResNet-8: the two layers with the largest own error
    were its two widest convolutions, and keeping them in float moved the agreement least; its residual ADDs move
    almost no multiply-adds but each adds a DEQUANTIZE/QUANTIZE pair, which multiply-adds do not see)."""
    base = output_error([])
    out = []
    for e in ranked[:first]:
        gain = base - output_error([e.name])
        out.append(Benefit(e, gain, max(1, macs(e.name)), extra_ms(e.name) if extra_ms and gain > 0 else None))
    helpful = sorted((b for b in out if b.gain > 0), key=lambda b: -b.gain / b.cost)
    return helpful + sorted((b for b in out if b.gain <= 0), key=lambda b: -b.gain)


def search(ranked: Sequence[LayerError], quantize: Callable[[List[str]], bytes], agreement: Callable[[bytes], float],
           target: float, max_kept: Optional[int] = None, on_step: Optional[Callable[[Step], None]] = None,
           fits: Optional[Callable[[bytes], bool]] = None) -> Mixed:
    """Keep the worst 0, 1, 2 … layers of `ranked` in float (`quantize(names)` makes that artifact,
    `agreement(blob)` scores it) until `target` is met; else the step that agreed most (the fewest layers among
    equals). With `fits` (a latency budget), the first step whose artifact does not fit ends the search unscored:
    each step only adds float layers, so the ones after it would not fit either."""
    best: Optional[Mixed] = None
    steps: List[Step] = []
    limit = MAX_KEPT_OUT if max_kept is None else max_kept
    over = None
    for k in range(0, min(len(ranked), limit) + 1):
        kept = list(ranked[:k])
        blob = quantize([e.name for e in kept])
        if k and fits is not None and not fits(blob):
            over = k
            break
        got = agreement(blob)
        step = Step(k, got)
        steps.append(step)
        if on_step:
            on_step(step)
        if best is None or got > best.agreement:
            best = Mixed(blob, kept, got, target)
        if got >= target:
            break
    assert best is not None  # k = 0 always runs
    best.steps, best.over_budget = steps, over
    return best


def prefix(in_order: Sequence[LayerError], quantize: Callable[[List[str]], bytes], agreement: Callable[[bytes], float],
           target: float, on_step: Optional[Callable[[Step], None]] = None) -> Mixed:
    """The first k of `in_order` (the candidates in model order) in float, the smallest k that meets `target`,
    found by bisection (about log2(n) artifacts, not n: agreement grows with the float share, near enough); else
    all of them, the most a prefix can give."""
    made: dict = {}
    steps: List[Step] = []

    def score(k: int) -> float:
        if k not in made:
            blob = quantize([e.name for e in in_order[:k]])
            made[k] = (blob, agreement(blob))
            steps.append(Step(k, made[k][1]))
            if on_step:
                on_step(steps[-1])
        return made[k][1]

    lo, hi = 0, len(in_order)
    if score(lo) < target and score(hi) >= target:
        while hi - lo > 1:   # score(lo) misses, score(hi) meets
            mid = (lo + hi) // 2
            lo, hi = (lo, mid) if score(mid) >= target else (mid, hi)
    k = lo if made[lo][1] >= target else hi
    blob, got = made[k]
    return Mixed(blob, list(in_order[:k]), got, target, steps=steps, how="prefix")


def islands_or_prefix(islands: Mixed, prefixed: Mixed, p50_ms: dict, layers: int,
                      limit_ms: Optional[float] = None) -> Mixed:
    """The islands, unless the prefix meets the target (the goal, as the searches were given it) with fewer than
    all `layers` in float and within `limit_ms` (--max-slowdown's budget), and the islands do not or are clearly
    slower (p50_ms: {"islands": …, "prefix": …}; within timing noise either could win on a small model). Every layer in float is the float model with quantization
    steps added, no faster than a float artifact, so it never stands in for the islands; where neither meets the
    target, the islands' best step stands, as without a prefix."""
    over = limit_ms is not None and p50_ms["prefix"] > limit_ms
    if not prefixed.met or len(prefixed.kept_out) >= layers or over:
        return islands
    if not islands.met:
        return prefixed
    return prefixed if p50_ms["prefix"] < PREFIX_FASTER * p50_ms["islands"] else islands


def _parts(name: str) -> List[str]:
    """A layer's full name, each ';'-joined op name in it (TFLite fuses ops) and each '/'-part of those: the
    names offered when a --keep-float name matches nothing."""
    parts = [name]
    for piece in name.split(";"):
        parts.append(piece)
        parts.extend(piece.split("/"))
    return [p for p in parts if p]


def _answers_to(name: str, wanted: str) -> bool:
    """Whether `wanted` names this layer: its full name, one of its ';'-joined op names, or a run of whole
    '/'-parts of one (the Keras layer's own name: 'add_5' in 'resnet8/re_lu_13/Relu;resnet8/add_5/add', and
    'expanded_conv_10/squeeze_excite/Mul' in 'net/expanded_conv_10/squeeze_excite/Mul/mul')."""
    return wanted == name or any(f"/{wanted}/" in f"/{piece}/" for piece in name.split(";"))


def named(candidates: Sequence[LayerError], wanted: Sequence[str], already_float: Sequence[str] = ()) -> List[LayerError]:
    """The candidates `wanted` names (--keep-float), in model order (_answers_to: the Keras layer name a user
    knows is enough). A name that matches no layer is an ExportError with the
    closest names, one that matches several ('Relu', the model's name) an ExportError naming a few; one that
    matches only the head (float anyway) is dropped."""
    chosen, unknown = set(), []
    for w in wanted:
        hits = [e.name for e in candidates if _answers_to(e.name, w)]
        if len(hits) > 1 and w not in hits:
            raise ExportError(f"--keep-float {w!r} matches {len(hits)} layers ({', '.join(hits[:3])}"
                              f"{', …' if len(hits) > 3 else ''}); name one layer at a time.")
        if not hits and not any(_answers_to(n, w) for n in already_float):
            unknown.append(w)
        chosen |= set(hits)
    if unknown:
        known = sorted({p for e in candidates for p in _parts(e.name)})
        raise ExportError(f"--keep-float {unknown[0]!r} is not a layer this format can keep in float."
                          f"{did_you_mean(unknown[0], known)} Its layers are in the manifest's layer_errors and "
                          "in `edge convert --explain`.")
    return [e for e in candidates if e.name in chosen]


def fixed(kept: Sequence[LayerError], quantize: Callable[[List[str]], bytes], agreement: Callable[[bytes], float],
          target: float) -> Mixed:
    """The artifact with exactly `kept` in float, scored as a search step is."""
    blob = quantize([e.name for e in kept])
    got = agreement(blob)
    return Mixed(blob, list(kept), got, target, steps=[Step(len(kept), got)], asked=True)
