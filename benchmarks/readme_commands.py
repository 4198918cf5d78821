"""The README's heavy `edgedl compress` lines, run exactly as written (plus --out), with their figures.

    .venv/bin/python benchmarks/readme_commands.py [--out benchmarks/.work/readme] [--only SUBSTRING]

Runs each line of COMMANDS through the installed `edgedl` command and prints its exit status, wall
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

COMMANDS = ["edgedl compress recipes/quickstart.yaml",
            "edgedl compress --model resnet18 --data random:3x224x224 --prune 0.5 --quantize int8",
            "edgedl compress recipes/jetson-orin-nano.yaml --out runs/jetson-orin-nano"]


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
