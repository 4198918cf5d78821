"""A device over SSH (``--on ssh://[user@]host[:port]`` or ``--on ALIAS``): the system's OpenSSH
client, so ``~/.ssh/config`` (aliases, ports, users, IdentityFile, ProxyJump, known hosts) is honoured
as the user's own ``ssh`` honours it.

Host keys are always checked (``StrictHostKeyChecking=yes`` whatever a config file says): an unknown
host is refused unless the user accepts it with ``--accept-new-host`` (``accept-new``: first contact
only; a changed key is refused either way). ``BatchMode`` means no password prompt: a key the server
refuses is one line, not a hung process.

One connection checks the device (edgedl found, its version, the backend the artifact needs, the
device's detected profile); one more streams the artifact, its sidecar, the request (and a data file
it names) as a tar into a fresh temporary folder there, runs ``edgedl bench --request`` and brings the
result back; the folder is removed when the command ends, however it ends.
"""

from __future__ import annotations

import json
import shlex
import subprocess
import tarfile
from pathlib import Path
from urllib.parse import unquote, urlsplit

from edgedl.bench.executors import Executor
from edgedl.bench.request import REQUEST_VERSION, BenchRequest
from edgedl.errors import DeviceError, UsageError

# Where edgedl is looked for on a device when --remote-edgedl does not say: on the PATH of a
# non-interactive login, then the usual user-level installs.
SEARCHED = ("edgedl", "$HOME/.local/bin/edgedl", "$HOME/.edgedl/venv/bin/edgedl", "$HOME/.venv/bin/edgedl")
INSTALL = ("python3 -m venv ~/.edgedl/venv && ~/.edgedl/venv/bin/pip install 'edgedl[{extra}]' "
           "(or give its path with --remote-edgedl)")
NOT_FOUND = 127


def remote_path(path: str) -> str:
    """A path on the device as its shell should see it: ``~/x`` and ``$HOME/x`` under its home, the
    rest quoted as one word."""
    for home in ("~/", "$HOME/"):
        if path.startswith(home):
            return '"$HOME"/' + shlex.quote(path[len(home):])
    return shlex.quote(path)


def posix_sh(script: str) -> str:
    """``script`` run by ``sh`` whatever the account's login shell is (fish and tcsh read it otherwise)."""
    return "sh -c " + shlex.quote(script)


def parse_address(address: str) -> tuple[str | None, str, int | None]:
    """``ssh://user@host:port`` -> (user, host, port); a bare alias -> (None, alias, None)."""
    if "://" not in address:
        host, user, port = address, None, None
    else:
        parts = urlsplit(address)
        if parts.path not in ("", "/") or parts.query or parts.fragment or not parts.hostname:
            raise UsageError(f"--on {address}: give ssh://[user@]host[:port] (no path or options)")
        try:
            port = parts.port
        except ValueError:
            raise UsageError(f"--on {address}: the port is not a number from 1 to 65535") from None
        host, user = parts.hostname, unquote(parts.username) if parts.username else None
    if host.startswith("-") or any(c.isspace() for c in host) or (user and (user.startswith("-") or " " in user)):
        raise UsageError(f"--on {address}: not a host name")
    return user, host, port


