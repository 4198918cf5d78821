"""Every bench and compress result in one database, through SQLAlchemy: SQLite at
``~/.edgedl/results.db`` by default, any SQLAlchemy URL with ``--db URL`` or ``EDGEDL_RESULTS_DB``
(a team points its workstations at one PostgreSQL server), none with ``--no-db``.

The schema is versioned by Alembic migrations (``edgedl/results/migrations``), applied when a
database is opened, under a lock (a file lock for SQLite, an advisory lock on PostgreSQL) so two
processes opening a new database at once do not both create it. A database whose schema is newer
than this edgedl's is refused in one line, before anything is written. Each result is one
transaction: a failure leaves the database as it was.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from edgedl.errors import EdgedlError, UsageError

ENV = "EDGEDL_RESULTS_DB"
MIGRATIONS = Path(__file__).with_name("migrations")


class DatabaseError(EdgedlError):
    """The results database could not be opened or written (the work's results are kept on disk)."""


def default_url() -> str:
    """``EDGEDL_RESULTS_DB``, else SQLite at ``~/.edgedl/results.db``."""
    return os.environ.get(ENV) or f"sqlite:///{Path.home() / '.edgedl' / 'results.db'}"


def _tables():
    from sqlalchemy import JSON, Column, DateTime, Float, Integer, MetaData, String, Table, Text

    metadata = MetaData()
    results = Table(
        "results", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("created_at", DateTime(timezone=True), nullable=False),
        Column("kind", String(16), nullable=False),  # bench | compress
        Column("run_dir", Text), Column("run_name", String(200)),
        Column("artifact", String(300), nullable=False), Column("artifact_sha256", String(64)),
        Column("format", String(32)), Column("precision", String(32)), Column("backend", String(32)),
        Column("device", String(300), nullable=False),  # how it was reached: local, ssh://..., an alias
        Column("device_profile", String(100)), Column("device_hostname", String(200)), Column("device_cpu", String(300)),
        Column("p50_ms", Float), Column("p90_ms", Float), Column("p99_ms", Float), Column("mean_ms", Float),
        Column("throughput_ips", Float), Column("peak_rss_mb", Float), Column("energy_mj", Float),
        Column("accuracy", Float), Column("size_mb", Float),
        Column("edgedl_version", String(32)),
        Column("detail", JSON),  # conditions, statistics, flags, energy, notes: what the row's figures rest on
    )
    return metadata, results


METADATA, RESULTS = _tables()


def _config(connection):
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    return config


LOCK_KEY = 4121963  # PostgreSQL advisory lock of edgedl's schema
LOCK_WAIT_S = 60.0


@contextmanager
def _migration_lock(engine, url, shown: str) -> Iterator[None]:
    """One process at a time creates or upgrades a database's schema; a lock held longer than a
    minute (a stuck client) is one line, not a hang."""
    deadline = time.monotonic() + LOCK_WAIT_S
    stuck = DatabaseError(f"results database {shown}: another process has held its schema lock for "
                          f"{LOCK_WAIT_S:.0f} s (a stuck edgedl?); try again, or give another --db")
    if url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
        import fcntl

        with open(f"{url.database}.lock", "a") as handle:
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise stuck from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
    elif url.get_backend_name() == "postgresql":
        from sqlalchemy import text

        with engine.connect() as conn:
            while not conn.execute(text(f"SELECT pg_try_advisory_lock({LOCK_KEY})")).scalar():
                if time.monotonic() > deadline:
                    raise stuck
                time.sleep(0.1)
            try:
                yield
            finally:
                conn.execute(text(f"SELECT pg_advisory_unlock({LOCK_KEY})"))
                conn.commit()
    else:
        yield


class ResultsDB:
    """An open results database (its schema at this edgedl's head)."""

    def __init__(self, url: str | None = None):
        from sqlalchemy import create_engine
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        self.url_text = url or default_url()
        try:
            parsed = make_url(self.url_text)
        except ArgumentError:
            raise UsageError(f"--db {self.url_text}: not a database URL (sqlite:///PATH or "
                             "postgresql+psycopg://user@host/db)") from None
        if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
            parsed = parsed.set(database=str(Path(parsed.database).expanduser()))  # sqlite:///~/r.db
            try:
                Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
                with open(f"{parsed.database}.lock", "a"):
                    pass
            except OSError as exc:
                raise UsageError(f"--db {self.url_text}: cannot write there ({exc.strerror}); give another --db, "
                                 "or --no-db") from None
        self.shown = parsed.render_as_string(hide_password=True)
        try:
            args = {"timeout": 60} if parsed.get_backend_name() == "sqlite" else {"connect_timeout": 10}
            self.engine = create_engine(parsed, connect_args=args)
        except (NoSuchModuleError, ImportError) as exc:
            extra = " (pip install 'edgedl[postgres]')" if parsed.get_backend_name() == "postgresql" else ""
            raise UsageError(f"--db {self.shown}: no driver for it here{extra}: {exc}") from None
        self._migrate(parsed)

    def _migrate(self, parsed) -> None:
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory
        from sqlalchemy.exc import SQLAlchemyError

        def current_revision():
            with self.engine.connect() as conn:
                return MigrationContext.configure(conn).get_current_revision(), \
                    ScriptDirectory.from_config(_config(conn))

        try:
            current, script = current_revision()  # most opens: the schema is at head, no lock needed
            if current != script.get_current_head():
                with _migration_lock(self.engine, parsed, self.shown), self.engine.begin() as conn:
                    current = MigrationContext.configure(conn).get_current_revision()  # another may have done it
                    if current not in {rev.revision for rev in script.walk_revisions()} | {None}:
                        raise UsageError(f"results database {self.shown} was written by a newer edgedl (schema "
                                         f"{current}); upgrade edgedl, or give another --db")
                    if current != script.get_current_head():
                        command.upgrade(_config(conn), "head")
        except SQLAlchemyError as exc:
            raise DatabaseError(f"results database {self.shown}: {_first_line(exc)}") from None

    # ---- writing ---------------------------------------------------------------------------------

    def add(self, rows: list[dict]) -> list[int]:
        """Store rows (from :func:`bench_row` / :func:`compress_rows`) in one transaction; their ids."""
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.begin() as conn:
                return [conn.execute(RESULTS.insert().values(**row)).inserted_primary_key[0] for row in rows]
        except SQLAlchemyError as exc:
            raise DatabaseError(f"results database {self.shown}: not written ({_first_line(exc)})") from None

    # ---- reading ---------------------------------------------------------------------------------

    def rows(self, artifact: str | None = None, device: str | None = None, kind: str | None = None,
             run_dir: str | None = None, limit: int | None = None) -> list[dict]:
        """Results, newest first, filtered by artifact name or hash prefix, device (address, profile or
        host name), kind and run folder."""
        from sqlalchemy import or_, select

        query = select(RESULTS).order_by(RESULTS.c.id.desc())
        if artifact:
            query = query.where(or_(RESULTS.c.artifact == artifact, RESULTS.c.artifact_sha256.startswith(artifact)))
        if device:
            query = query.where(or_(RESULTS.c.device == device, RESULTS.c.device_profile == device,
                                    RESULTS.c.device_hostname == device))
        if kind:
            query = query.where(RESULTS.c.kind == kind)
        if run_dir:
            query = query.where(RESULTS.c.run_dir == str(Path(run_dir).resolve()))
        if limit:
            query = query.limit(limit)
        return self._read(lambda conn: [dict(r._mapping) for r in conn.execute(query)])

    def _read(self, how):
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                return how(conn)
        except SQLAlchemyError as exc:
            raise DatabaseError(f"results database {self.shown}: {_first_line(exc)}") from None

    def get(self, result_id: int) -> dict:
        from sqlalchemy import select

        row = self._read(lambda conn: conn.execute(select(RESULTS).where(RESULTS.c.id == result_id)).first())
        if row is None:
            raise UsageError(f"no result {result_id} in {self.shown} (edgedl results list shows the ids)")
        return dict(row._mapping)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc)
    return " ".join(text.strip().splitlines()[0].split()) if text.strip() else type(exc).__name__


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _sha256(path: Path) -> str | None:
    from edgedl._fs import sha256_file

    try:
        return sha256_file(path)
    except OSError:
        return None


