"""The README's report screenshot (docs/img/report.png), from a real run and two real SSH "devices".

    make quickstart && .venv/bin/python benchmarks/report_screenshot.py [--run runs/quickstart]

Starts two OpenSSH servers on 127.0.0.1 (tests/fleet_servers.py: this machine's .venv is the
devices' edgedl), benches every ONNX and TFLite file of the run on both with
`edgedl bench ART --run RUN --on orin --on pi5`, writes `edgedl report RUN`, and screenshots
report.html in headless Chromium. Both "devices" are this machine, benched one at a time per
artifact in parallel, so their figures differ only by noise and by sharing 2 cores.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fleet_servers import start_sshd  # noqa: E402
from test_report_html import chromium, headless  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=ROOT / "runs" / "quickstart")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "img" / "report.png")
    args = parser.parse_args()
    manifest = json.loads((args.run / "manifest.json").read_text())
    with tempfile.TemporaryDirectory() as tmp:
        devices = [start_sshd(Path(tmp) / name, name) for name in ("orin", "pi5")]
        try:
            for record in manifest["artifacts"]:
                if record["format"] in ("onnx", "tflite"):
                    subprocess.run([sys.executable, "-m", "edgedl", "bench", str(args.run / record["path"]), "--run",
                                    str(args.run), "--on", "orin", "--on", "pi5", "--ssh-config",
                                    str(devices[0].client_config), "--runs", "200", "--energy", "none", "--quiet"],
                                   check=True)
        finally:
            for device in devices:
                device.stop()
        subprocess.run([sys.executable, "-m", "edgedl", "report", str(args.run)], check=True)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        proc = headless(chromium(), Path(tmp) / "profile", "--window-size=1100,2150", f"--screenshot={args.out}",
                        (args.run / "report.html").resolve().as_uri())
        if proc.returncode != 0:
            sys.exit(proc.stderr[-500:])
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
