"""The README's heavy `edgedl compress` lines, run exactly as written (plus --out), with their figures.

    make quickstart && .venv/bin/python benchmarks/readme_commands.py [--out benchmarks/.work/readme] [--only SUBSTRING]

Runs each `edgedl compress` line of the README through the installed `edgedl` command and prints its exit status, wall
time and the manifest's figures for every artifact. The test suite runs the same lines on a
smaller budget (tests/test_cli.py: the quickstart with one benchmark round instead of three;
tests/conftest.py jetson_run: the Jetson recipe shortened); this script runs them as a user does.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_lines() -> list[str]:
    """Every `edgedl compress` line of the README's shell blocks, as written (comments dropped). Lines
    naming runs/quickstart need `make quickstart` first; run this from the repository root."""
    lines, fenced = [], False
    for line in (ROOT / "README.md").read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = line.strip() in ("```bash", "```sh") if not fenced else False
            continue
        if fenced and line.startswith("edgedl compress "):
            lines.append(line.split("  #")[0].strip())
    return lines


COMMANDS = readme_lines()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/.work/readme"))
    parser.add_argument("--only", default="", help="run only the lines containing this text")
    args = parser.parse_args()
    edgedl = Path(sys.executable).with_name("edgedl")
    failed = 0
    for i, line in enumerate(COMMANDS):
        if args.only not in line:
            continue
        out = args.out / f"run{i}"
        argv = [str(edgedl), *shlex.split(line)[1:], "--out", str(out), "--force", "--quiet"]
        start = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True)
        wall = time.perf_counter() - start
        print(f"$ {line}\n  exit {proc.returncode} in {wall:.0f} s")
        if proc.returncode:
            failed += 1
            print("  " + (proc.stderr.strip().splitlines() or ["(no output)"])[-1])
            continue
        manifest = json.loads((out / "manifest.json").read_text())
        for a in manifest["artifacts"]:
            m = a["metrics"]
            lat = (m["latency_ms"] or {}).get("p50")
            print(f"  {a['name']:32} {a['precision']:6} {a['size_bytes'] / 2**20:7.2f} MB  MACs {m['macs'] or 0:>13,}  "
                  f"p50 {'—' if lat is None else f'{lat:.2f} ms'}  {a.get('summary', '')}")
        for note in manifest["notes"]:
            print(f"  note: {note}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