def _figures(metrics: dict, host: dict) -> dict:
    """The columns every row takes from a result's metrics and the machine that measured them."""
    lat = metrics.get("latency_ms") or {}
    energy = metrics.get("energy_j_per_inference")
    return {"device_cpu": host.get("cpu"), "p50_ms": lat.get("p50"), "p90_ms": lat.get("p90"), "p99_ms": lat.get("p99"),
            "mean_ms": lat.get("mean"), "throughput_ips": metrics.get("throughput_ips"),
            "peak_rss_mb": metrics.get("peak_rss_mb"), "energy_mj": None if energy is None else 1000 * energy,
            "accuracy": metrics.get("accuracy")}


def bench_row(result: dict, kind: str = "bench", run_dir: str | Path | None = None, run_name: str | None = None,
              artifact_name: str | None = None, accuracy: float | None = None, sha256: str | None = None) -> dict:
    """A database row of one ``edgedl bench`` result (as every executor returns it)."""
    from edgedl import __version__

    m, c = result["metrics"], result.get("conditions") or {}
    device = result.get("device") or {"on": "local", "label": "local"}
    host = c.get("host") or {}
    path = Path(result["artifact"])
    figures = _figures(m, host)
    if accuracy is not None:
        figures["accuracy"] = accuracy
    return {
        "created_at": _now(), "kind": kind, "run_dir": str(Path(run_dir).resolve()) if run_dir else None,
        "run_name": run_name, "artifact": artifact_name or path.name,
        "artifact_sha256": sha256 or _sha256(path), "format": result.get("format"),
        "precision": result.get("precision"), "backend": result.get("backend"),
        "device": device.get("label") or device.get("on") or "local", "device_profile": device.get("profile"),
        "device_hostname": device.get("hostname") or host.get("hostname"), **figures,
        "size_mb": round(path.stat().st_size / 2**20, 4) if path.is_file() else None,
        "edgedl_version": __version__,
        "detail": _jsonable({"conditions": c, "statistics": result.get("statistics"), "flags": result.get("flags"),
                             "energy": result.get("energy"), "notes": result.get("notes"),
                             "cold_start": result.get("cold_start"), "where": result.get("where"),
                             "device": {k: v for k, v in device.items() if k != "facts"}}),
    }


