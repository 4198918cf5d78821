"""The INT8 search, one algorithm for every format: each scheme the backend offers, with the nodes the
rules keep in float; where a scheme misses the accuracy gate, the nodes that cost most when
quantized alone go back to float, fewest first; of the candidates that meet the gate the fastest,
timed side by side; then the speed gate (with the backend's slow-in-INT8 nodes retried in float).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from edgedl.errors import EdgedlError, counted
from edgedl.quantization.backend import Backend
from edgedl.quantization.quality import Quality
from edgedl.quantization.speed import median_round, quick_check, time_rounds


@dataclass
class Attempt:
    """One quantized candidate and how it fared."""

    scheme: str
    path: Path
    quality: float
    drop_points: float
    passed: bool
    float_layers: list[str] = field(default_factory=list)
    p50_ms: float | None = None
    why_float: dict[str, str] = field(default_factory=dict)  # each float layer's reason
    worst: str | None = None  # the output slice that decided the quality, where one did
    left_out: str | None = None  # a refinement the backend offered and this file is better without

    def summary(self) -> dict:
        return {"scheme": self.scheme, "quality": self.quality, "drop_points": self.drop_points,
                "accuracy_gate": self.passed, "float_layers": self.float_layers, "why_float": self.why_float,
                "worst_slice": self.worst, "p50_ms": self.p50_ms, **({"left_out": self.left_out} if self.left_out else {})}


def by_reason(why: dict[str, str]) -> dict[str, list[str]]:
    """Float layers grouped under their reason, for one line per reason."""
    grouped: dict[str, list[str]] = {}
    for node, reason in why.items():
        grouped.setdefault(reason or "kept in float", []).append(node)
    return grouped


def tradeoff_row(a: Attempt, kept: bool, **extra) -> dict:
    """One row of the fallback's trade-off table: an attempt's summary, its float layers counted."""
    row = {k: v for k, v in a.summary().items() if k in ("scheme", "quality", "drop_points", "accuracy_gate", "p50_ms")}
    return {**row, "float_layers": len(a.float_layers), "kept": kept, **extra}


def tradeoff_lines(rows: list[dict], measure: str) -> list[str]:
    """The fallback's trade-off, one line per file it made: layers in float, quality, latency here."""
    return [f"{r['scheme']}, {counted(r['float_layers'], 'layer')} in float: {measure} {r['quality']:.4f} "
            f"(drop {r['drop_points']:.2f} points, gate {'met' if r['accuracy_gate'] else 'missed'}), "
            + (f"{r['p50_ms']:.3f} ms p50 here" if r.get("p50_ms") is not None else "not timed")
            + (" <- kept" if r.get("kept") else "") for r in rows]


@dataclass
class Limits:
    max_accuracy_drop: float  # points
    max_float_layers: int


