"""The fleet's commands: ``edgedl bench --on`` (several devices at once), ``edgedl results`` (list,
show, compare), ``edgedl report`` and the hidden ``edgedl device-facts`` a workstation asks a device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgedl.cli import _console, cli, open_db, store_results
from edgedl.errors import UsageError
from edgedl.report import num

from edgedl.report import FLEET_DIR  # a run folder's results from devices (edgedl bench --run RUN_DIR --on ...)


def bench_fleet(request, addresses: list[str], json_path, quiet: bool, db: str | None | bool, run_dir: Path | None,
                **options) -> None:
    """``request`` on every device in ``addresses``; results stored, attached to a run, shown."""
    from edgedl._fs import atomic_write_json
    from edgedl.bench.fleet import bench_on

    if run_dir is not None and not (run_dir / "manifest.json").is_file():
        raise UsageError(f"--run {run_dir}: not an edgedl run folder (it has no manifest.json)")
    store = open_db(db) if db is not False else None  # a refusing database: now, before any device works
    console = _console(quiet)
    width = max(len(a) for a in addresses)

    def say(who: str, what: str) -> None:
        if not quiet:
            console.print(f"{who:<{width}}  {what}", markup=False, highlight=False)

    outcomes = bench_on(request, addresses, say=say, **options)
    done = [o for o in outcomes if o.result is not None]
    name = Path(request.artifact).name
    from edgedl.results import bench_row

    stored = store_results(store, [bench_row(o.result, run_dir=run_dir, artifact_name=name) for o in done]
                           if store is not None else [])
    if run_dir is not None:
        (run_dir / FLEET_DIR).mkdir(exist_ok=True)
        for o in done:
            atomic_write_json(run_dir / FLEET_DIR / f"{_safe(o.label)}--{name}.json", o.result)
    if json_path is not None:
        payload = [{"device": o.label, "result": o.result, "error": o.error} for o in outcomes]
        if str(json_path) == "-":
            click.echo(json.dumps(payload, indent=2, default=str))
        else:
            atomic_write_json(json_path, payload)
    if not quiet:
        _show_fleet(console, name, outcomes)
        if stored:
            console.print(stored, markup=False)
        if run_dir is not None and done:
            console.print(f"attached to {run_dir}: edgedl report {run_dir} shows a column per device", markup=False)
    failed = [o for o in outcomes if o.error]
    if failed:
        click.echo(f"error: {failed[0].error}" if len(outcomes) == 1 else
                   f"error: {len(failed)} of {len(outcomes)} devices failed: " + "; ".join(o.error for o in failed),
                   err=True)
        sys.exit(1)


def _safe(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label)


def _show_fleet(console, name: str, outcomes) -> None:
    from rich.table import Table

    table = Table(title=f"{name} on {len(outcomes)} device{'s' if len(outcomes) > 1 else ''}")
    for col in ("device", "profile", "backend", "p50 ms", "p99 ms", "inf/s", "peak RSS MB", "energy mJ", "accuracy"):
        table.add_column(col, justify="left" if col in ("device", "profile", "backend") else "right")
    for o in outcomes:
        if o.result is None:
            table.add_row(o.label, "—", "failed", "—", "—", "—", "—", "—", "—", style="red")
            continue
        m, d = o.result["metrics"], o.result.get("device") or {}
        lat = m["latency_ms"]
        e = m.get("energy_j_per_inference")
        table.add_row(o.label, d.get("profile") or "—", str(o.result.get("backend")), num(lat.get("p50"), ".3f"),
                      num(lat.get("p99"), ".3f"), num(m.get("throughput_ips"), ".0f"), num(m.get("peak_rss_mb"), ".0f"),
                      num(None if e is None else 1000 * e, ".3f"),
                      "—" if m.get("accuracy") is None else f"{100 * m['accuracy']:.2f}%")
    console.print(table)


# ---- edgedl results ------------------------------------------------------------------------------

LIST_COLUMNS = ("id", "when", "kind", "artifact", "device", "profile", "p50 ms", "p99 ms", "inf/s", "accuracy")


def _cells(row: dict) -> dict:
    return {"id": str(row["id"]), "when": row["created_at"].strftime("%Y-%m-%d %H:%M") if row["created_at"] else "—",
            "kind": row["kind"], "artifact": row["artifact"], "device": row["device"],
            "profile": row["device_profile"] or "—", "host": row["device_hostname"] or "—",
            "p50 ms": num(row["p50_ms"], ".3f"), "p99 ms": num(row["p99_ms"], ".3f"),
            "inf/s": num(row["throughput_ips"], ".0f"), "peak RSS MB": num(row["peak_rss_mb"], ".0f"),
            "energy mJ": num(row["energy_mj"], ".3f"),
            "accuracy": "—" if row["accuracy"] is None else f"{100 * row['accuracy']:.2f}%",
            "size MB": num(row["size_mb"], ".2f"), "sha256": (row["artifact_sha256"] or "—")[:12],
            "x fastest": num(row.get("vs_fastest"), ".2f")}


def _table(title: str, columns, rows: list[dict]):
    from rich.table import Table

    table = Table(title=title)
    for col in columns:
        table.add_column(col, justify="right" if col.endswith(("ms", "s", "MB", "mJ", "accuracy", "id", "fastest")) else "left")
    for row in rows:
        cells = _cells(row)
        table.add_row(*(cells[c] for c in columns))
    return table


def _json_rows(rows: list[dict]) -> str:
    return json.dumps(rows, indent=2, default=str)


@cli.group()
def results() -> None:
    """Every bench and compress result, kept in the results database (--db, EDGEDL_RESULTS_DB)."""


@results.command("list")
@click.option("--artifact", help="Only this artifact (file name or sha256 prefix).")
@click.option("--device", help="Only this device (address, alias, profile or host name).")
@click.option("--kind", type=click.Choice(["bench", "compress"]))
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--db", metavar="URL", help="Results database (default: EDGEDL_RESULTS_DB, else ~/.edgedl/results.db).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def results_list(artifact, device, kind, limit, db, as_json) -> None:
    """The newest results first."""
    found = open_db(db).rows(artifact=artifact, device=device, kind=kind, limit=limit)
    if as_json:
        click.echo(_json_rows(found))
        return
    _console().print(_table(f"{len(found)} results", LIST_COLUMNS, found))


@results.command("show")
@click.argument("result_id", type=int)
@click.option("--db", metavar="URL", help="Results database.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def results_show(result_id, db, as_json) -> None:
    """One result with everything it rests on (conditions, statistics, flags)."""
    row = open_db(db).get(result_id)
    if as_json:
        click.echo(json.dumps(row, indent=2, default=str))
        return
    console = _console()
    cells = _cells(row)
    for key in ("id", "when", "kind", "artifact", "sha256", "size MB", "device", "profile", "host", "p50 ms", "p99 ms",
                "inf/s", "peak RSS MB", "energy mJ", "accuracy"):
        console.print(f"{key:>12}  {cells[key]}", markup=False, highlight=False)
    detail = row.get("detail") or {}
    cond = detail.get("conditions") or {}
    host = cond.get("host") or {}
    if host:
        console.print(f"{'machine':>12}  {host.get('cpu')} ({host.get('cpu_count')} cores), {host.get('os')}", markup=False)
    for line in (detail.get("flags") or []):
        console.print(f"{'warning':>12}  {line}", markup=False)
    if row.get("run_dir"):
        console.print(f"{'run':>12}  {row['run_dir']}", markup=False)


@results.command("compare")
@click.option("--artifact", help="One artifact across devices (file name or sha256 prefix).")
@click.option("--device", help="One device across artifacts.")
@click.option("--db", metavar="URL", help="Results database.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def results_compare(artifact, device, db, as_json) -> None:
    """One artifact across devices, or one device across artifacts: the newest result of each, side by
    side, with each one's p50 relative to the fastest."""
    if bool(artifact) == bool(device):
        raise click.UsageError("give --artifact NAME (across devices) or --device NAME (across artifacts)")
    found = open_db(db).rows(artifact=artifact, device=device)
    key = "device" if artifact else "artifact"
    newest: dict[str, dict] = {}
    for row in found:  # newest first: the first of each device (or artifact) is its latest
        newest.setdefault(row[key], row)
    rows = sorted(newest.values(), key=lambda r: (r["p50_ms"] is None, r["p50_ms"] or 0))
    if not rows:
        raise UsageError(f"no results for {'--artifact ' + artifact if artifact else '--device ' + device} "
                         "(edgedl results list shows what is stored)")
    fastest = next((r["p50_ms"] for r in rows if r["p50_ms"]), None)
    for r in rows:
        r["vs_fastest"] = round(r["p50_ms"] / fastest, 3) if r["p50_ms"] and fastest else None
    if as_json:
        click.echo(_json_rows(rows))
        return
    columns = ("device", "profile", "host") if artifact else ("artifact", "size MB", "accuracy")
    table = _table(f"{artifact} across devices" if artifact else f"{device} across artifacts",
                   ("id", *columns, "p50 ms", "p99 ms", "inf/s", "peak RSS MB", "energy mJ", "x fastest"), rows)
    _console().print(table)


