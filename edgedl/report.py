"""The run's report: one row per artifact, as report.md and as a table on screen.

Stages write a one-line ``summary`` (and ``recommended``) into the artifact records they add;
the report reads those, not stage-private manifest keys.
"""

from __future__ import annotations

from pathlib import Path

from edgedl._fs import atomic_write_text

COLUMNS = ("artifact", "format", "precision", "size", "params", "MACs", "accuracy",
           "p50 ms", "p90 ms", "p99 ms", "inf/s", "peak RSS MB")
# What a terminal narrower than the full table shows (every figure stays whole).
COMPACT = ("artifact", "precision", "size", "MACs", "accuracy", "p50 ms", "p99 ms")
TEXT_COLUMNS = ("artifact", "format", "precision")


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


def _quality(m: dict) -> str:
    """The accuracy column: accuracy, or the measure the task is judged by where it has none
    (``mse 0.0213`` for an autoencoder, ``cos 0.9998`` for an embedding or unlabelled data)."""
    if m.get("accuracy") is not None:
        return f"{100 * m['accuracy']:.2f}%"
    if m.get("reconstruction_mse") is not None:
        auc = m.get("anomaly_auc")
        return f"mse {m['reconstruction_mse']:.4g}" + (f", AUC {auc:.3f}" if auc is not None else "")
    agreement = m.get("agreement")
    if agreement:
        short = {"cosine": "cos", "top1_agreement": "top-1 agr.", "max_abs_diff": "max abs diff"}.get(
            agreement["measure"], agreement["measure"])
        return f"{short} {agreement['value']:.4g}"
    return "—"


def rows(manifest: dict, columns: tuple[str, ...] = COLUMNS) -> list[list[str]]:
    out = []
    for a in manifest["artifacts"]:
        m = a["metrics"]
        lat = m.get("latency_ms") or {}
        cells = {
            # a file its own gates advise against looks different from the others
            "artifact": a["name"] + (" (not recommended)" if a.get("recommended") is False else ""), "format": a["format"], "precision": a["precision"], "size": _size(a["size_bytes"]),
            "params": _count(m.get("params")), "MACs": _count(m.get("macs")),
            "accuracy": _quality(m),
            "p50 ms": _num(lat.get("p50"), ".3f"), "p90 ms": _num(lat.get("p90"), ".3f"),
            "p99 ms": _num(lat.get("p99"), ".3f"), "inf/s": _num(m.get("throughput_ips"), ".0f"),
            "peak RSS MB": _num(m.get("peak_rss_mb"), ".0f"),
        }
        out.append([cells[c] for c in columns])
    return out


def verdicts(manifest: dict) -> list[str]:
    """What each compression step cost and bought, and every gate verdict, one line per artifact."""
    lines = []
    for a in manifest["artifacts"]:
        if a.get("summary"):
            line = f"`{a['name']}`: {a['summary']}"
            if a.get("recommended") is False:
                line += " — **not recommended**"
            lines.append(line)
    for a in manifest["artifacts"]:  # what makes a measured figure untrustworthy, as the bench flagged it
        for flag in (a.get("benchmark") or {}).get("flags") or []:
            lines.append(f"`{a['name']}` measurement warning: {flag}")
    return lines


def missing_reasons(manifest: dict) -> list[str]:
    """Why figures are missing, each reason once with the artifacts and metrics it covers."""
    grouped: dict[str, list[str]] = {}
    for a in manifest["artifacts"]:
        by_reason: dict[str, list[str]] = {}
        for key, why in a["notes"].items():
            by_reason.setdefault(why, []).append(key)
        for why, keys in by_reason.items():
            grouped.setdefault(why, []).append(f"`{a['name']}` ({', '.join(keys)})")
    return [f"{why}: {', '.join(where)}" for why, where in grouped.items()]


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
    found = verdicts(manifest)
    if found:
        lines += ["", "## Compression", ""] + [f"- {line}" for line in found]
    parity = [a for a in manifest["artifacts"] if a.get("parity")]
    if parity:
        lines += ["", "## Parity with the PyTorch model", "",
                  "| artifact | samples | max abs diff | cosine | top-1 agreement |", "|---|---|---|---|---|"]
        lines += [f"| {a['name']} | {a['parity']['samples']} | {a['parity']['max_abs_diff']:.2e} | "
                  f"{a['parity']['cosine']:.6f} | {100 * a['parity']['top1_agreement']:.1f}% |" for a in parity]
    if manifest.get("notes"):
        lines += ["", "## Notes", ""] + [f"- {note}" for note in dict.fromkeys(manifest["notes"])]
    reasons = missing_reasons(manifest)
    if reasons:
        lines += ["", "## Why some figures are missing", ""] + [f"- {r}" for r in reasons]
    return "\n".join(lines) + "\n"


def write(run_dir: Path, manifest: dict) -> Path:
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, markdown(manifest))
    return path


def table(manifest: dict, width: int | None = None):
    """The artifact table; narrower than the full table's width, the compact columns. Figures are
    never cut: their columns do not wrap and artifact names fold instead."""
    from rich.table import Table

    full = rows(manifest)
    needed = sum(max([len(c)] + [len(r[i]) for r in full]) + 3 for i, c in enumerate(COLUMNS))
    columns = COLUMNS if width is None or width >= needed else COMPACT
    t = Table(title=f"edgedl run: {manifest['recipe']['name']} ({manifest['status']})")
    body = rows(manifest, columns)
    for i, col in enumerate(columns):
        if col == "artifact":
            t.add_column(col, overflow="fold", ratio=1)
        else:
            widest = max([len(col)] + [len(r[i]) for r in body])
            t.add_column(col, justify="left" if col in TEXT_COLUMNS else "right", no_wrap=True, min_width=widest)
    for r, a in zip(body, manifest["artifacts"]):
        t.add_row(*r, style="dim" if a.get("recommended") is False else None)
    return t


def show(console, manifest: dict) -> None:
    """The table, then every verdict and note, on the console."""
    console.print(table(manifest, console.width))
    for line in verdicts(manifest):
        console.print(line.replace("`", "").replace("**", ""), markup=False)
    for note in dict.fromkeys(manifest.get("notes") or []):
        console.print(f"note: {note}", markup=False)