class Search:
    """The search over one backend's file, judged by ``quality``; files are written under ``work``.
    Without a backend (a file made another way: FP16, dynamic INT8) it judges and times that file."""

    def __init__(self, backend: Backend | None, quality: Quality, limits: Limits, work: Path,
                 log: Callable[[str], None] = lambda line: None, forced: dict[str, str] | None = None):
        self.backend, self.quality, self.limits, self.work, self.log = backend, quality, limits, work, log
        self.forced = dict(forced or {})  # node: why it stays float, whatever the gate says
        self.info: dict = {}
        self.steps: list[Attempt] = []  # every whole file the search made, in order: the trade-off table's rows
        self._whole: dict[str, Attempt] = {}  # each scheme's whole-INT8 file, made before the fallback
        self._beside_of: tuple[str, dict | None] | None = None

    def judge(self, path: Path, scheme: str, exclude: list[str] = (), why: dict[str, str] | None = None) -> Attempt:
        """A file's quality against the gate, as an Attempt."""
        value = self.quality(path)
        drop = self.quality.drop_points(value)
        return Attempt(scheme, path, value, drop, drop <= self.limits.max_accuracy_drop, list(exclude),
                       why_float=dict(why or {n: self.forced.get(n, "") for n in exclude}),
                       worst=self.quality.worst.get(str(path)))

    def attempt(self, scheme: str, exclude=(), only=None, tag: str = "") -> Attempt:
        out = self.work / f"{scheme}{tag}{self.backend.suffix}"
        if only is None:
            exclude = [*self.forced, *[n for n in exclude if n not in self.forced]]
        self.backend.quantize(scheme, out, exclude, only)
        made = self.judge(out, scheme, exclude)
        if only is None:  # a refinement (bias correction) is kept where the gate's measure says it helps
            for left_out, other in self.backend.variants(out).items():
                without = self.judge(other, scheme, exclude)
                if without.quality > made.quality:
                    without.left_out = (f"{left_out}: the file without it scored {without.quality:.4f}, with it "
                                        f"{made.quality:.4f}")
                    made = without
        return made

    def compare_calibrations(self) -> None:
        """Each scheme's whole-INT8 file with the backend's calibration; where none meets the gate and
        the backend has other methods, theirs too, in order until one's file meets the gate, and the
        method whose file scores best is kept for the rest of the search (``info["calibration_compared"]``).
        The kept files start the fallback."""
        methods = self.backend.calibrations()
        schemes = self.backend.schemes()
        self._whole = {s: self.attempt(s) for s in schemes}
        if len(methods) < 2 or any(a.passed for a in self._whole.values()):
            return
        by_method, failed = {methods[0]: self._whole}, {}
        for method in methods[1:]:
            # said as it goes: a histogram method over a detector's activations can take minutes
            last = next(reversed(by_method.values()))
            self.log(f"quantize: every layer in INT8 missed the gate with {next(reversed(by_method))} ranges (best "
                     f"{self.quality.kind} {max(a.quality for a in last.values()):.4f}); measuring {method} ranges")
            self.backend.use_calibration(method)
            try:
                by_method[method] = {s: self.attempt(s, tag=f"-{method}") for s in schemes}
            except EdgedlError as exc:  # a method that cannot run leaves the others
                failed[method] = str(exc)
                self.log(f"quantize: {method} calibration skipped: {exc}")
                continue
            if any(a.passed for a in by_method[method].values()):
                break  # a file meets the gate: the next method (entropy's KL search, minutes on a detector) is not needed
        score = {m: max(a.quality for a in files.values()) for m, files in by_method.items()}
        best = max(score, key=score.get)  # the first of equals: MinMax where none does better
        self.backend.use_calibration(best)
        self._whole = by_method[best]
        self.info["calibration_compared"] = [
            {"method": m, "scheme": s, "quality": a.quality, "drop_points": a.drop_points, "accuracy_gate": a.passed}
            for m, files in by_method.items() for s, a in files.items()] + [
            {"method": m, "error": why} for m, why in failed.items()]
        said = ", ".join(f"{m} {v:.4f}" for m, v in score.items())
        self.log(f"quantize: calibration compared by {self.quality.kind} ({said}): {best} kept")

    def run(self, sample: Any, threads: int | None) -> Attempt:
        """Every scheme with its fallback; the fastest that meets the gate (within 3%: fewer float
        layers, then the closer to float), else the best quality. ``info`` gets the candidates and the choice."""
        # a search run again starts afresh (from the backend's calibration in use)
        self.steps, self._whole, self._beside_of, self.info = [], {}, None, {}
        self.compare_calibrations()
        attempts = []
        for scheme in self.backend.schemes():
            attempt = self.with_fallback(scheme)
            attempts.append(attempt)
            self.log(f"quantize {scheme}: {self.quality.kind} {attempt.quality:.4f} (drop {attempt.drop_points:.2f} "
                     f"points, {counted(len(attempt.float_layers), 'layer')} in float)")
        passing = [a for a in attempts if a.passed]
        fell_back = len(self.steps) > len(attempts)  # the fallback ran: its steps make a trade-off table
        pool = [a for a in {str(a.path): a for a in [*(self.steps if fell_back else []), *passing]}.values()
                if self.backend.runtime(a.scheme) is None]  # a TensorRT file is not timed by this CPU
        if pool and (len(passing) > 1 or fell_back):  # timed side by side in one loop
            timed = time_rounds({i: a.path for i, a in enumerate(pool)}, sample, threads,
                                rounds=5 if len(pool) <= 4 else 3)
            for i, a in enumerate(pool):
                a.p50_ms = timed[i][median_round(timed[i])][0]
        if len(passing) > 1:  # several meet the gate: the fastest here; within 3% (timing noise), the one with
            # fewer float layers, then the closer to float, then the first tried: the same file run after run
            fastest = min(a.p50_ms for a in passing)
            best = min(passing, key=lambda a: (a.p50_ms > 1.03 * fastest, len(a.float_layers), -a.quality,
                                               passing.index(a)))
        else:
            best = passing[0] if passing else max(attempts, key=lambda a: a.quality)
        if fell_back:
            self.info["tradeoff"] = [tradeoff_row(a, a is best) for a in self.steps]
            for line in tradeoff_lines(self.info["tradeoff"], self.quality.kind):
                self.log(f"quantize trade-off: {line}")
        self.info["candidates"] = [a.summary() for a in attempts]
        self.info["scheme_choice"] = (
            "fastest of the candidates that meet the accuracy gate, timed side by side on this host (within 3%: "
            "fewer layers in float, then the closer to float)" if len(passing) > 1 else "the only candidate" if len(attempts) == 1
            else "the only candidate that meets the gate" if passing else "best quality (gate missed)")
        return best

    def with_fallback(self, scheme: str) -> Attempt:
        """One scheme: everything quantized but the forced nodes; where that misses the gate, the nodes
        that cost most when quantized alone go back to float, fewest first."""
        result = self._whole.pop(scheme, None) or self.attempt(scheme)
        self.steps.append(result)
        if result.passed or self.limits.max_float_layers == 0:
            return result
        sensitivity = []  # quantize one node at a time and see what it alone costs
        nodes = [(i, node, op) for i, (node, op) in enumerate(self.backend.quantizable_nodes()) if node not in self.forced]
        self.log(f"quantize {scheme}: {self.quality.kind} {result.quality:.4f} with every layer in INT8 (drop "
                 f"{result.drop_points:.2f} points); measuring what each of {len(nodes)} nodes costs quantized alone")
        for i, node, op in nodes:
            alone = self.attempt(scheme, only=[node], tag=f"-only{i}")
            sensitivity.append({"node": node, "op": op, "drop_points": alone.drop_points})
        sensitivity.sort(key=lambda s: -s["drop_points"])
        self.info.setdefault("sensitivity", {})[scheme] = sensitivity[:20]
        for k in range(1, min(self.limits.max_float_layers, len(sensitivity)) + 1):
            keep = sensitivity[:k]
            candidate = self.attempt(scheme, exclude=[s["node"] for s in keep], tag=f"-float{k}")
            candidate.why_float.update({s["node"]: f"{s['op']}: quantized alone it cost {s['drop_points']:.2f} points "
                                                   f"of {self.quality.kind}" for s in keep})
            self.steps.append(candidate)
            if candidate.quality > result.quality or candidate.passed:
                result = candidate
            if candidate.passed:
                break
        return result

    def record(self, best: Attempt, reference: str, precision: str) -> dict:
        """The manifest's quantization record of the file kept: the gate's measure and verdict against
        ``reference``, every float layer with its reason, and what the search tried (``info``)."""
        q = self.quality
        return {"precision": precision, "gate_split": "val", "quality_metric": q.kind, "reference": reference,
                "reference_quality": q.reference_value, "reference_warning": q.warning,
                "max_accuracy_drop_points": self.limits.max_accuracy_drop, "scheme": best.scheme,
                "quality": best.quality, "drop_points": best.drop_points, "accuracy_gate": best.passed,
                "float_layers": list(best.float_layers), "why_float": dict(best.why_float), "worst_slice": best.worst,
                "standard_quality": self._beside(best.path), **self.info}

    def _beside(self, path: Path) -> dict | None:
        """The task's standard measure of the kept file, once per file (record is called again after the
        speed gate, on the same file unless a retry replaced it)."""
        if self._beside_of is None or self._beside_of[0] != str(path):
            self._beside_of = (str(path), self.quality.beside(path))
        return self._beside_of[1]

    def log_float_layers(self, best: Attempt, prefix: str = "") -> None:
        for reason, layers in by_reason(best.why_float).items():  # every float layer's reason, on screen too
            self.log(f"{prefix}kept in float ({', '.join(layers)}): {reason}")

    def speed_gate(self, parent_path: Path, parent_name: str, best: Attempt, sample: Any, threads: int | None,
                   label: str, min_speedup: float, device: dict | None, retry_slow: bool = True) -> dict:
        """The one speed verdict of ``best`` against its float parent; where it is not faster and the
        backend names nodes often slow in INT8, a file with those in float is timed too and kept
        (``best`` updated) where it is faster and still meets the gate."""
        runtime = self.backend.runtime(best.scheme) if self.backend else None
        gate = quick_check(parent_path, best.path, sample, threads, label, parent_name, min_speedup, device, runtime)
        slow = {n: what for n, what in (self.backend.slow_in_int8() if self.backend else {}).items()
                if n not in best.float_layers}
        if retry_slow and gate["speedup"] < min_speedup and slow and runtime is None:
            retry = self.attempt(best.scheme, exclude=[*best.float_layers, *slow], tag="-slowfloat")
            again = quick_check(parent_path, retry.path, sample, threads, label, parent_name, min_speedup, device)
            tried = {"layers": len(slow), "p50_ms": again["quantized_p50_ms"], "quality": retry.quality}
            if again["speedup"] > gate["speedup"] and retry.passed:
                for row in self.info.get("tradeoff", []):  # the table's kept file is this one now
                    row["kept"] = False
                if "tradeoff" in self.info:
                    self.info["tradeoff"].append(tradeoff_row(
                        retry, True, p50_ms=None, note="the speed gate's retry, the slow-in-INT8 layers in float "
                                                       "too (timed against the float file, not with these)"))
                retry.why_float = {**best.why_float, **{
                    n: f"{what}: {again['quantized_p50_ms']:.3f} ms p50 with it in float against "
                       f"{gate['quantized_p50_ms']:.3f} ms in INT8 on this host" for n, what in slow.items()}}
                vars(best).update(vars(retry))
                gate = again
            gate["slow_in_int8_in_float"] = tried
        return gate