# ---- edgedl report ---------------------------------------------------------------------------------

@cli.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path), required=False)
@click.option("--db", metavar="URL", help="Report results from the database instead of (or beside) a run.")
@click.option("--artifact", help="With --db: only this artifact.")
@click.option("--device", help="With --db: only this device.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.md and report.html (default: RUN_DIR, else the current folder).")
def report(run_dir, db, artifact, device, out) -> None:
    """Write report.md and a self-contained report.html (tables and plots) for a run, with the results
    its devices sent back (edgedl bench --run), or for results from the database.

    \b
      edgedl report runs/quickstart
      edgedl report --db sqlite:///results.db --artifact model.int8.onnx --out fleet-report
    """
    from edgedl.report import write_all

    if run_dir is None and db is None:
        raise click.UsageError("give a RUN_DIR, or --db URL with --artifact/--device")
    if run_dir is not None and not (run_dir / "manifest.json").is_file():
        raise UsageError(f"{run_dir}: not an edgedl run folder (it has no manifest.json)")
    rows = open_db(db).rows(artifact=artifact, device=device, run_dir=None) if db is not None else None
    written = write_all(out or run_dir or Path("."), run_dir=run_dir, db_rows=rows)
    for path in written:
        click.echo(f"wrote {path}")


# ---- what a workstation asks a device ----------------------------------------------------------------

