"""Every command the README and docs/ show runs as written (issue 17): the cheap ones here, in a work
folder whose runs/quickstart and runs/jetson-orin-nano are real runs of the bundled recipes (the
conftest's, shortened); `edgedl compress` lines build their recipe here (--print-recipe) and run in
full in benchmarks/readme_commands.py; the README's runtime snippet runs as a script. Lines under a
comment that puts them on a device (a Jetson) and synopses with placeholders are not run."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
DEVICE = re.compile(r"#.*\bon (the|a) (Jetson|device)", re.I)
PLACEHOLDER = re.compile(r"\b[A-Z]{3,}\b|\.\.\.|\[|\|")


def blocks(path: Path) -> list[tuple[str, list[str]]]:
    """The fenced code blocks of a markdown file: (language, lines)."""
    out, lang, body = [], None, []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            if lang is None:
                lang, body = line[3:].strip(), []
            else:
                out.append((lang, body))
                lang = None
            continue
        if lang is not None:
            body.append(line)
    return out


def commands() -> list[tuple[str, str, int]]:
    """(file, command, expected exit code) of every edgedl line to run from the docs."""
    found = []
    for path in DOCS:
        for lang, body in blocks(path):
            if lang not in ("bash", "sh", ""):
                continue
            joined = "\n".join(body).replace("\\\n", " ")
            on_device = False
            for line in joined.splitlines():
                text = line.strip()
                if DEVICE.search(text) and text.startswith("#"):
                    on_device = True
                    continue
                command, _, comment = text.partition("  #")
                command = command.strip().removeprefix(".venv/bin/")
                if on_device or not command.startswith("edgedl ") or PLACEHOLDER.search(command):
                    continue
                found.append((path.name, command, 1 if "exits 1" in comment else 0))
    return found


@pytest.fixture(scope="module")
def fleet_config(tmp_path_factory):
    """The devices the Fleet commands name (orin, pi5): real OpenSSH servers on 127.0.0.1 whose PATH
    holds this .venv (tests/fleet_servers.py), reached through an ssh config as ~/.ssh/config would."""
    from fleet_servers import start_sshd

    folder = tmp_path_factory.mktemp("docs-fleet")
    devices = [start_sshd(folder / name, name) for name in ("orin", "pi5")]
    yield devices[0].client_config
    for device in devices:
        device.stop()


@pytest.fixture(scope="module")
def work(tmp_path_factory, readme_run, jetson_run) -> Path:
    out, proc = readme_run
    assert proc.returncode == 0, proc.stderr
    folder = out.parent.parent
    (folder / "runs" / "jetson-orin-nano").symlink_to(jetson_run)
    for name in ("recipes", "tests", "devices"):
        (folder / name).symlink_to(ROOT / name)
    return folder


def test_the_docs_show_commands_to_run():
    found = commands()
    assert len(found) >= 15 and {f for f, _, _ in found} >= {"README.md", "tensorrt.md", "devices-and-energy.md"}


@pytest.mark.parametrize("where, command, code", commands(), ids=lambda v: v if isinstance(v, str) else None)
def test_a_documented_command_runs_as_written(work, request, where, command, code):
    args = shlex.split(command)[1:]
    env = {**os.environ, "EDGEDL_TRUSTED_ENGINES": str(work / "trusted.txt")}
    if "--on" in args:  # the devices it names, only for the lines that name them
        env["EDGEDL_SSH_CONFIG"] = str(request.getfixturevalue("fleet_config"))
    if args[0] == "compress" and "--on" not in args:
        args.append("--print-recipe")  # the run itself: benchmarks/readme_commands.py
    # (compress --on runs in full here: an ONNX model's run is seconds, and its device check is the point)
    proc = subprocess.run([sys.executable, "-m", "edgedl", *args], capture_output=True, text=True, cwd=work, env=env)
    assert proc.returncode == code, f"{where}: {command}\n{proc.stderr[-800:]}"


def test_the_runtime_snippets_run_as_written(work):
    snippets = [(path.name, body) for path in DOCS for lang, body in blocks(path) if lang == "python"]
    assert {name for name, _ in snippets} >= {"README.md", "runtime.md"}
    for name, snippet in snippets:
        proc = subprocess.run([sys.executable, "-c", "\n".join(snippet)], capture_output=True, text=True, cwd=work)
        assert proc.returncode == 0, (name, proc.stderr)
