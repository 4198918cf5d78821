"""The run's report: one row per artifact, as report.md, as a self-contained report.html with plots
(:mod:`edgedl.report.html`), and as a table on screen. Results that devices sent back for the run
(``edgedl bench --run RUN_DIR --on ...``, kept in ``RUN_DIR/fleet/``) add a column per device.

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


def num(value, fmt: str) -> str:
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
        short = {"cosine": "cos", "cosine, worst slice": "worst slice", "top1_agreement": "top-1 agr.",
                 "max_abs_diff": "max abs diff"}.get(
            agreement["measure"], agreement["measure"])
        return f"{short} {agreement['value']:.4g}"
    return "—"


def _own_measure(manifest: dict, short: bool = False) -> str | None:
    """The column of the recipe's own measure (an evaluate stage's ``metric``: its function's name, or
    ``metric`` in the compact table, whose figures must fit 80 columns), where the run has one; shown
    beside the standard measure, never instead of it."""
    name = next((a["metrics"]["metric"]["name"] for a in manifest["artifacts"] if a["metrics"].get("metric")), None)
    if name is None:
        return None
    label = "metric" if short else name.rpartition(":")[2]
    return label if label not in COLUMNS else f"{label} (yours)"


def columns_of(manifest: dict, columns: tuple[str, ...] = COLUMNS) -> tuple[str, ...]:
    """``columns``, with the recipe's own measure after accuracy where the run has one."""
    own = _own_measure(manifest, short=columns == COMPACT)
    if own is None or "accuracy" not in columns:
        return columns
    i = columns.index("accuracy") + 1
    return columns[:i] + (own,) + columns[i:]


def rows(manifest: dict, columns: tuple[str, ...] | None = None) -> list[list[str]]:
    """One row per artifact; a column that is none of COLUMNS is the recipe's own measure."""
    columns = columns_of(manifest) if columns is None else columns
    out = []
    for a in manifest["artifacts"]:
        m = a["metrics"]
        lat = m.get("latency_ms") or {}
        cells = {
            # a file its own gates advise against looks different from the others
            "artifact": a["name"] + (" (not recommended)" if a.get("recommended") is False else ""), "format": a["format"], "precision": a["precision"], "size": _size(a["size_bytes"]),
            "params": _count(m.get("params")), "MACs": _count(m.get("macs")),
            "accuracy": _quality(m),
            "p50 ms": num(lat.get("p50"), ".3f"), "p90 ms": num(lat.get("p90"), ".3f"),
            "p99 ms": num(lat.get("p99"), ".3f"), "inf/s": num(m.get("throughput_ips"), ".0f"),
            "peak RSS MB": num(m.get("peak_rss_mb"), ".0f"),
        }
        own = num((m.get("metric") or {}).get("value"), ".4f")
        out.append([cells.get(c, own) for c in columns])
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


TRADEOFF_COLUMNS = ["scheme", "layers in float", "quality", "drop (points)", "gate", "p50 ms here", "kept"]


