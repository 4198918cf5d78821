"""Errors a user can cause. The CLI prints their message on one line and exits 1 (2 for usage)."""


def counted(n: int, noun: str, plural: str | None = None) -> str:
    """``1 layer``, ``3 layers``, ``2 batches``: a count with its noun in the right number."""
    return f"{n} {noun}" if n == 1 else f"{n} {plural or noun + 's'}"


class EdgedlError(Exception):
    """A failure the user can act on; the message says what was wrong and what to do."""

    exit_code = 1


class UsageError(EdgedlError):
    """Bad input: an unknown name, a malformed spec, a recipe that does not validate."""

    exit_code = 2


class MissingDependencyError(EdgedlError):
    """An optional framework is not installed; the message names the pip extra."""

    def __init__(self, module: str, extra: str, purpose: str):
        super().__init__(
            f"{purpose} needs the Python package '{module}', which is not installed: "
            f"pip install 'edgedl[{extra}]'"
        )
        self.module = module
        self.extra = extra


class StageError(EdgedlError):
    """A stage of a run failed; earlier stages' artifacts and the manifest stay intact. ``measured``: what
    the stage found before it failed (an INT8 search's candidates and trade-off), kept on the stage's
    record in the manifest, so minutes of measuring are not lost with the file the gate refused."""

    def __init__(self, message: str, measured: dict | None = None):
        super().__init__(message)
        self.measured = measured or {}


class TrustError(UsageError):
    """A file names code to run (a model factory, a native engine) and the user has not said to trust it."""


class DeviceError(EdgedlError):
    """A device could not be reached or could not run the request (host key, credentials, edgedl or a
    backend missing there, a connection that dropped); other devices of the same command go on."""
