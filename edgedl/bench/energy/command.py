"""An external meter read by a command the user names: ``--energy cmd:COMMAND``.

The command runs once per sample (no shell; split like a shell would) and prints watts; the last
number on its output is taken. The sample period is at least the command's own run time. The
command comes from the user's command line, never from a file edgedl opens.
"""

from __future__ import annotations

import re
import shlex
import subprocess

from edgedl.bench.energy.base import EnergySource, EnergyUnavailable

_NUMBER = re.compile(r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?")


class CommandSource(EnergySource):
    name = "cmd"
    kind = "power"

    def check(self) -> None:
        if not self.arg:
            raise EnergyUnavailable("--energy cmd:COMMAND needs a command that prints watts, e.g. cmd:./read_watts.sh")
        self._argv = shlex.split(self.arg)
        try:
            self._read()
        except FileNotFoundError:
            raise EnergyUnavailable(f"energy command not found: {self._argv[0]}") from None
        except (OSError, ValueError) as exc:
            raise EnergyUnavailable(f"energy command '{self.arg}': {exc}") from None

    def describe(self) -> str:
        return f"external meter read by `{self.arg}`"

    def _read(self) -> float:
        proc = subprocess.run(self._argv, capture_output=True, text=True, timeout=10)
        if proc.returncode != 0:
            raise ValueError(f"exited with {proc.returncode}: {proc.stderr.strip()[-200:]}")
        numbers = _NUMBER.findall(proc.stdout)
        if not numbers:
            raise ValueError(f"printed no number of watts: {proc.stdout.strip()[-200:]!r}")
        return float(numbers[-1])