def tradeoffs(manifest: dict) -> list[tuple[str, str, list[list[str]]]]:
    """Per quantized file whose search fell back to float layers, and per quantize stage that failed after
    one (what it measured is kept on the stage's record): (file, measure, one row per file the search
    made), each with its layers in float, quality and latency timed side by side."""
    out = []
    refused = [(f"{s['quantization']['reference']} (stage {s['stage']} failed: no file kept)", s["quantization"])
               for s in manifest["stages"] if s["status"] == "failed" and s.get("quantization")]
    for name, q in [*((a["name"], a.get("quantization") or {}) for a in manifest["artifacts"]), *refused]:
        if q.get("tradeoff"):
            kept = "best, refused" if any(q is r for _, r in refused) else "yes"
            out.append((name, q["quality_metric"], [
                [r["scheme"], str(r["float_layers"]), f"{r['quality']:.4f}", f"{r['drop_points']:.2f}",
                 "met" if r["accuracy_gate"] else "missed", num(r.get("p50_ms"), ".3f"),
                 (kept + (f": {r['note']}" if r.get("note") else "")) if r.get("kept") else ""]
                for r in q["tradeoff"]]))
    return out


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
    columns = columns_of(manifest)
    lines = [
        f"# edgedl run: {recipe['name']}",
        "",
        f"Model `{recipe['model']['spec']}`, data `{recipe['data']['spec']}`, status **{manifest['status']}**, "
        f"host {manifest['host']['cpu']} ({manifest['host']['cpu_count']} cores).",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(r) + " |" for r in rows(manifest)]
    failed = [s for s in manifest["stages"] if s["status"] == "failed"]
    if failed:
        lines += ["", f"Stage `{failed[0]['stage']}` failed: {failed[0]['error']}"]
    found = verdicts(manifest)
    if found:
        lines += ["", "## Compression", ""] + [f"- {line}" for line in found]
    for name, measure, body in tradeoffs(manifest):
        lines += ["", f"## INT8 trade-off of {name}: layers in float, {measure}, latency", "",
                  "| " + " | ".join(TRADEOFF_COLUMNS) + " |", "|" + "---|" * len(TRADEOFF_COLUMNS)]
        lines += ["| " + " | ".join(r) + " |" for r in body]
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
    """report.md and report.html of a run, beside its manifest; the Markdown's path."""
    return write_all(run_dir, run_dir=run_dir, manifest=manifest)[0]


# ---- devices: results the run's artifacts got on other machines -----------------------------------

FLEET_DIR = "fleet"
HERE = "this machine"


def fleet_results(run_dir: Path) -> list[dict]:
    """The bench results attached to a run (``edgedl bench --run``), oldest first."""
    import json

    folder = Path(run_dir) / FLEET_DIR
    found = []
    for path in sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if folder.is_dir() else []:
        try:
            found.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue  # a half-copied file is not a result
    return found


def points(manifest: dict | None = None, fleet: list[dict] | None = None, rows: list[dict] | None = None) -> list[dict]:
    """Every (artifact, device) figure the report plots, from a run's manifest, the results its devices
    sent back, and database rows."""
    out = []
    accuracy = {}
    if manifest:
        for a in manifest["artifacts"]:
            m = a["metrics"]
            accuracy[a["name"]] = m.get("accuracy")
            lat = m.get("latency_ms") or {}
            bench = a.get("benchmark") or {}
            out.append({"artifact": a["name"], "device": HERE, "p50_ms": lat.get("p50"), "p99_ms": lat.get("p99"),
                        "accuracy": m.get("accuracy"), "size_mb": a["size_bytes"] / 2**20,
                        "energy_mj": None if m.get("energy_j_per_inference") is None
                        else 1000 * m["energy_j_per_inference"],
                        "quantiles_ms": (bench.get("statistics") or {}).get("quantiles_ms")})
    for r in fleet or []:
        name = Path(r["artifact"]).name
        m = r["metrics"]
        e = m.get("energy_j_per_inference")
        out.append({"artifact": name, "device": (r.get("device") or {}).get("label", "local"),
                    "p50_ms": m["latency_ms"].get("p50"), "p99_ms": m["latency_ms"].get("p99"),
                    "accuracy": accuracy.get(name), "size_mb": None, "energy_mj": None if e is None else 1000 * e,
                    "quantiles_ms": (r.get("statistics") or {}).get("quantiles_ms")})
    for row in rows or []:
        detail = row.get("detail") or {}
        out.append({"artifact": row["artifact"], "device": row["device"], "p50_ms": row["p50_ms"],
                    "p99_ms": row["p99_ms"], "accuracy": row["accuracy"], "size_mb": row["size_mb"],
                    "energy_mj": row["energy_mj"], "quantiles_ms": (detail.get("statistics") or {}).get("quantiles_ms")})
    return out


