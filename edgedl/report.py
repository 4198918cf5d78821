"""The run's report: one row per artifact, as report.md and as a rich table on screen."""

from __future__ import annotations

from pathlib import Path

from edgedl._fs import atomic_write_text

COLUMNS = ("artifact", "format", "precision", "size", "params", "MACs", "accuracy",
           "p50 ms", "p90 ms", "p99 ms", "inf/s", "peak RSS MB")


def _num(value, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _count(value) -> str:
    if value is None:
        return "—"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _size(n: int) -> str:
    for unit, scale in (("MB", 2**20), ("KB", 2**10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def rows(manifest: dict) -> list[list[str]]:
    out = []
    for a in manifest["artifacts"]:
        m = a["metrics"]
        lat = m.get("latency_ms") or {}
        acc = m.get("accuracy")
        out.append([
            a["name"], a["format"], a["precision"], _size(a["size_bytes"]), _count(m.get("params")),
            _count(m.get("macs")), "—" if acc is None else f"{100 * acc:.2f}%",
            _num(lat.get("p50"), ".3f"), _num(lat.get("p90"), ".3f"), _num(lat.get("p99"), ".3f"),
            _num(m.get("throughput_ips"), ".0f"), _num(m.get("peak_rss_mb"), ".0f"),
        ])
    return out


def markdown(manifest: dict) -> str:
    recipe = manifest["recipe"]
    lines = [
        f"# edgedl run: {recipe['name']}",
        "",
        f"Model `{recipe['model']['spec']}`, data `{recipe['data']['spec']}`, status **{manifest['status']}**, "
        f"host {manifest['host']['cpu']} ({manifest['host']['cpu_count']} cores).",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(manifest)]
    failed = [s for s in manifest["stages"] if s["status"] == "failed"]
    if failed:
        lines += ["", f"Stage `{failed[0]['stage']}` failed: {failed[0]['error']}"]
    lines += compression_lines(manifest)
    parity = [a for a in manifest["artifacts"] if a.get("parity")]
    if parity:
        lines += ["", "## Parity with the PyTorch model", "",
                  "| artifact | samples | max abs diff | cosine | top-1 agreement |", "|---|---|---|---|---|"]
        lines += [f"| {a['name']} | {a['parity']['samples']} | {a['parity']['max_abs_diff']:.2e} | "
                  f"{a['parity']['cosine']:.6f} | {100 * a['parity']['top1_agreement']:.1f}% |" for a in parity]
    notes = [(a["name"], k, v) for a in manifest["artifacts"] for k, v in a["notes"].items()]
    if notes:
        lines += ["", "## Why some figures are missing", ""]
        lines += [f"- `{name}` {key}: {why}" for name, key, why in notes]
    return "\n".join(lines) + "\n"


def compression_lines(manifest: dict) -> list[str]:
    """What each compression step cost and bought, and the verdicts of the quantization gates."""
    lines = []
    for a in manifest["artifacts"]:
        if "pruning" in a:
            p = a["pruning"]
            lines.append(f"- `{a['name']}`: pruned, MACs {p['macs_before']:,} -> {p['macs_after']:,} "
                         f"({p['mac_reduction']:.2f}x fewer), params {p['params_before']:,} -> {p['params_after']:,}"
                         + ("" if p["finetuned"] else f" ({p['note']})"))
        if "distillation" in a:
            d = a["distillation"]
            lines.append(f"- `{a['name']}`: distilled from `{d['teacher']}` (T={d['temperature']}, alpha={d['alpha']}), "
                         f"val accuracy {d['val_accuracy']:.4f}, teacher {d['teacher_val_accuracy']:.4f}")
        if "quantization" in a:
            q = a["quantization"]
            gate = "met" if q["accuracy_gate"] else "MISSED"
            line = (f"- `{a['name']}`: {q['precision']} ({q['scheme']}), accuracy gate {gate}: {q['quality_metric']} "
                    f"{q['quality']:.4f} on val against {q['reference_quality']:.4f} (drop {q['drop_points']:.2f} "
                    f"points, allowed {q['max_accuracy_drop_points']})")
            if q["float_layers"]:
                line += f"; kept in float: {', '.join(q['float_layers'])}"
            if "speed_gate" in q:
                line += f"; speed: {q['speed_gate']['verdict']}"
            if not a.get("recommended", True):
                line += " — **not recommended**"
            lines.append(line)
    return ["", "## Compression", ""] + lines if lines else []


def write(run_dir: Path, manifest: dict) -> Path:
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, markdown(manifest))
    return path


def table(manifest: dict):
    from rich.table import Table

    t = Table(title=f"edgedl run: {manifest['recipe']['name']} ({manifest['status']})")
    for col in COLUMNS:
        t.add_column(col, justify="left" if col in ("artifact", "format", "precision") else "right")
    for r in rows(manifest):
        t.add_row(*r)
    return t