@cli.command("device-facts", hidden=True)
def device_facts() -> None:
    """This machine as a device: edgedl's version, the bench request format it reads, its detected
    profile, host and which backends' frameworks import (JSON on standard output)."""
    import importlib.util
    import platform

    from edgedl import __version__
    from edgedl.bench import conditions
    from edgedl.bench.request import REQUEST_VERSION
    from edgedl.devices import detect
    from edgedl.runtime.backends import BACKENDS

    def version_of(module: str) -> str | None:
        if importlib.util.find_spec(module) is None:
            return None
        from importlib.metadata import PackageNotFoundError, version

        for dist in (module, module.replace("_", "-")):
            try:
                return version(dist)
            except PackageNotFoundError:
                continue
        return "installed"

    def available(backend) -> str | None:
        if backend.name == "litert":  # ai-edge-litert, or tflite_runtime / tensorflow on older boards
            from edgedl.runtime.litert import PROVIDERS

            return next((v for v in (version_of(m.split(".")[0]) for m, _ in PROVIDERS) if v), None)
        return version_of(backend.framework)

    found = detect(use_nvml=False)
    click.echo(json.dumps({"edgedl": __version__, "request_version": REQUEST_VERSION, "python": platform.python_version(),
                           "profile": found["profile"], "generic_profile": found.get("generic", False),
                           "host": conditions.host(),
                           "backends": {b.name: available(b) for b in BACKENDS.values() if b.framework}}))