def compress_rows(run_path: str | Path, manifest: dict) -> list[dict]:
    """One row per benchmarked artifact of a run (what its report's table shows)."""
    from edgedl import __version__

    rows = []
    device = manifest.get("device") or {}
    for record in manifest.get("artifacts", []):
        m = record.get("metrics") or {}
        if not m.get("latency_ms"):
            continue
        bench = record.get("benchmark") or {}
        executor = bench.get("executor") or {}
        rows.append({
            "created_at": _now(), "kind": "compress", "run_dir": str(Path(run_path).resolve()),
            "run_name": manifest.get("recipe", {}).get("name") if isinstance(manifest.get("recipe"), dict) else None,
            "artifact": record["name"], "artifact_sha256": record.get("sha256"), "format": record.get("format"),
            "precision": record.get("precision"), "backend": bench.get("backend"),
            "device": executor.get("label") or bench.get("on") or "local",
            "device_profile": executor.get("profile") or (device.get("name") if device.get("on_device") else None),
            "device_hostname": executor.get("hostname") or (bench.get("host") or {}).get("hostname"),
            **_figures(m, bench.get("host") or {}),
            "size_mb": round(record["size_bytes"] / 2**20, 4) if record.get("size_bytes") else None,
            "edgedl_version": __version__,
            "detail": _jsonable({"conditions": bench, "notes": record.get("notes"),
                                 "quantization": record.get("quantization")}),
        })
    return rows


def _jsonable(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))
