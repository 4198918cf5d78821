"""Real servers for the fleet tests, started on 127.0.0.1 in a test's temporary folder:

- OpenSSH's sshd (Debian's openssh-server) on a free port, with throwaway host and user keys. The
  "device" is this machine: its PATH holds this checkout's .venv, as a device's holds its edgedl
  (a fake for hardware that cannot exist here; the SSH, the copy and the remote edgedl are real).
- A TCP relay in front of an sshd that the test can cut, as a Wi-Fi link drops mid-run.
- PostgreSQL (Debian's postgresql) from initdb, trust authentication on 127.0.0.1.

Each returns None with the reason where its program is missing (a user's machine); `.ci/run`
installs them, and in CI (CI=1) a missing server fails the test instead of skipping it.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent


def unavailable(reason: str):
    """Skip with the reason, except in CI, where every server must run."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI installs it: .ci/run)")
    pytest.skip(reason)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited: {proc.stderr.read().decode(errors='replace')[-500:] if proc.stderr else ''}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on port {port} in {seconds} s")


@dataclass
class SshDevice:
    """One sshd "device": its port, the client config (alias ``alias``) and files the tests use."""

    alias: str
    port: int
    user: str
    folder: Path
    client_config: Path
    known_hosts: Path
    host_key_pub: Path
    proc: subprocess.Popen
    extra: list = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"ssh://{self.user}@127.0.0.1:{self.port}"

    def stop(self) -> None:
        for p in [self.proc, *self.extra]:
            if hasattr(p, "terminate"):
                p.terminate()
            elif hasattr(p, "close"):
                p.close()
        self.proc.wait(timeout=10)


def ssh_keys(folder: Path) -> Path:
    """The user's key pair (shared by every device of a test)."""
    key = folder / "id_ed25519"
    if not key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def start_sshd(folder: Path, alias: str, path_env: str | None = None, port: int | None = None,
               listen_port: int | None = None, record_host_key: bool = True) -> SshDevice:
    """An sshd for one device. ``path_env``: the PATH its sessions get (default: this .venv first);
    ``port``: what clients connect to (a relay's port), when it differs from where sshd listens."""
    sshd = shutil.which("sshd") or ("/usr/sbin/sshd" if Path("/usr/sbin/sshd").exists() else None)
    if sshd is None or shutil.which("ssh") is None:
        unavailable("OpenSSH's sshd is not installed here (Debian: apt-get install openssh-server)")
    folder.mkdir(parents=True, exist_ok=True)
    user = pwd.getpwuid(os.getuid()).pw_name
    key = ssh_keys(folder.parent)
    host_key = folder / "host_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key)], check=True)
    authorized = folder / "authorized_keys"
    authorized.write_text(Path(f"{key}.pub").read_text())
    authorized.chmod(0o600)
    home = folder / "home"
    home.mkdir(exist_ok=True)
    listen = listen_port or free_port()
    path = path_env if path_env is not None else f"{VENV_BIN}:/usr/local/bin:/usr/bin:/bin"
    config = folder / "sshd_config"
    config.write_text("\n".join([
        f"Port {listen}", "ListenAddress 127.0.0.1", f"HostKey {host_key}", f"PidFile {folder / 'sshd.pid'}",
        f"AuthorizedKeysFile {authorized}", "PubkeyAuthentication yes", "PasswordAuthentication no",
        "KbdInteractiveAuthentication no", "UsePAM no", "StrictModes no", "PermitRootLogin prohibit-password",
        # the session's environment: the device's PATH (edgedl there or not) and a home of its own
        f"SetEnv PATH={path} HOME={home}", "LogLevel ERROR", "",
    ]))
    if os.getuid() == 0:
        Path("/run/sshd").mkdir(exist_ok=True)  # privilege separation directory sshd wants as root
    proc = subprocess.Popen([sshd, "-D", "-e", "-f", str(config)], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    _wait_port(listen, proc, "sshd")
    port = port or listen
    known = folder.parent / "known_hosts"
    if record_host_key:
        with known.open("a") as f:
            f.write(f"[127.0.0.1]:{port} {Path(f'{host_key}.pub').read_text()}")
    client = folder.parent / "ssh_config"
    hosts = (client.read_text() if client.exists() else "").split("Host *")[0]  # the aliases so far
    hosts += "\n".join([f"Host {alias}", "  HostName 127.0.0.1", f"  Port {port}", f"  User {user}", ""])
    body = hosts + "\n".join([
        "Host *", f"  IdentityFile {key}", "  IdentitiesOnly yes", f"  UserKnownHostsFile {known}",
        "  GlobalKnownHostsFile /dev/null", ""])
    client.write_text(body)
    return SshDevice(alias, port, user, folder, client, known, Path(f"{host_key}.pub"), proc)


class Relay:
    """A TCP relay from a port of its own to ``target``; ``cut()`` closes every connection at once."""

    def __init__(self, target: int):
        self.target = target
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", 0))
        self.server.listen()
        self.port = self.server.getsockname()[1]
        self.sockets: list[socket.socket] = []
        self.connections = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target))
            self.sockets += [client, upstream]
            self.connections += 1
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        finally:
            for s in (a, b):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        """The link goes down: every open connection is reset."""
        for s in self.sockets:
            try:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                s.close()
            except OSError:
                pass

    def close(self) -> None:
        self.closed = True
        self.cut()
        self.server.close()


def start_postgres(folder: Path):
    """A PostgreSQL server on a free port; (URL, stop function)."""
    bindir = None
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            bindir = candidate
            break
    if bindir is None and shutil.which("initdb"):
        bindir = Path(shutil.which("initdb")).parent
    if bindir is None:
        unavailable("PostgreSQL is not installed here (Debian: apt-get install postgresql)")
    data = folder / "pgdata"
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    run_as: list[str] = []
    if os.getuid() == 0:  # PostgreSQL refuses to run as root: as its own user, in a folder it owns
        try:
            pg = pwd.getpwnam("postgres")
        except KeyError:
            unavailable("PostgreSQL is installed without its 'postgres' user; run the tests as another user")
        os.chown(folder, pg.pw_uid, pg.pw_gid)
        folder.chmod(0o755)
        for parent in folder.parents:  # the server must reach its folder
            if parent == Path("/"):
                break
            parent.chmod(parent.stat().st_mode | 0o005)
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
                   check=True, capture_output=True)
    log = folder / "pg.log"
    subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-o",
                    f"-p {port} -k {folder} -c listen_addresses=127.0.0.1", "start"], check=True, capture_output=True)

    def stop() -> None:
        subprocess.run([*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)

    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres", port, stop