class SshExecutor(Executor):
    scheme = "ssh"

    def __init__(self, address: str, ssh_config: str | None = None, accept_new_host: bool = False,
                 remote_edgedl: str | None = None, connect_timeout: int = 10, trust_model_code: bool = False,
                 **options):
        super().__init__(address, **options)
        self.user, self.host, self.port = parse_address(address)
        self.ssh_config = ssh_config
        self.accept_new_host = accept_new_host
        self.remote_edgedl = remote_edgedl
        self.connect_timeout = connect_timeout
        self.trust_model_code = trust_model_code
        self.facts: dict | None = None
        self.edgedl: str | None = None  # the command that runs edgedl there, found by check()

    def argv(self, command: str) -> list[str]:
        """The ssh command line that runs ``command`` (a POSIX shell line) on the device."""
        argv = ["ssh", "-T", "-o", "BatchMode=yes",
                "-o", f"StrictHostKeyChecking={'accept-new' if self.accept_new_host else 'yes'}",
                "-o", f"ConnectTimeout={self.connect_timeout}", "-o", "ServerAliveInterval=5",
                "-o", "ServerAliveCountMax=3", "-o", "LogLevel=ERROR"]
        if self.ssh_config:
            argv += ["-F", str(self.ssh_config)]
        if self.port:
            argv += ["-p", str(self.port)]
        if self.user:
            argv += ["-l", self.user]
        return [*argv, "--", self.host, command]

    def _run(self, command: str, stdin=None, what: str = "") -> subprocess.CompletedProcess:
        try:
            proc = subprocess.run(self.argv(command), stdin=stdin if stdin is not None else subprocess.DEVNULL,
                                  capture_output=True)
        except FileNotFoundError:
            raise DeviceError("the OpenSSH client (ssh) is not installed here: install openssh-client") from None
        if proc.returncode == 255:
            raise DeviceError(f"{self.label}: {self._ssh_failure(proc.stderr.decode(errors='replace'), what)}")
        return proc

    def _ssh_failure(self, stderr: str, what: str) -> str:
        """ssh's own failure (exit 255) as one line that says what to do."""
        text = " ".join(stderr.split())
        host = f"{self.user + '@' if self.user else ''}{self.host}"
        if "IDENTIFICATION HAS CHANGED" in text:
            return (f"the host key of {self.host} has CHANGED since it was recorded in known_hosts: refused (it may be "
                    "another machine); if the device was reinstalled, remove its old key with ssh-keygen -R")
        if "Host key verification failed" in text or "No " in text and "host key is known" in text:
            return (f"the host key of {self.host} is not in known_hosts: refused; check it and add it (ssh-keyscan, or "
                    "one ssh by hand), or accept a first-seen key with --accept-new-host")
        if "Permission denied" in text:
            return (f"{host} refused the credentials (no key it accepts; passwords are not asked): add your key to its "
                    "authorized_keys, or name one with IdentityFile in ~/.ssh/config")
        for words in ("Could not resolve hostname", "Connection refused", "Connection timed out", "No route to host",
                      "Network is unreachable", "Operation timed out"):
            if words.lower() in text.lower():
                return f"cannot reach {self.host}{f' port {self.port}' if self.port else ''}: {words.lower()}"
        for words in ("Connection closed", "Broken pipe", "Connection reset", "not responding", "Connection to"):
            if words.lower() in text.lower():
                return f"the connection to {self.host} dropped{f' while {what}' if what else ''} ({words.lower()})"
        return f"ssh to {self.host} failed{f' while {what}' if what else ''}: {text[-200:] or 'no message'}"

    # ---- the contract ---------------------------------------------------------------------------

    def validate(self, request: BenchRequest) -> None:
        """Paths on this machine that the request would send as paths (the device has its own)."""
        if request.sysfs_root not in ("/", ""):
            raise UsageError(f"--sysfs-root {request.sysfs_root} is a folder on this machine: a device reads its own "
                             "sensors (drop --sysfs-root with --on)")
        if request.energy.startswith("csv:"):
            raise UsageError(f"--energy {request.energy} names a file on this machine: on a device, give the source "
                             "there (ina3221, rapl, cmd:COMMAND)")
        spec = (request.data or "").split(":", 1)
        if len(spec) == 2 and (Path(spec[1]).exists() or Path(spec[0]).is_file()):
            raise UsageError(f"--data {request.data} names a folder or file on this machine inside a spec: give an "
                             ".npz file (it travels) or a built-in spec (digits) with --on")

    def check(self, request: BenchRequest | None = None) -> dict:
        if self.facts is None:
            candidates = [remote_path(self.remote_edgedl)] if self.remote_edgedl else \
                [remote_path(c) if c.startswith("$HOME/") else c for c in SEARCHED]
            script = ("for c in " + " ".join(candidates) + "; do "
                      'if command -v "$c" >/dev/null 2>&1; then echo "EDGEDL=$c"; exec "$c" device-facts; fi; done; '
                      f"exit {NOT_FOUND}")
            proc = self._run(posix_sh(script), what="looking for edgedl")
            out = proc.stdout.decode(errors="replace")
            extra = _extra_for(request)
            if proc.returncode == NOT_FOUND:
                where = self.remote_edgedl or "on the PATH, ~/.local/bin, ~/.edgedl/venv/bin or ~/.venv/bin"
                raise DeviceError(f"{self.label}: edgedl is not installed on {self.host} (looked {where}): install it "
                                  "there with " + INSTALL.format(extra=extra))
            first, _, rest = out.partition("\n")
            try:
                facts = json.loads(rest)
            except ValueError:
                said = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
                raise DeviceError(f"{self.label}: {first.removeprefix('EDGEDL=') or 'edgedl'} on {self.host} did not "
                                  f"describe itself ({said[:160]}): install the same edgedl as here, with "
                                  + INSTALL.format(extra=extra)) from None
            self.edgedl, self.facts = first.removeprefix("EDGEDL="), facts  # as the device's shell expanded it
        if (self.facts.get("request_version") or 0) < REQUEST_VERSION:
            raise DeviceError(f"{self.label}: edgedl {self.facts.get('edgedl')} on {self.host} reads bench requests of "
                              f"format {self.facts.get('request_version')}, this one sends {REQUEST_VERSION}: upgrade it")
        if request is not None:
            _needs_backend(self.label, self.host, self.facts, request)
        return self.facts

    def run_edgedl(self, args: list[str], members: list[tuple[Path, str]], into: Path, what: str,
                   collect: str = "") -> tuple[int, Path]:
        """``edgedl ARGS`` on the device in a fresh folder holding ``members``; what it writes under
        ``out/`` (and its log, ``out/log.txt``) comes back under ``into``. ``collect``: a shell glob of
        other files to bring back (moved into ``out/``). Returns (exit code, log)."""
        self.check()
        into.mkdir(parents=True, exist_ok=True)
        line = " ".join(shlex.quote(a) for a in args)
        proc = self._in_fresh_folder(
            'mkdir -p out; rc=0; '
            f'{shlex.quote(self.edgedl)} {line} >out/log.txt 2>&1 || rc=$?; echo "$rc" >out/rc; '
            + (f"for f in {collect}; do [ -f \"$f\" ] && mv \"$f\" out/; done; " if collect else "")
            + "tar -cf - out", members, into / ".sent.tar", what)
        try:
            _safe_extract(proc.stdout, into)
        except (tarfile.TarError, OSError) as exc:
            raise DeviceError(f"{self.label}: {self.host} sent back no files ({exc})") from None
        rc = int((into / "out" / "rc").read_text().strip() or 1)
        return rc, into / "out" / "log.txt"

    def _in_fresh_folder(self, body: str, members: list[tuple[Path, str]], bundle: Path,
                         what: str) -> subprocess.CompletedProcess:
        """``body`` (a shell line) on the device, run in a fresh temporary folder holding ``members``
        (sent as a tar on its standard input); the folder goes however the command ends, normally or
        by a signal (HUP when sshd closes it). A non-zero exit is one line, the device's last."""
        with tarfile.open(bundle, "w") as tar:
            for path, name in members:
                tar.add(path, arcname=name, recursive=False)
        command = ('set -e; D=$(mktemp -d); trap \'rm -rf "$D"\' EXIT; trap \'exit 129\' HUP INT TERM; '
                   'tar -xf - -C "$D"; cd "$D"; ' + body)
        try:
            with open(bundle, "rb") as stream:
                proc = self._run(posix_sh(command), stdin=stream, what=what)
        finally:
            bundle.unlink(missing_ok=True)
        if proc.returncode != 0:
            said = (proc.stderr.decode(errors="replace").strip().splitlines() or ["no output"])[-1]
            raise DeviceError(f"{self.label}: {what} on {self.host} failed: {said[:300]}")
        return proc

    def bench(self, request: BenchRequest, scratch: Path) -> dict:
        facts = self.check(request)
        members, remote = _bench_members(request)
        scratch.mkdir(parents=True, exist_ok=True)
        request_file = scratch / f"{Path(request.artifact).name}.{self.host}.request.json"
        remote.write(request_file)
        trust = " --trust-model-code" if self.trust_model_code else ""
        proc = self._in_fresh_folder(
            f"{shlex.quote(self.edgedl)} bench --request request.json --json result.json --quiet{trust} "
            '>/dev/null 2>err.txt || { tail -n 1 err.txt >&2; exit 3; }; cat result.json',
            [*members, (request_file, "request.json")], scratch / f"{Path(request.artifact).name}.{self.host}.tar",
            f"benchmarking {Path(request.artifact).name}")
        sent = [name for _, name in members]
        try:
            result = json.loads(proc.stdout)
        except ValueError:
            raise DeviceError(f"{self.label}: {self.host} sent back no result (the connection may have dropped)") from None
        result["artifact"] = request.artifact  # the workstation's path, not the device's temporary copy
        result["device"] = {"on": self.address, "label": self.label, "profile": facts.get("profile"),
                            "hostname": (facts.get("host") or {}).get("hostname"), "facts": facts, "sent": sent}
        return result