def device_columns(manifest: dict, fleet: list[dict]) -> tuple[list[str], list[list[str]]]:
    """A p50 column per device that ran the run's artifacts (the newest result of each pair)."""
    newest: dict[tuple[str, str], dict] = {}
    for r in fleet:
        newest[(Path(r["artifact"]).name, (r.get("device") or {}).get("label", "local"))] = r
    devices = list(dict.fromkeys(d for _, d in newest))
    columns = ["artifact", f"{HERE} p50 ms"] + [f"{d} p50 ms" for d in devices]
    rows = []
    for a in manifest["artifacts"]:
        lat = a["metrics"].get("latency_ms") or {}
        there = [newest.get((a["name"], d)) for d in devices]
        if not lat and not any(there):
            continue
        rows.append([a["name"], num(lat.get("p50"), ".3f")]
                    + [num(r["metrics"]["latency_ms"].get("p50"), ".3f") if r else "—" for r in there])
    return columns, rows


def write_all(folder: Path, run_dir: Path | None = None, manifest: dict | None = None,
              db_rows: list[dict] | None = None) -> list[Path]:
    """report.md and report.html for a run (with its devices' results) and/or database rows."""
    import json

    from edgedl.report import html as page

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    if run_dir is not None and manifest is None:
        manifest = json.loads((Path(run_dir) / "manifest.json").read_text(encoding="utf-8"))
    fleet = fleet_results(run_dir) if run_dir is not None else []
    md, sections = [], []
    if manifest is not None:
        md.append(markdown(manifest))
        marked = [a.get("recommended") is False for a in manifest["artifacts"]]
        sections.append(("Artifacts", page._table(list(columns_of(manifest)), rows(manifest), marked, text=3)))
        found = verdicts(manifest)
        if found:
            sections.append(("Compression", "<ul>" + "".join(f"<li>{_escape(v)}</li>" for v in found) + "</ul>"))
        for name, measure, body in tradeoffs(manifest):
            sections.append((f"INT8 trade-off of {name} ({measure})", page._table(TRADEOFF_COLUMNS, body)))
        if fleet:
            columns, body = device_columns(manifest, fleet)
            md += ["", "## On devices", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
            md += ["| " + " | ".join(r) + " |" for r in body]
            sections.append(("On devices", page._table(columns, body)))
    if db_rows is not None:
        columns = ["id", "artifact", "device", "profile", "p50 ms", "p99 ms", "inf/s", "accuracy", "size MB"]
        body = [[str(r["id"]), r["artifact"], r["device"], r["device_profile"] or "—", num(r["p50_ms"], ".3f"),
                 num(r["p99_ms"], ".3f"), num(r["throughput_ips"], ".0f"),
                 "—" if r["accuracy"] is None else f"{100 * r['accuracy']:.2f}%", num(r["size_mb"], ".2f")]
                for r in db_rows]
        if manifest is None:
            md += ["# edgedl results", ""]
        md += ["", "## Results from the database", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        md += ["| " + " | ".join(r) + " |" for r in body]
        sections.append(("Results from the database", page._table(columns, body, text=4)))
    title = f"edgedl run: {manifest['recipe']['name']}" if manifest else "edgedl results"
    intro = (f"Model {manifest['recipe']['model']['spec']}, data {manifest['recipe']['data']['spec']}, status "
             f"{manifest['status']}, host {manifest['host']['cpu']} ({manifest['host']['cpu_count']} cores)."
             if manifest else f"{len(db_rows or [])} results.")
    md_path = folder / "report.md"
    atomic_write_text(md_path, "\n".join(md).rstrip("\n") + "\n")
    html_path = page.write(folder / "report.html", page.page(title, intro, sections, points(manifest, fleet, db_rows)))
    return [md_path, html_path]


def _escape(text: str) -> str:
    import html

    return html.escape(text.replace("`", "").replace("**", ""))


def table(manifest: dict, width: int | None = None):
    """The artifact table; narrower than the full table's width, the compact columns. Figures are
    never cut: their columns do not wrap and artifact names fold instead."""
    from rich.table import Table

    wide = columns_of(manifest)
    full = rows(manifest, wide)
    needed = sum(max([len(c)] + [len(r[i]) for r in full]) + 3 for i, c in enumerate(wide))
    columns = wide if width is None or width >= needed else columns_of(manifest, COMPACT)
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