def _safe_extract(data: bytes, into: Path) -> list[Path]:
    """The files a device sent back (a tar on its standard output), extracted under ``into`` only:
    no links, no absolute or ``..`` names (tarfile's ``data`` filter)."""
    import io

    into.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = [m for m in tar.getmembers() if m.isfile()]
        tar.extractall(into, members=members, filter="data")
    return [into / m.name for m in members]


def _extra_for(request: BenchRequest | None) -> str:
    from edgedl.runtime.backends import BACKENDS

    if request is None:
        return "onnx"
    backend = _backend_of(request)
    return BACKENDS[backend].extra if backend in BACKENDS else "onnx"


def _backend_of(request: BenchRequest) -> str | None:
    from edgedl.runtime import backend_for
    from edgedl.runtime.sidecar import read_sidecar

    if request.backend:
        return request.backend
    try:
        return backend_for(Path(request.artifact), read_sidecar(Path(request.artifact))).name
    except Exception:  # an unknown suffix: the device's own edgedl says so in one line
        return None


def _needs_backend(label: str, host: str, facts: dict, request: BenchRequest) -> None:
    from edgedl.runtime.backends import BACKENDS

    backend = _backend_of(request)
    have = (facts.get("backends") or {})
    if backend in BACKENDS and backend in have and have[backend] is None:
        info = BACKENDS[backend]
        raise DeviceError(f"{label}: {host} has edgedl {facts.get('edgedl')} but not {info.framework}, which runs "
                          f"{Path(request.artifact).name}: install it there with pip install 'edgedl[{info.extra}]'")


def artifact_members(artifact: Path) -> list[tuple[Path, str]]:
    """An artifact and what travels with it, as (file, name in the device's folder): its sidecar, ONNX
    external data, a text model's tokenizer."""
    from edgedl.runtime.sidecar import sidecar_path

    beside = [sidecar_path(artifact), *sorted(artifact.parent.glob(artifact.name + ".data")),
              *sorted(artifact.parent.glob(artifact.stem + ".tokenizer*"))]
    return [(artifact, f"artifact/{artifact.name}"), *((p, f"artifact/{p.name}") for p in beside if p.is_file())]


def _bench_members(request: BenchRequest) -> tuple[list[tuple[Path, str]], BenchRequest]:
    """What a bench sends (the artifact's files, a data file it names) and the request rewritten to
    the copies' names."""
    artifact = Path(request.artifact)
    members = artifact_members(artifact)
    update = {"artifact": f"artifact/{artifact.name}"}
    if request.data and Path(request.data).is_file():  # a user's .npz travels; a built-in spec is made there
        members.append((Path(request.data), f"data/{Path(request.data).name}"))
        update["data"] = f"data/{Path(request.data).name}"
    return members, request.model_copy(update=update)
